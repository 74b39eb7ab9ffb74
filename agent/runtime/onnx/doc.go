// Package onnx is the ONNX Runtime backend of accelpool's agent, and the
// only package in the project that uses cgo.
//
// # Binding
//
// The package binds the ONNX Runtime C API itself (ort.c: small shims over
// the OrtApi function table, one per call or per hot-path step) instead of
// using github.com/yalue/onnxruntime_go. That module, as of v1.27.0, cannot
// return rank-0 (scalar) outputs (its Shape.Validate rejects them), copies
// only N bytes for an N-element FP16, BF16 or other custom-typed output,
// cannot create scalar string tensors or empty custom-typed tensors, and
// copies every output twice. Serving arbitrary models over the Open
// Inference Protocol needs all of those, and the hot path wants one copy.
//
// The CPU build that scripts/setup.sh installs lists the CUDA and TensorRT
// providers as available but ships without their shared libraries, so
// asking for them fails when they are appended and Load falls back to the
// CPU, as described below.
//
// The library is never linked: Init opens it with dlopen, finds
// OrtGetApiBase, and asks for the highest C API version from the header's
// (include/onnxruntime_c_api.h, copied unchanged from ONNX Runtime) down to
// 16, the oldest with every function used here. FindLibrary searches, in
// order, the --ort-lib flag, $ACCELPOOL_ORT_LIB, the copy scripts/setup.sh
// installs in the cache (internal/cache), and the system's
// libonnxruntime.so.1 / libonnxruntime.so. A process loads one library and
// creates one OrtEnv.
//
// # Sessions
//
// Load opens one session per model with graph optimisation at its highest
// level and the thread counts of runtime.Options. Execution providers are
// appended in the order requested ("tensorrt", "cuda"; "cpu" is always the
// last resort and ends the list); one the library lacks, such as CUDA in the
// CPU-only build setup.sh installs, is skipped with a structured warning
// giving the reason. Session.Provider names the first provider actually
// added, or "cpu".
//
// A file that does not exist gives errdefs.ErrNotFound. A file ONNX Runtime
// cannot load (not a model, truncated, an operator or opset it does not
// implement) gives errdefs.ErrInvalid with ONNX Runtime's message. A model
// with an input or output that is not a tensor (sequence, map, optional,
// sparse tensor) or whose element type has no protocol datatype (complex,
// float8, int4, ...) is refused at Load, also with errdefs.ErrInvalid, and
// the error names each such input and output: the protocol could never
// carry them, so refusing early makes the model show as failed with the
// reason instead of failing every request.
//
// # Runs
//
// Run checks inputs against the model's declaration (every input present
// once, datatype, rank, fixed dimensions, data length) and reports a
// mismatch as errdefs.ErrInvalid naming the input. Numeric inputs are
// handed to ONNX Runtime in place, pinned with runtime.Pinner for the length
// of the run; BYTES inputs become ONNX Runtime string tensors (any bytes,
// NULs included). Outputs are allocated by ONNX Runtime and copied once into
// Go memory, strings into the length-prefixed BYTES layout. Scalars and
// zero-element tensors work both ways. A context done before the run gives
// its error; one cancelled during the run sets ONNX Runtime's terminate
// flag, which stops it between nodes, and Run returns an error wrapping
// errdefs.ErrCanceled or errdefs.ErrDeadline (and the context's error).
//
// A run that ONNX Runtime fails on inputs that passed those checks fails
// on what the client sent (a dynamic dimension the graph cannot take, an
// index out of range): errdefs.ErrInvalid, as `the model's Add node "n"
// failed on this input: ...`, without ONNX Runtime's source paths and C++
// signatures. Running out of memory is errdefs.ErrResourceExhausted; a
// failing execution provider, or anything else, errdefs.ErrInternal.
package onnx
