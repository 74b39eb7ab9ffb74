package gateway

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/tensor"
)

// testNode is a real agent serving one instance of an application, a fake
// model under the served name "inst-<id>", on a loopback port.
type testNode struct {
	*agent.Node
	backend *fake.Backend
	path    string
	reg     *prometheus.Registry
	ep      Endpoint
}

var vec = fake.Model{
	Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 4}}},
	Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 4}}}}

func sleepy(ms int) fake.Model {
	m := vec
	m.Op, m.SleepMS = "sleep", ms
	return m
}

func startNode(t *testing.T, app, id string, m fake.Model) *testNode {
	t.Helper()
	root := t.TempDir()
	served := "inst-" + id
	path := filepath.Join(root, served, "1", "model.onnx")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fake.WriteModel(path, m); err != nil {
		t.Fatal(err)
	}
	b, reg := fake.New(), prometheus.NewRegistry()
	n, err := agent.StartNode(context.Background(), agent.NodeConfig{
		Manager:  agent.Config{Repository: root, Backend: b, Registry: reg, Logger: slog.New(slog.DiscardHandler)},
		GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	return &testNode{Node: n, backend: b, path: path, reg: reg, ep: Endpoint{InstanceID: id, App: app, Node: "node-" + id,
		Tier: "edge", Site: "lab", GRPCAddr: n.GRPCAddr(), ServedName: served, Ready: true}}
}

// cluster starts one node per ID, all serving app "app".
func cluster(t *testing.T, models map[string]fake.Model) (map[string]*testNode, *StaticResolver) {
	t.Helper()
	nodes := map[string]*testNode{}
	r := &StaticResolver{}
	for id, m := range models {
		nodes[id] = startNode(t, "app", id, m)
		r.Add(nodes[id].ep)
	}
	return nodes, r
}

func (n *testNode) runs() int { return n.backend.Stats(n.path).Runs }

// agentRequests sums the node's accelpool_inference_requests_total.
func (n *testNode) agentRequests(t *testing.T) int {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "accelpool_inference_requests_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return int(sum)
}

// hammer sends requests from workers goroutines until total have been sent.
func hammer(t *testing.T, g *Gateway, workers, total int) {
	t.Helper()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for sent.Add(1) <= int64(total) {
				if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSpreadByLeastOutstanding(t *testing.T) {
	t.Run("equal instances share evenly", func(t *testing.T) {
		nodes, r := cluster(t, map[string]fake.Model{"a": sleepy(5), "b": sleepy(5), "c": sleepy(5)})
		g, _ := newGateway(t, r, nil)
		const total = 90
		hammer(t, g, 6, total)
		t.Logf("runs: a %d, b %d, c %d", nodes["a"].runs(), nodes["b"].runs(), nodes["c"].runs())
		for id, n := range nodes {
			// A fair share is 30; least-outstanding keeps each instance
			// near it, round-robin on ties or not.
			if got := n.runs(); got < total/6 {
				t.Errorf("node %s ran %d of %d", id, got, total)
			}
		}
	})
	t.Run("a slow instance gets fewer", func(t *testing.T) {
		nodes, r := cluster(t, map[string]fake.Model{"fast1": sleepy(2), "fast2": sleepy(2), "slow": sleepy(40)})
		g, _ := newGateway(t, r, nil)
		hammer(t, g, 4, 100)
		slow, f1, f2 := nodes["slow"].runs(), nodes["fast1"].runs(), nodes["fast2"].runs()
		t.Logf("runs: slow %d, fast %d and %d", slow, f1, f2)
		if slow >= f1 || slow >= f2 {
			t.Errorf("slow instance ran %d, fast ones %d and %d", slow, f1, f2)
		}
		if slow+f1+f2 != 100 {
			t.Errorf("%d runs for 100 requests", slow+f1+f2)
		}
		if g.Outstanding("slow") != 0 || g.Outstanding("fast1") != 0 {
			t.Error("requests still counted in flight")
		}
	})
}

func TestNodeKilledDuringStream(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": sleepy(1), "b": sleepy(1), "c": sleepy(1)})
	g, _ := newGateway(t, r, func(c *Config) { c.Cooldown = time.Minute })
	const workers = 4
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					return
				}
				ok.Add(1)
			}
		})
	}
	waitFor := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for ok.Load() < n && failed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests done", ok.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(60)
	retriesBefore := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := nodes["b"].Close(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	runsB := nodes["b"].runs()
	killedAt := ok.Load()
	waitFor(killedAt + 200)
	close(stop)
	wg.Wait()

	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	if retriesBefore != 0 {
		t.Errorf("%v retries before the kill", retriesBefore)
	}
	// Only requests that picked b before the first failure set it cooling
	// are retried: at most one per worker.
	retries := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app"))
	t.Logf("%d requests, %d after the kill; %v retries; runs a %d, b %d, c %d", ok.Load(), ok.Load()-killedAt, retries,
		nodes["a"].runs(), runsB, nodes["c"].runs())
	if retries < 1 || retries > workers {
		t.Errorf("%v retries after the kill, want 1 to %d: the dead instance is not avoided, or never tried", retries, workers)
	}
	if nodes["b"].runs() != runsB || runsB == 0 {
		t.Errorf("b ran %d before the kill and %d in all", runsB, nodes["b"].runs())
	}
	if g.conns.addrs()[nodes["b"].ep.GRPCAddr] {
		t.Error("connection to the dead node still cached")
	}
	if a, c := nodes["a"].runs(), nodes["c"].runs(); a+c+runsB < int(ok.Load()) {
		t.Errorf("runs a=%d b=%d c=%d for %d successes", a, runsB, c, ok.Load())
	}
}

func TestNotReadyEndpointGetsNothing(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec, "b": vec})
	r.SetReady("b", false)
	g, _ := newGateway(t, r, nil)
	hammer(t, g, 2, 20)
	if a, b := nodes["a"].runs(), nodes["b"].runs(); a != 20 || b != 0 {
		t.Errorf("ready ran %d, not ready ran %d", a, b)
	}
	// And back once ready.
	r.SetReady("b", true)
	hammer(t, g, 1, 4)
	if b := nodes["b"].runs(); b == 0 {
		t.Error("instance ready again gets nothing")
	}
}

func TestUnknownAndUnavailableApplications(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec, "b": vec})
	for _, n := range nodes {
		ep := n.ep
		ep.App, ep.Ready = "down", false
		ep.InstanceID = "down-" + ep.InstanceID
		r.Add(ep)
	}
	r.Set("empty", nil)
	g, _ := newGateway(t, r, nil)
	ctx := context.Background()

	if _, err := g.Infer(ctx, smallReq("nope")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown app: %v, want ErrNotFound", err)
	}
	_, err := g.Infer(ctx, smallReq("down"))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), `application "down" has no ready instance (2 placed, none ready)`) {
		t.Errorf("app with no ready instance: %v", err)
	}
	if _, err := g.Infer(ctx, smallReq("empty")); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "(0 placed") {
		t.Errorf("app with no instance: %v", err)
	}
	if _, err := g.Infer(ctx, smallReq("")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("no model name: %v", err)
	}
	if n := nodes["a"].runs() + nodes["b"].runs(); n != 0 {
		t.Errorf("%d runs", n)
	}
}

func TestInvalidNotRetried(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec, "b": vec, "c": vec})
	g, _ := newGateway(t, r, nil)
	bad := &oip.InferRequest{ModelName: "app", Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{4}, []float32{1, 2, 3, 4})}}}
	_, err := g.Infer(context.Background(), bad)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad shape: %v, want ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), `application "app"`) || !strings.Contains(err.Error(), "shape") {
		t.Errorf("error %q should name the application and the problem", err)
	}
	attempts := 0
	for _, n := range nodes {
		attempts += n.agentRequests(t)
	}
	if attempts != 1 {
		t.Errorf("%d agents saw the request, want 1", attempts)
	}
	if n := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app")); n != 0 {
		t.Errorf("%v retries", n)
	}
	if n := testutil.ToFloat64(g.metrics.requests.WithLabelValues("app", "invalid")); n != 1 {
		t.Errorf("requests_total{outcome=invalid} = %v", n)
	}
}

func TestDeadlineRespected(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": sleepy(3000), "b": sleepy(3000)})
	g, _ := newGateway(t, r, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := g.Infer(ctx, smallReq("app"))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v with a 100ms deadline", took)
	}
	if !errors.Is(err, errdefs.ErrDeadline) {
		t.Fatalf("err %v, want ErrDeadline", err)
	}
	if n := testutil.ToFloat64(g.metrics.retries.WithLabelValues("app")); n != 0 {
		t.Errorf("%v retries after a deadline", n)
	}
	if n := testutil.ToFloat64(g.metrics.requests.WithLabelValues("app", "deadline")); n != 1 {
		t.Errorf("requests_total{outcome=deadline} = %v", n)
	}
	if nodes["a"].runs()+nodes["b"].runs() != 0 {
		t.Error("a run completed")
	}
}

func TestTensorBytesIntact(t *testing.T) {
	raw := fake.Model{
		Inputs:  []fake.IO{{Name: "img", DataType: "UINT8", Shape: []int64{-1, 3, 64, 64}}, {Name: "k", DataType: "FP32", Shape: []int64{-1}}},
		Outputs: []fake.IO{{Name: "img_out", DataType: "UINT8", Shape: []int64{-1, 3, 64, 64}}, {Name: "k_out", DataType: "FP32", Shape: []int64{-1}}}}
	_, r := cluster(t, map[string]fake.Model{"a": raw, "b": raw})
	g, _ := newGateway(t, r, nil)
	img := make([]byte, 4*3*64*64)
	for i := range img {
		img[i] = byte(rand.N(256))
	}
	req := &oip.InferRequest{ModelName: "app", ModelVersion: AppVersion, ID: "req-7", Inputs: []oip.InferInput{
		{Tensor: tensor.Tensor{Name: "img", DataType: tensor.Uint8, Shape: []int64{4, 3, 64, 64}, Data: img}},
		{Tensor: tensor.FromFloat32("k", []int64{2}, []float32{-1.5, 3e38})}},
		Outputs: []oip.RequestedOutput{{Name: "k_out"}, {Name: "img_out"}}}
	want := bytes.Clone(img)
	for range 2 { // both instances
		resp, err := g.Infer(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ModelName != "app" || resp.ModelVersion != AppVersion || resp.ID != "req-7" {
			t.Errorf("response header %s %s %s", resp.ModelName, resp.ModelVersion, resp.ID)
		}
		if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "k_out" || resp.Outputs[1].Name != "img_out" {
			t.Fatalf("outputs %v", resp.Outputs)
		}
		if !bytes.Equal(resp.Outputs[1].Data, want) {
			t.Error("image bytes changed on the way")
		}
		if k := resp.Outputs[0].Float32s(); k[0] != -1.5 || k[1] != 3e38 {
			t.Errorf("k_out %v", k)
		}
	}
	if req.ModelName != "app" || req.ModelVersion != AppVersion || !bytes.Equal(img, want) {
		t.Error("the caller's request changed")
	}
	req.ModelVersion = "2"
	if _, err := g.Infer(context.Background(), req); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("version 2: %v, want ErrNotFound", err)
	}
	req.ModelVersion = "latest"
	if _, err := g.Infer(context.Background(), req); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("version latest: %v, want ErrInvalid", err)
	}
}

func TestMetadataIndexAndRefusals(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec, "b": vec})
	down := nodes["a"].ep
	down.App, down.InstanceID, down.Ready = "down", "down-1", false
	r.Add(down)
	g, _ := newGateway(t, r, func(c *Config) { c.Version = "9.9" })
	ctx := context.Background()

	md, err := g.ModelMetadata(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if md.Name != "app" || len(md.Versions) != 1 || md.Versions[0] != AppVersion || len(md.Inputs) != 1 || md.Inputs[0].Name != "x" ||
		md.Inputs[0].DataType != tensor.FP32 || len(md.Outputs) != 1 {
		t.Errorf("metadata %+v", md)
	}
	if _, err := g.ModelMetadata(ctx, "app", "3"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("metadata of version 3: %v", err)
	}
	if _, err := g.ModelMetadata(ctx, "down", ""); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("metadata of down: %v", err)
	}
	if _, err := g.ModelMetadata(ctx, "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("metadata of nope: %v", err)
	}

	for app, want := range map[string]bool{"app": true, "down": false} {
		if ready, err := g.ModelReady(ctx, app, ""); err != nil || ready != want {
			t.Errorf("ModelReady(%s) = %v, %v", app, ready, err)
		}
	}
	if _, err := g.ModelReady(ctx, "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ModelReady(nope): %v", err)
	}

	idx, err := g.RepositoryIndex(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 2 || idx[0] != (oip.ModelIndexEntry{Name: "app", Version: AppVersion, State: "READY"}) ||
		idx[1].Name != "down" || idx[1].State != "UNAVAILABLE" || idx[1].Reason != "no ready instance (1 placed)" {
		t.Errorf("index %+v", idx)
	}
	if idx, _ := g.RepositoryIndex(ctx, true); len(idx) != 1 || idx[0].Name != "app" {
		t.Errorf("ready index %+v", idx)
	}

	for _, err := range []error{g.LoadModel(ctx, "app"), g.UnloadModel(ctx, "app")} {
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "`accelpool deploy` / `accelpool delete`") {
			t.Errorf("load/unload: %v", err)
		}
	}
	if sm := g.ServerMetadata(); sm.Name != "accelpool-gateway" || sm.Version != "9.9" {
		t.Errorf("server metadata %+v", sm)
	}
	if !g.Live() || !g.Ready() {
		t.Error("not live and ready")
	}

	_ = g.Close()
	if g.Ready() {
		t.Error("ready after Close")
	}
	if _, err := g.Infer(ctx, smallReq("app")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("infer after Close: %v", err)
	}
	if len(g.conns.addrs()) != 0 {
		t.Error("connections left after Close")
	}
}

func TestMetricsAndPrune(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec, "b": vec})
	g, reg := newGateway(t, r, nil)
	ctx := context.Background()
	hammer(t, g, 2, 4) // both instances get a connection
	for _, name := range []string{"no-such-app", "another"} {
		_, _ = g.Infer(ctx, smallReq(name))
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP accelpool_gateway_requests_total Inference requests through the gateway by application and outcome.
# TYPE accelpool_gateway_requests_total counter
accelpool_gateway_requests_total{app="_unknown",outcome="not_found"} 2
accelpool_gateway_requests_total{app="app",outcome="success"} 4
# HELP accelpool_gateway_outstanding Inference requests in flight through the gateway by application.
# TYPE accelpool_gateway_outstanding gauge
accelpool_gateway_outstanding{app="app"} 0
`), "accelpool_gateway_requests_total", "accelpool_gateway_outstanding"); err != nil {
		t.Error(err)
	}

	addrs := g.conns.addrs()
	if len(addrs) != 2 {
		t.Fatalf("cached connections %v", addrs)
	}
	// An instance goes away: its connection is closed on Prune.
	r.Remove("b")
	g.Prune()
	if addrs := g.conns.addrs(); len(addrs) != 1 || !addrs[nodes["a"].ep.GRPCAddr] {
		t.Errorf("after removing b: %v", addrs)
	}
	if _, err := g.Infer(ctx, smallReq("app")); err != nil {
		t.Fatal(err)
	}
	// The application goes away: its series too.
	r.Delete("app")
	g.Prune()
	if n := testutil.CollectAndCount(g.metrics.requests); n != 1 {
		t.Errorf("%d request series left, want the _unknown one", n)
	}
	if len(g.conns.addrs()) != 0 {
		t.Error("connections left")
	}
}

func TestPruneLoopRuns(t *testing.T) {
	nodes, r := cluster(t, map[string]fake.Model{"a": vec})
	g, _ := newGateway(t, r, func(c *Config) { c.PruneInterval = 5 * time.Millisecond })
	if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
		t.Fatal(err)
	}
	r.Remove("a")
	deadline := time.Now().Add(5 * time.Second)
	for g.conns.addrs()[nodes["a"].ep.GRPCAddr] {
		if time.Now().After(deadline) {
			t.Fatal("connection not pruned")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestServedOverGRPC(t *testing.T) {
	// The gateway is an oip.Service: the same front door as an agent's.
	nodes, r := cluster(t, map[string]fake.Model{"a": vec})
	g, _ := newGateway(t, r, nil)
	gs, err := grpcsvc.New(g, grpcsvc.Options{}).NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	c, err := grpcsvc.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Infer(context.Background(), smallReq("app"))
	if err != nil || resp.ModelName != "app" || nodes["a"].runs() != 1 {
		t.Fatalf("infer through a served gateway: %v %+v", err, resp)
	}
	if _, err := c.Infer(context.Background(), smallReq("nope")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown app over the wire: %v", err)
	}
	if sm := c.ServerMetadata(); sm.Name != ServerName {
		t.Errorf("server metadata over the wire: %+v", sm)
	}
}
