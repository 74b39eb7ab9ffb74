package scheduler_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/synth"
)

// naiveReject is the default pipeline written the slow, obvious way over
// the raw snapshot: the name of the first checker that rejects, "" if
// none, and whether the soft anti-affinity rejects.
func naiveReject(ns scheduler.NodeState, a cluster.Accelerator, app cluster.Application, mem int64) (string, bool) {
	c := app.Spec.Constraints
	switch {
	case !ns.Up:
		return "up", false
	case c.AcceleratorKind != "" && c.AcceleratorKind != a.Kind:
		return "kind", false
	case len(c.Tiers) > 0 && !slices.Contains(c.Tiers, ns.Node.Tier):
		return "tier", false
	case len(c.Sites) > 0 && !slices.Contains(c.Sites, ns.Node.Site):
		return "site", false
	}
	for k, v := range c.Labels {
		if ns.Node.Labels[k] != v {
			return "label", false
		}
	}
	free := a.MemoryBytes
	shared := false
	for _, in := range ns.Instances {
		if in.Accelerator == a.ID {
			free -= in.MemoryBytes
		}
		if in.App == app.Metadata.Name {
			shared = true
		}
	}
	if r, ok := ns.FreeMemory[a.ID]; ok && r < free {
		free = r
	}
	if free < mem {
		return "memory", false
	}
	return "", shared
}

// TestAgainstNaive checks every outcome of decisions on synthetic clusters
// against naiveReject, and that the choice is the best-ranked eligible
// candidate.
func TestAgainstNaive(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 300, Seed: 7})
	// Some agents report less free memory than the reservations leave.
	for i := 0; i < len(snap.Nodes); i += 7 {
		ns := &snap.Nodes[i]
		ns.FreeMemory = map[string]int64{ns.Node.Accelerators[0].ID: ns.Node.Accelerators[0].MemoryBytes / 3}
	}
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	reqs := synth.Requests(100, 1, 300, 11)
	for i := 0; i < 40; i++ { // existing applications: anti-affinity matters
		a := snap.Apps[i*13]
		reqs = append(reqs, scheduler.Request{App: a, MemoryBytes: a.Spec.MemoryBytes})
	}
	byName := map[string]scheduler.NodeState{}
	for _, ns := range snap.Nodes {
		byName[ns.Node.Name] = ns
	}
	for _, r := range reqs {
		e, err := s.Place(r, scheduler.Policy{})
		if len(e.Candidates) != s.Accelerators() {
			t.Fatalf("%s: %d outcomes for %d accelerators", r.App.Metadata.Name, len(e.Candidates), s.Accelerators())
		}
		bestRank := 0
		for _, o := range e.Candidates {
			ns := byName[o.Node]
			k := slices.IndexFunc(ns.Node.Accelerators, func(a cluster.Accelerator) bool { return a.ID == o.Accelerator })
			want, soft := naiveReject(ns, ns.Node.Accelerators[k], r.App, r.MemoryBytes)
			if o.Checker != want || (want == "" && soft != (o.Fallback != "")) {
				t.Fatalf("%s on %s/%s: %q (fallback %q), naive says %q (soft %v)", r.App.Metadata.Name, o.Node, o.Accelerator, o.Checker, o.Fallback, want, soft)
			}
			if o.Rank == 1 {
				bestRank++
				if err != nil || e.Placements[0].Instance.Node != o.Node || e.Placements[0].Instance.Accelerator != o.Accelerator {
					t.Fatalf("%s: rank 1 is %s/%s, placed %v (%v)", r.App.Metadata.Name, o.Node, o.Accelerator, where(e), err)
				}
			}
		}
		if (err == nil) != (bestRank == 1) {
			t.Fatalf("%s: err %v with %d rank-1 candidates", r.App.Metadata.Name, err, bestRank)
		}
	}
}

// TestMultiEqualsSequence: placing Count instances in one decision is the
// same as placing one at a time and committing each with Add.
func TestMultiEqualsSequence(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 200, Seed: 3, Fill: 0.8})
	multi, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	reqs := synth.Requests(30, 4, 200, 5)
	// Large instances make memory run out mid-decision.
	for i := range reqs {
		if i%3 == 0 {
			reqs[i].MemoryBytes = 30 * gib
		}
	}
	for _, policy := range []scheduler.Policy{scheduler.BinPackPolicy(), scheduler.SpreadPolicy()} {
		for _, r := range reqs {
			e, errMulti := multi.Place(r, policy)
			seq, err := scheduler.Prepare(snap)
			if err != nil {
				t.Fatal(err)
			}
			var got []scheduler.Placement
			one := r
			one.Count = 1
			var errSeq error
			for k := 0; k < r.Count; k++ {
				e1, err := seq.Place(one, policy)
				if err != nil {
					errSeq = err
					break
				}
				p := e1.Placements[0]
				got = append(got, scheduler.Placement{Instance: p.Instance, Score: p.Score, Scores: p.Scores, Fallback: p.Fallback})
				if err := seq.Add(p.Instance); err != nil {
					t.Fatal(err)
				}
			}
			var want []scheduler.Placement
			for _, p := range e.Placements {
				p.Reevaluated = nil
				want = append(want, p)
			}
			if !reflect.DeepEqual(got, want) || (errSeq == nil) != (errMulti == nil) {
				t.Fatalf("%s: one decision placed %v (%v), one at a time %v (%v)", r.App.Metadata.Name, want, errMulti, got, errSeq)
			}
		}
	}
}

func TestSynthDeterministic(t *testing.T) {
	a := synth.Cluster(synth.Config{Nodes: 50, Seed: 1})
	b := synth.Cluster(synth.Config{Nodes: 50, Seed: 1})
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different clusters")
	}
	insts := 0
	for _, n := range a.Nodes {
		if k := len(n.Node.Accelerators); k < 1 || k > 4 {
			t.Errorf("%s has %d accelerators", n.Node.Name, k)
		}
		insts += len(n.Instances)
	}
	if insts == 0 {
		t.Error("no existing instances")
	}
	if _, err := scheduler.Prepare(a); err != nil {
		t.Fatal(err)
	}
}

// TestTopMatchesFull: recording only the top candidates changes what is
// recorded, never the decision.
func TestTopMatchesFull(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 300, Seed: 9, Fill: 0.7})
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	reqs := synth.Requests(60, 3, 300, 2)
	for i := 0; i < 20; i++ {
		a := snap.Apps[i*17]
		reqs = append(reqs, scheduler.Request{App: a, MemoryBytes: 20 * gib, Count: 2})
	}
	const top = 5
	for _, r := range reqs {
		full, errFull := s.Place(r, scheduler.Policy{})
		part, errTop := s.Place(r, scheduler.Policy{Top: top})
		if (errFull == nil) != (errTop == nil) || !reflect.DeepEqual(full.Placements, part.Placements) {
			t.Fatalf("%s: full placed %v (%v), top %v (%v)", r.App.Metadata.Name, where(full), errFull, where(part), errTop)
		}
		if full.Failure != part.Failure || !reflect.DeepEqual(full.Filtered, part.Filtered) ||
			full.Feasible != part.Feasible || full.Fallbacks != part.Fallbacks || full.Evaluated != part.Evaluated {
			t.Fatalf("%s: summaries differ:\n%+v\n%+v", r.App.Metadata.Name, full, part)
		}
		if full.Omitted != 0 || part.Omitted != part.Evaluated-len(part.Candidates) {
			t.Fatalf("%s: omitted %d / %d", r.App.Metadata.Name, full.Omitted, part.Omitted)
		}
		ranked := 0
		perChecker := map[string]int{}
		for _, o := range part.Candidates {
			f, ok := outcome(full, o.Node, o.Accelerator)
			if !ok || !reflect.DeepEqual(f, o) {
				t.Fatalf("%s: top outcome %+v, full %+v", r.App.Metadata.Name, o, f)
			}
			if o.Rejected() {
				perChecker[o.Checker]++
			} else {
				ranked++
			}
		}
		if ranked != min(top, full.Feasible+full.Fallbacks) {
			t.Errorf("%s: %d ranked recorded", r.App.Metadata.Name, ranked)
		}
		for _, f := range full.Filtered {
			if perChecker[f.Checker] != min(top, f.Count) {
				t.Errorf("%s: %d of %d %s rejections recorded", r.App.Metadata.Name, perChecker[f.Checker], f.Count, f.Checker)
			}
		}
		if !slices.IsSortedFunc(part.Candidates, func(a, b scheduler.Outcome) int {
			return strings.Compare(a.Node+"/"+a.Accelerator, b.Node+"/"+b.Accelerator)
		}) {
			t.Errorf("%s: top candidates out of order", r.App.Metadata.Name)
		}
	}
}

// TestConcurrentPlace: decisions on one State may run in parallel (run
// with -race).
func TestConcurrentPlace(t *testing.T) {
	s, err := scheduler.Prepare(synth.Cluster(synth.Config{Nodes: 100, Seed: 4}))
	if err != nil {
		t.Fatal(err)
	}
	reqs := synth.Requests(20, 2, 100, 4)
	want := make([][]string, len(reqs))
	for i, r := range reqs {
		e, _ := s.Place(r, scheduler.Policy{Top: 3})
		want[i] = where(e)
	}
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			for i, r := range reqs {
				e, _ := s.Place(r, scheduler.Policy{Top: 3 * (g % 2)})
				if got := where(e); !slices.Equal(got, want[i]) {
					done <- fmt.Errorf("%s: %v, want %v", r.App.Metadata.Name, got, want[i])
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// costly is a deferred checker for TestDeferredMatchesFull: it rejects an
// accelerator that would hold more than max instances, or whose name hashes
// into one of three buckets, and counts its calls.
type costly struct {
	max   int
	calls *int
}

func (costly) Name() string   { return "costly" }
func (costly) Deferred() bool { return true }
func (c costly) Check(cand *scheduler.Candidate) (bool, string) {
	*c.calls++
	if n := len(cand.Instances()) + 1; n > c.max {
		return false, fmt.Sprintf("%d instances > %d", n, c.max)
	}
	h := 0
	for _, b := range cand.Node().Name + cand.Accelerator().ID {
		h = h*31 + int(b)
	}
	if h%3 == 0 {
		return false, "hash"
	}
	return true, ""
}

// TestDeferredMatchesFull: a deferred checker changes what a decision
// costs, never what it decides. With Top, the placements and failures
// equal those of a full evaluation (which runs it on every candidate),
// every recorded outcome is the full evaluation's, the candidates it was
// never run on are counted, and it runs on fewer candidates.
func TestDeferredMatchesFull(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 1500, Seed: 9, Fill: 0.7})
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	reqs := append(synth.Requests(60, 1, 1500, 2), synth.Requests(30, 3, 1500, 3)...)
	for i := 0; i < 20; i++ {
		reqs = append(reqs, scheduler.Request{App: snap.Apps[i*17], MemoryBytes: 20 * gib, Count: 3})
	}
	// More instances than fit: the costly checker sees every candidate.
	reqs = append(reqs, scheduler.Request{App: snap.Apps[5], MemoryBytes: 8 * gib, Count: 400})
	var fullCalls, topCalls int
	policy := func(calls *int, top int) scheduler.Policy {
		return scheduler.Policy{Top: top, Checkers: append(scheduler.DefaultCheckers(), costly{max: 6, calls: calls})}
	}
	const top = 5
	failed, unchecked := 0, 0
	okFull, okTop := 0, 0 // calls for single-instance decisions that placed one
	for _, r := range reqs {
		f0, t0 := fullCalls, topCalls
		full, errFull := s.Place(r, policy(&fullCalls, 0))
		part, errTop := s.Place(r, policy(&topCalls, top))
		if errFull == nil && r.Count <= 1 {
			okFull += fullCalls - f0
			okTop += topCalls - t0
		}
		name := r.App.Metadata.Name
		if (errFull == nil) != (errTop == nil) || !reflect.DeepEqual(full.Placements, part.Placements) {
			t.Fatalf("%s: full placed %v (%v), deferred %v (%v)", name, where(full), errFull, where(part), errTop)
		}
		if full.Failure != part.Failure {
			t.Fatalf("%s: failure %q, deferred %q", name, full.Failure, part.Failure)
		}
		if errFull != nil {
			failed++
		}
		// Candidates passed by the other checkers but never run through
		// the costly one count as feasible, and are the only difference.
		extra := part.Feasible + part.Fallbacks - full.Feasible - full.Fallbacks
		if extra < 0 || extra > part.Unchecked || full.Unchecked != 0 {
			t.Fatalf("%s: feasible+fallbacks %d vs full %d, unchecked %d", name,
				part.Feasible+part.Fallbacks, full.Feasible+full.Fallbacks, part.Unchecked)
		}
		unchecked += part.Unchecked
		ranked := 0
		for _, o := range part.Candidates {
			f, ok := outcome(full, o.Node, o.Accelerator)
			if !ok || f.Checker != o.Checker || f.Reason != o.Reason || f.Score != o.Score {
				t.Fatalf("%s: deferred outcome %+v, full %+v", name, o, f)
			}
			if !o.Rejected() {
				ranked++
			}
		}
		if ranked != min(top, full.Feasible+full.Fallbacks) {
			t.Errorf("%s: %d ranked recorded, want %d", name, ranked, min(top, full.Feasible+full.Fallbacks))
		}
	}
	if failed == 0 || unchecked == 0 {
		t.Fatalf("the requests did not exercise both paths: %d failed, %d unchecked", failed, unchecked)
	}
	if okFull == 0 || okTop >= okFull {
		t.Errorf("deferred checker ran %d times, %d in full, for single placements: want fewer", okTop, okFull)
	}
	t.Logf("costly checker calls: %d in full, %d deferred (%d and %d for single placements); %d failures",
		fullCalls, topCalls, okFull, okTop, failed)
}
