package proxy

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// Relay buffer sizes: the proxy's connections read and write in steps of
// this size (gRPC's default is 32 KiB), so a megabyte answer takes a few
// dozen system calls each way rather than a hundred.
const relayBufferSize = 256 << 10

// NewGRPCServer builds a *grpc.Server serving p as
// inference.GRPCInferenceService, with server reflection. Unlike serving
// p through grpcsvc, an inference request that goes to a remote target is
// relayed as the bytes the application sent, and the target's answer as
// the bytes it sent, with the proxy's parameters appended (see
// parseRequest): on a device with little CPU, decoding and re-encoding
// megabytes of tensors costs more than the link. Requests that run on the
// device, or fall back to it, are decoded as usual. opts and extra are as
// for grpcsvc.Server.NewGRPCServer.
func NewGRPCServer(p *Proxy, opts grpcsvc.Options, extra ...grpc.ServerOption) (*grpc.Server, error) {
	so, err := grpcsvc.ServerOptions(opts)
	if err != nil {
		return nil, err
	}
	// relayCodec replaces the tensor codec ServerOptions installs, and
	// hands it every message but the relayed ones.
	so = append(so, grpc.ForceServerCodecV2(relayCodec{}), grpc.ReadBufferSize(relayBufferSize), grpc.WriteBufferSize(relayBufferSize),
		grpc.StatsHandler(p.StatsHandler()))
	gs := grpc.NewServer(append(so, extra...)...)
	s := &relayServer{Server: grpcsvc.New(p, opts), p: p, opts: opts}
	desc := grpcsvc.ServiceDesc(relayModelInferHandler)
	gs.RegisterService(&desc, s)
	reflection.Register(gs)
	return gs, nil
}

// relayServer is grpcsvc's server for p, but for ModelInfer.
type relayServer struct {
	*grpcsvc.Server
	p    *Proxy
	opts grpcsvc.Options
}

// relayModelInferHandler is the generated ModelInfer handler with the
// request read as a frame instead of a ModelInferRequest.
func relayModelInferHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(frame)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*relayServer)
	if interceptor == nil {
		return s.modelInfer(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: pb.GRPCInferenceService_ModelInfer_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.modelInfer(ctx, req.(*frame))
	})
}

// modelInfer answers a ModelInfer request: relayed to a remote target
// when that is the first choice, decoded and served by the proxy
// otherwise. The answer is a *frame (relayed) or a *pb.ModelInferResponse.
func (s *relayServer) modelInfer(ctx context.Context, in *frame) (any, error) {
	defer in.free()
	req, err := parseRequest(in.data)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	defer req.free()
	timeout, err := oip.RequestTimeout(req.params)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ctx, cancel := s.p.requestContext(ctx)
	defer cancel()
	pl, err := s.p.plan(ctx, req.model, req.version, req.wireBytes)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	for i := 0; i < len(pl.ranked); i = pl.nextAfter(i) {
		if ctx.Err() != nil {
			return nil, errdefs.ToGRPC(s.p.expired(ctx, pl))
		}
		opt := pl.ranked[i]
		if opt.Local {
			// The rest is decoded: the device runs the model itself.
			return s.decoded(ctx, pl, i, req)
		}
		resp, err := s.p.relay(ctx, s.p.budget(ctx, pl.ranked[i:], pl.ls), pl.byName[opt.Name], pl.model, opt.Compressed, req, opt.Latency)
		if err == nil {
			if i > 0 {
				noteNone(ctx) // failed attempts' time is in the request's
			}
			params := s.p.answered(pl, i)
			var tail []byte
			for _, k := range []string{ParamTarget, ParamAttempts, ParamPredicted, ParamCompressed} {
				if v, ok := params[k]; ok {
					tail = appendParam(tail, k, v)
				}
			}
			if _, renamed := pl.byName[opt.Name].servedName(pl.model); renamed {
				tail = appendStringField(tail, respModelName, pl.model)
			}
			resp.data = append(resp.data, mem.SliceBuffer(tail))
			resp.give = true
			return resp, nil
		}
		if err := s.p.failed(pl, i, err); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	return nil, errdefs.ToGRPC(s.p.expired(ctx, pl))
}

// decoded serves req from option from of pl on through the decoding
// transport: the request is decoded (only now), the proxy runs the rest
// of the plan, and the answer is encoded.
func (s *relayServer) decoded(ctx context.Context, pl *plan, from int, req *rawRequest) (any, error) {
	var preq pb.ModelInferRequest
	if err := proto.Unmarshal(req.bytes(), &preq); err != nil {
		return nil, errdefs.ToGRPC(invalidWire("decoding", err))
	}
	rest := &planService{Proxy: s.p, pl: pl, from: from}
	return grpcsvc.New(rest, s.opts).ModelInfer(ctx, &preq)
}

// planService is the proxy continuing a plan: its Infer runs the options
// of pl from the from'th on.
type planService struct {
	*Proxy
	pl   *plan
	from int
}

func (s *planService) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	return s.Proxy.run(ctx, s.pl, s.from, req)
}

// relay sends req as it came to t (renamed if t serves the model under
// another name) and returns t's answer as it came, after learning from it.
func (p *Proxy) relay(ctx context.Context, budget time.Duration, t *target, model string, compressed bool, req *rawRequest, predicted time.Duration) (*frame, error) {
	actx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	out := &frame{data: mem.BufferSlice{req.buf}}
	if served, renamed := t.servedName(model); renamed {
		// The target numbers its own versions of what it serves.
		var tail []byte
		tail = appendStringField(tail, reqModelName, served)
		tail = appendStringField(tail, reqModelVersion, "")
		out.data = append(out.data, mem.SliceBuffer(tail))
	}
	t.inflight.Add(1)
	defer t.inflight.Add(-1)
	defer t.endFlight(t.beginFlight(predicted))
	resp := new(frame)
	start := time.Now()
	opts := []grpc.CallOption{grpc.ForceCodecV2(relayCodec{})}
	if compressed {
		opts = append(opts, grpcsvc.Compressed())
	}
	err := t.conn.Invoke(actx, pb.GRPCInferenceService_ModelInfer_FullMethodName, out, resp, opts...)
	took := time.Since(start)
	if err != nil {
		resp.free()
		if ctx.Err() == nil && actx.Err() != nil {
			return nil, budgetSpent(t, budget)
		}
		if compressed && refusedByCode(err) {
			return nil, &compressionRefused{errdefs.FromGRPC(err)}
		}
		return nil, errdefs.FromGRPC(err)
	}
	info, err := parseResponse(resp.data)
	if err != nil {
		resp.free()
		return nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("malformed response from %s: %v", t.spec.Name, err))
	}
	p.learnAnswer(ctx, t, model, compressed, time.Duration(info.server)*time.Microsecond, req.wireBytes, info.wireBytes, took, predicted, func() [][]byte {
		bufs := make([][]byte, len(resp.data))
		for i, b := range resp.data {
			bufs[i] = b.ReadOnlyData()
		}
		return bufs
	})
	return resp, nil
}
