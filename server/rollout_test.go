package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/memory"
)

// TestChangedSpecRollsOut: replacing an application, or pushing its model
// again, replaces its instances make-before-break: requests sent all along
// never fail, and the new spec ends up served. A new model that cannot
// load leaves the old instances serving.
func TestChangedSpecRollsOut(t *testing.T) {
	r, cl := startNodes(t, 1<<30, "n1", "n2")
	ctx := context.Background()
	if _, err := cl.PushModel(ctx, "adder", fakeModel(t)); err != nil {
		t.Fatal(err)
	}
	app := `
apiVersion: accelpool.io/v1
kind: Application
metadata: {name: roll}
spec:
  model: adder
  objective: {p99Ms: 1000}
  replicas: {min: 2, max: 2}
  memoryBytes: 104857600
  serving: {concurrency: 1}
`
	deployReady(t, cl, app, "roll")

	// Requests all along; each answer is counted by the model that gave it:
	// y[0] for x = [1, 2] is 2 from add_one, 1 from identity.
	l := startLoad(ctx, r, "roll", 2*time.Millisecond)
	defer func() {
		_, failed := l.stop()
		if len(failed) > 0 {
			t.Errorf("%d requests failed during the rollouts, the first: %v", len(failed), failed[0])
		}
		t.Logf("answers by y[0]: %v", l.byY0)
	}()

	rolledTo := func(what string, ok func(in cluster.InstanceView) bool) cluster.AppView {
		t.Helper()
		var av cluster.AppView
		waitFor(t, what, 20*time.Second, func() bool {
			var err error
			av, err = cl.App(ctx, "roll")
			if err != nil || av.Status.Ready != 2 || av.Status.Outdated != 0 || len(av.Status.Instances) != 2 {
				return false
			}
			for _, in := range av.Status.Instances {
				if !ok(in) {
					return false
				}
			}
			return true
		})
		return av
	}

	// 1. A changed spec.serving.
	before, _ := cl.App(ctx, "roll")
	if _, err := cl.Deploy(ctx, []byte(strings.Replace(app, "concurrency: 1", "concurrency: 3", 1)), client.DeployOptions{Replace: true}); err != nil {
		t.Fatal(err)
	}
	after := rolledTo("instances with concurrency 3", func(in cluster.InstanceView) bool {
		return in.Serving != nil && in.Serving.Concurrency == 3
	})
	for _, old := range before.Status.Instances {
		for _, in := range after.Status.Instances {
			if in.ID == old.ID {
				t.Errorf("instance %s survived the changed spec", in.ID)
			}
		}
	}

	// 2. The model pushed again: a new digest under the same name.
	art, err := cl.PushModel(ctx, "adder", fakeModelOf(t, fake.Model{Op: "identity"}))
	if err != nil {
		t.Fatal(err)
	}
	rolledTo("instances of the new digest", func(in cluster.InstanceView) bool { return in.ModelDigest == art.Digest })
	waitFor(t, "answers from the new model", 10*time.Second, func() bool { return l.answers(1) > 0 })

	// 3. A push that cannot load: the new instances fail, the old serve on.
	if _, err := cl.PushModel(ctx, "adder", fakeModelOf(t, fake.Model{Op: "identity", FailLoad: true})); err != nil {
		t.Fatal(err)
	}
	var av cluster.AppView
	waitFor(t, "the new instances failed beside the old", 20*time.Second, func() bool {
		av, err = cl.App(ctx, "roll")
		nfailed := 0
		for _, in := range av.Status.Instances {
			if in.Outdated == "" && in.State == cluster.InstanceFailed {
				nfailed++
			}
		}
		return err == nil && nfailed == 2 && av.Status.Outdated == 2
	})
	if !strings.Contains(av.Status.Message, "is stuck: new instance") || !strings.Contains(av.Status.Message, "2 outdated instance(s) still serve") {
		t.Errorf("status message %q does not say the rollout is under way", av.Status.Message)
	}
	n := l.answers(1)
	waitFor(t, "the old instances still answering", 10*time.Second, func() bool { return l.answers(1) > n+20 })
}

// TestRolloutWithoutRoom: when no node has room for a new instance beside
// an old one, the rollout replaces one instance at a time in place, and
// the application's other instance answers meanwhile.
func TestRolloutWithoutRoom(t *testing.T) {
	r, cl := startNodes(t, 150<<20, "n1", "n2") // room for one instance each
	ctx := context.Background()
	if _, err := cl.PushModel(ctx, "adder", fakeModel(t)); err != nil {
		t.Fatal(err)
	}
	app := "apiVersion: accelpool.io/v1\nkind: Application\nmetadata: {name: full}\nspec:\n  model: adder\n  objective: {p99Ms: 1000}\n  replicas: {min: 2, max: 2}\n  memoryBytes: 104857600\n"
	deployReady(t, cl, app, "full")
	l := startLoad(ctx, r, "full", 2*time.Millisecond)
	art, err := cl.PushModel(ctx, "adder", fakeModelOf(t, fake.Model{Op: "identity"}))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both instances replaced", 20*time.Second, func() bool {
		av, err := cl.App(ctx, "full")
		if err != nil || av.Status.Ready != 2 || len(av.Status.Instances) != 2 {
			return false
		}
		for _, in := range av.Status.Instances {
			if in.ModelDigest != art.Digest {
				return false
			}
		}
		return true
	})
	answered, failed := l.stop()
	t.Logf("%d requests answered, %d failed during the rollout", answered, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d requests failed while one instance at a time was replaced, the first: %v", len(failed), failed[0])
	}
}

func TestOutdatedReasons(t *testing.T) {
	d1 := "sha256:" + strings.Repeat("a", 64)
	d2 := "sha256:" + strings.Repeat("b", 64)
	node := cpuNode("n1", cluster.TierEdge, 1<<30, map[string]string{"zone": "eu"})
	v := view{Nodes: map[string]cluster.Node{"n1": node},
		Models: map[string]cluster.ModelArtifact{"m": {Name: "m", Digest: d1, Size: 1 << 20}}}
	base := cluster.Application{Metadata: cluster.Metadata{Name: "a"}, Spec: cluster.AppSpec{Model: "m", MemoryBytes: 64 << 20}}
	in := cluster.Instance{ID: "a-1", App: "a", Node: "n1", Accelerator: "cpu0", ModelName: "m", ModelDigest: d1, MemoryBytes: 64 << 20}
	cases := []struct {
		name string
		app  func(*cluster.Application)
		in   func(*cluster.Instance)
		want string // a substring; "" for up to date
	}{
		{"same", nil, nil, ""},
		{"model pushed again", nil, func(i *cluster.Instance) { i.ModelDigest = d2 }, "serves m@bbbbbbbbbbbb; the application now asks for m@aaaaaaaaaaaa"},
		{"pinned digest", func(a *cluster.Application) { a.Spec.Model = "m@" + d2 }, nil, "now asks for m@bbbbbbbbbbbb"},
		{"batching", func(a *cluster.Application) { a.Spec.Batching.MaxBatchSize = 8 }, nil, "spec.batching changed"},
		{"serving", func(a *cluster.Application) { a.Spec.Serving = &repository.Config{Concurrency: 2} }, nil, "spec.serving changed"},
		{"memory", func(a *cluster.Application) { a.Spec.MemoryBytes = 128 << 20 }, nil, "reserves 64 MiB; the application now asks for 128 MiB"},
		{"label still matches", func(a *cluster.Application) { a.Spec.Constraints.Labels = map[string]string{"zone": "eu"} }, nil, ""},
		{"label no longer matches", func(a *cluster.Application) { a.Spec.Constraints.Labels = map[string]string{"zone": "us"} }, nil, "spec.constraints.labels: zone=us not matched"},
		{"tier", func(a *cluster.Application) { a.Spec.Constraints.Tiers = []cluster.Tier{cluster.TierCloud} }, nil, "spec.constraints.tiers does not admit tier edge"},
		{"kind", func(a *cluster.Application) { a.Spec.Constraints.AcceleratorKind = "gpu" }, nil, "acceleratorKind gpu does not admit cpu0"},
		{"accelerator gone", nil, func(i *cluster.Instance) { i.Accelerator = "gpu7" }, "no longer has accelerator gpu7"},
	}
	for _, c := range cases {
		a, i := base, in
		if c.app != nil {
			c.app(&a)
		}
		if c.in != nil {
			c.in(&i)
		}
		tg, err := targetOf(v, a)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := tg.outdated(v, i)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: outdated = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestReconcileIsFenced: a pass computed under a leadership that has
// since passed to another replica writes nothing; under the current one
// it writes.
func TestReconcileIsFenced(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	old, err := st.Campaign(ctx, electionName, "old")
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan store.Leadership, 1)
	go func() {
		l, err := st.Campaign(ctx, electionName, "next")
		if err != nil {
			t.Error(err)
		}
		next <- l
	}()
	waitFor(t, "a second candidate queued", 5*time.Second, func() bool {
		return st.Candidates(electionName) == 2
	})
	if err := old.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	current := <-next
	r := startReplica(t, st) // queued behind "next": it never leads here

	// An application no node can run: a pass writes its explanation.
	app := cluster.Application{APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: "lonely"},
		Spec:     cluster.AppSpec{Model: "m", Objective: cluster.Objective{P99Ms: 100}, Replicas: cluster.Replicas{Min: 1, Max: 1}}}
	b, _ := json.Marshal(app)
	if _, err := st.Put(ctx, appKey("lonely"), b, store.NoLease); err != nil {
		t.Fatal(err)
	}
	art, _ := json.Marshal(cluster.ModelArtifact{Name: "m", Digest: "sha256:" + strings.Repeat("c", 64), Size: 1 << 20, Format: "onnx"})
	if _, err := st.Put(ctx, modelKey("m"), art, store.NoLease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replica's mirror to hold the application", 5*time.Second, func() bool {
		v := r.Server.state.snapshot()
		_, ok := v.Apps["lonely"]
		_, okm := v.Models["m"]
		return r.Server.state.isSynced() && ok && okm
	})
	if err := r.Server.reconcile(ctx, old); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a pass under a lost leadership: %v, want ErrUnavailable", err)
	}
	if _, err := st.Get(ctx, explainKey("lonely")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a pass under a lost leadership wrote its explanation (%v)", err)
	}
	if err := r.Server.reconcile(ctx, current); err != nil {
		t.Fatalf("a pass under the current leadership: %v", err)
	}
	if _, err := st.Get(ctx, explainKey("lonely")); err != nil {
		t.Fatalf("a pass under the current leadership wrote nothing: %v", err)
	}
}

// deployReady deploys the application manifest and waits up to 20 s for
// the named application to be ready.
func deployReady(t *testing.T, cl *client.Client, manifest, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cl.Deploy(ctx, []byte(manifest), client.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cl.WaitReady(wctx, name); err != nil {
		t.Fatal(err)
	}
}
