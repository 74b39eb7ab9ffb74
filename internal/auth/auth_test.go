package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestHTTP(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	h := HTTP(ok, "s3cret", "/v2/health/")
	cases := []struct {
		path, header string
		want         int
	}{
		{"/v2/models/x/infer", "", 401},
		{"/v2/models/x/infer", "Bearer wrong", 401},
		{"/v2/models/x/infer", "s3cret", 401},
		{"/v2/models/x/infer", "Bearer s3cret", 204},
		{"/v2/health/live", "", 204},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", c.path, nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s %q: got %d, want %d", c.path, c.header, w.Code, c.want)
		}
	}
	if HTTP(ok, "") == nil {
		t.Fatal("nil handler")
	}
}

func TestGRPC(t *testing.T) {
	ic := GRPCUnary("tok")
	h := func(ctx context.Context, req any) (any, error) { return "ok", nil }
	call := func(method, hdr string) error {
		ctx := context.Background()
		if hdr != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", hdr))
		}
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
		return err
	}
	if err := call("/inference.GRPCInferenceService/ModelInfer", ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	if err := call("/inference.GRPCInferenceService/ModelInfer", "Bearer nope"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
	if err := call("/inference.GRPCInferenceService/ModelInfer", "Bearer tok"); err != nil {
		t.Errorf("good token: %v", err)
	}
	if err := call("/inference.GRPCInferenceService/ServerLive", ""); err != nil {
		t.Errorf("live is open: %v", err)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8000": true, "localhost:1": true, "[::1]:2": true,
		":8000": false, "0.0.0.0:1": false, "10.0.0.1:5": false, "bad": false} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestMetricsNeedTheTokenBeyondLoopback(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	cases := []struct {
		addr, path, header string
		want               int
	}{
		{"127.0.0.1:8002", "/metrics", "", 200},
		{"[::1]:8002", "/metrics", "", 200},
		{"0.0.0.0:8002", "/metrics", "", 401},
		{"[::]:8002", "/metrics", "Bearer wrong", 401},
		{"10.0.0.1:8000", "/metrics", "Bearer s3cret", 200},
		{"10.0.0.1:8000", "/healthz", "", 200},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", c.path, nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		w := httptest.NewRecorder()
		Metrics(ok, c.addr, "s3cret", "/healthz").ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s %s %q: got %d, want %d", c.addr, c.path, c.header, w.Code, c.want)
		}
	}
}
