package sim

import (
	"math"
	"math/rand/v2"
)

// Demand is the distribution of a request's service demand.
type Demand int

const (
	// Gamma has the profile's mean and CV (shape 1/CV², scale mean·CV²);
	// CV 1 is the exponential. The default.
	Gamma Demand = iota
	// Lognormal has the profile's mean and CV (σ² = ln(1+CV²)).
	Lognormal
)

func (d Demand) String() string {
	if d == Lognormal {
		return "lognormal"
	}
	return "gamma"
}

// sampler draws service demands in seconds for one (model, kind).
type sampler struct {
	mean float64 // seconds
	cv   float64
	dist Demand
	// gamma: shape and scale; lognormal: mu and sigma.
	a, b float64
	// samples, when set, is an empirical distribution (seconds) that
	// replaces the others.
	samples []float64
	// delays pairs with samples: latency that occupies no accelerator.
	delays []float64
}

func newSampler(mean, cv float64, d Demand, samplesMs, delaysMs []float64) sampler {
	s := sampler{mean: mean, cv: cv, dist: d}
	if len(samplesMs) > 0 {
		s.samples = make([]float64, len(samplesMs))
		for i, x := range samplesMs {
			s.samples[i] = x / 1e3
		}
		if len(delaysMs) == len(samplesMs) {
			s.delays = make([]float64, len(delaysMs))
			for i, x := range delaysMs {
				s.delays[i] = x / 1e3
			}
		}
		return s
	}
	if cv <= 0 {
		return s
	}
	switch d {
	case Lognormal:
		sig2 := math.Log1p(cv * cv)
		s.a, s.b = math.Log(mean)-sig2/2, math.Sqrt(sig2)
	default:
		s.a = 1 / (cv * cv)
		s.b = mean * cv * cv
	}
	return s
}

// drawDelay returns a demand and the delay that goes with it (seconds;
// 0 unless the empirical distribution has delays).
func (s *sampler) drawDelay(r *rand.Rand) (demand, delay float64) {
	if s.samples != nil {
		i := r.IntN(len(s.samples))
		if s.delays != nil {
			return s.samples[i], s.delays[i]
		}
		return s.samples[i], 0
	}
	return s.drawParametric(r), 0
}

func (s *sampler) drawParametric(r *rand.Rand) float64 {
	if s.cv <= 0 {
		return s.mean
	}
	if s.dist == Lognormal {
		return math.Exp(s.a + s.b*r.NormFloat64())
	}
	return gammaDraw(r, s.a) * s.b
}

// gammaDraw draws from Gamma(shape k, scale 1) with Marsaglia and Tsang's
// squeeze method (ACM TOMS 26(3), 2000); for k < 1 it draws Gamma(k+1)
// and multiplies by U^(1/k).
func gammaDraw(r *rand.Rand, k float64) float64 {
	boost := 1.0
	if k < 1 {
		boost = math.Pow(1-r.Float64(), 1/k) // 1-U lies in (0, 1]
		k++
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		var x, v float64
		for {
			x = r.NormFloat64()
			v = 1 + c*x
			if v > 0 {
				break
			}
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x {
			return d * v * boost
		}
		if u > 0 && math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v * boost
		}
	}
}
