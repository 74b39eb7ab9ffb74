// Package inference is the Go code generated from grpc_service.proto: the
// messages and the GRPCInferenceService client and server stubs of the Open
// Inference Protocol. Do not edit the .pb.go files; edit the proto and run
// api/generate.sh. The conversion to and from accelpool's own types lives in
// oip/grpcsvc.
package inference
