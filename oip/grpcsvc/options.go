package grpcsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Defaults for Options left zero.
const (
	DefaultMaxMsgSize       = 64 << 20
	DefaultWindowSize       = 16 << 20
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
	DefaultKeepaliveMinTime = 10 * time.Second
	// DefaultBufferSize is the read and write buffer of every connection,
	// server and client (gRPC's default is 32 KiB): a megabyte tensor then
	// takes a few system calls each way rather than dozens. Servers share
	// write buffers between connections while they are idle.
	DefaultBufferSize = 256 << 10
)

// Options configure a Server and the *grpc.Server built for it. The zero
// value serves plaintext with the defaults above.
type Options struct {
	// Logger receives one record per failed RPC and every recovered panic;
	// nil discards.
	Logger *slog.Logger

	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes
	// (default 64 MiB). A larger request fails with ResourceExhausted.
	MaxRecvMsgSize int
	MaxSendMsgSize int

	// TLSCertFile and TLSKeyFile, both set, serve TLS with that PEM pair.
	TLSCertFile string
	TLSKeyFile  string

	// KeepaliveTime is how long a connection may sit idle before the server
	// pings it; KeepaliveTimeout how long it then waits for the ack before
	// closing. KeepaliveMinTime is the shortest client ping interval the
	// server tolerates (pings without active streams are allowed).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	KeepaliveMinTime time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = DefaultMaxMsgSize
	}
	if o.MaxSendMsgSize <= 0 {
		o.MaxSendMsgSize = DefaultMaxMsgSize
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = DefaultKeepaliveTime
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if o.KeepaliveMinTime <= 0 {
		o.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	return o
}

// ServerOptions are the grpc.ServerOptions that opts call for: message size
// limits, keepalive, TLS when configured, the tensor Codec, buffers of
// DefaultBufferSize, and interceptors that log failed RPCs and turn panics
// into codes.Internal. Use them to host the inference service on a
// *grpc.Server shared with other services.
func ServerOptions(opts Options) ([]grpc.ServerOption, error) {
	opts = opts.withDefaults()
	so := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(opts.MaxSendMsgSize),
		grpc.InitialWindowSize(DefaultWindowSize),
		grpc.InitialConnWindowSize(DefaultWindowSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    opts.KeepaliveTime,
			Timeout: opts.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             opts.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.ForceServerCodecV2(Codec{}),
		grpc.ReadBufferSize(DefaultBufferSize),
		grpc.WriteBufferSize(DefaultBufferSize),
		grpc.SharedWriteBuffer(true),
		grpc.ChainUnaryInterceptor(LogUnaryInterceptor(opts.Logger), RecoverUnaryInterceptor(opts.Logger)),
		grpc.ChainStreamInterceptor(RecoverStreamInterceptor(opts.Logger)),
	}
	switch {
	case opts.TLSCertFile != "" && opts.TLSKeyFile != "":
		creds, err := credentials.NewServerTLSFromFile(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("grpc tls: %w", err)
		}
		so = append(so, grpc.Creds(creds))
	case opts.TLSCertFile != "" || opts.TLSKeyFile != "":
		return nil, errors.New("grpc tls: set both TLSCertFile and TLSKeyFile, or neither")
	}
	return so, nil
}

// NewGRPCServer builds a *grpc.Server from s's Options (plus extra), with
// the inference service and server reflection registered. The caller serves
// it (gs.Serve(lis)) and stops it (gs.GracefulStop()).
func (s *Server) NewGRPCServer(extra ...grpc.ServerOption) (*grpc.Server, error) {
	so, err := ServerOptions(s.opts)
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(append(so, extra...)...)
	s.Register(gs)
	reflection.Register(gs)
	return gs, nil
}

// RecoverUnaryInterceptor turns a panic in a handler into codes.Internal,
// logging the panic and its stack; the client never sees the panic value.
func RecoverUnaryInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, info.FullMethod, r)
				resp = nil
			}
		}()
		return handler(ctx, req)
	}
}

// RecoverStreamInterceptor is RecoverUnaryInterceptor for streaming RPCs
// (server reflection is one).
func RecoverStreamInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = recovered(log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

func recovered(log *slog.Logger, method string, r any) error {
	log.Error("grpc handler panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error serving %s", method)
}

// LogUnaryInterceptor logs every failed RPC: server faults (Internal,
// Unknown, DataLoss, Unimplemented) at Error, the rest at Debug.
func LogUnaryInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		if err != nil {
			code := status.Code(err)
			level := slog.LevelDebug
			switch code {
			case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
				level = slog.LevelError
			}
			log.Log(ctx, level, "grpc call failed", "method", info.FullMethod, "code", code.String(),
				"error", status.Convert(err).Message(), "duration", time.Since(start))
		}
		return resp, err
	}
}
