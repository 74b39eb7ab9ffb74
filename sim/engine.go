package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/accelpool/accelpool/gateway"
)

// engine is one run's state. Times are seconds of virtual time.
type engine struct {
	now, end, warmup float64
	rng              *rand.Rand
	router           gateway.Policy

	apps       []appState
	insts      []instState
	accs       []accel
	samplers   []sampler
	switchCost []float64 // per sampler, seconds

	events eventHeap
	reqs   []request
	free   []int32 // free request slots
	dirty  []int32 // accelerators whose next completion must be rescheduled
	nEv    int
	last   float64 // time of the last completion
}

type appState struct {
	spec  *App
	model int32
	conc  int
	insts []int32
	// Routing, for applications with more than one instance.
	endpoints   []gateway.Endpoint
	byID        map[string]int32
	outstanding func(string) int
	next        func() float64
	lat         []float32 // measured latencies, ms
}

type instState struct {
	id          string
	app, acc    int32
	sampler     int32
	conc        int // 0: unlimited
	running     int
	outstanding int // queued + running
	queue       fifo
}

// accel is one accelerator. Under processor sharing every running request
// progresses at rate min(1, par/n); v is the service each running request
// has received since a reference point (a virtual clock advancing at that
// rate), so a request started at v0 with demand d finishes when v reaches
// v0+d, and the next completion is the smallest finish in jobs.
type accel struct {
	name  string
	kind  string
	disc  Discipline
	par   float64
	hosts bool

	v, t  float64 // virtual service clock and the time it was last advanced
	jobs  jobHeap // running requests by finish
	ver   uint32  // invalidates scheduled completions
	dirty bool

	// FCFS
	queue     fifo
	busy      int32 // request in service + 1, or 0
	lastModel int32

	busySince, busyTotal float64
}

type request struct {
	app, inst int32
	arrival   float64
	demand    float64
	delay     float64 // answered this long after its service ends
	finish    float64 // PS: finish on the accelerator's virtual clock
	next      int32
}

const (
	evArrival = iota
	evCompletion
)

type event struct {
	t    float64
	kind uint8
	idx  int32 // app (arrival) or accelerator (completion)
	ver  uint32
	seq  uint64 // ties in insertion order
}

func (e *engine) run() {
	for i := range e.apps {
		a := &e.apps[i]
		if a.spec.Rate <= 0 {
			continue
		}
		arr := a.spec.Arrivals
		if arr == nil {
			arr = Poisson{}
		}
		r := rand.New(rand.NewPCG(e.rng.Uint64(), uint64(i)))
		a.next = arr.Stream(a.spec.Rate, r)
		if t := a.next(); t < e.end {
			e.push(event{t: t, kind: evArrival, idx: int32(i)})
		}
	}
	for len(e.events.h) > 0 {
		ev := e.events.pop()
		e.nEv++
		e.now = ev.t
		switch ev.kind {
		case evArrival:
			e.arrive(ev.idx)
		case evCompletion:
			a := &e.accs[ev.idx]
			if ev.ver != a.ver {
				continue // rescheduled since
			}
			e.complete(ev.idx)
		}
		for _, ai := range e.dirty {
			e.reschedule(ai)
		}
		e.dirty = e.dirty[:0]
	}
}

func (e *engine) push(ev event) {
	ev.seq = e.events.seq
	e.events.seq++
	e.events.push(ev)
}

func (e *engine) arrive(ai int32) {
	a := &e.apps[ai]
	if t := e.now + a.next(); t < e.end {
		e.push(event{t: t, kind: evArrival, idx: ai})
	}
	ii := a.insts[0]
	if len(a.insts) > 1 {
		ep, ok := e.router.Pick(a.spec.Name, a.endpoints, a.outstanding)
		if ok {
			ii = a.byID[ep.InstanceID]
		}
	}
	in := &e.insts[ii]
	ri := e.alloc()
	r := &e.reqs[ri]
	demand, delay := e.samplers[in.sampler].drawDelay(e.rng)
	*r = request{app: ai, inst: ii, arrival: e.now, demand: demand, delay: delay, next: -1}
	in.outstanding++
	acc := &e.accs[in.acc]
	if acc.disc == FCFS {
		acc.queue.push(e, ri)
		if acc.busy == 0 {
			e.startFCFS(in.acc)
		}
		return
	}
	if in.conc > 0 && in.running >= in.conc {
		in.queue.push(e, ri)
		return
	}
	e.startPS(ri)
}

func (e *engine) alloc() int32 {
	if n := len(e.free); n > 0 {
		ri := e.free[n-1]
		e.free = e.free[:n-1]
		return ri
	}
	e.reqs = append(e.reqs, request{})
	return int32(len(e.reqs) - 1)
}

// startPS puts request ri into service on its instance's accelerator.
func (e *engine) startPS(ri int32) {
	r := &e.reqs[ri]
	in := &e.insts[r.inst]
	in.running++
	ai := in.acc
	a := &e.accs[ai]
	e.advance(a)
	if len(a.jobs.h) == 0 {
		a.busySince = e.now
	}
	r.finish = a.v + r.demand
	a.jobs.push(job{finish: r.finish, req: ri})
	e.markDirty(ai)
}

func (e *engine) markDirty(ai int32) {
	if a := &e.accs[ai]; !a.dirty {
		a.dirty = true
		e.dirty = append(e.dirty, ai)
	}
}

func (a *accel) rate() float64 {
	n := float64(len(a.jobs.h))
	if n <= a.par {
		return 1
	}
	return a.par / n
}

// advance brings a's virtual clock to now.
func (e *engine) advance(a *accel) {
	if len(a.jobs.h) > 0 {
		a.v += (e.now - a.t) * a.rate()
	}
	a.t = e.now
}

// reschedule plans a's next completion after its set of running requests
// changed.
func (e *engine) reschedule(ai int32) {
	a := &e.accs[ai]
	a.dirty = false
	if a.disc == FCFS {
		return // FCFS schedules its completion when it starts a request
	}
	a.ver++
	if len(a.jobs.h) == 0 {
		return
	}
	t := e.now + max(a.jobs.h[0].finish-a.v, 0)/a.rate()
	e.push(event{t: t, kind: evCompletion, idx: ai, ver: a.ver})
}

func (e *engine) complete(ai int32) {
	a := &e.accs[ai]
	if a.disc == FCFS {
		ri := a.busy - 1
		a.busy = 0
		a.busyTotal += e.now - a.busySince
		e.done(ri)
		if a.queue.n > 0 {
			e.startFCFS(ai)
		}
		return
	}
	e.advance(a)
	// Finish the request this event was for, and every other whose demand
	// is met (several finish at once when their demands are equal).
	eps := 1e-12 * max(1, math.Abs(a.v))
	var finished [8]int32
	head := a.jobs.pop()
	a.v = max(a.v, head.finish)
	done := append(finished[:0], head.req)
	for len(a.jobs.h) > 0 && a.jobs.h[0].finish <= a.v+eps {
		done = append(done, a.jobs.pop().req)
	}
	if len(a.jobs.h) == 0 {
		a.busyTotal += e.now - a.busySince
	}
	e.markDirty(ai)
	for _, ri := range done {
		in := &e.insts[e.reqs[ri].inst]
		in.running--
		e.done(ri)
		if in.queue.n > 0 && (in.conc == 0 || in.running < in.conc) {
			e.startPS(in.queue.pop(e))
		}
	}
}

// startFCFS serves the head of a's queue.
func (e *engine) startFCFS(ai int32) {
	a := &e.accs[ai]
	ri := a.queue.pop(e)
	r := &e.reqs[ri]
	in := &e.insts[r.inst]
	model := e.apps[r.app].model
	svc := r.demand
	if a.lastModel >= 0 && a.lastModel != model {
		svc += e.switchCost[in.sampler]
	}
	a.lastModel = model
	a.busy = ri + 1
	a.busySince = e.now
	a.ver++
	e.push(event{t: e.now + svc, kind: evCompletion, idx: ai, ver: a.ver})
}

// done records a finished request and frees its slot.
func (e *engine) done(ri int32) {
	r := &e.reqs[ri]
	e.insts[r.inst].outstanding--
	if r.arrival >= e.warmup {
		a := &e.apps[r.app]
		a.lat = append(a.lat, float32((e.now-r.arrival+r.delay)*1e3))
	}
	e.last = e.now
	e.free = append(e.free, ri)
}

func (e *engine) result() Result {
	res := Result{Events: e.nEv, End: time.Duration(e.last * float64(time.Second)), Utilisation: map[string]float64{}}
	for i := range e.apps {
		a := &e.apps[i]
		ar := AppResult{App: a.spec.Name, Instances: len(a.insts), Requests: len(a.lat), ObjectiveMs: a.spec.ObjectiveMs}
		if len(a.lat) > 0 {
			var sum float64
			for _, x := range a.lat {
				sum += float64(x)
			}
			ar.MeanMs = sum / float64(len(a.lat))
			slices.Sort(a.lat)
			ar.P50Ms = float64(nearestRank(a.lat, 50))
			_, lo, hi := QuantileRanks(len(a.lat), 99)
			ar.P99Ms = float64(nearestRank(a.lat, 99))
			ar.P99LowMs, ar.P99HighMs = float64(a.lat[lo-1]), float64(a.lat[hi-1])
		}
		ar.Violated = ar.Requests > 0 && ar.P99Ms > ar.ObjectiveMs
		ar.Significant = ar.Requests > 0 && ar.P99LowMs > ar.ObjectiveMs
		if ar.Violated {
			res.Violations++
		}
		if ar.Significant {
			res.Significant++
		}
		res.Requests += ar.Requests
		res.Apps = append(res.Apps, ar)
	}
	if e.last > 0 {
		for i := range e.accs {
			if a := &e.accs[i]; a.hosts {
				res.Utilisation[a.name] = a.busyTotal / e.last
			}
		}
	}
	return res
}

// nearestRank is the nearest-rank percentile p of sorted v.
func nearestRank(v []float32, p float64) float32 {
	k := int(math.Ceil(p / 100 * float64(len(v))))
	return v[min(max(k, 1), len(v))-1]
}

// fifo is a queue of requests linked through request.next.
type fifo struct {
	head, tail int32
	n          int
}

func (q *fifo) push(e *engine, ri int32) {
	e.reqs[ri].next = -1
	if q.n == 0 {
		q.head = ri
	} else {
		e.reqs[q.tail].next = ri
	}
	q.tail = ri
	q.n++
}

func (q *fifo) pop(e *engine) int32 {
	ri := q.head
	q.head = e.reqs[ri].next
	q.n--
	return ri
}

// eventHeap is a binary min-heap by time, then insertion order.
type eventHeap struct {
	h   []event
	seq uint64
}

func (a event) less(b event) bool {
	if a.t != b.t {
		return a.t < b.t
	}
	return a.seq < b.seq
}

func (h *eventHeap) push(ev event) {
	h.h = append(h.h, ev)
	i := len(h.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.h[i].less(h.h[p]) {
			break
		}
		h.h[i], h.h[p] = h.h[p], h.h[i]
		i = p
	}
}

func (h *eventHeap) pop() event {
	top := h.h[0]
	last := len(h.h) - 1
	h.h[0] = h.h[last]
	h.h = h.h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h.h) {
			break
		}
		m := l
		if r := l + 1; r < len(h.h) && h.h[r].less(h.h[l]) {
			m = r
		}
		if !h.h[m].less(h.h[i]) {
			break
		}
		h.h[i], h.h[m] = h.h[m], h.h[i]
		i = m
	}
	return top
}

// job is a running request on a processor-sharing accelerator.
type job struct {
	finish float64
	req    int32
}

// jobHeap is a binary min-heap of jobs by finish.
type jobHeap struct{ h []job }

func (h *jobHeap) push(j job) {
	h.h = append(h.h, j)
	i := len(h.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if h.h[i].finish >= h.h[p].finish {
			break
		}
		h.h[i], h.h[p] = h.h[p], h.h[i]
		i = p
	}
}

func (h *jobHeap) pop() job {
	top := h.h[0]
	last := len(h.h) - 1
	h.h[0] = h.h[last]
	h.h = h.h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h.h) {
			break
		}
		m := l
		if r := l + 1; r < len(h.h) && h.h[r].finish < h.h[l].finish {
			m = r
		}
		if h.h[m].finish >= h.h[i].finish {
			break
		}
		h.h[i], h.h[m] = h.h[m], h.h[i]
		i = m
	}
	return top
}
