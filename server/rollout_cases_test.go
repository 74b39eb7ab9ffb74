package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/memory"
)

// rvHarness is a Server on a memory store whose state the test writes
// directly (nodes, their reported states, instances, applications), and
// that reconciles when told, under a leadership the test holds.
type rvHarness struct {
	t    *testing.T
	s    *Server
	st   *memory.Store
	ctx  context.Context
	lead store.Leadership
}

func newRVHarness(t *testing.T) *rvHarness {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Store: st, AdvertiseURL: "http://127.0.0.1:39101", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.state.run(ctx)
	waitFor(t, "synced", 5*time.Second, s.state.isSynced)
	lead, err := st.Campaign(ctx, electionName, "test")
	if err != nil {
		t.Fatal(err)
	}
	return &rvHarness{t: t, s: s, st: st, ctx: ctx, lead: lead}
}

func (h *rvHarness) put(prefix, key string, v any) {
	b, _ := json.Marshal(v)
	rev, err := h.st.Put(h.ctx, key, b, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.s.state.waitPrefix(h.ctx, prefix, rev); err != nil {
		h.t.Fatal(err)
	}
}

// node registers an up node whose agent reports states (instance ID → state).
func (h *rvHarness) node(name string, mem int64, states map[string]string) {
	h.put(prefixNodes, nodeKey(name), cpuNode(name, cluster.TierEdge, mem, nil))
	h.put(prefixAlive, aliveKey(name), aliveRecord{AgentID: name})
	ns := cluster.NodeStatus{Up: true, Instances: map[string]cluster.InstanceStatus{}}
	for id, s := range states {
		ns.Instances[id] = cluster.InstanceStatus{State: s}
	}
	h.put(prefixStatus, statusKey(name), ns)
}

func (h *rvHarness) instance(in cluster.Instance) {
	h.put(prefixInstances, instanceKey(in.Node, in.ID), in)
}

func (h *rvHarness) reconcile() []cluster.InstanceView {
	if err := h.s.reconcile(h.ctx, h.lead); err != nil {
		h.t.Fatal(err)
	}
	v := h.s.state.snapshot()
	av := h.s.appView(v, v.Apps["app"])
	for _, in := range av.Status.Instances {
		h.t.Logf("  %s node=%s digest=%s mem=%d state=%s outdated=%q", in.ID, in.Node, shortDigest(in.ModelDigest), in.MemoryBytes, in.State, in.Outdated)
	}
	return av.Status.Instances
}

var (
	rvD1 = "sha256:" + strings.Repeat("1", 64)
	rvD2 = "sha256:" + strings.Repeat("2", 64)
)

func rvApp(model string, min, max int, mem int64) cluster.Application {
	return cluster.Application{APIVersion: cluster.APIVersion, Kind: cluster.KindApplication, Metadata: cluster.Metadata{Name: "app"},
		Spec: cluster.AppSpec{Model: model, Objective: cluster.Objective{P99Ms: 1000}, Replicas: cluster.Replicas{Min: min, Max: max}, MemoryBytes: mem}}
}

func rvInst(id, node, digest string, mem int64) cluster.Instance {
	return cluster.Instance{ID: id, App: "app", Node: node, Accelerator: "cpu0", ModelName: "m", ModelDigest: digest, ServedName: id, MemoryBytes: mem, Created: time.Now().UTC()}
}

// A rollout whose new instances failed (or are still loading) is scaled
// down: an outdated Ready instance keeps serving.
func TestScaleDownDuringRolloutKeepsServing(t *testing.T) {
	h := newRVHarness(t)
	const mem = 100 << 20
	h.put(prefixModels, modelKey("m"), cluster.ModelArtifact{Name: "m", Digest: rvD2, Size: 1 << 20})
	h.node("n1", 1<<30, map[string]string{"old-a": cluster.InstanceReady})
	h.node("n2", 1<<30, map[string]string{"old-b": cluster.InstanceReady})
	h.node("n3", 1<<30, map[string]string{"new-c": cluster.InstanceFailed})
	h.node("n4", 1<<30, map[string]string{"new-d": cluster.InstanceFailed})
	h.instance(rvInst("old-a", "n1", rvD1, mem))
	h.instance(rvInst("old-b", "n2", rvD1, mem))
	h.instance(rvInst("new-c", "n3", rvD2, mem))
	h.instance(rvInst("new-d", "n4", rvD2, mem))
	// The rollout to D2 failed; the operator now scales down to 1.
	h.put(prefixApps, appKey("app"), rvApp("m", 1, 1, mem))
	if readyIn(h.reconcile()) == 0 {
		t.Errorf("no Ready instance left: scale-down removed every outdated Ready instance while the up-to-date ones are Failed")
	}
}

// An application pinned to a digest does not roll when another version
// is pushed under the model's name (whose size says nothing of the
// pinned artifact's).
func TestPinnedDigestIgnoresOtherPushes(t *testing.T) {
	h := newRVHarness(t)
	h.put(prefixModels, modelKey("m"), cluster.ModelArtifact{Name: "m", Digest: rvD1, Size: 1 << 20})
	h.put(prefixApps, appKey("app"), rvApp("m@"+rvD1, 1, 1, 0))
	h.node("n1", 1<<30, nil)
	ins := h.reconcile()
	if len(ins) != 1 {
		t.Fatalf("want 1 instance, got %d", len(ins))
	}
	id := ins[0].ID
	h.node("n1", 1<<30, map[string]string{id: cluster.InstanceReady})
	// Another version is pushed under the same name; the app stays pinned to D1.
	h.put(prefixModels, modelKey("m"), cluster.ModelArtifact{Name: "m", Digest: rvD2, Size: 50 << 20})
	ins = h.reconcile()
	for _, in := range ins {
		if in.ID == id && in.Outdated != "" {
			t.Errorf("pinned instance %s is outdated after an unrelated push: %s", id, in.Outdated)
		}
	}
	if len(ins) != 1 {
		t.Errorf("pinned app got %d instances after an unrelated push (a surge replacement to the same digest)", len(ins))
	}
}

// min 0: a spec change replaces the instances the application runs; it
// does not scale it to zero.
func TestMinZeroRolloutKeepsItsInstances(t *testing.T) {
	h := newRVHarness(t)
	const mem = 100 << 20
	h.put(prefixModels, modelKey("m"), cluster.ModelArtifact{Name: "m", Digest: rvD2, Size: 1 << 20})
	h.node("n1", 1<<30, map[string]string{"old-a": cluster.InstanceReady})
	h.node("n2", 1<<30, map[string]string{"old-b": cluster.InstanceReady})
	h.instance(rvInst("old-a", "n1", rvD1, mem))
	h.instance(rvInst("old-b", "n2", rvD1, mem))
	h.put(prefixApps, appKey("app"), rvApp("m", 0, 2, mem))
	ins := h.reconcile()
	if len(ins) == 0 {
		t.Errorf("min 0, max 2: the spec change removed both serving instances and placed none")
	}
}

// min 2, one outdated instance Ready, the other not Ready; the new spec's
// memory fits only where the Ready one is: the in-place path must not
// remove the only instance serving.
func TestInPlaceKeepsTheLastServingInstance(t *testing.T) {
	h := newRVHarness(t)
	h.put(prefixModels, modelKey("m"), cluster.ModelArtifact{Name: "m", Digest: rvD1, Size: 1 << 20})
	h.node("n1", 150<<20, map[string]string{"old-a": cluster.InstanceReady})
	h.node("n2", 120<<20, map[string]string{"old-b": cluster.InstanceFailed})
	h.instance(rvInst("old-a", "n1", rvD1, 100<<20))
	h.instance(rvInst("old-b", "n2", rvD1, 100<<20))
	h.put(prefixApps, appKey("app"), rvApp("m", 2, 2, 140<<20)) // memory changed
	if readyIn(h.reconcile()) == 0 {
		t.Errorf("min 2: no Ready instance left after one pass")
	}
}

func readyIn(list []cluster.InstanceView) int {
	n := 0
	for _, in := range list {
		if in.State == cluster.InstanceReady {
			n++
		}
	}
	return n
}
