// Package onnxtest runs ONNX's operator conformance cases (Debian's
// libonnx-testdata, in NodeCasesDir) against any runtime.Backend. It reads
// the cases' serialized TensorProtos and the graph inputs and outputs of
// their models with a small pure-Go protobuf decoder, so it needs neither
// cgo nor the ONNX protos, and compares outputs the way ONNX's backend test
// runner does.
//
// RunCase takes a case from files to a Result in process; ReadCase and
// CheckOutputs let a test drive the same cases through another path, such
// as the inference protocol over REST or gRPC.
//
// BuildModel and PrefixModel encode small models in the other direction:
// for tests that need particular inputs and outputs, and for the overhead
// benchmark's floor (a model that does no work).
package onnxtest
