package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
)

func TestNodeAuthMetricsAndShutdown(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	ctx := context.Background()
	n, err := StartNode(ctx, NodeConfig{
		Manager:  Config{Repository: root, Backend: fake.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Token: "tok",
	})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.HTTPAddr()

	// Health is open; everything else needs the token.
	if r, err := http.Get(base + "/v2/health/ready"); err != nil || r.StatusCode != 200 {
		t.Fatalf("ready without token: %v %v", r, err)
	}
	if _, err := rest.NewClient(base, rest.ClientOptions{}).Infer(ctx, vecReq("m", 1)); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("REST without token: %v", err)
	}
	withToken := &http.Client{Transport: tokenRT{"tok"}}
	if _, err := rest.NewClient(base, rest.ClientOptions{HTTPClient: withToken}).Infer(ctx, vecReq("m", 1)); err != nil {
		t.Fatalf("REST with token: %v", err)
	}
	noTok, err := grpcsvc.Dial(n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer noTok.Close()
	if _, err := noTok.Infer(ctx, vecReq("m", 1)); status.Code(err) != codes.Unauthenticated && !strings.Contains(err.Error(), "token") {
		t.Fatalf("gRPC without token: %v", err)
	}
	tok, err := grpcsvc.Dial(n.GRPCAddr(), grpc.WithPerRPCCredentials(auth.Credentials{Token: "tok"}))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if _, err := tok.Infer(ctx, vecReq("m", 1)); err != nil {
		t.Fatalf("gRPC with token: %v", err)
	}

	r, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, series := range []string{`accelpool_inference_requests_total{model="m",outcome="success"} 2`,
		"accelpool_inference_compute_seconds_bucket", "accelpool_inference_batch_size_bucket",
		"accelpool_inference_queue_seconds_bucket", "accelpool_models_loaded 1", "go_goroutines"} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %q", series)
		}
	}

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.Close(sctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/v2/health/live"); err == nil {
		t.Fatal("HTTP still serving after Close")
	}
}

type tokenRT struct{ tok string }

func (t tokenRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// TestStartNodeListenError: an address that cannot be bound is an error
// naming it, not a panic in the clean-up of the half-started node.
func TestStartNodeListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	for _, c := range []NodeConfig{
		{HTTPAddr: busy.Addr().String(), GRPCAddr: "127.0.0.1:0"},
		{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", MetricsAddr: busy.Addr().String()},
		{HTTPAddr: "127.0.0.1:99999"},
	} {
		c.Manager = Config{Repository: root, Backend: fake.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		n, err := StartNode(context.Background(), c)
		if err == nil {
			n.Close(context.Background())
			t.Fatalf("%+v: started", c)
		}
		if n != nil || !strings.Contains(err.Error(), "127.0.0.1:") {
			t.Errorf("%+v: node %v, error %v; want nil and one naming the address", c, n, err)
		}
	}
}
