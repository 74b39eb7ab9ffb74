// Package runtimetest is the conformance suite every runtime.Backend
// passes: the fake backend and the ONNX Runtime one run the same checks
// (load, metadata, run, refusal of bad inputs with errdefs.ErrInvalid,
// corrupt and missing files, cancellation, concurrent runs, close) from
// their own tests with their own model files.
package runtimetest
