// Package api holds accelpool's wire contracts: protobuf definitions and the
// Go code generated from them, nothing else.
//
//   - inference: the Open Inference Protocol (KServe v2) gRPC service,
//     wire-compatible with KServe's grpc_predict_v2.proto and Triton's
//     grpc_service.proto. oip/grpcsvc serves and calls it.
//
// The generated code is committed; regenerate it with generate.sh after
// editing a .proto.
package api

//go:generate sh generate.sh
