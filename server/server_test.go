package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/member"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/memory"
	"github.com/accelpool/accelpool/tensor"
)

func quiet() *slog.Logger {
	if os.Getenv("ACCELPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

const token = "test-token"

// testAgent is an in-process agent: a serving node on the fake backend and
// its cluster membership.
type testAgent struct {
	node   *agent.Node
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	dir    string // its data directory
}

func (a *testAgent) stop() {
	a.once.Do(func() {
		a.cancel()
		<-a.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.node.Close(ctx)
	})
}

func startAgent(t *testing.T, servers []string, n cluster.Node) *testAgent {
	t.Helper()
	dir := t.TempDir()
	node, err := agent.StartNode(context.Background(), agent.NodeConfig{
		Manager:  agent.Config{Repository: member.RepositoryDir(dir), Backend: fake.New(), Logger: quiet()},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", Token: token, SkipLoad: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(member.RepositoryDir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	n.HTTPAddr, n.GRPCAddr = node.HTTPAddr(), node.GRPCAddr()
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{node: node, cancel: cancel, done: make(chan error, 1), dir: dir}
	go func() {
		a.done <- member.Run(ctx, member.Config{Servers: servers, Token: token, Node: n, DataDir: dir, Manager: node.Manager, Logger: quiet(), PollWait: 2 * time.Second, AutoProfile: true})
	}()
	t.Cleanup(a.stop)
	return a
}

func startReplica(t *testing.T, st store.Store) *Replica {
	t.Helper()
	r, err := Start(context.Background(), ServeConfig{
		Config:     Config{Store: st, Token: token, DataDir: t.TempDir(), Logger: quiet(), LeaseTTL: 2 * time.Second, AnyModelFormat: true, ReconcileInterval: 200 * time.Millisecond},
		ListenAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func fakeModel(t *testing.T) []byte { return fakeModelOf(t, fake.Model{Op: "add_one"}) }

// fakeModelOf is a fake model file with one FP32 [-1,2] input x and
// output y, computing m.Op.
func fakeModelOf(t *testing.T, m fake.Model) []byte {
	path := filepath.Join(t.TempDir(), "m.yaml")
	m.Inputs = []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 2}}}
	m.Outputs = []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 2}}}
	if err := fake.WriteModel(path, m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cpuNode(name string, tier cluster.Tier, mem int64, labels map[string]string) cluster.Node {
	return cluster.Node{Name: name, Tier: tier, Site: "lab", Labels: labels,
		Accelerators: []cluster.Accelerator{{ID: "cpu0", Kind: "cpu", MemoryBytes: mem, Compute: 1}}}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNodes starts a replica on a fresh memory store and one agent per
// name, each with one CPU accelerator of mem bytes, and waits until every
// node is up.
func startNodes(t *testing.T, mem int64, names ...string) (*Replica, *client.Client) {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	r := startReplica(t, st)
	servers := []string{r.URL()}
	cl := client.New(servers, token, nil)
	for _, n := range names {
		startAgent(t, servers, cpuNode(n, cluster.TierEdge, mem, nil))
	}
	waitFor(t, fmt.Sprintf("%d nodes up", len(names)), 10*time.Second, func() bool {
		nodes, _ := cl.Nodes(context.Background())
		up := 0
		for _, n := range nodes {
			if n.Up {
				up++
			}
		}
		return up == len(names)
	})
	return r, cl
}

func inferReq(app string) *oip.InferRequest {
	return &oip.InferRequest{ModelName: app, Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, 2}, []float32{1, 2})}}}
}

func TestClusterEndToEnd(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	r1 := startReplica(t, st)
	r2 := startReplica(t, st)
	servers := []string{r1.URL(), r2.URL()}
	cl := client.New(servers, token, nil)
	ctx := context.Background()

	a1 := startAgent(t, servers, cpuNode("edge-a", cluster.TierEdge, 1<<30, map[string]string{"zone": "eu"}))
	startAgent(t, servers, cpuNode("edge-b", cluster.TierEdge, 1<<30, map[string]string{"zone": "eu"}))
	startAgent(t, servers, cpuNode("tiny", cluster.TierEdge, 1<<20, map[string]string{"zone": "eu"}))
	startAgent(t, servers, cpuNode("far", cluster.TierCloud, 64<<30, map[string]string{"zone": "us"}))
	waitFor(t, "four nodes up", 10*time.Second, func() bool {
		nodes, err := cl.Nodes(ctx)
		up := 0
		for _, n := range nodes {
			if n.Up {
				up++
			}
		}
		return err == nil && up == 4
	})

	art, err := cl.PushModel(ctx, "adder", fakeModel(t))
	if err != nil {
		t.Fatal(err)
	}
	if !cluster.ValidDigest(art.Digest) {
		t.Fatalf("digest %q", art.Digest)
	}
	apps := `
apiVersion: accelpool.io/v1
kind: Application
metadata: {name: add}
spec:
  model: adder
  objective: {p99Ms: 100}
  replicas: {min: 2, max: 2}
  constraints: {labels: {zone: eu}}
  memoryBytes: 104857600
  serving: {concurrency: 2, default_timeout_ms: 500}
`
	if _, err := cl.Deploy(ctx, []byte(apps), client.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cl.WaitReady(waitCtx, "add"); err != nil {
		av, _ := cl.App(ctx, "add")
		t.Fatalf("app not ready: %v; status %+v", err, av.Status)
	}
	// The instance on edge-a is served as spec.serving says.
	served, err := repository.Scan(member.RepositoryDir(a1.dir))
	if err != nil || len(served) != 1 || served[0].ConfigErr != nil ||
		served[0].Config.Concurrency != 2 || served[0].Config.DefaultTimeoutMS != 500 {
		t.Fatalf("edge-a's repository: %+v, %v; want one model with concurrency 2 and default_timeout_ms 500", served, err)
	}

	// Inference through either replica's gateway (each replica's mirror of
	// the cluster catches up on its own).
	for _, r := range []*Replica{r1, r2} {
		if err := client.New([]string{r.URL()}, token, nil).WaitReady(waitCtx, "add"); err != nil {
			t.Fatalf("replica %s never saw add ready: %v", r.URL(), err)
		}
		gw := rest.NewClient("http://"+r.HTTPAddr(), rest.ClientOptions{Binary: true, HTTPClient: authClient()})
		resp, err := gw.Infer(ctx, inferReq("add"))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Outputs[0].Float32s(); got[0] != 2 || got[1] != 3 || resp.ModelName != "add" {
			t.Fatalf("gateway answer %v (%s)", got, resp.ModelName)
		}
	}

	// The first deployment profiled the model on its accelerator kind.
	waitFor(t, "an automatic profile of adder on cpu", 10*time.Second, func() bool {
		ps, err := cl.Profiles(ctx)
		return err == nil && len(ps) == 1 && ps[0].Model == "adder" && ps[0].AcceleratorKind == "cpu" &&
			ps[0].ServiceMs[1] > 0 && ps[0].Digest == art.Digest
	})

	// Explain: the tiny node is rejected for memory.
	ex, err := cl.Explain(ctx, "add")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tiny", "needs 100 MiB", "far", "zone=eu not matched"} {
		if !strings.Contains(ex.Last, want) {
			t.Errorf("explanation lacks %q (tiny rejected for memory, far for its label):\n%s", want, ex.Last)
		}
	}
	t.Logf("accelpool explain add:\n%s", ex.Last)

	// Bad input: duplicate name, unknown model, impossible constraint, bad YAML — nothing half-applied.
	bad := map[string]struct {
		doc  string
		want error
	}{
		"duplicate":  {apps, errdefs.ErrAlreadyExists},
		"unknown":    {strings.Replace(strings.Replace(apps, "name: add", "name: other", 1), "model: adder", "model: ghost", 1), errdefs.ErrNotFound},
		"impossible": {strings.Replace(strings.Replace(apps, "name: add", "name: far", 1), "zone: eu", "zone: mars", 1), errdefs.ErrInvalid},
		"bad yaml":   {"apiVersion: accelpool.io/v1\nkind: [Application\n", errdefs.ErrInvalid},
		"bad field":  {strings.Replace(apps, "p99Ms: 100", "p99Ms: -5", 1), errdefs.ErrInvalid},
		"half": {strings.Replace(apps, "name: add", "name: new-one", 1) + "---\n" + strings.Replace(apps, "model: adder", "model: ghost", 1),
			errdefs.ErrNotFound},
	}
	for name, c := range bad {
		_, err := cl.Deploy(ctx, []byte(c.doc), client.DeployOptions{})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
		t.Logf("%s: %v", name, err)
	}
	all, _ := cl.Apps(ctx)
	if len(all) != 1 {
		t.Errorf("a failed deploy left applications behind: %d apps", len(all))
	}
	if _, err := client.New(servers, "wrong", nil).Apps(ctx); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("unauthenticated call: %v", err)
	}

	// Kill an agent that serves an instance: it is placed again and answers.
	av, _ := cl.App(ctx, "add")
	onA := false
	for _, in := range av.Status.Instances {
		onA = onA || in.Node == "edge-a"
	}
	if !onA {
		t.Fatalf("expected an instance on edge-a: %+v", av.Status.Instances)
	}
	l := startLoad(ctx, r1, "add", 5*time.Millisecond)
	a1.stop()
	waitFor(t, "instance moved off edge-a", 15*time.Second, func() bool {
		av, err := cl.App(ctx, "add")
		if err != nil || av.Status.Ready < 2 {
			return false
		}
		for _, in := range av.Status.Instances {
			if in.Node == "edge-a" {
				return false
			}
		}
		return true
	})
	okCount, failed := l.stop()
	t.Logf("while edge-a died: %d requests answered, %d failed", okCount, len(failed))
	if len(failed) != 0 {
		t.Errorf("%d requests failed while an agent died (one instance stayed ready)", len(failed))
	}
}

// load sends requests for one application, one at a time and a pause
// apart, through a replica's inference endpoint on a goroutine of its own
// until stop; it counts the answers by y[0] (see inferReq) and keeps the
// errors.
type load struct {
	quit chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	byY0 map[float32]int
	errs []error
	done bool
}

func startLoad(ctx context.Context, r *Replica, app string, pause time.Duration) *load {
	gw := rest.NewClient("http://"+r.HTTPAddr(), rest.ClientOptions{Binary: true, HTTPClient: authClient()})
	l := &load{quit: make(chan struct{}), byY0: map[float32]int{}}
	l.wg.Go(func() {
		for {
			select {
			case <-l.quit:
				return
			default:
			}
			resp, err := gw.Infer(ctx, inferReq(app))
			l.mu.Lock()
			if err != nil {
				l.errs = append(l.errs, err)
			} else {
				l.byY0[resp.Outputs[0].Float32s()[0]]++
			}
			l.mu.Unlock()
			time.Sleep(pause)
		}
	})
	return l
}

// answers counts the answers so far whose y[0] is y0.
func (l *load) answers(y0 float32) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byY0[y0]
}

// stop ends the load (again: no-op) and returns the requests answered
// and the errors.
func (l *load) stop() (answered int, failed []error) {
	if !l.done {
		l.done = true
		close(l.quit)
		l.wg.Wait()
	}
	for _, n := range l.byY0 {
		answered += n
	}
	return answered, l.errs
}

func authClient() *httpClient { return newAuthClient(token) }

func TestAgentNameConflictAndDigestCheck(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	r := startReplica(t, st)
	n := cpuNode("dup", cluster.TierEdge, 1<<30, nil)
	a := startAgent(t, []string{r.URL()}, n)
	cl := client.New([]string{r.URL()}, token, nil)
	waitFor(t, "node up", 5*time.Second, func() bool {
		nv, err := cl.Node(context.Background(), "dup")
		return err == nil && nv.Up
	})
	// A second agent with the same name is refused.
	dir := t.TempDir()
	mgr, _ := agent.NewManager(agent.Config{Repository: member.RepositoryDir(dir), Backend: fake.New(), Logger: quiet()})
	n2 := n
	n2.HTTPAddr, n2.GRPCAddr = "127.0.0.1:1", "127.0.0.1:1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := member.Run(ctx, member.Config{Servers: []string{r.URL()}, Token: token, Node: n2, DataDir: dir, Manager: mgr, Logger: quiet()})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "dup") {
		t.Fatalf("second agent with the same name: %v", err)
	}
	_ = a
	// Blob download honours Range and the digest names the content.
	art, err := cl.PushModel(context.Background(), "m", bytes.Repeat([]byte("x"), 3*chunkSize+17))
	if err != nil {
		t.Fatal(err)
	}
	br, err := r.Server.openBlob(context.Background(), art.Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := br.readAll()
	if err != nil || len(b) != 3*chunkSize+17 {
		t.Fatalf("blob read back %d bytes: %v", len(b), err)
	}
}

func TestModelDrivenPlacement(t *testing.T) {
	_, cl := startNodes(t, 4<<30, "n1", "n2")
	ctx := context.Background()
	art, err := cl.PushModel(ctx, "adder", fakeModel(t))
	if err != nil {
		t.Fatal(err)
	}
	// A profile of this artifact (so agents do not measure the fake model
	// themselves): 20 ms per request alone.
	if err := cl.PutProfile(ctx, cluster.ModelProfile{Model: "adder", Digest: art.Digest, AcceleratorKind: "cpu", ServiceMs: map[int]float64{1: 20}, ServiceCV: 0.5}); err != nil {
		t.Fatal(err)
	}
	app := func(name string) []byte {
		return []byte(fmt.Sprintf("apiVersion: accelpool.io/v1\nkind: Application\nmetadata: {name: %s}\nspec:\n  model: adder\n  objective: {p99Ms: 300}\n  rate: 30\n  memoryBytes: 1048576\n", name))
	}
	// Each app loads a CPU to ρ = 0.6: two never share one, a third fits nowhere.
	for _, name := range []string{"a1", "a2", "a3"} {
		if _, err := cl.Deploy(ctx, app(name), client.DeployOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a1 and a2 ready", 15*time.Second, func() bool {
		x, _ := cl.App(ctx, "a1")
		y, _ := cl.App(ctx, "a2")
		return x.Status.Ready == 1 && y.Status.Ready == 1
	})
	x, _ := cl.App(ctx, "a1")
	y, _ := cl.App(ctx, "a2")
	if x.Status.Instances[0].Node == y.Status.Instances[0].Node {
		t.Fatalf("a1 and a2 share node %s although together they would load it to ρ=1.2", x.Status.Instances[0].Node)
	}
	waitFor(t, "a3 pending with a latency reason", 10*time.Second, func() bool {
		z, err := cl.App(ctx, "a3")
		return err == nil && len(z.Status.Instances) == 0 && strings.Contains(z.Status.Message, "latency")
	})
	ex, err := cl.Explain(ctx, "a3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ex.DryRun, "model-driven") || !strings.Contains(ex.DryRun, "utilisation would be") {
		t.Errorf("explanation lacks the latency rejection:\n%s", ex.DryRun)
	}
	t.Logf("accelpool explain a3:\n%s", ex.DryRun)
	waitFor(t, "a3's last decision recorded", 10*time.Second, func() bool {
		ex, err := cl.Explain(ctx, "a3")
		return err == nil && ex.Last != ""
	})
	// Deleted and deployed again, a3 fails the same way: its last
	// decision is recorded again, though the text is the same.
	if err := cl.DeleteApp(ctx, "a3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a3's explanation gone with it", 10*time.Second, func() bool {
		_, err := cl.Explain(ctx, "a3")
		return err != nil
	})
	if _, err := cl.Deploy(ctx, app("a3"), client.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a3's last decision recorded after redeploying", 10*time.Second, func() bool {
		ex, err := cl.Explain(ctx, "a3")
		return err == nil && ex.Last != ""
	})
}
