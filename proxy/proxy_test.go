package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// repo writes a repository with fake models: name -> sleep in ms.
func repo(t *testing.T, models map[string]int) string {
	t.Helper()
	return repoShaped(t, models, []int64{1, 4})
}

// repoShaped is repo with the models' input and output shape.
func repoShaped(t *testing.T, models map[string]int, shape []int64) string {
	t.Helper()
	root := t.TempDir()
	for name, sleep := range models {
		dir := filepath.Join(root, name, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		m := fake.Model{
			Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: shape}},
			Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: shape}},
			Op:      "sleep", SleepMS: sleep,
		}
		if err := fake.WriteModel(filepath.Join(dir, "model.onnx"), m); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// startAgent serves a fake repository over gRPC on loopback.
func startAgent(t *testing.T, models map[string]int) *agent.Node {
	t.Helper()
	return startAgentRepo(t, repo(t, models))
}

// startAgentRepo serves the repository at dir over gRPC on loopback.
func startAgentRepo(t *testing.T, dir string) *agent.Node {
	t.Helper()
	n, err := agent.StartNode(context.Background(), agent.NodeConfig{
		Manager:  agent.Config{Repository: dir, Backend: fake.New(), Logger: quiet},
		GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func localManager(t *testing.T, models map[string]int) *agent.Manager {
	t.Helper()
	m, err := agent.NewManager(agent.Config{Repository: repo(t, models), Backend: fake.New(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 20 * time.Millisecond
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func request(model string) *oip.InferRequest {
	return &oip.InferRequest{ModelName: model, Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 4}, []float32{1, 2, 3, 4})}}}
}

func infer(t *testing.T, p *Proxy, model string, timeout time.Duration) (*oip.InferResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Infer(ctx, request(model))
}

func targetOf(r *oip.InferResponse) string { s, _ := r.Parameters[ParamTarget].(string); return s }

// waitProbed waits until every target's link has been probed.
func waitProbed(t testing.TB, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, ts := range p.Status().Targets {
			ok = ok && ts.Up
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("links not probed within 10s: %+v", p.Status().Targets)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPrefersFasterOptionAndExplainsIt(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 2})
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 40}),
		Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}},
	})
	waitProbed(t, p)
	// The first two requests explore (local, the nearer tier, first).
	// The answers are dense: compression is never offered for them.
	seen := map[string]bool{}
	for range 2 {
		r, err := infer(t, p, "m", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		name := targetOf(r)
		if r.Parameters[ParamCompressed] == true {
			name += " compressed"
		}
		seen[name] = true
	}
	if !seen[LocalName] || !seen["edge"] {
		t.Fatalf("exploration ran on %v, want both options once", seen)
	}
	for range 10 {
		r, err := infer(t, p, "m", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if targetOf(r) != "edge" || r.Parameters[ParamCompressed] != nil {
			t.Fatalf("ran on %q (compressed: %v); a 2 ms remote over loopback beats a 40 ms device, and dense answers go plain", targetOf(r), r.Parameters[ParamCompressed])
		}
		if _, ok := r.Parameters[ParamPredicted].(int64); !ok {
			t.Fatalf("no prediction in response parameters: %v", r.Parameters)
		}
		if got := r.Outputs[0].Float32s(); len(got) != 4 || got[3] != 4 {
			t.Fatalf("output %v", got)
		}
	}
	st := p.Status()
	if st.Local["m"].Samples < 1 || st.Targets[0].Models["m"].Samples < 10 {
		t.Errorf("status does not count the runs: %+v", st)
	}
}

// TestRefreshesAnUnusedOption: a remote option slower than the device is
// left alone, but once it has gone RefreshAfter without an answer one
// request explores it again (its far end's load may have changed), and
// the requests after it go back to the faster option.
func TestRefreshesAnUnusedOption(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 40})
	const refresh = 400 * time.Millisecond
	p := newProxy(t, Config{
		Local:        localManager(t, map[string]int{"m": 5}),
		Targets:      []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}},
		RefreshAfter: refresh,
	})
	waitProbed(t, p)
	where := func() string {
		t.Helper()
		r, err := infer(t, p, "m", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return targetOf(r)
	}
	seen := map[string]bool{where(): true, where(): true} // both explored
	if !seen[LocalName] || !seen["edge"] {
		t.Fatalf("exploration ran on %v, want both options", seen)
	}
	// The edge last answered during exploration, before start: until its
	// period is nearly over only the device runs requests; then wait it out.
	start := time.Now()
	for time.Since(start) < refresh-150*time.Millisecond {
		if got := where(); got != LocalName {
			t.Fatalf("a 40 ms remote was chosen over a 5 ms device before its refresh was due (%v in)", time.Since(start))
		}
	}
	time.Sleep(time.Until(start.Add(refresh + 50*time.Millisecond)))
	var runs []string
	for range 3 {
		runs = append(runs, where())
	}
	if runs[0] != "edge" || runs[1] != LocalName || runs[2] != LocalName {
		t.Fatalf("after %v unused: requests ran on %v, want one refresh of edge and then local", refresh, runs)
	}
}

func TestFallsBackWhenRemoteDies(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 1})
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 20}),
		Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}},
	})
	waitProbed(t, p)
	for range 4 {
		if _, err := infer(t, p, "m", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	remote.Close(context.Background())
	for i := range 5 {
		r, err := infer(t, p, "m", 2*time.Second)
		if err != nil {
			t.Fatalf("request %d after the remote died: %v", i, err)
		}
		if targetOf(r) != LocalName {
			t.Fatalf("request %d answered by %q", i, targetOf(r))
		}
	}
}

func TestHangingRemoteLeavesTimeForLocal(t *testing.T) {
	// The remote looks fast at first, then takes 5 s per request: the
	// attempt must give up early enough for the local run to fit the
	// 600 ms deadline.
	remote := startAgent(t, map[string]int{"m": 1, "slow": 5000})
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 30}),
		Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge", Models: map[string]string{"m": "m"}}},
	})
	waitProbed(t, p)
	for range 4 {
		if _, err := infer(t, p, "m", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Now the same model name maps to the slow model on the remote.
	p.mu.Lock()
	for _, tg := range p.targets {
		tg.mu.Lock()
		tg.spec.Models = map[string]string{"m": "slow"}
		tg.mu.Unlock()
	}
	p.mu.Unlock()
	start := time.Now()
	r, err := infer(t, p, "m", 600*time.Millisecond)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if targetOf(r) != LocalName || r.Parameters[ParamAttempts] != int64(2) {
		t.Fatalf("answered by %q after %v attempts, want local after 2", targetOf(r), r.Parameters[ParamAttempts])
	}
}

func TestErrors(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 1})
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 1}),
		Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}},
	})
	waitProbed(t, p)

	_, err := infer(t, p, "nosuch", time.Second)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown model: %v", err)
	}
	bad := request("m")
	bad.Inputs[0].Tensor = tensor.FromFloat32("x", []int64{2, 2}, []float32{1, 2, 3, 4})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := p.Infer(ctx, bad); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "shape") {
		t.Errorf("wrong shape: %v, want ErrInvalid naming the shape", err)
	}
	if _, err := New(Config{Mode: "fastest"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad mode: %v", err)
	}
	if _, err := New(Config{Targets: []Target{{Name: "local", Addr: "x:1"}}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("reserved target name: %v", err)
	}
}

func TestUnreachableAndNoLocal(t *testing.T) {
	// Nothing listens there: the request fails fast and says why.
	p := newProxy(t, Config{Targets: []Target{{Name: "edge", Addr: "127.0.0.1:1", Tier: "edge"}}})
	start := time.Now()
	_, err := infer(t, p, "m", 2*time.Second)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "edge") {
		t.Fatalf("unreachable target: %v, want ErrUnavailable naming it", err)
	}
	if d := time.Since(start); d > 2100*time.Millisecond {
		t.Fatalf("took %v, past the 2s deadline", d)
	}
}

func TestModeLocalAndRemote(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 1})
	local := localManager(t, map[string]int{"m": 1})
	targets := []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}}
	for mode, want := range map[string]string{ModeLocal: LocalName, ModeRemote: "edge"} {
		p := newProxy(t, Config{Local: local, Targets: targets, Mode: mode})
		for range 3 {
			r, err := infer(t, p, "m", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if targetOf(r) != want {
				t.Fatalf("mode %s ran on %q", mode, targetOf(r))
			}
		}
	}
}

func TestDiscoveryAddsAndRemovesTargets(t *testing.T) {
	remote := startAgent(t, map[string]int{"served-m": 1})
	var mu sync.Mutex
	var targets []Target
	discovered := func(ts []Target) {
		mu.Lock()
		targets = ts
		mu.Unlock()
	}
	p := newProxy(t, Config{
		Discover: func(context.Context) ([]Target, error) {
			mu.Lock()
			defer mu.Unlock()
			return targets, nil
		},
		DiscoverInterval: 10 * time.Millisecond,
	})
	if _, err := infer(t, p, "app", time.Second); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("before discovery: %v", err)
	}
	discovered([]Target{{Name: "n1", Addr: remote.GRPCAddr(), Tier: "edge", Models: map[string]string{"app": "served-m"}}})
	var r *oip.InferResponse
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if r, err = infer(t, p, "app", 5*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after discovery: %v", err)
	}
	if targetOf(r) != "n1" || r.ModelName != "app" {
		t.Fatalf("answered by %q as %q", targetOf(r), r.ModelName)
	}
	discovered(nil)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err = infer(t, p, "app", time.Second); errors.Is(err, errdefs.ErrNotFound) {
			return
		}
	}
	t.Fatalf("after the target left: %v", err)
}

// TestDiscoveredNodeNamedLocal: a discovered node called what the device
// calls itself ("local", the agent of `accelpool up`) or like a fixed
// target is kept, under its name and address.
func TestDiscoveredNodeNamedLocal(t *testing.T) {
	remote := startAgent(t, map[string]int{"served-m": 1})
	p := newProxy(t, Config{})
	addr := remote.GRPCAddr()
	p.setTargets([]Target{{Name: "edge", Addr: addr, Models: map[string]string{"other": "served-m"}}},
		[]Target{{Name: LocalName, Addr: addr, Tier: "edge", Models: map[string]string{"app": "served-m"}}})
	r, err := infer(t, p, "app", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := LocalName + "@" + addr; targetOf(r) != want {
		t.Fatalf("answered by %q, want %q", targetOf(r), want)
	}
	p.setTargets([]Target{{Name: "edge", Addr: addr, Models: map[string]string{"other": "served-m"}}},
		[]Target{{Name: "edge", Addr: addr, Models: map[string]string{"app": "served-m"}}})
	if r, err = infer(t, p, "app", 5*time.Second); err != nil || targetOf(r) != "edge@"+addr {
		t.Fatalf("a discovered node named like a fixed target: answered by %q, %v", targetOf(r), err)
	}
}
