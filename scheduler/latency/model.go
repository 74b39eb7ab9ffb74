package latency

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/accelpool/accelpool/errdefs"
)

// Profile is what the profiler measured for one model on one kind of
// accelerator.
type Profile struct {
	// ServiceTimeMs is the mean time to serve one request (batch 1) with
	// the model alone on the accelerator, its weights already loaded.
	ServiceTimeMs float64
	// ServiceTimeCV is the coefficient of variation of that time
	// (standard deviation / mean); DNN inference is close to
	// deterministic, 0 to 0.1 on the Ibis data.
	ServiceTimeCV float64
	// SwitchCostMs is the extra time a request takes on a serial
	// accelerator (Edge TPU) when the previous request there was of
	// another model: reloading the weights into on-chip memory.
	SwitchCostMs float64
	// DelayMs is the mean of the part of a served request's latency that
	// occupies no accelerator — the transport, hand-offs between threads,
	// waking an idle core — measured by serving the model alone at the
	// application's rate; DelayCV is its coefficient of variation.
	// Co-located loads do not stretch it: every model adds it to the time
	// at the accelerator (addDelay; processor sharing in its tail). Zero
	// (the profiler's default) leaves the predictions of ServiceTimeMs
	// alone.
	DelayMs, DelayCV float64
	// MemoryBytes is the accelerator memory the loaded model takes.
	MemoryBytes int64
	// BatchServiceMs is the service time of a batch, by batch size
	// (optional; the batching model needs it). A missing size is
	// interpolated linearly between its neighbours, or extrapolated from
	// the largest two.
	BatchServiceMs map[int]float64
}

// Validate reports a profile that no model can use: a service time that
// is not a positive finite number, a negative CV, switch cost or memory,
// or a batch entry with a size below 1 or a non-positive time.
func (p Profile) Validate() error {
	switch {
	case !finitePos(p.ServiceTimeMs):
		return errdefs.Invalid(fmt.Sprintf("profile: service time %v ms must be > 0", p.ServiceTimeMs))
	case !(p.ServiceTimeCV >= 0) || math.IsInf(p.ServiceTimeCV, 0):
		return errdefs.Invalid(fmt.Sprintf("profile: service time CV %v must be >= 0", p.ServiceTimeCV))
	case !(p.SwitchCostMs >= 0) || math.IsInf(p.SwitchCostMs, 0):
		return errdefs.Invalid(fmt.Sprintf("profile: switch cost %v ms must be >= 0", p.SwitchCostMs))
	case !(p.DelayMs >= 0) || math.IsInf(p.DelayMs, 0):
		return errdefs.Invalid(fmt.Sprintf("profile: delay %v ms must be >= 0", p.DelayMs))
	case !(p.DelayCV >= 0) || math.IsInf(p.DelayCV, 0):
		return errdefs.Invalid(fmt.Sprintf("profile: delay CV %v must be >= 0", p.DelayCV))
	case p.MemoryBytes < 0:
		return errdefs.Invalid(fmt.Sprintf("profile: memory %d must be >= 0", p.MemoryBytes))
	}
	for b, ms := range p.BatchServiceMs {
		if b < 1 || !finitePos(ms) {
			return errdefs.Invalid(fmt.Sprintf("profile: batch %d service time %v ms: want a size >= 1 and a time > 0", b, ms))
		}
	}
	return nil
}

// BatchMs is the service time of a batch of b requests: BatchServiceMs[b]
// if measured, else interpolated linearly between the nearest measured
// sizes (ServiceTimeMs counts as size 1 when size 1 is not measured), or
// extrapolated along the line through the two largest.
func (p Profile) BatchMs(b int) float64 {
	if b < 1 {
		b = 1
	}
	if v, ok := p.BatchServiceMs[b]; ok {
		return v
	}
	sizes := make([]int, 0, len(p.BatchServiceMs)+1)
	for k := range p.BatchServiceMs {
		sizes = append(sizes, k)
	}
	if _, ok := p.BatchServiceMs[1]; !ok {
		sizes = append(sizes, 1)
	}
	sort.Ints(sizes)
	at := func(k int) float64 {
		if v, ok := p.BatchServiceMs[k]; ok {
			return v
		}
		return p.ServiceTimeMs // size 1
	}
	if len(sizes) == 1 {
		return float64(b) * at(sizes[0]) // no batching gain known
	}
	i, _ := slices.BinarySearch(sizes, b)
	lo, hi := i-1, i
	if i == 0 {
		lo, hi = 0, 1
	}
	if i >= len(sizes) {
		lo, hi = len(sizes)-2, len(sizes)-1
	}
	x0, x1 := float64(sizes[lo]), float64(sizes[hi])
	y0, y1 := at(sizes[lo]), at(sizes[hi])
	v := y0 + (y1-y0)*(float64(b)-x0)/(x1-x0)
	// Measurements that fall with the batch size must not extrapolate
	// to zero: a batch takes at least as long as the shortest measured.
	return math.Max(v, math.Min(y0, y1))
}

// Load is one application instance on an accelerator, as a model sees it.
type Load struct {
	// Name identifies the load in the predictions (an application).
	Name string
	// Model names the weights (optional). On a serial accelerator two
	// loads with the same non-empty Model share them: no switch cost
	// between their requests. Empty means "its own weights".
	Model string
	// Rate is the request arrival rate in requests per second (Poisson).
	Rate float64
	// Profile is the model's profile on this kind of accelerator.
	Profile Profile
}

// Prediction is a model's forecast for one load.
type Prediction struct {
	Name string
	// MeanMs and P99Ms are the predicted mean and 99th-percentile
	// response times (queueing plus service); +Inf when not Stable.
	MeanMs, P99Ms float64
	// Utilisation is the accelerator's total utilisation with every load
	// in the prediction (the same for all of them): the fraction of time
	// it is busy, Σ λ_i·E[S_i].
	Utilisation float64
	// Share is this load's own part of Utilisation, λ_i·E[S_i].
	Share float64
	// Stable is false when Utilisation >= 1: queues grow without bound.
	Stable bool
}

// Model predicts the latency of every load co-located on one accelerator.
// Predict returns one Prediction per load, in order. It returns
// ErrInvalid for a load with a negative or non-finite rate or an invalid
// profile; an overloaded accelerator is not an error but predictions with
// Stable false and infinite latencies.
type Model interface {
	Name() string
	Predict(apps []Load) ([]Prediction, error)
}

func finitePos(v float64) bool { return v > 0 && !math.IsInf(v, 0) }

// validate checks every load and returns the rates in requests per
// millisecond.
func validate(kind string, apps []Load) ([]float64, error) {
	lam := make([]float64, len(apps))
	for i, a := range apps {
		if !(a.Rate >= 0) || math.IsInf(a.Rate, 0) {
			return nil, errdefs.Invalid(fmt.Sprintf("%s: load %q: rate %v must be a finite number >= 0", kind, a.Name, a.Rate))
		}
		if err := a.Profile.Validate(); err != nil {
			return nil, fmt.Errorf("%s: load %q: %w", kind, a.Name, err)
		}
		lam[i] = a.Rate / 1000
	}
	return lam, nil
}

// unstable fills predictions for an overloaded accelerator.
func unstable(apps []Load, out []Prediction, rho float64, share func(i int) float64) []Prediction {
	inf := math.Inf(1)
	for i, a := range apps {
		out[i] = Prediction{Name: a.Name, MeanMs: inf, P99Ms: inf, Utilisation: rho, Share: share(i)}
	}
	return out
}

// addDelay adds p's DelayMs, the part of a request's latency that
// occupies no accelerator, to a prediction made from its service time
// alone (the serial and batching models; processor sharing folds it into
// its own tail). Delay and accelerator time are independent: the means
// add, and so do the variances, so the p99 adds the two p99s' excesses
// over their means in quadrature, as for normal times — for these
// right-skewed ones it lands between that and the sum of the two p99s
// (TestFCFSDelayAgainstSimulation).
func addDelay(pr Prediction, p Profile) Prediction {
	if p.DelayMs <= 0 || !pr.Stable {
		return pr
	}
	dv := p.DelayCV * p.DelayCV * p.DelayMs * p.DelayMs
	ex := math.Max(pr.P99Ms-pr.MeanMs, 0)
	// Wilson–Hilferty gives 0 for a delay far more variable than any
	// measured (a CV above ~8): its excess is then taken as none rather
	// than negative.
	dex := math.Max(whQuantile(p.DelayMs, dv, 0.99)-p.DelayMs, 0)
	pr.MeanMs += p.DelayMs
	pr.P99Ms = pr.MeanMs + math.Hypot(ex, dex)
	return pr
}
