// Package e2e holds end-to-end tests that run the real serving stack —
// ONNX Runtime, the agent, the REST and gRPC front doors — on loopback and
// talk to it through the clients a user would use. They need the ONNX
// Runtime library and the demo models (scripts/setup.sh) and ONNX's backend
// test data (scripts/setup.sh --test); when those are missing the tests
// fail and say how to install them, they never skip.
package e2e
