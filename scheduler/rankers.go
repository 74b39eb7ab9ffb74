package scheduler

import (
	"fmt"
	"math"

	"github.com/accelpool/accelpool/errdefs"
)

// Ranker scores a feasible candidate in [0, 1]; higher is better. Like a
// Checker, a Score must depend only on the candidate. Scores outside
// [0, 1] are clamped, NaN counts as 0.
type Ranker interface {
	Name() string
	Score(c *Candidate) float64
}

// Weighted is a ranker and its weight in the policy's sum.
type Weighted struct {
	Ranker Ranker
	Weight float64
}

// Policy selects the pipeline: the checkers, in order, and the rankers
// whose weighted scores are summed (weights are normalised to sum to 1, so
// the final score stays in [0, 1]). The zero Policy is DefaultCheckers and
// BinPack.
type Policy struct {
	Checkers []Checker
	Rankers  []Weighted
	// Top bounds what the Explanation records: 0 records every
	// candidate (what `accelpool explain` shows); N > 0 records the N
	// best-ranked candidates and the first N each checker rejected, with
	// the counts still complete. The control plane and the simulator set
	// it: at 10,000 nodes a full record is megabytes per decision.
	Top int
}

// BinPackPolicy fills accelerators and nodes before opening new ones: it
// keeps whole accelerators free for large models and lets idle machines
// sleep.
func BinPackPolicy() Policy {
	return Policy{Checkers: DefaultCheckers(), Rankers: []Weighted{{BinPack{}, 1}}}
}

// SpreadPolicy places on the emptiest accelerators and nodes: the least
// interference between co-located applications and the smallest blast
// radius of a failure.
func SpreadPolicy() Policy {
	return Policy{Checkers: DefaultCheckers(), Rankers: []Weighted{{Spread{}, 1}}}
}

// resolved is a validated policy.
type resolved struct {
	checkers []Checker
	soft     []bool
	node     []bool // NodeChecker
	deferred []bool // DeferredChecker, hard
	anyDefer bool
	rankers  []Ranker
	weights  []float64 // normalised
}

func (p Policy) resolve() (resolved, error) {
	var r resolved
	r.checkers = p.Checkers
	if len(r.checkers) == 0 {
		r.checkers = DefaultCheckers()
	}
	r.soft = make([]bool, len(r.checkers))
	r.node = make([]bool, len(r.checkers))
	r.deferred = make([]bool, len(r.checkers))
	for i, c := range r.checkers {
		if c == nil {
			return r, errdefs.Invalid(fmt.Sprintf("policy: checker %d is nil", i))
		}
		if s, ok := c.(SoftChecker); ok && s.Soft() {
			r.soft[i] = true
		}
		if n, ok := c.(NodeChecker); ok && n.NodeScoped() {
			r.node[i] = true
		}
		if d, ok := c.(DeferredChecker); ok && d.Deferred() && !r.soft[i] {
			r.deferred[i] = true
			r.anyDefer = true
		}
	}
	rk := p.Rankers
	if len(rk) == 0 {
		rk = []Weighted{{BinPack{}, 1}}
	}
	sum := 0.0
	for i, w := range rk {
		if w.Ranker == nil {
			return r, errdefs.Invalid(fmt.Sprintf("policy: ranker %d is nil", i))
		}
		if !(w.Weight >= 0) || math.IsInf(w.Weight, 0) {
			return r, errdefs.Invalid(fmt.Sprintf("policy: ranker %s has weight %v, want a finite number >= 0", w.Ranker.Name(), w.Weight))
		}
		sum += w.Weight
	}
	if sum == 0 {
		return r, errdefs.Invalid("policy: ranker weights sum to 0")
	}
	for _, w := range rk {
		r.rankers = append(r.rankers, w.Ranker)
		r.weights = append(r.weights, w.Weight/sum)
	}
	return r, nil
}

// BinPack prefers fuller accelerators on fuller nodes: the score is the
// mean of the accelerator's and the node's memory utilisation after the
// placement. Between two equally full accelerators it picks the one on a
// node already in use, so instances land on the fewest nodes.
type BinPack struct{}

func (BinPack) Name() string { return "binpack" }

func (BinPack) Score(c *Candidate) float64 { return fullness(c) }

// Spread prefers emptier accelerators on emptier nodes: 1 - BinPack's
// score.
type Spread struct{}

func (Spread) Name() string { return "spread" }

func (Spread) Score(c *Candidate) float64 { return 1 - fullness(c) }

// fullness is the mean memory utilisation of the accelerator and its node
// once the request's instance is placed, in [0, 1].
func fullness(c *Candidate) float64 {
	need := c.Request().MemoryBytes
	acc := utilisation(c.Capacity(), c.Free()-need)
	node := utilisation(c.NodeCapacity(), c.NodeFree()-need)
	return (acc + node) / 2
}

func utilisation(capacity, free int64) float64 {
	if capacity <= 0 {
		return 1
	}
	return clamp01(float64(capacity-free) / float64(capacity))
}

func clamp01(v float64) float64 {
	switch {
	case v > 1:
		return 1
	case v >= 0:
		return v
	}
	return 0 // negative or NaN
}

var (
	_ Ranker = BinPack{}
	_ Ranker = Spread{}
)
