// Package linkprobe measures the network path to an agent or gateway over
// the gRPC connection requests use: round-trip time, and uplink and
// downlink bandwidth.
//
// Agents and gateways register the LinkProbe service next to the Open
// Inference Protocol (Register). It has one method, Echo, whose request
// and answer are google.protobuf.BytesValue: the first four bytes of the
// request (big-endian) are the size of the answer the caller wants, the
// rest is padding that only costs transfer time. Answers are at most
// MaxPayload bytes, and so are requests (the server's message limit
// applies too). The service does no other work, so what the caller
// measures is the path plus two gRPC messages.
//
// Measure sends three echoes: an empty one (round trip), one with n bytes
// up, one with n bytes down; each bandwidth is n over its echo's time less
// the round trip.
package linkprobe

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName and EchoMethod name the service on the wire.
const (
	ServiceName = "accelpool.linkprobe.v1.LinkProbe"
	EchoMethod  = "/" + ServiceName + "/Echo"
)

// MaxPayload bounds the size of an answer and of the padding a probe sends.
const MaxPayload = 4 << 20

type server struct{}

// echoServer is the interface grpc.ServiceDesc.HandlerType checks against.
type echoServer interface {
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

func (server) Echo(_ context.Context, req *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	b := req.GetValue()
	if len(b) < 4 {
		return nil, status.Error(codes.InvalidArgument, "linkprobe: request shorter than its 4-byte answer size")
	}
	if len(b) > MaxPayload+4 {
		return nil, status.Errorf(codes.InvalidArgument, "linkprobe: request of %d bytes exceeds %d", len(b), MaxPayload+4)
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "linkprobe: answer of %d bytes asked, at most %d", n, MaxPayload)
	}
	return &wrapperspb.BytesValue{Value: make([]byte, n)}, nil
}

func echoHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(echoServer).Echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(echoServer).Echo(ctx, req.(*wrapperspb.BytesValue))
	})
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "accelpool/linkprobe.proto",
}

// Register adds the LinkProbe service to s. Interceptors (authentication)
// of s apply to it as to inference.
func Register(s grpc.ServiceRegistrar) { s.RegisterService(&serviceDesc, server{}) }

// Echo sends up bytes of padding and asks for down bytes back; it returns
// the time the exchange took.
func Echo(ctx context.Context, conn grpc.ClientConnInterface, up, down int) (time.Duration, error) {
	if up < 0 || up > MaxPayload || down < 0 || down > MaxPayload {
		return 0, fmt.Errorf("linkprobe: sizes %d up, %d down outside 0..%d", up, down, MaxPayload)
	}
	req := &wrapperspb.BytesValue{Value: make([]byte, 4+up)}
	binary.BigEndian.PutUint32(req.Value, uint32(down))
	resp := new(wrapperspb.BytesValue)
	start := time.Now()
	if err := conn.Invoke(ctx, EchoMethod, req, resp); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if len(resp.Value) != down {
		return 0, fmt.Errorf("linkprobe: answer of %d bytes, asked %d", len(resp.Value), down)
	}
	return d, nil
}

// Result is one measurement of a path.
type Result struct {
	RTT time.Duration
	// UpBps and DownBps are bits per second; 0 when the transfer was too
	// quick to tell from the round trip's jitter.
	UpBps, DownBps float64
}

// Measure measures RTT and, when n > 0, both bandwidths with n-byte
// transfers. The round trip is the smaller of two empty echoes, so a
// one-off delay does not inflate it.
func Measure(ctx context.Context, conn grpc.ClientConnInterface, n int) (Result, error) {
	var r Result
	rtt := time.Duration(1<<63 - 1)
	for range 2 {
		d, err := Echo(ctx, conn, 0, 0)
		if err != nil {
			return r, err
		}
		rtt = min(rtt, d)
	}
	r.RTT = rtt
	if n <= 0 {
		return r, nil
	}
	up, err := Echo(ctx, conn, n, 0)
	if err != nil {
		return r, err
	}
	down, err := Echo(ctx, conn, 0, n)
	if err != nil {
		return r, err
	}
	r.UpBps = bps(n, up-rtt)
	r.DownBps = bps(n, down-rtt)
	return r, nil
}

// bps is n bytes over d; 0 when d is too short to mean anything.
func bps(n int, d time.Duration) float64 {
	if d < 50*time.Microsecond {
		return 0
	}
	return float64(n) * 8 / d.Seconds()
}
