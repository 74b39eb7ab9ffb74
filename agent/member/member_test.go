package member

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

var testNode = cluster.Node{
	Name: "edge-1", Tier: cluster.TierEdge, Site: "lab", Labels: map[string]string{"rack": "r1"},
	Accelerators: []cluster.Accelerator{
		{ID: "cpu0", Kind: "cpu", MemoryBytes: 1 << 30, Compute: 4},
		{ID: "gpu0", Kind: "gpu", Model: "T4", MemoryBytes: 8 << 30, Compute: 40},
	},
	HTTPAddr: "127.0.0.1:8000", GRPCAddr: "127.0.0.1:8001",
}

// modelBytes is a fake backend model file, the "artifact" the agent pulls.
func modelBytes(t *testing.T, op string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.onnx")
	err := fake.WriteModel(path, fake.Model{Op: op,
		Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 4}}},
		Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 4}}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newManager(t *testing.T, dataDir string) *agent.Manager {
	t.Helper()
	m, err := agent.NewManager(agent.Config{Repository: RepositoryDir(dataDir), Backend: fake.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// running is an agent started by startAgent.
type running struct {
	mgr     *agent.Manager
	dataDir string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// stop cancels the agent and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	if r.stopped {
		return nil
	}
	select {
	case err := <-r.done:
		r.stopped = true
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func startAgent(t *testing.T, cp *fakeCP, dataDir string, mod func(*Config)) *running {
	t.Helper()
	cfg := Config{Servers: []string{cp.srv.URL}, Token: cp.token, Node: testNode, DataDir: dataDir,
		Manager: newManager(t, dataDir), PollWait: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if os.Getenv("MEMBER_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{mgr: cfg.Manager, dataDir: dataDir, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return r
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits for a heartbeat reporting the instance in state and
// returns that heartbeat.
func waitState(t *testing.T, cp *fakeCP, id, state string) cluster.HeartbeatRequest {
	t.Helper()
	var hb cluster.HeartbeatRequest
	eventually(t, fmt.Sprintf("instance %s %s in a heartbeat", id, state), func() bool {
		var ok bool
		hb, ok = cp.lastHeartbeat()
		return ok && hb.Status.Instances[id].State == state
	})
	return hb
}

func instanceOf(id, served, digest string) cluster.Instance {
	return cluster.Instance{ID: id, App: "app-" + served, Node: testNode.Name, Accelerator: "gpu0",
		ModelName: "resnet", ModelDigest: digest, ServedName: served, MemoryBytes: 1 << 30}
}

func TestJoinAndHeartbeat(t *testing.T) {
	cp := newFakeCP(t)
	r := startAgent(t, cp, t.TempDir(), nil)
	eventually(t, "three heartbeats", func() bool {
		var n int
		cp.with(func(f *fakeCP) { n = len(f.heartbeats) })
		return n >= 3
	})
	joins := cp.joinRequests()
	if len(joins) != 1 {
		t.Fatalf("joins = %d, want 1", len(joins))
	}
	got := joins[0].Node
	if got.AgentID == "" {
		t.Fatal("join carried no agent ID")
	}
	want := testNode
	want.AgentID = got.AgentID
	if got.Name != want.Name || got.Tier != want.Tier || got.Site != want.Site || got.Labels["rack"] != "r1" ||
		!slices.Equal(got.Accelerators, want.Accelerators) || got.HTTPAddr != want.HTTPAddr || got.GRPCAddr != want.GRPCAddr {
		t.Fatalf("joined as %+v, want %+v", got, want)
	}
	hb, _ := cp.lastHeartbeat()
	if hb.Name != testNode.Name || hb.AgentID != got.AgentID {
		t.Fatalf("heartbeat from %s/%s, joined as %s/%s", hb.Name, hb.AgentID, got.Name, got.AgentID)
	}
	st := hb.Status
	if !st.Up || time.Since(st.LastHeartbeat) > 5*time.Second {
		t.Fatalf("status up=%v last=%v", st.Up, st.LastHeartbeat)
	}
	if st.FreeMemoryBytes["cpu0"] != 1<<30 || st.FreeMemoryBytes["gpu0"] != 8<<30 {
		t.Fatalf("free memory %v", st.FreeMemoryBytes)
	}
	if len(st.Instances) != 0 || len(st.LoadedModels) != 0 {
		t.Fatalf("idle node reports instances %v, models %v", st.Instances, st.LoadedModels)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestWrongTokenIsFatal(t *testing.T) {
	cp := newFakeCP(t)
	r := startAgent(t, cp, t.TempDir(), func(c *Config) { c.Token = "wrong" })
	err := r.wait(t)
	if err == nil || !strings.Contains(err.Error(), "401") || !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("Run = %v, want a 401 error", err)
	}
}

func TestInstanceLifecycle(t *testing.T) {
	cp := newFakeCP(t)
	blob := modelBytes(t, "add_one")
	digest := cp.addBlob(blob)
	r := startAgent(t, cp, t.TempDir(), nil)
	in := instanceOf("i1", "resnet-a", digest)
	in.Batching = cluster.Batching{MaxBatchSize: 8, MaxQueueDelayMs: 2.5}
	in.Serving = &repository.Config{Concurrency: 3, IntraOpThreads: 1, DefaultTimeoutMS: 750}
	cp.assign(in)

	hb := waitState(t, cp, "i1", cluster.InstanceReady)
	st := hb.Status
	if !slices.Contains(st.LoadedModels, "resnet-a") {
		t.Fatalf("loaded models %v lack resnet-a", st.LoadedModels)
	}
	if q, ok := st.QueueLength["resnet-a"]; !ok || q != 0 {
		t.Fatalf("queue lengths %v", st.QueueLength)
	}
	if st.FreeMemoryBytes["gpu0"] != 7<<30 || st.FreeMemoryBytes["cpu0"] != 1<<30 {
		t.Fatalf("free memory %v, want gpu0 less the instance's 1 GiB", st.FreeMemoryBytes)
	}
	if ok, err := r.mgr.ModelReady(context.Background(), "resnet-a", ""); !ok || err != nil {
		t.Fatalf("ModelReady = %v, %v", ok, err)
	}
	m, ok, err := repository.Read(RepositoryDir(r.dataDir), "resnet-a")
	if err != nil || !ok || m.ConfigErr != nil {
		t.Fatalf("repository: %v %v %v", ok, err, m.ConfigErr)
	}
	want := repository.Config{MaxBatchSize: 8, MaxQueueDelayMS: 2.5, MaxQueueSize: repository.DefaultConfig().MaxQueueSize,
		Concurrency: 3, IntraOpThreads: 1, DefaultTimeoutMS: 750, Providers: []string{}, Preprocess: map[string]repository.ImageInput{}}
	if !reflect.DeepEqual(m.Config, want) {
		t.Fatalf("config.yaml gives %+v, want the instance's batching and serving %+v", m.Config, want)
	}
	blobPath := filepath.Join(BlobDir(r.dataDir), strings.TrimPrefix(digest, "sha256:"))
	a, err1 := os.Stat(blobPath)
	b, err2 := os.Stat(m.Path("1"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Fatalf("model file is not a hard link to the blob: %v %v", err1, err2)
	}

	cp.unassign("i1")
	eventually(t, "model unloaded and directory removed", func() bool {
		ok, _ := r.mgr.ModelReady(context.Background(), "resnet-a", "")
		_, err := os.Stat(filepath.Join(RepositoryDir(r.dataDir), "resnet-a"))
		return !ok && errors.Is(err, os.ErrNotExist)
	})
	eventually(t, "a heartbeat without the instance", func() bool {
		hb, _ := cp.lastHeartbeat()
		_, has := hb.Status.Instances["i1"]
		return !has && hb.Status.FreeMemoryBytes["gpu0"] == 8<<30 && !slices.Contains(hb.Status.LoadedModels, "resnet-a")
	})
	if _, err := os.Stat(blobPath); err != nil {
		t.Fatalf("blob dropped from the cache with the instance: %v", err)
	}
}

// TestFailedLoadIsNotReadyOnReassign: an instance whose new digest failed
// to load, assigned again with the same files (another memory
// reservation), is not reported Ready because the old version still
// serves under its name.
func TestFailedLoadIsNotReadyOnReassign(t *testing.T) {
	cp := newFakeCP(t)
	good := cp.addBlob(modelBytes(t, "add_one"))
	path := filepath.Join(t.TempDir(), "bad.onnx")
	if err := fake.WriteModel(path, fake.Model{FailLoad: true,
		Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 4}}},
		Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 4}}}}); err != nil {
		t.Fatal(err)
	}
	badBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := cp.addBlob(badBytes)
	startAgent(t, cp, t.TempDir(), nil)

	in := instanceOf("i1", "served", good)
	cp.assign(in)
	waitState(t, cp, "i1", cluster.InstanceReady)
	in.ModelDigest = bad
	cp.assign(in)
	waitState(t, cp, "i1", cluster.InstanceFailed)
	in.MemoryBytes = 2 << 30 // the same files, a new spec
	cp.assign(in)
	eventually(t, "the reassigned instance settles", func() bool {
		hb, ok := cp.lastHeartbeat()
		st := hb.Status.Instances["i1"].State
		return ok && hb.Status.FreeMemoryBytes["gpu0"] == 6<<30 && (st == cluster.InstanceFailed || st == cluster.InstanceReady)
	})
	hb, _ := cp.lastHeartbeat()
	if st := hb.Status.Instances["i1"]; st.State != cluster.InstanceFailed {
		t.Fatalf("instance %+v after its files failed to load; want Failed (the old version serves, not this spec)", st)
	}
}

func TestResumeInterruptedPull(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ignoreRng bool
	}{{"range honoured", false}, {"range ignored", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cp := newFakeCP(t)
			blob := modelBytes(t, "identity")
			digest := cp.addBlob(blob)
			h := strings.TrimPrefix(digest, "sha256:")
			const cut = 40
			cp.with(func(f *fakeCP) {
				f.cutAfter[h] = cut
				f.noRange[h] = tc.ignoreRng
			})
			r := startAgent(t, cp, t.TempDir(), nil)
			cp.assign(instanceOf("i1", "m1", digest))
			waitState(t, cp, "i1", cluster.InstanceReady)

			reqs := cp.blobRequests()
			if len(reqs) != 2 || reqs[0].rng != "" || reqs[1].rng != fmt.Sprintf("bytes=%d-", cut) {
				t.Fatalf("blob requests %+v, want a full one then bytes=%d-", reqs, cut)
			}
			got, err := os.ReadFile(filepath.Join(BlobDir(r.dataDir), h))
			if err != nil || sha(got) != h {
				t.Fatalf("cached blob does not verify: %v", err)
			}
			if _, err := os.Stat(filepath.Join(BlobDir(r.dataDir), h+".partial")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("partial left behind: %v", err)
			}
		})
	}
}

func TestDigestMismatch(t *testing.T) {
	cp := newFakeCP(t)
	blob := modelBytes(t, "identity")
	digest := cp.addBlob(blob)
	h := strings.TrimPrefix(digest, "sha256:")
	cp.with(func(f *fakeCP) { f.wrong[h] = true })
	r := startAgent(t, cp, t.TempDir(), nil)
	cp.assign(instanceOf("bad", "m-bad", digest))

	hb := waitState(t, cp, "bad", cluster.InstanceFailed)
	want := fmt.Sprintf("digest mismatch: got sha256:%s, want %s", sha(append([]byte("corrupted "), blob...)), digest)
	if got := hb.Status.Instances["bad"].Reason; got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
	if n := len(cp.blobRequests()); n != pullAttempts {
		t.Fatalf("%d downloads, want %d attempts then give up", n, pullAttempts)
	}
	if _, err := r.mgr.ModelReady(context.Background(), "m-bad", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ModelReady(m-bad) = %v, want not found (never loaded)", err)
	}
	if slices.Contains(hb.Status.LoadedModels, "m-bad") {
		t.Fatal("m-bad reported loaded")
	}
	for _, p := range []string{h, h + ".partial"} {
		if _, err := os.Stat(filepath.Join(BlobDir(r.dataDir), p)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a mismatch: %v", p, err)
		}
	}
}

func TestSlowPullDoesNotBlockOthers(t *testing.T) {
	cp := newFakeCP(t)
	slow := cp.addBlob(modelBytes(t, "identity"))
	quick := cp.addBlob(modelBytes(t, "add_one"))
	release := make(chan struct{})
	cp.with(func(f *fakeCP) { f.hold[strings.TrimPrefix(slow, "sha256:")] = release })
	startAgent(t, cp, t.TempDir(), nil)
	cp.assign(instanceOf("slow", "m-slow", slow))
	cp.assign(instanceOf("quick", "m-quick", quick))

	hb := waitState(t, cp, "quick", cluster.InstanceReady)
	if s := hb.Status.Instances["slow"].State; s != cluster.InstancePulling {
		t.Fatalf("slow instance is %s, want still Pulling", s)
	}
	close(release)
	waitState(t, cp, "slow", cluster.InstanceReady)
}

func TestHeartbeat404Rejoins(t *testing.T) {
	cp := newFakeCP(t)
	digest := cp.addBlob(modelBytes(t, "identity"))
	startAgent(t, cp, t.TempDir(), nil)
	cp.assign(instanceOf("i1", "m1", digest))
	waitState(t, cp, "i1", cluster.InstanceReady)

	var before int
	cp.with(func(f *fakeCP) {
		f.lapse = 1
		before = len(f.heartbeats)
	})
	eventually(t, "a second join and heartbeats after it", func() bool {
		var joins, hbs int
		cp.with(func(f *fakeCP) { joins, hbs = len(f.joins), len(f.heartbeats) })
		return joins == 2 && hbs > before
	})
	joins := cp.joinRequests()
	if joins[0].Node.AgentID != joins[1].Node.AgentID {
		t.Fatalf("re-joined as %s, first joined as %s", joins[1].Node.AgentID, joins[0].Node.AgentID)
	}
	waitState(t, cp, "i1", cluster.InstanceReady)
	if n := len(cp.blobRequests()); n != 1 {
		t.Fatalf("%d downloads after a re-join, want 1", n)
	}
}

func TestJoinConflictIsFatal(t *testing.T) {
	cp := newFakeCP(t)
	cp.with(func(f *fakeCP) { f.holders[testNode.Name] = "someone-else" })
	r := startAgent(t, cp, t.TempDir(), nil)
	err := r.wait(t)
	if err == nil || !strings.Contains(err.Error(), `"edge-1"`) || !strings.Contains(err.Error(), "another live agent") {
		t.Fatalf("Run = %v, want an error naming the node held by another agent", err)
	}
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("Run = %v, want errdefs.ErrConflict", err)
	}
}

func TestFailoverToSecondServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	cp := newFakeCP(t)
	digest := cp.addBlob(modelBytes(t, "identity"))
	startAgent(t, cp, t.TempDir(), func(c *Config) { c.Servers = []string{dead, cp.srv.URL} })
	cp.assign(instanceOf("i1", "m1", digest))
	waitState(t, cp, "i1", cluster.InstanceReady)
}

func TestJoinRetriesUntilServerUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := startAgent(t, newFakeCP(t), t.TempDir(), func(c *Config) { c.Servers = []string{"http://" + addr} })
	time.Sleep(300 * time.Millisecond) // a few join attempts fail meanwhile
	if ln, err = net.Listen("tcp", addr); err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	cp := newFakeCPOn(t, ln)
	eventually(t, "a heartbeat once the server is up", func() bool { _, ok := cp.lastHeartbeat(); return ok })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestRestartWithWarmCache(t *testing.T) {
	cp := newFakeCP(t)
	digest := cp.addBlob(modelBytes(t, "add_one"))
	dataDir := t.TempDir()
	node := testNode
	node.AgentID = "agent-1"
	first := startAgent(t, cp, dataDir, func(c *Config) { c.Node = node })
	cp.assign(instanceOf("i1", "m1", digest))
	waitState(t, cp, "i1", cluster.InstanceReady)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}
	if ok, _ := first.mgr.ModelReady(context.Background(), "m1", ""); !ok {
		t.Fatal("model unloaded on exit without UnloadOnExit")
	}

	cp.with(func(f *fakeCP) { f.heartbeats = nil })
	second := startAgent(t, cp, dataDir, func(c *Config) { c.Node = node; c.UnloadOnExit = true })
	waitState(t, cp, "i1", cluster.InstanceReady)
	if n := len(cp.blobRequests()); n != 1 {
		t.Fatalf("%d downloads over two runs, want 1 (the cache is warm)", n)
	}
	if ok, _ := second.mgr.ModelReady(context.Background(), "m1", ""); !ok {
		t.Fatal("restarted agent does not serve m1")
	}
	if err := second.stop(t); err != nil {
		t.Fatal(err)
	}
	if ok, _ := second.mgr.ModelReady(context.Background(), "m1", ""); ok {
		t.Fatal("UnloadOnExit left m1 loaded")
	}
	if _, err := os.Stat(filepath.Join(RepositoryDir(dataDir), "m1")); err != nil {
		t.Fatalf("exit removed the instance's directory: %v", err)
	}
}

func TestRestartClearsInstancesRemovedMeanwhile(t *testing.T) {
	cp := newFakeCP(t)
	digest := cp.addBlob(modelBytes(t, "identity"))
	dataDir := t.TempDir()
	// An operator's own model in the repository is left alone.
	own := filepath.Join(RepositoryDir(dataDir), "own", "1", repository.ModelFile)
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, modelBytes(t, "identity"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := startAgent(t, cp, dataDir, nil)
	cp.assign(instanceOf("old", "m-old", digest))
	waitState(t, cp, "old", cluster.InstanceReady)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	cp.unassign("old")
	cp.assign(instanceOf("new", "m-new", digest))
	startAgent(t, cp, dataDir, nil)
	waitState(t, cp, "new", cluster.InstanceReady)
	eventually(t, "the removed instance's directory gone", func() bool {
		_, err := os.Stat(filepath.Join(RepositoryDir(dataDir), "m-old"))
		return errors.Is(err, os.ErrNotExist)
	})
	if _, err := os.Stat(own); err != nil {
		t.Fatalf("the operator's model was removed: %v", err)
	}
}

func TestNameTakenOverIsFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lapse int
	}{{"heartbeat answers 409", 0}, {"re-join after a lapsed lease answers 409", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			cp := newFakeCP(t)
			r := startAgent(t, cp, t.TempDir(), nil)
			eventually(t, "a heartbeat", func() bool { _, ok := cp.lastHeartbeat(); return ok })
			cp.with(func(f *fakeCP) {
				f.lapse = tc.lapse
				f.holders[testNode.Name] = "usurper"
			})
			err := r.wait(t)
			if err == nil || !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), `"edge-1"`) {
				t.Fatalf("Run = %v, want a conflict naming the node", err)
			}
			if tc.lapse > 0 && len(cp.joinRequests()) != 1 {
				t.Fatalf("joins = %d, want the refused re-join not recorded", len(cp.joinRequests()))
			}
		})
	}
}
