package baseline_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/baseline"
	"github.com/accelpool/accelpool/scheduler/latency"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func gpuNode(name string, mem int64) scheduler.NodeState {
	return scheduler.NodeState{
		Node: cluster.Node{Name: name, Tier: cluster.TierEdge, Accelerators: []cluster.Accelerator{
			{ID: "gpu0", Kind: "gpu", MemoryBytes: mem, Compute: 1},
		}},
		Up: true,
	}
}

// using adds an instance of app taking mem on gpu0.
func using(n scheduler.NodeState, app string, mem int64) scheduler.NodeState {
	n.Instances = append(slices.Clone(n.Instances), cluster.Instance{
		ID: n.Node.Name + "-" + app, App: app, Node: n.Node.Name, Accelerator: "gpu0", ModelName: "m", MemoryBytes: mem,
	})
	return n
}

func app(name string, rate float64, mem int64) cluster.Application {
	return cluster.Application{
		APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{
			Model: "m", Rate: rate, Objective: cluster.Objective{P99Ms: 150},
			Replicas: cluster.Replicas{Min: 1, Max: 1}, MemoryBytes: mem,
		},
	}
}

func TestMemoryFits(t *testing.T) {
	// Free after a 1 GiB instance: a 1 GiB, b 3 GiB, c 0, d does not fit.
	nodes := []scheduler.NodeState{
		using(gpuNode("a", 4*gib), "x", 2*gib),
		using(gpuNode("b", 4*gib), "y", 0),
		using(gpuNode("c", 4*gib), "z", 3*gib),
		using(gpuNode("d", 4*gib), "w", 3*gib+gib/2),
	}
	snap := scheduler.Snapshot{Nodes: nodes}
	for _, tc := range []struct {
		name   string
		policy scheduler.Policy
		want   string
	}{
		{"first fit", baseline.FirstFit(), "a"},
		{"best fit", baseline.BestFit(), "c"},
		{"worst fit", baseline.WorstFit(), "b"},
	} {
		e, err := scheduler.Place(snap, scheduler.Request{App: app("new", 10, gib)}, tc.policy)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := e.Placements[0].Instance.Node; got != tc.want {
			t.Errorf("%s placed on %s, want %s", tc.name, got, tc.want)
		}
		if o := e.Candidates[len(e.Candidates)-1]; o.Node != "d" || o.Checker != "memory" {
			t.Errorf("%s: d not rejected by memory: %+v", tc.name, o)
		}
	}
}

// TestMemoryOvercommitsLatency shows why the knapsacks are baselines:
// they fill an accelerator's memory whatever the latency.
func TestMemoryOvercommitsLatency(t *testing.T) {
	src := latency.StaticProfiles{{Model: "m", Kind: "gpu"}: {ServiceTimeMs: 20}}
	var snap scheduler.Snapshot
	snap.Nodes = []scheduler.NodeState{gpuNode("a", 4*gib), gpuNode("b", 4*gib)}
	for i := range 8 {
		snap.Apps = append(snap.Apps, app("app"+string(rune('0'+i)), 10, gib))
	}
	hosted := func(p scheduler.Policy) []string {
		s, err := scheduler.Prepare(snap)
		if err != nil {
			t.Fatal(err)
		}
		var where []string
		for i, a := range snap.Apps {
			e, err := s.Place(scheduler.Request{App: a}, p)
			if err != nil {
				break
			}
			in := e.Placements[0].Instance
			in.ID = string(rune('0' + i))
			if err := s.Add(in); err != nil {
				t.Fatal(err)
			}
			where = append(where, in.Node)
		}
		return where
	}
	// 4 instances of 1 GiB per 4 GiB GPU: 8 apps, 4 per GPU at ρ 0.8.
	if got := hosted(baseline.FirstFit()); !slices.Equal(got, []string{"a", "a", "a", "a", "b", "b", "b", "b"}) {
		t.Errorf("first fit: %v", got)
	}
	pred, _ := latency.PS{}.Predict(slices.Repeat([]latency.Load{{Rate: 10, Profile: latency.Profile{ServiceTimeMs: 20}}}, 4))
	if pred[0].P99Ms <= 150 {
		t.Fatalf("the example should overcommit: p99 %v", pred[0].P99Ms)
	}
	// The utilisation knapsack stops at ρ 1 (5 per GPU by memory would
	// be 1.0; memory stops it at 4 here too).
	if got := hosted(baseline.Utilisation(src)); len(got) != 8 {
		t.Errorf("utilisation: %v", got)
	}
	// Model-driven keeps every p99 within 150 ms: 2 per GPU (ρ 0.4, p99
	// 104 ms; a third would make it 179).
	if got := hosted(latency.ModelDrivenPolicy(src)); !slices.Equal(got, []string{"a", "a", "b", "b"}) {
		t.Errorf("model-driven: %v", got)
	}
}

func TestUtilisationChecker(t *testing.T) {
	src := latency.StaticProfiles{{Model: "m", Kind: "gpu"}: {ServiceTimeMs: 20}}
	node := using(gpuNode("a", 16*gib), "x", gib) // x at 30 req/s: ρ 0.6
	snap := scheduler.Snapshot{Nodes: []scheduler.NodeState{node}, Apps: []cluster.Application{app("x", 30, gib)}}
	for _, tc := range []struct {
		rate   float64
		max    float64
		reason string
	}{
		{20, 0, ""}, // 1.0 exactly: admitted
		{25, 0, "utilisation: utilisation would be 1.10 > 1.00 on gpu0"},
		{10, 0.7, "utilisation: utilisation would be 0.80 > 0.70 on gpu0"},
	} {
		p := scheduler.Policy{Checkers: []scheduler.Checker{baseline.UtilisationChecker{Profiles: src, Max: tc.max}}}
		e, err := scheduler.Place(snap, scheduler.Request{App: app("new", tc.rate, gib)}, p)
		if got := e.Candidates[0].Why(); got != tc.reason || (err == nil) != (tc.reason == "") {
			t.Errorf("rate %v max %v: %q (err %v), want %q", tc.rate, tc.max, got, err, tc.reason)
		}
	}
	p := scheduler.Policy{Checkers: []scheduler.Checker{baseline.UtilisationChecker{Profiles: latency.StaticProfiles{}}}}
	e, _ := scheduler.Place(snap, scheduler.Request{App: app("new", 1, gib)}, p)
	if got := e.Candidates[0].Why(); !strings.Contains(got, "no profile for model m on gpu") {
		t.Errorf("unknown profile: %q", got)
	}
}

func TestKnapsacksNamed(t *testing.T) {
	var names []string
	for _, k := range baseline.Knapsacks(latency.StaticProfiles{}) {
		names = append(names, k.Name)
		if len(k.Policy.Checkers) == 0 || len(k.Policy.Rankers) != 1 {
			t.Errorf("%s: %+v", k.Name, k.Policy)
		}
	}
	if want := []string{"memory-first-fit", "memory-best-fit", "memory-worst-fit", "utilisation-first-fit"}; !slices.Equal(names, want) {
		t.Errorf("names %v", names)
	}
}
