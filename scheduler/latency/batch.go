package latency

import (
	"fmt"
	"math"

	"github.com/accelpool/accelpool/errdefs"
)

// Batch models one application alone on a dedicated slice with dynamic
// batching, as agent/batch runs it: when the slice is free it takes the
// oldest waiting request (or waits for the next), collects more until it
// has MaxBatch or MaxDelayMs has passed since it took the first, and
// serves the batch; a batch of b takes Profile.BatchMs(b). Arrivals are
// Poisson, batch service times deterministic.
//
// The model is the embedded Markov chain at the epochs when the slice
// takes a first request, with state y, the requests then waiting (doc.go
// gives the transitions). Its stationary distribution gives the
// distribution of the batches; a tagged request's response time is then
// enumerated by where it arrives: as the first after an idle period, while
// a batch forms, or while one is served (then behind those already
// waiting and the arrivals before it; a request with more than MaxBatch
// ahead waits out full batches). The mean and p99 come from that mixture,
// and the utilisation from ρ = λ·E[S(b)]/E[b]. The slice is stable while
// λ·S(B)/B < 1. MaxBatch ≤ 1 is an FCFS queue (the FCFS model).
//
// Against a discrete-event simulation of the batcher the mean and p99 are
// within the errors TestBatchAgainstSimulation prints.
type Batch struct {
	// MaxBatch is the largest batch; 0 or 1 disables batching.
	MaxBatch int
	// MaxDelayMs is how long the slice waits for a batch to fill after it
	// took the first request.
	MaxDelayMs float64
}

// Name is "batch".
func (Batch) Name() string { return "batch" }

// Predict implements Model; apps must hold one load.
func (m Batch) Predict(apps []Load) ([]Prediction, error) {
	if len(apps) != 1 {
		return nil, errdefs.Invalid(fmt.Sprintf("batch: a dedicated slice serves one load, got %d", len(apps)))
	}
	lams, err := validate("batch", apps)
	if err != nil {
		return nil, err
	}
	if m.MaxBatch < 0 || !(m.MaxDelayMs >= 0) || math.IsInf(m.MaxDelayMs, 0) {
		return nil, errdefs.Invalid(fmt.Sprintf("batch: max batch %d and max delay %v ms must not be negative", m.MaxBatch, m.MaxDelayMs))
	}
	a := apps[0]
	if m.MaxBatch <= 1 {
		p := a.Profile
		p.ServiceTimeMs = p.BatchMs(1)
		return FCFS{}.Predict([]Load{{Name: a.Name, Rate: a.Rate, Profile: p}})
	}
	B := m.MaxBatch
	s := make([]float64, B+1)
	for b := 1; b <= B; b++ {
		s[b] = a.Profile.BatchMs(b)
	}
	lam := lams[0]
	out := make([]Prediction, 1)
	if limit := lam * s[B] / float64(B); limit >= 1 {
		return unstable(apps, out, limit, func(int) float64 { return limit }), nil
	}
	if lam == 0 { // a lone request waits out the delay
		r := m.MaxDelayMs + s[1]
		out[0] = addDelay(Prediction{Name: a.Name, MeanMs: r, P99Ms: r, Stable: true}, a.Profile)
		return out, nil
	}
	c := batchChain{lam: lam, B: B, D: m.MaxDelayMs, s: s}
	c.solve()
	mean, p99, rho := c.response()
	out[0] = addDelay(Prediction{Name: a.Name, MeanMs: mean, P99Ms: p99, Utilisation: rho, Share: rho, Stable: true}, a.Profile)
	return out, nil
}

// batchChain is the batcher's embedded Markov chain: states y = 1..n
// (requests waiting when the slice takes the first), pi their
// stationary probabilities.
type batchChain struct {
	lam float64 // per ms
	B   int
	D   float64
	s   []float64 // s[b], batch service time
	pi  []float64
	// closes[y] are the ways a batch taken at y closes.
	closes [][]closing
	// arr[b] is the distribution of arrivals during a service of b.
	arr [][]float64
}

// closing is one way a batch forms: with probability p it holds b
// requests and closes tau ms after the take.
type closing struct {
	p, tau float64
	b      int
}

// closings lists how a batch taken with y waiting forms: at once with B
// when y ≥ B; otherwise with y+k after the delay D if k < B−y arrive
// within it (Poisson), or full at the (B−y)-th arrival, taken at its mean
// given it comes within D.
func (c *batchChain) closings(y int) []closing {
	if y >= c.B || c.D == 0 {
		return []closing{{p: 1, b: min(y, c.B)}}
	}
	need := c.B - y
	mu := c.lam * c.D
	var out []closing
	rest := 1.0
	for k := range need {
		p := poisson(mu, k)
		rest -= p
		out = append(out, closing{p: p, b: y + k, tau: c.D})
	}
	if rest > 1e-15 {
		// E[T_need | T_need ≤ D] = (need/λ)·P(K ≥ need+1)/P(K ≥ need).
		above := rest - poisson(mu, need)
		tau := float64(need) / c.lam * math.Max(0, above) / rest
		out = append(out, closing{p: rest, b: c.B, tau: math.Min(tau, c.D)})
	}
	return out
}

// poisson is P(K = k) for K ~ Poisson(mu).
func poisson(mu float64, k int) float64 {
	if mu == 0 {
		if k == 0 {
			return 1
		}
		return 0
	}
	lg, _ := math.Lgamma(float64(k) + 1)
	return math.Exp(float64(k)*math.Log(mu) - mu - lg)
}

// poissonPMF is P(K = 0..) up to where the tail is below 1e-12, the tail
// added to the last entry.
func poissonPMF(mu float64) []float64 {
	var out []float64
	sum := 0.0
	p := math.Exp(-mu)
	for k := 0; ; k++ {
		switch {
		case mu > 500: // e^{-mu} underflows
			p = poisson(mu, k)
		case k > 0:
			p *= mu / float64(k)
		}
		out = append(out, p)
		sum += p
		if 1-sum < 1e-12 && float64(k) > mu {
			break
		}
	}
	out[len(out)-1] += math.Max(0, 1-sum)
	return out
}

// solve finds the stationary distribution by power iteration, on a
// state space it doubles while more than 1e-9 of the mass sits at its
// edge (up to 16384 states).
func (c *batchChain) solve() {
	c.arr = make([][]float64, c.B+1)
	for b := 1; b <= c.B; b++ {
		c.arr[b] = poissonPMF(c.lam * c.s[b])
	}
	n := 4*c.B + len(c.arr[c.B]) + 64
	for {
		c.closes = make([][]closing, n+1)
		for y := 1; y <= n; y++ {
			c.closes[y] = c.closings(y)
		}
		pi := make([]float64, n+1)
		pi[1] = 1
		next := make([]float64, n+1)
		for range 20000 {
			clear(next)
			for y := 1; y <= n; y++ {
				if pi[y] == 0 {
					continue
				}
				left := max(0, y-c.B)
				for _, cl := range c.closes[y] {
					w := pi[y] * cl.p
					for a, pa := range c.arr[cl.b] {
						z := min(max(left+a, 1), n) // z = 0: idle, then one
						next[z] += w * pa
					}
				}
			}
			diff := 0.0
			for y := range next {
				diff += math.Abs(next[y] - pi[y])
			}
			pi, next = next, pi
			if diff < 1e-12 {
				break
			}
		}
		c.pi = pi
		edge := 0.0
		for y := max(1, n-c.B); y <= n; y++ {
			edge += pi[y]
		}
		if edge < 1e-9 || n >= 16384 {
			return
		}
		n *= 2
	}
}

// response enumerates a tagged request's response time: its mean, p99
// and the slice's utilisation.
func (c *batchChain) response() (mean, p99, rho float64) {
	const slots = 16 // points of the uniform arrival offsets
	var (
		hist   histogram
		weight float64
		sum    float64
	)
	add := func(w, r float64) {
		if w <= 0 {
			return
		}
		weight += w
		sum += w * r
		hist.add(r, w)
	}
	sB := c.s[c.B]
	// idle is the probability a take follows an idle slice: the batch
	// before left nobody.
	idle := 0.0
	var eb, es float64
	for y := 1; y < len(c.pi); y++ {
		left := max(0, y-c.B)
		for _, cl := range c.closes[y] {
			w := c.pi[y] * cl.p
			eb += w * float64(cl.b)
			es += w * c.s[cl.b]
			if left == 0 {
				idle += w * c.arr[cl.b][0]
			}
		}
	}
	rho = c.lam * es / eb
	hist.width = c.s[1] / 400
	// Arrivals before and after a tagged request at offset v_j of a
	// service of b, the same for every state.
	before := make([][][]float64, c.B+1)
	after := make([][][]float64, c.B+1)
	for b := 1; b <= c.B; b++ {
		before[b] = make([][]float64, slots)
		after[b] = make([][]float64, slots)
		for j := range slots {
			v := (float64(j) + 0.5) / slots * c.s[b]
			before[b][j] = poissonPMF(c.lam * v)
			after[b][j] = poissonPMF(c.lam * (c.s[b] - v))
		}
	}
	for y := 1; y < len(c.pi); y++ {
		if c.pi[y] < 1e-14 {
			continue
		}
		left := max(0, y-c.B)
		for _, cl := range c.closes[y] {
			w := c.pi[y] * cl.p
			sb := c.s[cl.b]
			// The first request after an idle slice: takes at y = 1.
			if y == 1 {
				add(idle*cl.p, cl.tau+sb)
			}
			// Arrivals while the batch forms join it.
			if k := cl.b - y; k > 0 {
				for j := range slots {
					u := (float64(j) + 0.5) / slots * cl.tau
					add(w*float64(k)/slots, cl.tau-u+sb)
				}
			}
			// Arrivals during the service: λ·S(b) of them, at offset v.
			for j := range slots {
				v := (float64(j) + 0.5) / slots * sb
				wj := w * c.lam * sb / slots
				rest := sb - v
				for n, pn := range before[cl.b][j] {
					q := left + n + 1 // the tagged request's place in line
					if q > c.B {
						// Full batches ahead, then its own (full too).
						add(wj*pn, rest+math.Ceil(float64(q)/float64(c.B))*sB)
						continue
					}
					// In the next batch: how it closes depends on the
					// requests waiting then, y' = q + later arrivals.
					full := 1.0
					for m, pm := range after[cl.b][j] {
						y2 := q + m
						if y2 >= c.B {
							break
						}
						full -= pm
						for _, cl2 := range c.closes[y2] {
							add(wj*pn*pm*cl2.p, rest+cl2.tau+c.s[cl2.b])
						}
					}
					add(wj*pn*math.Max(0, full), rest+sB)
				}
			}
		}
	}
	return sum / weight, hist.quantile(0.99, weight), rho
}

// histogram accumulates weights in bins of a fixed width.
type histogram struct {
	width float64
	bins  []float64
}

func (h *histogram) add(v, w float64) {
	i := int(v / h.width)
	if i >= len(h.bins) {
		h.bins = append(h.bins, make([]float64, i+1-len(h.bins))...)
	}
	h.bins[i] += w
}

// quantile is the upper edge of the bin where the cumulative weight
// reaches p of total.
func (h *histogram) quantile(p, total float64) float64 {
	acc := 0.0
	for i, w := range h.bins {
		acc += w
		if acc >= p*total {
			return float64(i+1) * h.width
		}
	}
	return float64(len(h.bins)) * h.width
}
