package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/tensor"
)

// stubAgent is a fake agent: an oip.Service whose Infer fails with a
// scripted error (or echoes its inputs), served over real gRPC on loopback,
// counting the calls that reach it.
type stubAgent struct {
	id    string
	err   atomic.Pointer[error]
	delay time.Duration
	calls atomic.Int64
	names chan string // model names asked for, when set
}

func (s *stubAgent) fail(err error) { s.err.Store(&err) }

func (s *stubAgent) ServerMetadata() oip.ServerMetadata { return oip.ServerMetadata{Name: "stub"} }
func (s *stubAgent) Live() bool                         { return true }
func (s *stubAgent) Ready() bool                        { return true }
func (s *stubAgent) ModelMetadata(context.Context, string, string) (oip.ModelMetadata, error) {
	return oip.ModelMetadata{}, errdefs.ErrNotFound
}
func (s *stubAgent) ModelReady(context.Context, string, string) (bool, error) { return true, nil }
func (s *stubAgent) RepositoryIndex(context.Context, bool) ([]oip.ModelIndexEntry, error) {
	return nil, nil
}
func (s *stubAgent) LoadModel(context.Context, string) error   { return nil }
func (s *stubAgent) UnloadModel(context.Context, string) error { return nil }

func (s *stubAgent) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	s.calls.Add(1)
	if s.names != nil {
		s.names <- req.ModelName
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p := s.err.Load(); p != nil && *p != nil {
		return nil, *p
	}
	out := make([]tensor.Tensor, len(req.Inputs))
	for i, in := range req.Inputs {
		out[i] = in.Tensor
	}
	return &oip.InferResponse{ModelName: req.ModelName, ModelVersion: "7", ID: req.ID, Outputs: out}, nil
}

// startStubs serves n stub agents ("a", "b", ...) as instances of app "app".
func startStubs(t *testing.T, n int) ([]*stubAgent, *StaticResolver) {
	t.Helper()
	return startStubsWith(t, n, grpcsvc.Options{})
}

// startStubsWith starts n stub agents whose gRPC servers take opts.
func startStubsWith(t *testing.T, n int, opts grpcsvc.Options) ([]*stubAgent, *StaticResolver) {
	t.Helper()
	r := &StaticResolver{}
	var stubs []*stubAgent
	for i := range n {
		s := &stubAgent{id: string(rune('a' + i))}
		gs, err := grpcsvc.New(s, opts).NewGRPCServer()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = gs.Serve(ln) }()
		t.Cleanup(gs.Stop)
		stubs = append(stubs, s)
		r.Add(Endpoint{InstanceID: s.id, App: "app", Node: "node-" + s.id, GRPCAddr: ln.Addr().String(), ServedName: "served-" + s.id, Ready: true})
	}
	return stubs, r
}

func newGateway(t *testing.T, r Resolver, edit func(*Config)) (*Gateway, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{Resolver: r, Registry: reg, Logger: slog.New(slog.DiscardHandler), PruneInterval: -1}
	if edit != nil {
		edit(&cfg)
	}
	g := New(cfg)
	t.Cleanup(func() { _ = g.Close() })
	return g, reg
}

func smallReq(app string) *oip.InferRequest {
	return &oip.InferRequest{ModelName: app, ID: "r", Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 4}, []float32{1, 2, 3, 4})}}}
}

func totalCalls(stubs []*stubAgent) int {
	n := 0
	for _, s := range stubs {
		n += int(s.calls.Load())
	}
	return n
}

func TestRetryClassification(t *testing.T) {
	for _, tc := range []struct {
		err       error
		wantCalls int
	}{
		{errdefs.New(errdefs.ErrUnavailable, "model is unloading"), 3},
		{errdefs.New(errdefs.ErrNotFound, `unknown model "served-a"`), 3},
		{errdefs.New(errdefs.ErrResourceExhausted, "queue full"), 3},
		{errdefs.Invalid("input x has shape [4], model expects [-1 4]"), 1},
		{errdefs.New(errdefs.ErrDeadline, "deadline exceeded in queue"), 1},
		{errdefs.New(errdefs.ErrCanceled, "canceled"), 1},
		{errdefs.New(errdefs.ErrInternal, "model failed"), 1},
		{errors.New("model panicked"), 1},
		{errdefs.New(errdefs.ErrTooLarge, "grpc: received message larger than max (5 vs. 4)"), 1},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			stubs, r := startStubs(t, 4)
			for _, s := range stubs {
				s.fail(tc.err)
			}
			g, _ := newGateway(t, r, nil)
			_, err := g.Infer(context.Background(), smallReq("app"))
			if err == nil {
				t.Fatal("no error")
			}
			if got := totalCalls(stubs); got != tc.wantCalls {
				t.Errorf("%d attempts, want %d (err: %v)", got, tc.wantCalls, err)
			}
			if want := errdefs.GRPCCode(tc.err); errdefs.GRPCCode(err) != want {
				t.Errorf("error %v: code %v, want %v", err, errdefs.GRPCCode(err), want)
			}
			if retries := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app")); int(retries) != tc.wantCalls-1 {
				t.Errorf("retries_total %v, want %d", retries, tc.wantCalls-1)
			}
		})
	}
}

func TestRetrySucceedsElsewhere(t *testing.T) {
	stubs, r := startStubs(t, 3)
	stubs[0].fail(errdefs.New(errdefs.ErrUnavailable, "model is loading"))
	g, _ := newGateway(t, r, func(c *Config) { c.Cooldown = -1 })
	for i := range 6 {
		resp, err := g.Infer(context.Background(), smallReq("app"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.ModelName != "app" || resp.ModelVersion != AppVersion {
			t.Errorf("response names %s version %s", resp.ModelName, resp.ModelVersion)
		}
	}
	// Without cooldown the failing instance is tried again and again.
	if n := stubs[0].calls.Load(); n < 2 {
		t.Errorf("failing instance tried %d times with cooldown off", n)
	}
	if got, want := totalCalls(stubs), 6+int(stubs[0].calls.Load()); got != want {
		t.Errorf("%d calls, want %d: one retry per failure", got, want)
	}
}

func TestMaxAttemptsAndLastError(t *testing.T) {
	stubs, r := startStubs(t, 4)
	for _, s := range stubs {
		s.fail(errdefs.New(errdefs.ErrUnavailable, "model is unloading"))
	}
	g, _ := newGateway(t, r, func(c *Config) { c.MaxAttempts = 2 })
	_, err := g.Infer(context.Background(), smallReq("app"))
	if !errors.Is(err, errdefs.ErrUnavailable) || totalCalls(stubs) != 2 {
		t.Fatalf("err %v after %d calls; want ErrUnavailable after 2", err, totalCalls(stubs))
	}
	for _, want := range []string{`application "app"`, "2 attempts", "model is unloading"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestCooldownAndFailOpen(t *testing.T) {
	stubs, r := startStubs(t, 3)
	stubs[0].fail(errdefs.New(errdefs.ErrUnavailable, "not ready"))
	g, _ := newGateway(t, r, func(c *Config) { c.Cooldown = time.Minute })
	now := time.Now()
	g.now = func() time.Time { return now }
	for i := range 10 {
		if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if n := stubs[0].calls.Load(); n != 1 {
		t.Errorf("failed instance tried %d times within its cooldown, want 1", n)
	}
	// Once the cooldown is over it is tried again.
	now = now.Add(2 * time.Minute)
	for range 3 {
		_, _ = g.Infer(context.Background(), smallReq("app"))
	}
	if n := stubs[0].calls.Load(); n != 2 {
		t.Errorf("after the cooldown: tried %d times in all, want 2", n)
	}

	// When every instance is cooling down, they are tried anyway.
	for _, s := range stubs {
		s.fail(errdefs.New(errdefs.ErrUnavailable, "not ready"))
	}
	_, _ = g.Infer(context.Background(), smallReq("app"))
	before := totalCalls(stubs)
	for _, s := range stubs {
		s.fail(nil)
	}
	if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
		t.Fatalf("all cooling down: %v", err)
	}
	if totalCalls(stubs) != before+1 {
		t.Errorf("all cooling down: %d calls, want 1", totalCalls(stubs)-before)
	}
	// And a success ends the cooldown of the instance that served it.
	g.cmu.RLock()
	n := len(g.cooling)
	g.cmu.RUnlock()
	if n != 2 {
		t.Errorf("%d instances cooling down after one success, want 2", n)
	}
}

func TestDeadlineAcrossRetries(t *testing.T) {
	stubs, r := startStubs(t, 6)
	for _, s := range stubs {
		s.delay = 40 * time.Millisecond
		s.fail(errdefs.New(errdefs.ErrUnavailable, "slow and failing"))
	}
	g, _ := newGateway(t, r, func(c *Config) { c.MaxAttempts = 6 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := g.Infer(ctx, smallReq("app"))
	took := time.Since(start)
	if !errors.Is(err, errdefs.ErrDeadline) {
		t.Fatalf("err %v, want ErrDeadline", err)
	}
	if took > time.Second {
		t.Errorf("took %v with a 100ms deadline", took)
	}
	if n := totalCalls(stubs); n < 2 || n > 3 {
		t.Errorf("%d attempts of 40ms within 100ms", n)
	}
}

func TestForwardRequestSharesTensorsAndKeepsCaller(t *testing.T) {
	req := &oip.InferRequest{ModelName: "app", ModelVersion: "1", ID: "r", Parameters: oip.Parameters{"p": int64(1)},
		Inputs:  []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 4}, []float32{1, 2, 3, 4})}},
		Outputs: []oip.RequestedOutput{{Name: "y", Binary: true}}}
	fwd := forwardRequest(req, "served")
	if fwd.ModelName != "served" || fwd.ModelVersion != "" || fwd.ID != "r" || fwd.Parameters["p"] != int64(1) || len(fwd.Outputs) != 1 {
		t.Errorf("forwarded header %+v", fwd)
	}
	if &fwd.Inputs[0].Data[0] != &req.Inputs[0].Data[0] {
		t.Error("tensor data was copied")
	}
	if req.ModelName != "app" || req.ModelVersion != "1" {
		t.Errorf("caller's request changed: %s %s", req.ModelName, req.ModelVersion)
	}

	// Through the wire: the instance sees its served name, every attempt.
	stubs, r := startStubs(t, 2)
	stubs[0].fail(errdefs.New(errdefs.ErrUnavailable, "x"))
	for _, s := range stubs {
		s.names = make(chan string, 4)
	}
	g, _ := newGateway(t, r, nil)
	if _, err := g.Infer(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if a, b := <-stubs[0].names, <-stubs[1].names; a != "served-a" || b != "served-b" {
		t.Errorf("served names %q, %q", a, b)
	}
	if req.ModelName != "app" {
		t.Errorf("caller's request changed: %s", req.ModelName)
	}
}

func TestMessageTooLargeNotRetried(t *testing.T) {
	stubs, r := startStubs(t, 3)
	g, _ := newGateway(t, r, func(c *Config) {
		c.DialOptions = []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(1024))}
	})
	req := &oip.InferRequest{ModelName: "app", Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 1024}, make([]float32, 1024))}}}
	_, err := g.Infer(context.Background(), req)
	if !errors.Is(err, errdefs.ErrTooLarge) || errdefs.HTTPStatus(err) != 413 {
		t.Fatalf("err %v, want ErrTooLarge (413)", err)
	}
	if n := totalCalls(stubs); n != 0 {
		t.Errorf("%d calls reached agents", n)
	}
	if n := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app")); n != 0 {
		t.Errorf("%v retries", n)
	}
}

func TestConnectionsDroppedWhenBroken(t *testing.T) {
	// An address nobody listens on: the attempt fails, the connection is
	// dropped rather than cached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	stubs, r := startStubs(t, 1)
	r.Add(Endpoint{InstanceID: "0dead", App: "app", GRPCAddr: dead, ServedName: "x", Ready: true})
	g, _ := newGateway(t, r, nil)
	for i := range 3 {
		if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	addrs := g.conns.addrs()
	if addrs[dead] || len(addrs) != 1 {
		t.Errorf("cached connections %v; want only the live one", addrs)
	}
	if stubs[0].calls.Load() != 3 {
		t.Errorf("live instance served %d of 3", stubs[0].calls.Load())
	}
	if n := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app")); n != 1 {
		t.Errorf("%v retries, want 1 (then the dead instance cools down)", n)
	}
}

// TestOversizedHopIsTooLarge: a request whose tensors exceed the agents'
// gRPC message limit is 413 (ErrTooLarge), tried once, and leaves the
// instance in rotation: it is the request's size, not the instance.
func TestOversizedHopIsTooLarge(t *testing.T) {
	stubs, r := startStubsWith(t, 2, grpcsvc.Options{MaxRecvMsgSize: 4 << 10})
	g, _ := newGateway(t, r, func(c *Config) { c.Cooldown = time.Minute })
	big := &oip.InferRequest{ModelName: "app", ID: "big", Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 2048}, make([]float32, 2048))}}}
	_, err := g.Infer(context.Background(), big)
	if !errors.Is(err, errdefs.ErrTooLarge) || errdefs.HTTPStatus(err) != 413 || !strings.Contains(err.Error(), "larger than max") {
		t.Fatalf("oversized request: %v (HTTP %d), want ErrTooLarge, 413", err, errdefs.HTTPStatus(err))
	}
	if strings.Contains(err.Error(), "attempts") {
		t.Errorf("an oversized request was retried: %v", err)
	}
	for range 4 {
		if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
			t.Fatalf("small request after the oversized one: %v", err)
		}
	}
	for _, s := range stubs {
		if s.calls.Load() == 0 {
			t.Errorf("instance %s got no request after the oversized one: it was taken out of rotation", s.id)
		}
	}
}
