// Package auth guards listeners with a shared bearer token: HTTP middleware
// and gRPC interceptors that compare the token in constant time. Health
// endpoints stay open so probes work without credentials.
package auth

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// check reports whether header ("Bearer <token>") carries token.
func check(header, token string) bool {
	got, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

// HTTP wraps h so that every request except the open paths needs the token.
// An empty token disables the check.
func HTTP(h http.Handler, token string, openPrefixes ...string) http.Handler {
	if token == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range openPrefixes {
			if strings.HasPrefix(r.URL.Path, p) {
				h.ServeHTTP(w, r)
				return
			}
		}
		if !check(r.Header.Get("Authorization"), token) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="accelpool"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"missing or wrong bearer token (send Authorization: Bearer <token>)"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func grpcCheck(ctx context.Context, token string, method string) error {
	if token == "" || strings.HasSuffix(method, "/ServerLive") || strings.HasSuffix(method, "/ServerReady") ||
		strings.HasPrefix(method, "/grpc.health.") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if check(v, token) {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong bearer token (send metadata authorization: Bearer <token>)")
}

// GRPCUnary is a unary server interceptor requiring the token.
func GRPCUnary(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := grpcCheck(ctx, token, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// GRPCStream is a stream server interceptor requiring the token.
func GRPCStream(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := grpcCheck(ss.Context(), token, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// Credentials is a grpc.PerRPCCredentials sending the token.
type Credentials struct {
	Token  string
	Secure bool // require TLS to send it
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c Credentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + c.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (c Credentials) RequireTransportSecurity() bool { return c.Secure }

// IsLoopback reports whether a listen address binds only loopback.
// An empty host (":8000") binds every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Metrics guards a /metrics handler served on addr: on loopback it stays
// open, as Prometheus on the same machine expects; beyond loopback it
// needs the token (Prometheus: `authorization: {credentials: TOKEN}`),
// because the metrics name every application, model and node. Paths
// under openPrefixes (a health check) stay open either way.
func Metrics(h http.Handler, addr, token string, openPrefixes ...string) http.Handler {
	if IsLoopback(addr) {
		return h
	}
	return HTTP(h, token, openPrefixes...)
}
