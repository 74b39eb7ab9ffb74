package scheduler_test

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
)

func TestPlace(t *testing.T) {
	type reject struct{ node, accel, why string }
	tests := []struct {
		name   string
		nodes  []scheduler.NodeState
		req    scheduler.Request
		policy scheduler.Policy
		want   []string // placements, "node/accelerator"
		// wantErr is a substring of the error (which must then wrap
		// ErrResourceExhausted).
		wantErr  string
		rejected []reject // candidate → "checker: reason"
		fallback []string // placements' Fallback notes
	}{
		{
			name: "memory rejects a full accelerator",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", gib)), "other", "gpu0", 896*mib),
				node("n2", gpu("gpu0", 2*gib)),
			},
			req:      req(app("x"), 1),
			want:     []string{"n2/gpu0"},
			rejected: []reject{{"n1", "gpu0", "memory: needs 512 MiB, 128 MiB free on gpu0"}},
		},
		{
			name: "reported free memory below reservations counts",
			nodes: []scheduler.NodeState{
				with(node("n1", gpu("gpu0", 4*gib)), func(n *scheduler.NodeState) {
					n.FreeMemory = map[string]int64{"gpu0": 100 * mib}
				}),
				node("n2", gpu("gpu0", 2*gib)),
			},
			req:      req(app("x"), 1),
			want:     []string{"n2/gpu0"},
			rejected: []reject{{"n1", "gpu0", "memory: needs 512 MiB, 100 MiB free on gpu0"}},
		},
		{
			name: "request memory overrides the spec",
			nodes: []scheduler.NodeState{
				node("n1", gpu("gpu0", gib)),
			},
			req:      scheduler.Request{App: app("x"), MemoryBytes: 3 * gib / 2},
			wantErr:  "no accelerator fits app x (1 on 1 nodes): 1 rejected by memory",
			rejected: []reject{{"n1", "gpu0", "memory: needs 1.5 GiB, 1 GiB free on gpu0"}},
		},
		{
			name: "accelerator kind",
			nodes: []scheduler.NodeState{
				node("n1", acc("cpu0", "cpu", 64*gib), gpu("gpu0", 8*gib)),
				node("n2", acc("cpu0", "cpu", 64*gib)),
			},
			req:  req(app("x", func(s *cluster.AppSpec) { s.Constraints.AcceleratorKind = "gpu" }), 1),
			want: []string{"n1/gpu0"},
			rejected: []reject{
				{"n1", "cpu0", "kind: cpu0 is cpu, app needs gpu"},
				{"n2", "cpu0", "kind: cpu0 is cpu, app needs gpu"},
			},
		},
		{
			name: "tiers",
			nodes: []scheduler.NodeState{
				tier(node("a-cloud", gpu("gpu0", 80*gib)), cluster.TierCloud),
				node("b-edge", gpu("gpu0", 16*gib)),
				tier(node("c-device", gpu("gpu0", 4*gib)), cluster.TierDevice),
			},
			req: req(app("x", func(s *cluster.AppSpec) {
				s.Constraints.Tiers = []cluster.Tier{cluster.TierEdge, cluster.TierDevice}
			}), 1),
			want:     []string{"c-device/gpu0"}, // binpack: the smallest fills most
			rejected: []reject{{"a-cloud", "gpu0", "tier: node is cloud, app needs edge or device"}},
		},
		{
			name: "sites",
			nodes: []scheduler.NodeState{
				site(node("n1", gpu("gpu0", 8*gib)), "lyon"),
				site(node("n2", gpu("gpu0", 8*gib)), "paris"),
				site(node("n3", gpu("gpu0", 8*gib)), ""),
			},
			req:  req(app("x", func(s *cluster.AppSpec) { s.Constraints.Sites = []string{"paris", "nice"} }), 1),
			want: []string{"n2/gpu0"},
			rejected: []reject{
				{"n1", "gpu0", "site: node is at lyon, app needs paris or nice"},
				{"n3", "gpu0", "site: node is at (none), app needs paris or nice"},
			},
		},
		{
			name: "labels must all match",
			nodes: []scheduler.NodeState{
				labels(node("n1", gpu("gpu0", 8*gib)), "zone", "us", "disk", "ssd"),
				labels(node("n2", gpu("gpu0", 8*gib)), "zone", "eu"),
				labels(node("n3", gpu("gpu0", 8*gib)), "zone", "eu", "disk", "ssd", "extra", "1"),
			},
			req: req(app("x", func(s *cluster.AppSpec) {
				s.Constraints.Labels = map[string]string{"zone": "eu", "disk": "ssd"}
			}), 1),
			want: []string{"n3/gpu0"},
			rejected: []reject{
				{"n1", "gpu0", "label: zone=eu not matched (node has zone=us)"},
				{"n2", "gpu0", "label: disk=ssd not matched (node has no disk label)"},
			},
		},
		{
			name: "down nodes and nodes without accelerators",
			nodes: []scheduler.NodeState{
				down(node("n1", gpu("gpu0", 8*gib), gpu("gpu1", 8*gib))),
				node("n2"),
				node("n3", gpu("gpu0", 80*gib)),
			},
			req:  req(app("x"), 1),
			want: []string{"n3/gpu0"},
			rejected: []reject{
				{"n1", "gpu0", "up: node is down"},
				{"n1", "gpu1", "up: node is down"},
				{"n2", "", "accelerators: node has no accelerators"},
			},
		},
		{
			name: "anti-affinity prefers a node without the app",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 8*gib), gpu("gpu1", 8*gib)), "x", "gpu0", 6*gib),
				node("n2", gpu("gpu0", 16*gib)),
			},
			req:  req(app("x"), 1),
			want: []string{"n2/gpu0"}, // binpack alone would take n1/gpu0
		},
		{
			name: "anti-affinity is relaxed when no other node fits",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 8*gib)), "x", "gpu0", gib),
				node("n2", gpu("gpu0", 256*mib)),
			},
			req:      req(app("x"), 1),
			want:     []string{"n1/gpu0"},
			fallback: []string{"anti-affinity: node already runs 1 instance of x"},
			rejected: []reject{{"n2", "gpu0", "memory: needs 512 MiB, 256 MiB free on gpu0"}},
		},
		{
			name: "hard anti-affinity fails instead",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 8*gib)), "x", "gpu0", gib),
			},
			req: req(app("x"), 1),
			policy: scheduler.Policy{Checkers: []scheduler.Checker{
				scheduler.NodeUp{}, scheduler.Memory{}, scheduler.HardAntiAffinity{},
			}},
			wantErr:  "no accelerator fits app x (1 on 1 nodes): 1 rejected by anti-affinity",
			rejected: []reject{{"n1", "gpu0", "anti-affinity: node already runs 1 instance of x"}},
		},
		{
			name: "binpack takes the fullest accelerator",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 8*gib)), "y", "gpu0", 6*gib),
				node("n2", gpu("gpu0", 8*gib)),
				running(node("n3", gpu("gpu0", 8*gib)), "z", "gpu0", 2*gib),
			},
			req:    req(app("x"), 1),
			policy: scheduler.BinPackPolicy(),
			want:   []string{"n1/gpu0"},
		},
		{
			name: "spread takes the emptiest accelerator",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 8*gib)), "y", "gpu0", 6*gib),
				node("n2", gpu("gpu0", 8*gib)),
				running(node("n3", gpu("gpu0", 8*gib)), "z", "gpu0", 2*gib),
			},
			req:    req(app("x"), 1),
			policy: scheduler.SpreadPolicy(),
			want:   []string{"n2/gpu0"},
		},
		{
			name: "binpack prefers a node already in use",
			nodes: []scheduler.NodeState{
				node("n1", gpu("gpu0", 8*gib)),
				running(node("n2", gpu("gpu0", 8*gib), gpu("gpu1", 8*gib)), "y", "gpu1", 8*gib),
			},
			req:  req(app("x"), 1),
			want: []string{"n2/gpu0"},
		},
		{
			name: "count > 1 spreads over nodes first",
			nodes: []scheduler.NodeState{
				node("n1", gpu("gpu0", 8*gib)),
				node("n2", gpu("gpu0", 8*gib)),
				node("n3", gpu("gpu0", 8*gib)),
			},
			req:  req(app("x"), 3),
			want: []string{"n1/gpu0", "n2/gpu0", "n3/gpu0"},
		},
		{
			name: "count > 1 does not count free memory twice",
			nodes: []scheduler.NodeState{
				running(node("n1", gpu("gpu0", 2*gib)), "y", "gpu0", gib),
			},
			req:      req(app("x"), 3),
			want:     []string{"n1/gpu0", "n1/gpu0"},
			fallback: []string{"", "anti-affinity: node already runs 1 instance of x"},
			wantErr:  "placed 2 of 3 instances of app x; no accelerator fits app x (1 on 1 nodes): 1 rejected by memory",
		},
		{
			name: "count > 1 fills the second accelerator of a node",
			nodes: []scheduler.NodeState{
				node("n1", gpu("gpu0", gib), gpu("gpu1", gib)),
			},
			req:      req(app("x", func(s *cluster.AppSpec) { s.MemoryBytes = 768 * mib }), 2),
			want:     []string{"n1/gpu0", "n1/gpu1"},
			fallback: []string{"", "anti-affinity: node already runs 1 instance of x"},
		},
		{
			name:    "empty cluster",
			req:     req(app("x"), 1),
			wantErr: "no accelerator fits app x: the cluster has no nodes",
		},
		{
			name: "summary orders checkers by count",
			nodes: []scheduler.NodeState{
				tier(node("n1", gpu("gpu0", 8*gib)), cluster.TierCloud),
				running(node("n2", gpu("gpu0", gib)), "y", "gpu0", gib),
				running(node("n3", gpu("gpu0", gib)), "y", "gpu0", gib),
				running(node("n4", gpu("gpu0", gib)), "y", "gpu0", gib),
				tier(node("n5", gpu("gpu0", gib)), cluster.TierCloud),
			},
			req:     req(app("x", func(s *cluster.AppSpec) { s.Constraints.Tiers = []cluster.Tier{cluster.TierEdge} }), 1),
			wantErr: "no accelerator fits app x (5 on 5 nodes): 3 rejected by memory, 2 by tier",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := scheduler.Place(scheduler.Snapshot{Nodes: tc.nodes}, tc.req, tc.policy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if !errors.Is(err, errdefs.ErrResourceExhausted) {
					t.Errorf("err %v does not wrap ErrResourceExhausted", err)
				}
				if e.Failure != err.Error() {
					t.Errorf("Failure = %q, want the error's text", e.Failure)
				}
			} else if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if got := where(e); !slices.Equal(got, tc.want) {
				t.Errorf("placements = %v, want %v", got, tc.want)
			}
			for _, r := range tc.rejected {
				o, ok := outcome(e, r.node, r.accel)
				if !ok {
					t.Errorf("no outcome for %s/%s", r.node, r.accel)
					continue
				}
				if o.Why() != r.why {
					t.Errorf("%s/%s: %q, want %q", r.node, r.accel, o.Why(), r.why)
				}
			}
			if tc.fallback != nil {
				var got []string
				for _, p := range e.Placements {
					got = append(got, p.Fallback)
				}
				if !slices.Equal(got, tc.fallback) {
					t.Errorf("fallbacks = %q, want %q", got, tc.fallback)
				}
			}
		})
	}
}

func TestPlaceInvalid(t *testing.T) {
	snap := scheduler.Snapshot{Nodes: []scheduler.NodeState{node("n1", gpu("gpu0", gib))}}
	tests := []struct {
		name   string
		req    scheduler.Request
		policy scheduler.Policy
	}{
		{"no name", scheduler.Request{App: app("")}, scheduler.Policy{}},
		{"negative count", req(app("x"), -1), scheduler.Policy{}},
		{"no memory", req(app("x", func(s *cluster.AppSpec) { s.MemoryBytes = 0 }), 1), scheduler.Policy{}},
		{"negative weight", req(app("x"), 1), scheduler.Policy{Rankers: []scheduler.Weighted{{scheduler.BinPack{}, -1}}}},
		{"zero weights", req(app("x"), 1), scheduler.Policy{Rankers: []scheduler.Weighted{{scheduler.BinPack{}, 0}}}},
		{"nil checker", req(app("x"), 1), scheduler.Policy{Checkers: []scheduler.Checker{nil}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scheduler.Place(snap, tc.req, tc.policy)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	dup := scheduler.Snapshot{Nodes: []scheduler.NodeState{node("n1", gpu("gpu0", gib)), node("n1")}}
	if _, err := scheduler.Prepare(dup); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("duplicate node: err = %v, want ErrInvalid", err)
	}
	dupAcc := scheduler.Snapshot{Nodes: []scheduler.NodeState{node("n1", gpu("gpu0", gib), gpu("gpu0", gib))}}
	if _, err := scheduler.Prepare(dupAcc); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("duplicate accelerator: err = %v, want ErrInvalid", err)
	}
}

// TestDeterminism: the same cluster in any node and accelerator order
// gives the same explanation, and ties go to node name then accelerator
// ID.
func TestDeterminism(t *testing.T) {
	nodes := []scheduler.NodeState{
		node("n3", gpu("gpu1", 8*gib), gpu("gpu0", 8*gib)),
		node("n1", gpu("gpu1", 8*gib), gpu("gpu0", 8*gib)),
		node("n2", gpu("gpu0", 8*gib), gpu("gpu1", 8*gib)),
		down(node("n0", gpu("gpu0", 8*gib))),
	}
	first, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, req(app("x"), 2), scheduler.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := where(first), []string{"n1/gpu0", "n2/gpu0"}; !slices.Equal(got, want) {
		t.Fatalf("placements = %v, want %v (ties by name)", got, want)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		shuffled := slices.Clone(nodes)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for k := range shuffled {
			a := slices.Clone(shuffled[k].Node.Accelerators)
			r.Shuffle(len(a), func(i, j int) { a[i], a[j] = a[j], a[i] })
			shuffled[k].Node.Accelerators = a
		}
		e, err := scheduler.Place(scheduler.Snapshot{Nodes: shuffled}, req(app("x"), 2), scheduler.Policy{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(e, first) {
			t.Fatalf("order %d: explanation differs:\n%+v\nwant\n%+v", i, e, first)
		}
	}
}

func TestExplanationContents(t *testing.T) {
	nodes := []scheduler.NodeState{
		node("n1", gpu("gpu0", 4*gib), gpu("gpu1", 4*gib)),
		running(node("n2", gpu("gpu0", gib)), "y", "gpu0", 768*mib),
		tier(node("n3", gpu("gpu0", 8*gib)), cluster.TierCloud),
		down(node("n4", gpu("gpu0", 8*gib))),
		running(node("n5", gpu("gpu0", 8*gib)), "y", "gpu0", 2*gib),
	}
	a := app("x", func(s *cluster.AppSpec) { s.Constraints.Tiers = []cluster.Tier{cluster.TierEdge} })
	p := scheduler.Policy{Rankers: []scheduler.Weighted{{scheduler.BinPack{}, 3}, {scheduler.Spread{}, 1}}}
	e, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, req(a, 2), p)
	if err != nil {
		t.Fatal(err)
	}
	if e.App != "x" || e.Count != 2 || e.MemoryBytes != 512*mib || e.Nodes != 5 || len(e.Candidates) != 6 {
		t.Errorf("header: %+v", e)
	}
	if !slices.Equal(e.Checkers, []string{"up", "kind", "tier", "site", "label", "memory", "anti-affinity"}) {
		t.Errorf("checkers = %v", e.Checkers)
	}
	if want := []scheduler.RankerWeight{{"binpack", 0.75}, {"spread", 0.25}}; !reflect.DeepEqual(e.Rankers, want) {
		t.Errorf("rankers = %v, want %v", e.Rankers, want)
	}
	if want := []scheduler.Filtered{{"up", 1}, {"tier", 1}, {"memory", 1}}; !reflect.DeepEqual(e.Filtered, want) {
		t.Errorf("filtered = %v, want %v", e.Filtered, want)
	}
	if e.Feasible != 3 || e.Fallbacks != 0 {
		t.Errorf("feasible %d fallbacks %d, want 3 0", e.Feasible, e.Fallbacks)
	}
	// Ranks: n5/gpu0 is fullest; then n1's two GPUs by ID.
	ranks := map[string]int{}
	for _, o := range e.Candidates {
		if !o.Rejected() {
			ranks[o.Node+"/"+o.Accelerator] = o.Rank
			if len(o.Scores) != 2 || o.Score != 0.75*o.Scores[0]+0.25*o.Scores[1] {
				t.Errorf("%s/%s: score %v from %v", o.Node, o.Accelerator, o.Score, o.Scores)
			}
		} else if o.Rank != 0 || o.Scores != nil {
			t.Errorf("rejected %s/%s has rank %d scores %v", o.Node, o.Accelerator, o.Rank, o.Scores)
		}
	}
	if want := map[string]int{"n5/gpu0": 1, "n1/gpu0": 2, "n1/gpu1": 3}; !reflect.DeepEqual(ranks, want) {
		t.Errorf("ranks = %v, want %v", ranks, want)
	}
	if got := where(e); !slices.Equal(got, []string{"n5/gpu0", "n1/gpu0"}) {
		t.Errorf("placements = %v", got)
	}
	// The second placement explains the re-evaluation of n5.
	re := e.Placements[1].Reevaluated
	if len(re) != 1 || re[0].Node != "n5" || re[0].Fallback != "anti-affinity: node already runs 1 instance of x" {
		t.Errorf("reevaluated = %+v", re)
	}
	in := e.Placements[0].Instance
	if in.App != "x" || in.ModelName != "m-x" || in.MemoryBytes != 512*mib || in.ID != "" {
		t.Errorf("instance = %+v", in)
	}
}

// TestFormatMemoryAndConstraint: the acceptance test for `accelpool
// explain`: one node rejected for memory, one for a constraint, one
// chosen.
func TestFormatMemoryAndConstraint(t *testing.T) {
	nodes := []scheduler.NodeState{
		running(node("edge-1", gpu("gpu0", gib)), "other", "gpu0", 896*mib),
		labels(node("edge-2", gpu("gpu0", 16*gib)), "zone", "us"),
		node("edge-3", gpu("gpu0", 16*gib)),
	}
	a := app("ocr", func(s *cluster.AppSpec) { s.Constraints.Labels = map[string]string{"zone": "eu"} })
	e, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, req(a, 1), scheduler.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := e.Format(&b); err != nil {
		t.Fatal(err)
	}
	want := `app ocr: 1 instance of 512 MiB; rankers binpack=1; checkers up, kind, tier, site, label, memory, anti-affinity
3 candidates on 3 nodes: 1 feasible, 0 fallback, 2 rejected (label 1, memory 1)

Placed:
  #  NODE    ACCELERATOR  SCORE
  1  edge-3  gpu0         0.031

Ranked:
  RANK  NODE    ACCELERATOR  SCORE  BINPACK
  1     edge-3  gpu0         0.031  0.031

Rejected:
  NODE    ACCELERATOR  CHECKER  REASON
  edge-1  gpu0         memory   needs 512 MiB, 128 MiB free on gpu0
  edge-2  gpu0         label    zone=eu not matched (node has zone=us)
`
	if b.String() != want {
		t.Errorf("Format:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestFormatFailureAndReevaluation(t *testing.T) {
	nodes := []scheduler.NodeState{
		node("n1", gpu("gpu0", gib)),
		node("n2"),
	}
	e, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, req(app("x"), 3), scheduler.Policy{})
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("err = %v", err)
	}
	var b strings.Builder
	e.Format(&b)
	out := b.String()
	for _, s := range []string{
		"2 candidates on 2 nodes: 1 feasible, 0 fallback, 1 rejected (accelerators 1)",
		"  2  n1    gpu0         1.000  relaxed anti-affinity: node already runs 1 instance of x",
		"  before #2, after #1 on n1:\n    n1  gpu0  score 1.000, fallback, anti-affinity: node already runs 1 instance of x\n",
		"  before #3, after #2 on n1:\n    n1  gpu0  rejected, memory: needs 512 MiB, 0 B free on gpu0\n",
		"  not placed: placed 2 of 3 instances of app x; no accelerator fits app x (1 on 2 nodes): 1 rejected by memory, 1 by accelerators\n",
		"  n2    -            accelerators  node has no accelerators\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("Format lacks %q:\n%s", s, out)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {900, "900 B"}, {1536, "1.5 KiB"}, {512 * mib, "512 MiB"},
		{3 * gib / 2, "1.5 GiB"}, {80 * gib, "80 GiB"}, {-128 * mib, "-128 MiB"},
	} {
		if got := scheduler.FormatBytes(tc.n); got != tc.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestAddRemove: committed placements change the next decision.
func TestAddRemove(t *testing.T) {
	s, err := scheduler.Prepare(scheduler.Snapshot{Nodes: []scheduler.NodeState{
		node("n1", gpu("gpu0", gib)),
		node("n2", gpu("gpu0", 2*gib)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := app("x", func(s *cluster.AppSpec) { s.MemoryBytes = 768 * mib })
	e, err := s.Place(req(a, 1), scheduler.Policy{})
	if err != nil || !slices.Equal(where(e), []string{"n1/gpu0"}) {
		t.Fatalf("first: %v %v", where(e), err)
	}
	in := e.Placements[0].Instance
	in.ID = "i1"
	if err := s.Add(in); err != nil {
		t.Fatal(err)
	}
	e, err = s.Place(req(app("y", func(s *cluster.AppSpec) { s.MemoryBytes = 768 * mib }), 1), scheduler.Policy{})
	if err != nil || !slices.Equal(where(e), []string{"n2/gpu0"}) {
		t.Fatalf("after add: %v %v", where(e), err)
	}
	if o, _ := outcome(e, "n1", "gpu0"); o.Why() != "memory: needs 768 MiB, 256 MiB free on gpu0" {
		t.Errorf("after add: n1 %q", o.Why())
	}
	if err := s.Remove("n1", "gpu0", "i1"); err != nil {
		t.Fatal(err)
	}
	e, _ = s.Place(req(app("y", func(s *cluster.AppSpec) { s.MemoryBytes = 768 * mib }), 1), scheduler.Policy{})
	if !slices.Equal(where(e), []string{"n1/gpu0"}) {
		t.Errorf("after remove: %v", where(e))
	}
	if err := s.Remove("n1", "gpu0", "i1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if err := s.Add(cluster.Instance{Node: "nope", Accelerator: "gpu0"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("add on unknown node: %v", err)
	}
}
