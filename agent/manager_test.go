package agent

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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

type repoModel struct {
	model  fake.Model
	config string
}

func writeRepo(t *testing.T, models map[string]repoModel) string {
	t.Helper()
	root := t.TempDir()
	for name, m := range models {
		path := filepath.Join(root, name, "1", "model.onnx")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := fake.WriteModel(path, m.model); err != nil {
			t.Fatal(err)
		}
		if m.config != "" {
			if err := os.WriteFile(filepath.Join(root, name, "config.yaml"), []byte(m.config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

var vec = fake.Model{Op: "add_one",
	Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 4}}},
	Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 4}}}}

func newManager(t *testing.T, root string) (*Manager, *fake.Backend, *prometheus.Registry) {
	t.Helper()
	b := fake.New()
	reg := prometheus.NewRegistry()
	m, err := NewManager(Config{Repository: root, Backend: b, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, b, reg
}

func vecReq(model string, rows int) *oip.InferRequest {
	v := make([]float32, rows*4)
	for i := range v {
		v[i] = float32(i)
	}
	return &oip.InferRequest{ModelName: model, ID: "r1", Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{int64(rows), 4}, v)}}}
}

func TestLoadStatesAndIsolation(t *testing.T) {
	sleepy := vec
	sleepy.Op, sleepy.SleepMS = "sleep", 1
	broken := vec
	broken.FailLoad = true
	root := writeRepo(t, map[string]repoModel{
		"good":       {model: vec},
		"broken":     {model: broken},
		"badconfig":  {model: vec, config: "max_batch_size: [not a number\n"},
		"typoconfig": {model: vec, config: "max_batch_sise: 4\n"},
		"sleepy":     {model: sleepy, config: "max_batch_size: 4\nmax_queue_delay_ms: 1\n"},
	})
	// A model directory without versions is not a model.
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, _, reg := newManager(t, root)
	ctx := context.Background()
	index, err := m.RepositoryIndex(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]oip.ModelIndexEntry{}
	for _, e := range index {
		states[e.Name] = e
	}
	for name, want := range map[string]string{"good": StateReady, "sleepy": StateReady, "broken": StateUnavailable,
		"badconfig": StateUnavailable, "typoconfig": StateUnavailable} {
		if states[name].State != want {
			t.Errorf("%s: state %s (%s), want %s", name, states[name].State, states[name].Reason, want)
		}
	}
	if _, ok := states["empty"]; ok {
		t.Error("directory without versions listed as a model")
	}
	if !strings.Contains(states["typoconfig"].Reason, "max_batch_sise") {
		t.Errorf("typo in config.yaml not named: %q", states["typoconfig"].Reason)
	}
	if _, err := m.Infer(ctx, vecReq("broken", 1)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("infer on broken model: %v, want ErrUnavailable", err)
	}
	resp, err := m.Infer(ctx, vecReq("good", 2))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID != "r1" || resp.ModelVersion != "1" || resp.Outputs[0].Float32s()[0] != 1 {
		t.Errorf("bad response %+v", resp)
	}
	if got := testutil.ToFloat64(m.metrics.loaded); got != 2 {
		t.Errorf("models loaded gauge = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "accelpool_inference_requests_total"); err != nil || n == 0 {
		t.Errorf("requests metric not exported: %d %v", n, err)
	}
	if ok, _ := m.ModelReady(ctx, "good", ""); !ok {
		t.Error("good not ready")
	}
	if !m.Ready() {
		t.Error("server not ready")
	}
}

func TestUnloadReloadFreesSessions(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	m, b, _ := newManager(t, root)
	ctx := context.Background()
	if b.OpenSessions() != 1 {
		t.Fatalf("open sessions %d", b.OpenSessions())
	}
	if err := m.LoadModel(ctx, "m"); err != nil { // reload
		t.Fatal(err)
	}
	if b.OpenSessions() != 1 {
		t.Fatalf("reload leaked a session: %d open", b.OpenSessions())
	}
	if err := m.UnloadModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if b.OpenSessions() != 0 {
		t.Fatalf("unload left %d sessions open", b.OpenSessions())
	}
	if _, err := m.Infer(ctx, vecReq("m", 1)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("infer after unload: %v", err)
	}
	if err := m.UnloadModel(ctx, "ghost"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unload unknown: %v", err)
	}
	if err := m.LoadModel(ctx, "ghost"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("load unknown: %v", err)
	}
	if err := m.LoadModel(ctx, "../etc"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("load path traversal: %v", err)
	}
	if err := m.LoadModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Infer(ctx, vecReq("m", 1)); err != nil {
		t.Fatal(err)
	}
}

// TestReloadBetweenLookupAndSubmit: a request that found a version just
// before a reload retired it is served by the new version, not refused
// with "unloading"; and the new version's inputs decide.
func TestReloadBetweenLookupAndSubmit(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	m, _, _ := newManager(t, root)
	ctx := context.Background()
	reloads, retries := 0, 0
	testHookBeforeSubmit = func() {
		if reloads == 0 {
			reloads++
			if err := m.LoadModel(ctx, "m"); err != nil {
				t.Error(err)
			}
		}
	}
	testHookRetry = func() { retries++ }
	t.Cleanup(func() { testHookBeforeSubmit, testHookRetry = nil, nil })
	resp, err := m.Infer(ctx, vecReq("m", 1))
	if err != nil {
		t.Fatalf("a request looked up just before a reload: %v", err)
	}
	if got := resp.Outputs[0].Float32s(); len(got) != 4 || got[0] != 1 || retries != 1 {
		t.Fatalf("outputs %v after %d retries, want the new version's answer after 1", got, retries)
	}

	// The same race when the new version's input shape differs: its
	// check refuses the request as the new version would.
	narrow := vec
	narrow.Inputs = []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 2}}}
	narrow.Outputs = []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 2}}}
	reloads, retries = 0, 0
	testHookBeforeSubmit = func() {
		if reloads == 0 {
			reloads++
			if err := fake.WriteModel(filepath.Join(root, "m", "1", "model.onnx"), narrow); err != nil {
				t.Error(err)
			}
			if err := m.LoadModel(ctx, "m"); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := m.Infer(ctx, vecReq("m", 1)); !errors.Is(err, errdefs.ErrInvalid) || retries != 1 {
		t.Fatalf("after a reload to [-1,2] inputs: %v (%d retries), want invalid after 1", err, retries)
	}
}

// TestReloadDoesNotRetryATimedOutRequest: a request whose own deadline
// (here default_timeout_ms) passed before it reached the retired
// version's queue fails with DeadlineExceeded; it is not given a second
// default timeout on the new version.
func TestReloadDoesNotRetryATimedOutRequest(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec, config: "default_timeout_ms: 1\n"}})
	m, _, _ := newManager(t, root)
	ctx := context.Background()
	reloaded, retries := false, 0
	testHookBeforeSubmit = func() {
		if !reloaded {
			reloaded = true
			time.Sleep(5 * time.Millisecond) // the request's 1 ms default timeout passes
			if err := m.LoadModel(ctx, "m"); err != nil {
				t.Error(err)
			}
		}
	}
	testHookRetry = func() { retries++ }
	t.Cleanup(func() { testHookBeforeSubmit, testHookRetry = nil, nil })
	if _, err := m.Infer(ctx, vecReq("m", 1)); !errors.Is(err, errdefs.ErrDeadline) || retries != 0 {
		t.Fatalf("a request that timed out before a reload: %v after %d retries; want DeadlineExceeded, no retry", err, retries)
	}
}

func TestFailedReloadKeepsServing(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	m, _, _ := newManager(t, root)
	if err := os.WriteFile(filepath.Join(root, "m", "config.yaml"), []byte("concurrency: -3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := m.LoadModel(context.Background(), "m")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "concurrency") {
		t.Fatalf("reload with bad config: %v", err)
	}
	if _, err := m.Infer(context.Background(), vecReq("m", 1)); err != nil {
		t.Fatalf("model stopped serving after a failed reload: %v", err)
	}
}

func TestValidation(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"m": {model: vec}})
	m, _, _ := newManager(t, root)
	ctx := context.Background()
	mut := func(f func(r *oip.InferRequest)) *oip.InferRequest { r := vecReq("m", 1); f(r); return r }
	cases := map[string]struct {
		req  *oip.InferRequest
		want error
		msg  string
	}{
		"unknown model":        {vecReq("nope", 1), errdefs.ErrNotFound, "nope"},
		"unknown version":      {mut(func(r *oip.InferRequest) { r.ModelVersion = "2" }), errdefs.ErrNotFound, "version"},
		"version not a number": {mut(func(r *oip.InferRequest) { r.ModelVersion = "v1" }), errdefs.ErrInvalid, "not a version number"},
		"missing input":        {mut(func(r *oip.InferRequest) { r.Inputs = nil }), errdefs.ErrInvalid, "missing input"},
		"duplicate input":      {mut(func(r *oip.InferRequest) { r.Inputs = append(r.Inputs, r.Inputs[0]) }), errdefs.ErrInvalid, "twice"},
		"extra input": {mut(func(r *oip.InferRequest) {
			r.Inputs = append(r.Inputs, oip.InferInput{Tensor: tensor.FromFloat32("z", []int64{1}, []float32{1})})
		}), errdefs.ErrInvalid, `"z"`},
		"datatype":       {mut(func(r *oip.InferRequest) { r.Inputs[0].DataType = tensor.FP64 }), errdefs.ErrInvalid, "datatype"},
		"rank":           {mut(func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{4} }), errdefs.ErrInvalid, "shape"},
		"fixed dim":      {mut(func(r *oip.InferRequest) { r.Inputs[0].Shape = []int64{2, 2} }), errdefs.ErrInvalid, "shape"},
		"byte count":     {mut(func(r *oip.InferRequest) { r.Inputs[0].Data = r.Inputs[0].Data[:15] }), errdefs.ErrInvalid, "bytes"},
		"unknown output": {mut(func(r *oip.InferRequest) { r.Outputs = []oip.RequestedOutput{{Name: "q"}} }), errdefs.ErrInvalid, `"q"`},
		"output twice": {mut(func(r *oip.InferRequest) {
			r.Outputs = []oip.RequestedOutput{{Name: "y"}, {Name: "y"}}
		}), errdefs.ErrInvalid, "twice"},
	}
	for name, c := range cases {
		_, err := m.Infer(ctx, c.req)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want %v mentioning %q", name, err, c.want, c.msg)
		}
	}
}

func TestBatchingThroughManager(t *testing.T) {
	sleepy := vec
	sleepy.Op, sleepy.SleepMS = "sleep", 5
	root := writeRepo(t, map[string]repoModel{
		"batched":   {model: sleepy, config: "max_batch_size: 8\nmax_queue_delay_ms: 5\nmax_queue_size: 64\n"},
		"unbatched": {model: sleepy, config: "max_queue_size: 64\n"},
	})
	m, b, _ := newManager(t, root)
	for _, name := range []string{"batched", "unbatched"} {
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := vecReq(name, 1)
				req.Inputs[0].Data = tensor.FromFloat32("x", []int64{1, 4}, []float32{float32(i), 0, 0, 0}).Data
				resp, err := m.Infer(context.Background(), req)
				if err != nil {
					t.Error(err)
					return
				}
				if got := resp.Outputs[0].Float32s()[0]; got != float32(i) {
					t.Errorf("%s: request %d got row of request %v", name, i, got)
				}
			}()
		}
		wg.Wait()
	}
	path := func(n string) string { return filepath.Join(root, n, "1", "model.onnx") }
	bs, us := b.Stats(path("batched")), b.Stats(path("unbatched"))
	if us.Runs != 16 {
		t.Errorf("unbatched model ran %d times for 16 requests", us.Runs)
	}
	if bs.Runs >= 16 {
		t.Errorf("batched model ran %d times for 16 requests: no batching", bs.Runs)
	}
	t.Logf("16 concurrent single-row requests: %d runs batched (sizes %v), %d unbatched", bs.Runs, bs.BatchSizes, us.Runs)
}
