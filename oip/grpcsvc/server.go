package grpcsvc

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// Server serves an oip.Service as inference.GRPCInferenceService.
type Server struct {
	pb.UnimplementedGRPCInferenceServiceServer

	svc  oip.Service
	opts Options
	log  *slog.Logger
}

var _ pb.GRPCInferenceServiceServer = (*Server)(nil)

// New returns a Server for svc. Register it on a *grpc.Server, or build one
// with NewGRPCServer.
func New(svc oip.Service, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{svc: svc, opts: opts, log: opts.Logger.With("component", "grpcsvc")}
}

// Register adds the inference service to gs. With the tensor Codec (see
// ServerOptions), ModelInfer requests are decoded into pooled buffers that
// go back to the pool once the service is done with them.
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	desc := ServiceDesc(modelInferHandler)
	gs.RegisterService(&desc, s)
}

// ServiceDesc is the inference service's description with ModelInfer's
// handler replaced by infer (nil keeps the generated one), and every
// method's request that cannot be decoded answered with InvalidArgument:
// gRPC reports a message its codec cannot read as Internal, a server
// fault, though the bytes are the client's.
func ServiceDesc(infer grpc.MethodHandler) grpc.ServiceDesc {
	desc := pb.GRPCInferenceService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		h := desc.Methods[i].Handler
		if infer != nil && desc.Methods[i].MethodName == "ModelInfer" {
			h = infer
		}
		desc.Methods[i].Handler = decodeAsInvalid(h)
	}
	return desc
}

// decodeAsInvalid wraps h so that a request message that fails to decode
// gets InvalidArgument instead of gRPC's Internal. gRPC sends its own
// status as soon as the codec fails, so the message is handed to the
// Codec wrapped in a lenient, where the failure is kept for the handler.
// Other failures of the read (the message too large, the call cancelled)
// keep their codes, and a server without the Codec answers as before.
func decodeAsInvalid(h grpc.MethodHandler) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		return h(srv, ctx, func(m any) error {
			pm, ok := m.(protoMessage)
			if !ok {
				return dec(m)
			}
			l := &lenient{msg: pm}
			if err := dec(l); err != nil {
				return err
			}
			if l.err != nil {
				return status.Error(codes.InvalidArgument, errdefs.Clip("malformed request message: "+l.err.Error()))
			}
			return nil
		}, interceptor)
	}
}

// modelInferHandler is the generated ModelInfer handler, decoding into an
// inferRequest. Its buffers are reused only when the service is done with
// them: it was not called or returned without error (a failed Infer may
// have abandoned work that still reads the inputs), the interceptors
// passed the request on unchanged, and no output aliases an input.
func modelInferHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := &inferRequest{msg: new(pb.ModelInferRequest)}
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	called, reuse := false, false
	handler := func(ctx context.Context, req any) (any, error) {
		called = true
		r, ok := req.(*pb.ModelInferRequest)
		if !ok {
			return nil, errdefs.ToGRPC(fmt.Errorf("ModelInfer got a %T: %w", req, errdefs.ErrInternal))
		}
		out, settled, err := s.modelInfer(ctx, r)
		reuse = settled && r == in.msg && (out == nil || !tensor.Overlaps(out.RawOutputContents, in.bufs))
		return out, err
	}
	var (
		out any
		err error
	)
	if interceptor == nil {
		out, err = handler(ctx, in.msg)
	} else {
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: pb.GRPCInferenceService_ModelInfer_FullMethodName}
		out, err = interceptor(ctx, in.msg, info, handler)
	}
	if reuse || !called {
		in.release()
	}
	return out, err
}

// ServerLive implements inference.GRPCInferenceServiceServer.
func (s *Server) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: s.svc.Live()}, nil
}

// ServerReady implements inference.GRPCInferenceServiceServer.
func (s *Server) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.svc.Ready()}, nil
}

// ServerMetadata implements inference.GRPCInferenceServiceServer.
func (s *Server) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	md := s.svc.ServerMetadata()
	return &pb.ServerMetadataResponse{Name: md.Name, Version: md.Version, Extensions: md.Extensions}, nil
}

// ModelReady implements inference.GRPCInferenceServiceServer.
func (s *Server) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if req.GetName() == "" {
		return nil, errdefs.ToGRPC(invalidf("name is required"))
	}
	ok, err := s.svc.ModelReady(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.ModelReadyResponse{Ready: ok}, nil
}

// ModelMetadata implements inference.GRPCInferenceServiceServer.
func (s *Server) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	if req.GetName() == "" {
		return nil, errdefs.ToGRPC(invalidf("name is required"))
	}
	md, err := s.svc.ModelMetadata(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.ModelMetadataResponse{
		Name:     md.Name,
		Versions: md.Versions,
		Platform: md.Platform,
		Inputs:   metadataToProto(md.Inputs),
		Outputs:  metadataToProto(md.Outputs),
	}, nil
}

// ModelInfer implements inference.GRPCInferenceServiceServer. The gRPC
// deadline, tightened by a "timeout" parameter, bounds the call to
// oip.Service.Infer through its context.
func (s *Server) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	out, _, err := s.modelInfer(ctx, req)
	return out, err
}

// modelInfer is ModelInfer; settled reports whether the service is done
// with req's tensors: it was not called, or it returned without error.
func (s *Server) modelInfer(ctx context.Context, req *pb.ModelInferRequest) (out *pb.ModelInferResponse, settled bool, err error) {
	ireq, err := decodeInferRequest(req)
	if err != nil {
		return nil, true, errdefs.ToGRPC(err)
	}
	if _, ok := s.svc.(oip.SharedMemory); !ok && oip.UsesSharedMemory(ireq) {
		return nil, true, errdefs.ToGRPC(oip.ErrNoSharedMemory)
	}
	timeout, err := oip.RequestTimeout(ireq.Parameters)
	if err != nil {
		return nil, true, errdefs.ToGRPC(err)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := s.svc.Infer(ctx, ireq)
	if err != nil {
		return nil, false, errdefs.ToGRPC(err)
	}
	if resp == nil {
		return nil, true, errdefs.ToGRPC(fmt.Errorf("model %q returned no response: %w", ireq.ModelName, errdefs.ErrInternal))
	}
	out, err = encodeInferResponse(resp, ireq)
	if err != nil {
		s.log.Error("bad inference response", "model", ireq.ModelName, "id", ireq.ID, "error", err)
		return nil, true, errdefs.ToGRPC(fmt.Errorf("model %q: %v: %w", ireq.ModelName, err, errdefs.ErrInternal))
	}
	return out, true, nil
}

// RepositoryIndex implements inference.GRPCInferenceServiceServer. There is
// one repository; repository_name is ignored.
func (s *Server) RepositoryIndex(ctx context.Context, req *pb.RepositoryIndexRequest) (*pb.RepositoryIndexResponse, error) {
	idx, err := s.svc.RepositoryIndex(ctx, req.GetReady())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	out := &pb.RepositoryIndexResponse{Models: make([]*pb.RepositoryIndexResponse_ModelIndex, len(idx))}
	for i, m := range idx {
		out.Models[i] = &pb.RepositoryIndexResponse_ModelIndex{Name: m.Name, Version: m.Version, State: m.State, Reason: m.Reason}
	}
	return out, nil
}

// RepositoryModelLoad implements inference.GRPCInferenceServiceServer.
// Load parameters (Triton's config and file overrides) are not supported.
func (s *Server) RepositoryModelLoad(ctx context.Context, req *pb.RepositoryModelLoadRequest) (*pb.RepositoryModelLoadResponse, error) {
	if err := checkRepositoryRequest(req.GetModelName(), req.GetParameters()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := s.svc.LoadModel(ctx, req.GetModelName()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.RepositoryModelLoadResponse{}, nil
}

// RepositoryModelUnload implements inference.GRPCInferenceServiceServer.
func (s *Server) RepositoryModelUnload(ctx context.Context, req *pb.RepositoryModelUnloadRequest) (*pb.RepositoryModelUnloadResponse, error) {
	if err := checkRepositoryRequest(req.GetModelName(), req.GetParameters()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := s.svc.UnloadModel(ctx, req.GetModelName()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.RepositoryModelUnloadResponse{}, nil
}

func checkRepositoryRequest(name string, params map[string]*pb.ModelRepositoryParameter) error {
	if name == "" {
		return invalidf("model_name is required")
	}
	if len(params) > 0 {
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return invalidf("model %q: repository parameters are not supported (got %q)", name, keys)
	}
	return nil
}

// sharedMemory is the service's shared memory capability, or the error a
// server without it answers.
func (s *Server) sharedMemory() (oip.SharedMemory, error) {
	sm, ok := s.svc.(oip.SharedMemory)
	if !ok {
		return nil, errdefs.ToGRPC(oip.ErrNoSharedMemory)
	}
	return sm, nil
}

// SystemSharedMemoryStatus implements inference.GRPCInferenceServiceServer.
func (s *Server) SystemSharedMemoryStatus(ctx context.Context, req *pb.SystemSharedMemoryStatusRequest) (*pb.SystemSharedMemoryStatusResponse, error) {
	sm, err := s.sharedMemory()
	if err != nil {
		return nil, err
	}
	regions, err := sm.SystemSharedMemoryStatus(ctx, req.GetName())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	out := &pb.SystemSharedMemoryStatusResponse{Regions: make(map[string]*pb.SystemSharedMemoryStatusResponse_RegionStatus, len(regions))}
	for _, r := range regions {
		out.Regions[r.Name] = &pb.SystemSharedMemoryStatusResponse_RegionStatus{Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize}
	}
	return out, nil
}

// SystemSharedMemoryRegister implements inference.GRPCInferenceServiceServer.
func (s *Server) SystemSharedMemoryRegister(ctx context.Context, req *pb.SystemSharedMemoryRegisterRequest) (*pb.SystemSharedMemoryRegisterResponse, error) {
	sm, err := s.sharedMemory()
	if err != nil {
		return nil, err
	}
	r := oip.SharedMemoryRegion{Name: req.GetName(), Key: req.GetKey(), Offset: req.GetOffset(), ByteSize: req.GetByteSize()}
	if err := sm.RegisterSystemSharedMemory(ctx, r); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.SystemSharedMemoryRegisterResponse{}, nil
}

// SystemSharedMemoryUnregister implements inference.GRPCInferenceServiceServer.
func (s *Server) SystemSharedMemoryUnregister(ctx context.Context, req *pb.SystemSharedMemoryUnregisterRequest) (*pb.SystemSharedMemoryUnregisterResponse, error) {
	sm, err := s.sharedMemory()
	if err != nil {
		return nil, err
	}
	if err := sm.UnregisterSystemSharedMemory(ctx, req.GetName()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.SystemSharedMemoryUnregisterResponse{}, nil
}
