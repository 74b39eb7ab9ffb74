package latency_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func accel(id, kind string, mem int64) cluster.Accelerator {
	return cluster.Accelerator{ID: id, Kind: kind, MemoryBytes: mem, Compute: 1}
}

func node(name string, accs ...cluster.Accelerator) scheduler.NodeState {
	return scheduler.NodeState{Node: cluster.Node{Name: name, Tier: cluster.TierEdge, Accelerators: accs}, Up: true}
}

// running adds an instance of app on accelerator a.
func running(n scheduler.NodeState, app, a string) scheduler.NodeState {
	n.Instances = append(slices.Clone(n.Instances), cluster.Instance{
		ID:  n.Node.Name + "-" + app + "-" + a + "-" + string(rune('0'+len(n.Instances))),
		App: app, Node: n.Node.Name, Accelerator: a, ModelName: "m-" + app, MemoryBytes: 512 * mib,
	})
	return n
}

// app is an application of model m-NAME at rate req/s with a p99
// objective.
func app(name string, rate, p99 float64, f ...func(*cluster.AppSpec)) cluster.Application {
	a := cluster.Application{
		APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{
			Model: "m-" + name, Rate: rate, Objective: cluster.Objective{P99Ms: p99},
			Replicas: cluster.Replicas{Min: 1, Max: 1}, MemoryBytes: 512 * mib,
		},
	}
	for _, g := range f {
		g(&a.Spec)
	}
	return a
}

// profiles: every model m-X takes ms[X] alone on a GPU and on a TPU,
// with a switch cost of 10 ms on the TPU.
func profiles(ms map[string]float64) latency.StaticProfiles {
	p := latency.StaticProfiles{}
	for name, v := range ms {
		p[latency.ProfileKey{Model: "m-" + name, Kind: "gpu"}] = latency.Profile{ServiceTimeMs: v}
		p[latency.ProfileKey{Model: "m-" + name, Kind: "cpu"}] = latency.Profile{ServiceTimeMs: 4 * v}
		p[latency.ProfileKey{Model: "m-" + name, Kind: "tpu"}] = latency.Profile{ServiceTimeMs: v, SwitchCostMs: 10}
	}
	return p
}

func policy(src latency.ProfileSource) scheduler.Policy {
	p := latency.ModelDrivenPolicy(src)
	return p
}

func TestCheckerAcceptsAndRejects(t *testing.T) {
	src := profiles(map[string]float64{"y": 20, "x": 10, "z": 30, "big": 50})
	y := app("y", 20, 150)  // ρ 0.4 alone, p99 104 ms
	x := app("x", 10, 100)  // ρ 0.1 alone, p99 25 ms
	z := app("z", 15, 1000) // ρ 0.45 alone
	for _, tc := range []struct {
		name  string
		nodes []scheduler.NodeState
		apps  []cluster.Application
		req   cluster.Application
		count int
		// want is "node/accel" placements, or the rejection of n1's
		// first accelerator.
		want   []string
		reason string
	}{
		{
			name:  "empty gpu",
			nodes: []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib))},
			req:   x, want: []string{"n1/gpu0"},
		},
		{
			// x beside y: ρ = 0.5, y's p99 134 ms, x's 68 ms.
			name:  "fits beside",
			nodes: []scheduler.NodeState{running(node("n1", accel("gpu0", "gpu", 8*gib)), "y", "gpu0")},
			apps:  []cluster.Application{y}, req: x, want: []string{"n1/gpu0"},
		},
		{
			// z beside y: ρ = 0.85 <= 0.9, but y's p99 would pass its
			// objective; the worst offender is named.
			name:   "objective",
			nodes:  []scheduler.NodeState{running(node("n1", accel("gpu0", "gpu", 8*gib)), "y", "gpu0")},
			apps:   []cluster.Application{y},
			req:    z,
			reason: "latency: app y p99 would be 567ms > 147ms (150ms objective less 2 % headroom; ρ=0.85)",
		},
		{
			name:   "utilisation",
			nodes:  []scheduler.NodeState{running(node("n1", accel("gpu0", "gpu", 8*gib)), "z", "gpu0")},
			apps:   []cluster.Application{z},
			req:    app("big", 10, 1e5),
			reason: "latency: utilisation would be 0.95 > 0.90 bound on gpu0",
		},
		{
			name:   "overloaded",
			nodes:  []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib))},
			req:    app("big", 25, 1e5),
			reason: "latency: utilisation would be 1.25 > 0.90 bound on gpu0",
		},
		{
			// The same two applications on an Edge TPU: every request
			// of one after the other's pays a 10 ms switch.
			name:   "tpu switches",
			nodes:  []scheduler.NodeState{running(node("n1", accel("tpu0", "tpu", 8*gib)), "y", "tpu0")},
			apps:   []cluster.Application{y},
			req:    x,
			reason: "latency: app x p99 would be 133ms > 98ms (100ms objective less 2 % headroom; ρ=0.63)",
		},
		{
			// A CPU is 4x slower here: x alone is at ρ 0.4.
			name:   "cpu",
			nodes:  []scheduler.NodeState{node("n1", accel("cpu0", "cpu", 8*gib))},
			req:    x,
			reason: "latency: app x p99 would be 208ms > 98ms (100ms objective less 2 % headroom; ρ=0.40)",
		},
		{
			name:   "unknown kind",
			nodes:  []scheduler.NodeState{node("n1", accel("fpga0", "fpga", 8*gib))},
			req:    x,
			reason: "latency: no latency model for accelerator kind fpga",
		},
		{
			name:   "no profile",
			nodes:  []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib))},
			req:    app("new", 1, 100),
			reason: "latency: no profile for model m-new on gpu",
		},
		{
			name:   "tenant without a specification",
			nodes:  []scheduler.NodeState{running(node("n1", accel("gpu0", "gpu", 8*gib)), "ghost", "gpu0")},
			req:    x,
			reason: "latency: app ghost on gpu0 has no specification in the snapshot",
		},
		{
			// Three instances of y with replicas.min 3 carry 20 of its
			// 60 req/s each: one per accelerator, as one y alone.
			name:  "rate shared over replicas",
			nodes: []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib), accel("gpu1", "gpu", 8*gib), accel("gpu2", "gpu", 8*gib))},
			req: app("y", 60, 150, func(s *cluster.AppSpec) {
				s.Replicas = cluster.Replicas{Min: 3, Max: 3}
			}),
			count: 3, want: []string{"n1/gpu0", "n1/gpu1", "n1/gpu2"},
		},
		{
			// With one replica the instance carries all 60 req/s.
			name:   "full rate per instance",
			nodes:  []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib))},
			req:    app("y", 60, 150),
			count:  1,
			reason: "latency: utilisation would be 1.20 > 0.90 bound on gpu0",
		},
		{
			// The decision's own instances count: one x fits on gpu0
			// beside y, a second would put y at 179 ms, so the second
			// and third go to gpu1.
			name: "in-decision instances",
			nodes: []scheduler.NodeState{
				running(node("n1", accel("gpu0", "gpu", 8*gib), accel("gpu1", "gpu", 8*gib)), "y", "gpu0"),
			},
			apps: []cluster.Application{y},
			req: app("x", 30, 100, func(s *cluster.AppSpec) {
				s.Replicas = cluster.Replicas{Min: 3, Max: 3}
			}),
			count: 3, want: []string{"n1/gpu0", "n1/gpu1", "n1/gpu1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := scheduler.Snapshot{Nodes: tc.nodes, Apps: tc.apps}
			e, err := scheduler.Place(snap, scheduler.Request{App: tc.req, Count: tc.count}, policy(src))
			if tc.reason != "" {
				if err == nil {
					t.Fatalf("placed on %v, want rejection %q", where(e), tc.reason)
				}
				if got := e.Candidates[0].Why(); got != tc.reason {
					t.Errorf("reason = %q\n          want %q", got, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, format(e))
			}
			if got := where(e); !slices.Equal(got, tc.want) {
				t.Errorf("placements = %v, want %v\n%s", got, tc.want, format(e))
			}
		})
	}
}

func where(e scheduler.Explanation) []string {
	var out []string
	for _, p := range e.Placements {
		out = append(out, p.Instance.Node+"/"+p.Instance.Accelerator)
	}
	return out
}

func format(e scheduler.Explanation) string {
	var b strings.Builder
	e.Format(&b)
	return b.String()
}

func TestCheckerOptions(t *testing.T) {
	src := profiles(map[string]float64{"x": 10})
	nodes := []scheduler.NodeState{node("n1", accel("gpu0", "gpu", 8*gib))}
	x := app("x", 50, 1000) // ρ 0.5
	place := func(ch latency.Checker) string {
		p := scheduler.Policy{Checkers: []scheduler.Checker{ch}}
		e, _ := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, scheduler.Request{App: x}, p)
		return e.Candidates[0].Why()
	}
	if got := place(latency.Checker{Profiles: src, MaxUtilisation: 0.4}); got != "latency: utilisation would be 0.50 > 0.40 bound on gpu0" {
		t.Errorf("bound: %q", got)
	}
	if got := place(latency.Checker{Profiles: src, Share: func(*cluster.Application) float64 { return 95 }}); got != "latency: utilisation would be 0.95 > 0.90 bound on gpu0" {
		t.Errorf("share: %q", got)
	}
	fcfs := func(string) latency.Model { return latency.FCFS{} }
	if got := place(latency.Checker{Profiles: src, Models: fcfs}); got != "" {
		t.Errorf("fcfs: %q", got)
	}
	if got := place(latency.Checker{}); got != "latency: no profile source configured" {
		t.Errorf("no source: %q", got)
	}
}

func TestSlackRanker(t *testing.T) {
	src := profiles(map[string]float64{"y": 20, "x": 10})
	y := app("y", 20, 150)
	nodes := []scheduler.NodeState{
		running(node("n1", accel("gpu0", "gpu", 8*gib)), "y", "gpu0"),
		node("n2", accel("gpu0", "gpu", 8*gib)),
	}
	snap := scheduler.Snapshot{Nodes: nodes, Apps: []cluster.Application{y}}
	// Slack spreads: x goes to the empty n2.
	slack := scheduler.Policy{
		Checkers: append(scheduler.DefaultCheckers(), latency.Checker{Profiles: src}),
		Rankers:  []scheduler.Weighted{{Ranker: latency.Slack{Profiles: src}, Weight: 1}},
	}
	e, err := scheduler.Place(snap, scheduler.Request{App: app("x", 10, 100)}, slack)
	if err != nil {
		t.Fatal(err)
	}
	if got := where(e); !slices.Equal(got, []string{"n2/gpu0"}) {
		t.Errorf("slack placed on %v\n%s", got, format(e))
	}
	// x alone on n2: ρ 0.1, p99 25 ms of its 100: slack 0.75; beside y
	// on n1, y's p99 134 ms of 150 is the tightest: 0.11.
	n1, _ := outcome(e, "n1")
	n2, _ := outcome(e, "n2")
	if !(n2.Score > 0.7 && n1.Score < n2.Score && n1.Score > 0) {
		t.Errorf("slack scores n1 %v n2 %v", n1.Score, n2.Score)
	}
	// The model-driven policy packs: x goes beside y.
	e, err = scheduler.Place(snap, scheduler.Request{App: app("x", 10, 100)}, latency.ModelDrivenPolicy(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := where(e); !slices.Equal(got, []string{"n1/gpu0"}) {
		t.Errorf("model-driven placed on %v\n%s", got, format(e))
	}
	// A candidate the model cannot judge scores 0.
	fpga := scheduler.Snapshot{Nodes: []scheduler.NodeState{node("n3", accel("fpga0", "fpga", 8*gib))}}
	e, err = scheduler.Place(fpga, scheduler.Request{App: app("x", 10, 100)}, scheduler.Policy{
		Rankers: []scheduler.Weighted{{Ranker: latency.Slack{Profiles: src}, Weight: 1}},
	})
	if err != nil || e.Placements[0].Score != 0 {
		t.Errorf("fpga: score %v, err %v", e.Placements, err)
	}
}

func outcome(e scheduler.Explanation, n string) (scheduler.Outcome, bool) {
	for _, o := range e.Candidates {
		if o.Node == n {
			return o, true
		}
	}
	return scheduler.Outcome{}, false
}

func TestStaticProfiles(t *testing.T) {
	src := profiles(map[string]float64{"x": 10})
	if p, err := src.Profile("m-x", "gpu"); err != nil || p.ServiceTimeMs != 10 {
		t.Errorf("m-x gpu: %+v, %v", p, err)
	}
	_, err := src.Profile("m-x", "")
	if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "no profile for model m-x on (none)" {
		t.Errorf("unknown: %v", err)
	}
}

func TestModelForKind(t *testing.T) {
	for kind, want := range map[string]string{"gpu": "ps", "cpu": "ps", "tpu": "fcfs"} {
		if m := latency.ModelForKind(kind); m == nil || m.Name() != want {
			t.Errorf("%s: %v, want %s", kind, m, want)
		}
	}
	if m := latency.ModelForKind("fpga"); m != nil {
		t.Errorf("fpga: %v", m)
	}
}
