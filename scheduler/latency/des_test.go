package latency

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
)

// A small discrete-event simulator of one accelerator, used only to check
// the analytic models' formulas and tail approximations where the Ibis
// data has no measurement (open Poisson arrivals). It is independent of
// the models: it simulates the queue, it does not evaluate a formula.

// simClass is one load: Poisson arrivals at rate (per ms), service times
// with the given mean and coefficient of variation (gamma distributed;
// CV 0 is deterministic), a model key and a switch cost for serial
// servers.
type simClass struct {
	rate, mean, cv float64
	model          int
	switchMs       float64
}

type simStats struct {
	n         int
	mean, p99 float64
}

func (c simClass) draw(r *rand.Rand) float64 {
	if c.cv <= 0 {
		return c.mean
	}
	k := 1 / (c.cv * c.cv) // gamma shape
	return c.mean / k * gammaRand(r, k)
}

// gammaRand draws Gamma(k, 1) by Marsaglia and Tsang's method.
func gammaRand(r *rand.Rand, k float64) float64 {
	if k < 1 {
		return gammaRand(r, k+1) * math.Pow(r.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

// arrivals draws n Poisson arrivals of the merged classes: times and
// class indices.
func arrivals(cs []simClass, n int, seed uint64) ([]float64, []int) {
	r := rand.New(rand.NewPCG(seed, 7))
	total := 0.0
	for _, c := range cs {
		total += c.rate
	}
	ts := make([]float64, n)
	ks := make([]int, n)
	t := 0.0
	for i := range ts {
		t += r.ExpFloat64() / total
		u := r.Float64() * total
		k := 0
		for k < len(cs)-1 && u > cs[k].rate {
			u -= cs[k].rate
			k++
		}
		ts[i], ks[i] = t, k
	}
	return ts, ks
}

// summarise computes each class's mean and p99 response, dropping the
// first tenth of the requests as warm-up.
func summarise(ncls int, ks []int, resp []float64) []simStats {
	per := make([][]float64, ncls)
	for i := len(resp) / 10; i < len(resp); i++ {
		per[ks[i]] = append(per[ks[i]], resp[i])
	}
	out := make([]simStats, ncls)
	for k, r := range per {
		if len(r) == 0 {
			continue
		}
		slices.Sort(r)
		sum := 0.0
		for _, v := range r {
			sum += v
		}
		out[k] = simStats{n: len(r), mean: sum / float64(len(r)), p99: r[int(0.99*float64(len(r)))]}
	}
	return out
}

// simPS simulates egalitarian processor sharing: every job present is
// served at rate 1/k. It tracks the attained service V(t) of a job
// present since time 0 (dV/dt = 1/k); a job arriving at V = v with size x
// leaves when V reaches v+x.
func simPS(cs []simClass, n int, seed uint64) []simStats { return simPSc(cs, n, seed, 1) }

// simPSc is simPS on c servers: each of k jobs present is served at rate
// min(1, c/k).
func simPSc(cs []simClass, n int, seed uint64, c float64) []simStats {
	ks, resp := simPSRaw(cs, n, seed, c)
	return summarise(len(cs), ks, resp)
}

// simPSRaw is simPSc's requests: each one's class and response time.
func simPSRaw(cs []simClass, n int, seed uint64, c float64) ([]int, []float64) {
	ts, ks := arrivals(cs, n, seed)
	r := rand.New(rand.NewPCG(seed, 11))
	resp := make([]float64, n)
	h := &depHeap{}
	t, v := 0.0, 0.0
	next := 0
	for next < n || h.Len() > 0 {
		k := float64(h.Len())
		speed := 1.0
		if k > c {
			speed = c / k
		}
		tDep := math.Inf(1)
		if h.Len() > 0 {
			tDep = t + ((*h)[0].at-v)/speed
		}
		if next < n && ts[next] <= tDep {
			if k > 0 {
				v += (ts[next] - t) * speed
			}
			t = ts[next]
			heap.Push(h, dep{at: v + cs[ks[next]].draw(r), job: next})
			next++
			continue
		}
		d := heap.Pop(h).(dep)
		t, v = tDep, d.at
		resp[d.job] = t - ts[d.job]
	}
	return ks, resp
}

type dep struct {
	at  float64
	job int
}

type depHeap []dep

func (h depHeap) Len() int           { return len(h) }
func (h depHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h depHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *depHeap) Push(x any)        { *h = append(*h, x.(dep)) }
func (h *depHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// simFCFS simulates a serial FCFS server whose request pays its class's
// switch cost when the previous request served was of another model (the
// weights stay loaded while the server idles).
func simFCFS(cs []simClass, n int, seed uint64) []simStats {
	ks, resp := simFCFSRaw(cs, n, seed)
	return summarise(len(cs), ks, resp)
}

// simFCFSRaw is simFCFS's class and response time of every request.
func simFCFSRaw(cs []simClass, n int, seed uint64) ([]int, []float64) {
	ts, ks := arrivals(cs, n, seed)
	r := rand.New(rand.NewPCG(seed, 13))
	resp := make([]float64, n)
	free := 0.0 // when the server finishes its current work
	loaded := -1
	for i := range ts {
		c := cs[ks[i]]
		s := c.draw(r)
		if c.model != loaded {
			s += c.switchMs
			loaded = c.model
		}
		start := math.Max(free, ts[i])
		free = start + s
		resp[i] = free - ts[i]
	}
	return ks, resp
}

// simBatch simulates one dynamic batcher on a dedicated server, as
// agent/batch runs one: when the server is free it takes the oldest
// waiting request (or waits for the next), then collects more until it
// has maxBatch or maxDelayMs has passed since it took the first, and
// runs the batch; a batch of b takes batchMs(b).
func simBatch(rate float64, batchMs func(int) float64, maxBatch int, maxDelayMs float64, n int, seed uint64) simStats {
	ts, ks := arrivals([]simClass{{rate: rate}}, n, seed)
	resp := make([]float64, n)
	free := 0.0
	head := 0
	for head < n {
		take := math.Max(free, ts[head])
		start := take
		if full := head + maxBatch - 1; full >= n || ts[full] > take {
			fill := math.Inf(1)
			if full < n {
				fill = ts[full]
			}
			start = math.Min(take+maxDelayMs, fill)
		}
		end := head
		for end < n && end-head < maxBatch && ts[end] <= start {
			end++
		}
		done := start + batchMs(end-head)
		for i := head; i < end; i++ {
			resp[i] = done - ts[i]
		}
		free, head = done, end
	}
	return summarise(1, ks, resp)[0]
}
