// Package fake is a pure-Go runtime.Backend for testing the layers above
// the runtime (batching, scheduling, the protocol servers) without ONNX
// Runtime. Its "model files" are small YAML documents:
//
//	inputs:  [{name: x, datatype: FP32, shape: [-1, 4]}]
//	outputs: [{name: y, datatype: FP32, shape: [-1, 4]}]
//	op: add_one     # identity (default) | add_one | sleep
//	sleep_ms: 5     # slept once per Run, not per batch item
//	fail_load: true # optional: Load fails with errdefs.ErrInvalid
//	fail_run: true  # optional: every Run fails with errdefs.ErrInternal
//
// Output i is computed from input i. Run checks inputs against the
// declaration exactly as the ONNX Runtime backend does, and the Backend
// counts loads, runs and the batch size of each run (Backend.Stats) so that
// batching tests can see what reached the runtime. It passes the same
// conformance suite (runtime/runtimetest) as the real backend.
package fake
