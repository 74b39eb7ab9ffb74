package latency

import (
	"strconv"

	"github.com/accelpool/accelpool/scheduler"
)

// LeastWaste is the "least-waste" ranker: scheduler.BinPack, but for the
// accelerator memory a placement leaves that nothing can use. Packing
// by fullness alone puts an application on whichever accelerator it
// fills most, and on a cluster of large and small accelerators that
// spends the small ones badly: an application that must run alone takes
// a large accelerator whole, and one that leaves a small accelerator a
// hole too small for another copy of itself strands that hole. So:
//
//   - an application that cannot share an empty accelerator of the
//     candidate's kind with a second instance of itself (the latency
//     model predicts a p99 beyond its objective, less the Checker's
//     headroom, or a utilisation over the bound) is alone-bound: every
//     candidate that takes it loses the rest of its memory, so the score
//     prefers the smallest accelerator, 1 / (1 + capacity in GiB);
//   - otherwise the score is BinPack's, less twice the share of the
//     accelerator's memory left free when that is less than the
//     application itself needs.
//
// The test for alone-bound is made once per decision and accelerator
// kind (and compute, where Checker.Servers depends on it). Scores lie in
// [0, 1].
type LeastWaste struct {
	// Checker gives the profiles, latency models, headroom and bound;
	// the ranker judges with them as the Checker would.
	Checker Checker
}

// Name is "least-waste".
func (LeastWaste) Name() string { return "least-waste" }

// Score implements scheduler.Ranker.
func (w LeastWaste) Score(c *scheduler.Candidate) float64 {
	a := c.Accelerator()
	key := a.Kind
	if w.Checker.Servers != nil {
		// Only then does the model depend on the accelerator's compute.
		key += "/" + strconv.FormatFloat(a.Compute, 'g', -1, 64)
	}
	if c.Memo("alone", key, func() string {
		if w.aloneBound(c) {
			return "1"
		}
		return ""
	}) != "" {
		return 1 / (1 + float64(c.Capacity())/(1<<30))
	}
	score := scheduler.BinPack{}.Score(c)
	need := c.Request().MemoryBytes
	if hole := c.Free() - need; hole > 0 && hole < need && c.Capacity() > 0 {
		score -= 2 * float64(hole) / float64(c.Capacity())
	}
	return max(0, score)
}

// aloneBound reports whether two instances of the candidate's application
// would break an objective or the bound on an empty accelerator like the
// candidate's. An application the model cannot judge is not alone-bound.
func (w LeastWaste) aloneBound(c *scheduler.Candidate) bool {
	ch := w.Checker
	if ch.Profiles == nil {
		return false
	}
	m := ch.model(c.Accelerator())
	if m == nil {
		return false
	}
	l, app, err := resolve(c, c.Proposed(), ch.Profiles, ch.Share)
	if err != nil {
		return false
	}
	preds, err := m.Predict([]Load{l, l})
	if err != nil {
		return false
	}
	bound := ch.MaxUtilisation
	if bound <= 0 {
		bound = DefaultMaxUtilisation
	}
	obj := app.Spec.Objective.P99Ms * ch.keep()
	for _, p := range preds {
		if p.Utilisation > bound || (obj > 0 && p.P99Ms > obj) {
			return true
		}
	}
	return false
}
