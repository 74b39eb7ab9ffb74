package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/accelpool/accelpool/errdefs"
)

// noAccelerators is the pseudo-checker that rejects a node with no
// accelerator at all; it appears in Explanation.Filtered.
const noAccelerators = "accelerators"

// Place prepares snap and places req on it: a convenience for one-off
// decisions. A caller making many decisions on one snapshot calls Prepare
// once and State.Place for each.
func Place(snap Snapshot, req Request, p Policy) (Explanation, error) {
	s, err := Prepare(snap)
	if err != nil {
		return Explanation{}, err
	}
	return s.Place(req, p)
}

// Place decides where req's Count instances go. Every candidate (node,
// accelerator) runs through the policy's checkers; those that pass are
// scored by its rankers; the highest score wins, ties going to the node
// name and then the accelerator ID that sort first. Candidates rejected
// only by a SoftChecker are chosen only when no other candidate fits.
//
// Instances are placed one at a time: after each, the chosen node's
// candidates are evaluated again with the new instance counted, so two
// new instances never count the same free memory. Place does not change
// s; the caller commits the placements (and may call s.Add for each).
//
// The Explanation records every candidate's evaluation (or, with
// Policy.Top, the best-ranked and a sample of the rejected), the
// rejection counts per checker and the placements. When fewer than Count
// instances fit, the error wraps errdefs.ErrResourceExhausted and says
// why; the placements that did fit are in the Explanation. An invalid
// request or policy is errdefs.ErrInvalid.
func (s *State) Place(req Request, p Policy) (Explanation, error) {
	if req.App.Metadata.Name == "" {
		return Explanation{}, errdefs.Invalid("place: request has no application name")
	}
	if req.Count < 0 {
		return Explanation{}, errdefs.Invalid(fmt.Sprintf("place %s: count %d is negative", req.App.Metadata.Name, req.Count))
	}
	if req.Count == 0 {
		req.Count = 1
	}
	if req.MemoryBytes == 0 {
		req.MemoryBytes = req.App.Spec.MemoryBytes
	}
	if req.MemoryBytes <= 0 {
		return Explanation{}, errdefs.Invalid(fmt.Sprintf("place %s: memory per instance is %d; set Request.MemoryBytes or spec.memoryBytes", req.App.Metadata.Name, req.MemoryBytes))
	}
	pol, err := p.resolve()
	if err != nil {
		return Explanation{}, err
	}
	name := req.App.Metadata.Name
	d := &decision{req: req, name: name, existing: s.appNodes[name]}
	sc := getScratch(len(s.accs), len(pol.checkers))
	defer scratchPool.Put(sc)
	ev := &evaluator{
		s: s, pol: pol, cand: &Candidate{s: s, d: d},
		names:   make([]string, len(pol.checkers)),
		counts:  make([]int, len(pol.checkers)+1), // last: noAccelerators
		full:    p.Top <= 0,
		deferOn: p.Top > 0 && pol.anyDefer,
		rej:     sc.rej,
		nodeRes: sc.nodeRes,
	}
	for i, c := range pol.checkers {
		ev.names[i] = c.Name()
	}
	if ev.full {
		ev.scoreBuf = make([]float64, 0, len(s.accs)*len(pol.rankers))
	} else {
		ev.scoreBuf = sc.scores[:0]
		ev.fallbacks = sc.fallbacks[:0]
	}
	defer func() {
		if !ev.full {
			sc.scores = ev.scoreBuf[:0]
			clear(ev.fallbacks)
			sc.fallbacks = ev.fallbacks[:0]
		}
	}()

	e := Explanation{
		App:         name,
		MemoryBytes: req.MemoryBytes,
		Count:       req.Count,
		Checkers:    ev.names,
		Nodes:       len(s.nodes),
	}
	for i, r := range pol.rankers {
		e.Rankers = append(e.Rankers, RankerWeight{Name: r.Name(), Weight: pol.weights[i]})
	}
	if ev.full {
		e.Candidates = make([]Outcome, 0, len(s.accs))
	}

	// Round one: every candidate (deferred checkers aside).
	sampled := make([]int, len(ev.counts)) // rejections recorded per checker
	closed := false                        // the explanation's round one is over
	record := func(ci int, o Outcome) {
		if closed {
			return
		}
		if ev.full || sampled[ci] < p.Top {
			sampled[ci]++
			e.Candidates = append(e.Candidates, o)
		}
	}
	ents := sc.ents[:0]
	ev.skipDeferred = ev.deferOn
	for ni := range s.nodes {
		n := &s.nodes[ni]
		e.Evaluated += max(1, int(n.end-n.first))
		if n.first == n.end {
			ev.counts[len(ev.counts)-1]++
			record(len(ev.counts)-1, Outcome{Node: n.state.Node.Name, Checker: noAccelerators, Reason: "node has no accelerators"})
			continue
		}
		ev.resetNode()
		for ai := n.first; ai < n.end; ai++ {
			var o Outcome
			ci := ev.eval(ai, &o)
			ev.rej[ai] = int16(ci)
			if ci >= 0 {
				ev.counts[ci]++
				record(ci, o)
				continue
			}
			ent := entry{score: o.Score, ai: ai, sc: int32(len(ev.scoreBuf) - len(o.Scores)), fb: -1, out: -1}
			if o.Fallback != "" {
				ent.fb = int32(len(ev.fallbacks))
				ev.fallbacks = append(ev.fallbacks, o.Fallback)
				e.Fallbacks++
			} else {
				e.Feasible++
			}
			if ev.full {
				ent.out = int32(len(e.Candidates))
				e.Candidates = append(e.Candidates, o)
			}
			ents = append(ents, ent)
		}
	}
	sc.ents = ents[:0]
	ev.skipDeferred = false

	// Rank: every eligible candidate, or the Top best. Deferred checkers
	// run on round one's candidates as they leave the heap, best first.
	var pl pool
	var stale map[int32]bool // nodes placed on by this decision
	if ev.deferOn {
		recorded := func(ci int) bool { return !closed && sampled[ci] < p.Top }
		pl.check = func(ent entry) bool {
			if stale[s.accs[ent.ai].node] {
				return true // re-evaluated in full; best skips it
			}
			var o Outcome
			ci := ev.evalDeferred(ent.ai, &o, recorded)
			if ci < 0 {
				return true
			}
			ev.counts[ci]++ // (in the heap: passed round one, rej is -1)
			ev.rej[ent.ai] = int16(ci)
			if !closed {
				if ent.fb >= 0 {
					e.Fallbacks--
				} else {
					e.Feasible--
				}
			}
			record(ci, o)
			return false
		}
	}
	if ev.full {
		slices.SortFunc(ents, compareEntries)
		for i, ent := range ents {
			e.Candidates[ent.out].Rank = i + 1
		}
		pl.sorted = ents
	} else {
		pl.heap = ents
		pl.heapify()
		for i := 0; i < p.Top; i++ {
			ent, ok := pl.at(i)
			if !ok {
				break
			}
			o := ev.outcomeOf(ent, e.Candidates)
			o.Rank = i + 1
			e.Candidates = append(e.Candidates, o)
		}
		slices.SortStableFunc(e.Candidates, func(a, b Outcome) int {
			if c := cmp.Compare(a.Node, b.Node); c != 0 {
				return c
			}
			return cmp.Compare(a.Accelerator, b.Accelerator)
		})
		e.Omitted = e.Evaluated - len(e.Candidates)
		if ev.deferOn && !pl.swept { // a sweep checked what is left
			e.Unchecked = len(pl.heap)
		}
	}
	e.Filtered = ev.filtered()
	closed = true

	// Place one instance at a time.
	var reeval []Outcome
	for k := 0; k < req.Count; k++ {
		best, fresh, ok := pl.best(s, stale)
		if !ok {
			e.Failure = ev.failure(name, k, req.Count)
			e.FailedReevaluated = reeval
			return e, errdefs.New(errdefs.ErrResourceExhausted, e.Failure)
		}
		o := fresh
		if o == nil {
			o = new(Outcome)
			*o = ev.outcomeOf(best, e.Candidates)
		}
		a := &s.accs[best.ai]
		in := d.instance(o.Node, o.Accelerator)
		e.Placements = append(e.Placements, Placement{
			Instance:    in,
			Score:       o.Score,
			Scores:      o.Scores,
			Fallback:    o.Fallback,
			Reevaluated: reeval,
		})
		reeval = nil
		if k == req.Count-1 {
			break
		}
		d.place(best.ai, a.node, in)
		// The chosen node changed: evaluate its candidates again.
		if stale == nil {
			stale = map[int32]bool{}
		}
		stale[a.node] = true
		pl.drop(s, a.node)
		n := &s.nodes[a.node]
		ev.resetNode()
		for ai := n.first; ai < n.end; ai++ {
			var o Outcome
			ci := ev.eval(ai, &o)
			o.Scores = slices.Clip(slices.Clone(o.Scores))
			if old := ev.rej[ai]; old >= 0 {
				ev.counts[old]--
			}
			if ci >= 0 {
				ev.counts[ci]++
			}
			ev.rej[ai] = int16(ci)
			reeval = append(reeval, o)
			if ci < 0 {
				f := freshEntry{entry: entry{score: o.Score, ai: ai, fb: -1}, o: o}
				if o.Fallback != "" {
					f.fb = 0 // soft
				}
				pl.fresh = append(pl.fresh, f)
			}
		}
	}
	return e, nil
}

// scratch holds per-decision buffers reused across decisions, so that a
// decision over ten thousand nodes allocates little.
type scratch struct {
	rej       []int16
	nodeRes   []nodeResult
	ents      []entry
	scores    []float64
	fallbacks []string
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch(accs, checkers int) *scratch {
	sc := scratchPool.Get().(*scratch)
	if cap(sc.rej) < accs {
		sc.rej = make([]int16, accs)
	}
	sc.rej = sc.rej[:accs]
	if cap(sc.nodeRes) < checkers {
		sc.nodeRes = make([]nodeResult, checkers)
	}
	sc.nodeRes = sc.nodeRes[:checkers]
	return sc
}

// evaluator runs the pipeline on one candidate at a time.
type evaluator struct {
	s     *State
	pol   resolved
	names []string
	cand  *Candidate
	full  bool
	// deferOn: the policy has deferred checkers and records only its Top
	// candidates, so they run on candidates as they are ranked;
	// skipDeferred: round one, which leaves them out.
	deferOn, skipDeferred bool
	rej                   []int16 // per accelerator: the rejecting checker, or -1
	counts                []int   // current rejections per checker
	// scoreBuf holds the scores of eligible candidates (a scratch buffer
	// unless full, when outcomes keep slices of it); fallbacks their soft
	// rejections.
	scoreBuf  []float64
	fallbacks []string
	// nodeRes caches NodeChecker results for the node being evaluated.
	nodeRes []nodeResult
}

type nodeResult struct {
	done, ok bool
	reason   string
}

// resetNode forgets the cached NodeChecker results before the next node.
func (ev *evaluator) resetNode() { clear(ev.nodeRes) }

// eval runs the checkers and, if none rejects, the rankers on accelerator
// ai, filling o (whose Scores then alias scoreBuf). It returns the index
// of the rejecting checker, or -1.
func (ev *evaluator) eval(ai int32, o *Outcome) int {
	s := ev.s
	a := &s.accs[ai]
	o.Node = s.nodes[a.node].state.Node.Name
	o.Accelerator = a.spec.ID
	c := ev.cand
	c.ai = ai
	for i, ch := range ev.pol.checkers {
		if ev.deferOn && ev.pol.deferred[i] {
			continue // below, after the others
		}
		c.checker = i
		var ok bool
		var reason string
		if ev.pol.node[i] {
			r := &ev.nodeRes[i]
			if !r.done {
				r.ok, r.reason = ch.Check(c)
				r.done = true
			}
			ok, reason = r.ok, r.reason
		} else {
			ok, reason = ch.Check(c)
		}
		if ok {
			continue
		}
		if ev.pol.soft[i] {
			if o.Fallback == "" {
				o.Fallback = c.Memo(reason, "", func() string { return ev.names[i] + ": " + reason })
			}
			continue
		}
		o.Checker, o.Reason, o.Fallback = ev.names[i], reason, ""
		return i
	}
	if ev.deferOn && !ev.skipDeferred {
		if ci := ev.evalDeferred(ai, o, nil); ci >= 0 {
			o.Fallback = ""
			return ci
		}
	}
	start := len(ev.scoreBuf)
	total := 0.0
	for i, r := range ev.pol.rankers {
		c.checker = len(ev.pol.checkers) + i // Memo keys of rankers
		v := clamp01(r.Score(c))
		ev.scoreBuf = append(ev.scoreBuf, v)
		total += ev.pol.weights[i] * v
	}
	o.Scores = ev.scoreBuf[start:len(ev.scoreBuf):len(ev.scoreBuf)]
	o.Score = total
	return -1
}

// evalDeferred runs the policy's deferred checkers on accelerator ai,
// filling o with the rejection if one rejects; it returns the rejecting
// checker's index, or -1. When why is set and says checker i's reason
// will not be recorded, a QuietChecker is asked without it.
func (ev *evaluator) evalDeferred(ai int32, o *Outcome, why func(i int) bool) int {
	s := ev.s
	a := &s.accs[ai]
	c := ev.cand
	c.ai = ai
	for i, ch := range ev.pol.checkers {
		if !ev.pol.deferred[i] {
			continue
		}
		c.checker = i
		var ok bool
		reason := "(not recorded)"
		if q, quiet := ch.(QuietChecker); quiet && why != nil && !why(i) {
			ok = q.Passes(c)
		} else {
			ok, reason = ch.Check(c)
		}
		if !ok {
			o.Node = s.nodes[a.node].state.Node.Name
			o.Accelerator = a.spec.ID
			o.Checker, o.Reason = ev.names[i], reason
			return i
		}
	}
	return -1
}

// outcomeOf rebuilds the outcome of a round-one eligible entry.
func (ev *evaluator) outcomeOf(ent entry, round1 []Outcome) Outcome {
	if ent.out >= 0 {
		return round1[ent.out]
	}
	a := &ev.s.accs[ent.ai]
	k := int32(len(ev.pol.rankers))
	o := Outcome{
		Node:        ev.s.nodes[a.node].state.Node.Name,
		Accelerator: a.spec.ID,
		Score:       ent.score,
		Scores:      slices.Clone(ev.scoreBuf[ent.sc : ent.sc+k]),
	}
	if ent.fb >= 0 {
		o.Fallback = ev.fallbacks[ent.fb]
	}
	return o
}

func (ev *evaluator) filtered() []Filtered {
	var f []Filtered
	for i, n := range ev.counts {
		if n == 0 {
			continue
		}
		name := noAccelerators
		if i < len(ev.names) {
			name = ev.names[i]
		}
		f = append(f, Filtered{Checker: name, Count: n})
	}
	return f
}

// failure says why instance k+1 of count found no place: "no accelerator
// fits app x (12 on 6 nodes): 7 rejected by memory, 3 by tier, 2 by up".
func (ev *evaluator) failure(app string, k, count int) string {
	f := ev.filtered()
	slices.SortStableFunc(f, func(a, b Filtered) int { return cmp.Compare(b.Count, a.Count) })
	var b strings.Builder
	if k > 0 {
		fmt.Fprintf(&b, "placed %d of %d instances of app %s; ", k, count, app)
	}
	fmt.Fprintf(&b, "no accelerator fits app %s", app)
	if len(ev.s.nodes) == 0 {
		b.WriteString(": the cluster has no nodes")
		return b.String()
	}
	fmt.Fprintf(&b, " (%d on %d nodes)", len(ev.s.accs), len(ev.s.nodes))
	for i, x := range f {
		if i == 0 {
			b.WriteString(": " + strconv.Itoa(x.Count) + " rejected by " + x.Checker)
		} else {
			b.WriteString(", " + strconv.Itoa(x.Count) + " by " + x.Checker)
		}
	}
	return b.String()
}

// entry is an eligible candidate: its score and accelerator, where its
// scores start in scoreBuf, its fallback (index in fallbacks, -1 for
// none: a candidate with one is soft) and, when every candidate is
// recorded, its index in Explanation.Candidates (-1 otherwise). It holds
// no pointers, so sorting ten thousand of them is cheap.
type entry struct {
	score float64
	ai    int32
	sc    int32
	fb    int32
	out   int32
}

// compareEntries orders candidates: those without a soft rejection first,
// then higher score, then lower accelerator index (node name, then
// accelerator ID).
func compareEntries(a, b entry) int {
	if as, bs := a.fb >= 0, b.fb >= 0; as != bs {
		if bs {
			return -1
		}
		return 1
	}
	if a.score != b.score {
		if a.score > b.score {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.ai, b.ai)
}

// freshEntry is a re-evaluated candidate with its outcome.
type freshEntry struct {
	entry
	o Outcome
}

// pool holds the eligible candidates in compareEntries order: round one's
// as a sorted prefix, extended on demand from a heap of the rest (so a
// decision that records only the top candidates sorts only those), and
// those re-evaluated since. A node re-evaluated is stale in round one's
// order and lives in fresh.
type pool struct {
	sorted []entry
	heap   []entry
	head   int
	fresh  []freshEntry
	// check, when set, runs the deferred checkers on an entry leaving
	// the heap; false drops it. rejected counts its rejections; swept
	// records that the heap was filtered whole.
	check    func(entry) bool
	rejected int
	swept    bool
}

// sweepAfter is the number of deferred rejections after which the rest
// of the heap is filtered in one pass: a decision rejecting that many of
// its best-ranked candidates is likely to reject most of the others, and
// popping ten thousand entries one by one from a heap costs more than the
// checks themselves.
const sweepAfter = 256

// at returns the i-th entry of round one's order.
func (p *pool) at(i int) (entry, bool) {
	for len(p.sorted) <= i && len(p.heap) > 0 {
		if p.check != nil && !p.swept && p.rejected >= sweepAfter && len(p.heap) > 4*sweepAfter {
			p.sweep()
			continue
		}
		e := p.pop()
		// After a sweep the heap holds only entries that passed (a node
		// placed on since is stale, skipped by best).
		if p.check != nil && !p.swept && !p.check(e) {
			p.rejected++
			continue
		}
		p.sorted = append(p.sorted, e)
	}
	if i < len(p.sorted) {
		return p.sorted[i], true
	}
	return entry{}, false
}

// best returns the best candidate not on a stale node and, if it is a
// re-evaluated one, its outcome.
func (p *pool) best(s *State, stale map[int32]bool) (entry, *Outcome, bool) {
	var b entry
	ok := false
	for {
		e, more := p.at(p.head)
		if !more {
			break
		}
		if !stale[s.accs[e.ai].node] {
			b, ok = e, true
			break
		}
		p.head++
	}
	var o *Outcome
	for i := range p.fresh {
		f := &p.fresh[i]
		if !ok || compareEntries(f.entry, b) < 0 {
			b, o, ok = f.entry, &f.o, true
		}
	}
	return b, o, ok
}

// drop removes node ni's fresh entries before it is re-evaluated.
func (p *pool) drop(s *State, ni int32) {
	p.fresh = slices.DeleteFunc(p.fresh, func(e freshEntry) bool { return s.accs[e.ai].node == ni })
}

// sweep runs the deferred checks on every entry left in the heap, in
// array order, keeps those that pass and rebuilds the heap from them.
func (p *pool) sweep() {
	p.swept = true
	keep := p.heap[:0]
	for _, e := range p.heap {
		if p.check(e) {
			keep = append(keep, e)
		} else {
			p.rejected++
		}
	}
	clear(p.heap[len(keep):])
	p.heap = keep
	p.heapify()
}

func (p *pool) heapify() {
	for i := len(p.heap)/2 - 1; i >= 0; i-- {
		p.down(i)
	}
}

func (p *pool) pop() entry {
	h := p.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	p.heap = h[:last]
	p.down(0)
	return top
}

func (p *pool) down(i int) {
	h := p.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && compareEntries(h[r], h[l]) < 0 {
			m = r
		}
		if compareEntries(h[m], h[i]) >= 0 {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
