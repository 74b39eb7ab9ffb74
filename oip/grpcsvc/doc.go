// Package grpcsvc puts an oip.Service on gRPC as the Open Inference
// Protocol's inference.GRPCInferenceService (api/inference), and takes it off
// again: Server serves any oip.Service, Client is an oip.Service backed by a
// remote server, so local and remote look alike and one test suite runs
// against both.
//
// On the way in, raw_input_contents become tensor data without a copy
// beyond one from gRPC's receive buffers: the tensor Codec (installed by
// ServerOptions) copies each entry straight into a 64-byte aligned buffer,
// pooled between requests once the service is done with it; typed contents
// are checked (one field, the one for the datatype, with exactly the
// shape's element count, values in range) and encoded once into raw
// little-endian bytes. Shapes and sizes are validated before anything is
// allocated. Responses always carry raw_output_contents, as Triton's do,
// and the codec hands the output tensors to gRPC without copying them; the
// Client sends its inputs the same way.
//
// Triton's system shared memory RPCs (SystemSharedMemoryRegister, -Status,
// -Unregister) and inputs or requested outputs naming a region work when
// the served oip.Service implements oip.SharedMemory (see oip/shm);
// otherwise they answer InvalidArgument. raw_input_contents then holds an
// entry per input (empty for those in shared memory) or one per input not
// in shared memory; responses keep an empty raw entry for each output
// written into a region.
//
// The gRPC deadline reaches oip.Service.Infer as its context, tightened by
// a "timeout" request parameter in microseconds (Triton's convention).
// Errors map to status codes through errdefs, and a panic in a handler
// becomes codes.Internal without taking the server down.
//
// NewGRPCServer builds a *grpc.Server with message size limits (64 MiB by
// default), keepalive, optional TLS and server reflection:
//
//	srv := grpcsvc.New(svc, grpcsvc.Options{Logger: log})
//	gs, err := srv.NewGRPCServer()
//	...
//	go gs.Serve(lis)
//	defer gs.GracefulStop()
package grpcsvc
