package scheduler_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

// maxPerAccelerator is a toy checker: at most N instances on an
// accelerator, counting the one proposed. A latency model has the same
// shape: it reads every instance on the accelerator (existing ones and
// those this decision placed), looks up each one's application for its
// rate and objective, adds the proposed instance and predicts.
type maxPerAccelerator struct{ n int }

func (maxPerAccelerator) Name() string { return "max-per-accelerator" }

func (m maxPerAccelerator) Check(c *scheduler.Candidate) (bool, string) {
	if k := len(c.Instances()) + 1; k > m.n {
		return false, fmt.Sprintf("%d instances on %s with this one, at most %d", k, c.Accelerator().ID, m.n)
	}
	return true, ""
}

// loadLimit is a toy stand-in for a queueing model: the co-located
// applications' request rates, plus the new one's, must stay under the
// accelerator's compute × perUnit requests/s; it also exposes what it saw.
type loadLimit struct {
	perUnit float64
	seen    *[]string
}

func (loadLimit) Name() string { return "load" }

func (l loadLimit) Check(c *scheduler.Candidate) (bool, string) {
	total := 0.0
	var apps []string
	for _, in := range append(c.Instances(), c.Proposed()) {
		a, ok := c.LookupApp(in.App)
		if !ok {
			return false, "unknown application " + in.App
		}
		total += a.Spec.Rate
		apps = append(apps, in.App)
	}
	if l.seen != nil {
		*l.seen = append(*l.seen, c.Node().Name+"/"+c.Accelerator().ID+": "+fmt.Sprint(apps))
	}
	limit := c.Accelerator().Compute * l.perUnit
	if total > limit {
		return false, "predicted " + strconv.FormatFloat(total, 'f', -1, 64) + " req/s, capacity " + strconv.FormatFloat(limit, 'f', -1, 64)
	}
	return true, ""
}

// slack is a toy ranker: the fewer instances on the accelerator, the
// better.
type slack struct{}

func (slack) Name() string { return "slack" }
func (slack) Score(c *scheduler.Candidate) float64 {
	return 1 / float64(1+c.NumInstances())
}

func TestCustomCheckerSeesInDecisionInstances(t *testing.T) {
	nodes := []scheduler.NodeState{
		running(node("n1", gpu("gpu0", 8*gib)), "y", "gpu0", gib),
	}
	p := scheduler.Policy{Checkers: append(scheduler.DefaultCheckers(), maxPerAccelerator{2})}
	e, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, req(app("x"), 3), p)
	if err == nil {
		t.Fatal("third instance placed")
	}
	if got, want := where(e), []string{"n1/gpu0"}; !slices.Equal(got, want) {
		t.Fatalf("placements = %v, want %v", got, want)
	}
	want := "placed 1 of 3 instances of app x; no accelerator fits app x (1 on 1 nodes): 1 rejected by max-per-accelerator"
	if err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	if got := e.FailedReevaluated[0].Why(); got != "max-per-accelerator: 3 instances on gpu0 with this one, at most 2" {
		t.Errorf("reevaluation: %q", got)
	}
}

func TestLatencyModelShape(t *testing.T) {
	y := app("y", func(s *cluster.AppSpec) { s.Rate = 30 })
	x := app("x", func(s *cluster.AppSpec) { s.Rate = 25 })
	nodes := []scheduler.NodeState{
		running(node("n1", gpu("gpu0", 8*gib)), "y", "gpu0", gib),
		node("n2", gpu("gpu0", 8*gib)),
	}
	var seen []string
	p := scheduler.Policy{
		Checkers: append(scheduler.DefaultCheckers(), loadLimit{perUnit: 60, seen: &seen}),
		Rankers:  []scheduler.Weighted{{slack{}, 1}},
	}
	snap := scheduler.Snapshot{Nodes: nodes, Apps: []cluster.Application{y}}
	e, err := scheduler.Place(snap, req(x, 3), p)
	if err != nil {
		t.Fatal(err)
	}
	// n2 is empty (slack 1); then n1 next to y (30+25 <= 60) rather than
	// a second x on n2 (anti-affinity); then n1 would carry 80 > 60, so
	// the third goes back to n2 (50), relaxing anti-affinity.
	if got, want := where(e), []string{"n2/gpu0", "n1/gpu0", "n2/gpu0"}; !slices.Equal(got, want) {
		t.Fatalf("placements = %v, want %v", got, want)
	}
	if got := e.Placements[2].Reevaluated[0].Why(); got != "load: predicted 80 req/s, capacity 60" {
		t.Errorf("n1 before the third: %q", got)
	}
	wantSeen := []string{
		"n1/gpu0: [y x]",
		"n2/gpu0: [x]",
		"n2/gpu0: [x x]",
		"n1/gpu0: [y x x]",
	}
	if !slices.Equal(seen, wantSeen) {
		t.Errorf("the checker saw %q, want %q", seen, wantSeen)
	}
	if o, _ := outcome(e, "n1", "gpu0"); o.Rank != 2 {
		t.Errorf("n1 rank %d", o.Rank)
	}
}

// Example shows a policy with one more checker and ranker, as the latency
// models will plug in.
func Example() {
	snap := scheduler.Snapshot{Nodes: []scheduler.NodeState{
		running(node("edge-1", gpu("gpu0", 8*gib)), "y", "gpu0", gib),
		node("edge-2", gpu("gpu0", 8*gib)),
	}}
	p := scheduler.Policy{
		Checkers: append(scheduler.DefaultCheckers(), maxPerAccelerator{1}),
		Rankers:  []scheduler.Weighted{{scheduler.BinPack{}, 1}, {slack{}, 1}},
	}
	e, err := scheduler.Place(snap, req(app("x"), 1), p)
	if err != nil {
		fmt.Println(err)
	}
	e.Format(os.Stdout)
	// Output:
	// app x: 1 instance of 512 MiB; rankers binpack=0.5 slack=0.5; checkers up, kind, tier, site, label, memory, anti-affinity, max-per-accelerator
	// 2 candidates on 2 nodes: 1 feasible, 0 fallback, 1 rejected (max-per-accelerator 1)
	//
	// Placed:
	//   #  NODE    ACCELERATOR  SCORE
	//   1  edge-2  gpu0         0.531
	//
	// Ranked:
	//   RANK  NODE    ACCELERATOR  SCORE  BINPACK  SLACK
	//   1     edge-2  gpu0         0.531  0.062    1.000
	//
	// Rejected:
	//   NODE    ACCELERATOR  CHECKER              REASON
	//   edge-1  gpu0         max-per-accelerator  2 instances on gpu0 with this one, at most 1
}
