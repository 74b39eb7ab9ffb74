package bench

import (
	"math"
	"slices"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler/latency"
)

// Ceiling bounds what any placement can host of the workload's sequence
// (its applications cycled through, as bench placement adds them) on
// nodes, when every accelerator must keep each tenant's predicted p99
// within its objective less latency.DefaultHeadroom — the model-driven
// policy's own test, whatever order or ranking a placement uses.
//
// The argument: give application entry i the weight v_i = 1/m_i, where m_i
// is the most copies of it alone that any accelerator can hold (memory and
// latency). For each accelerator shape s, u_s is the largest Σ v over the
// sets of entries the shape can hold. Every accelerator's tenants then
// weigh at most its u_s, so the first N applications of the sequence can
// be hosted only if their weights sum to at most Σ u_s over the cluster;
// N is the largest such prefix. Accelerator shapes are told apart by kind
// and memory, and the model is the bench's model-driven one (one server
// per accelerator). In a heterogeneous workload an entry fits only on its
// model's kind, so each kind bounds the prefix by its own entries and
// accelerators, and N is the least of those bounds.
//
// The sets are enumerated. On a processor-shared accelerator a set that
// fails the model makes every superset fail, since adding load never
// shortens a prediction (TestCeilingPruningHolds checks it on random
// sets), so the walk stops there. On a serial one (FCFS with switch
// costs) that need not hold: another copy of a model makes its requests
// switch less often (TestSerialCeilingNeedsNoPruning), so there every set
// that fits in memory is tried.
//
// ok is false when the bound was not computed: a shape allows more than
// ceilingLimit sets, or the model rejects an input.
type Ceiling struct {
	N int
	// MaxCopies is m_i per application entry; 0 means it fits nowhere.
	MaxCopies []int
	// Weights are the v_i the bound used; Capacity is Σ u_s over the
	// cluster's accelerators of the kind that bounds N.
	Weights  []float64
	Capacity float64
}

// shapeSets are the sets of entries one accelerator shape can hold, as
// counts per entry, and how many accelerators of the shape there are.
type shapeSets struct {
	kind  string
	count int
	sets  [][]int
}

// ceilingLimit bounds the sets enumerated per accelerator shape.
const ceilingLimit = 200_000

// PlacementCeiling computes the Ceiling of w on nodes.
func PlacementCeiling(w *Workload, nodes []cluster.Node) (Ceiling, bool) {
	if w.countCores {
		return Ceiling{}, false // the policy's model counts cores; this bound does not
	}
	keep := 1 - latency.DefaultHeadroom
	apps := w.Expand(len(w.Apps))
	type entry struct {
		load latency.Load
		kind string
		mem  int64
		obj  float64
	}
	entries := make([]entry, len(apps))
	for i, a := range apps {
		m := w.byName[a.Spec.Model]
		entries[i] = entry{
			load: latency.Load{Name: a.Metadata.Name, Model: m.Name, Rate: a.Spec.Rate,
				Profile: latency.Profile{ServiceTimeMs: m.ServiceMs, ServiceTimeCV: m.CV, SwitchCostMs: m.SwitchMs}},
			kind: w.kindOf(m), mem: a.Spec.MemoryBytes, obj: a.Spec.Objective.P99Ms,
		}
	}
	// Accelerator shapes of the workload's kinds → how many.
	type shape struct {
		kind   string
		memory int64
	}
	kinds := w.Kinds()
	shapes := map[shape]int{}
	for _, n := range nodes {
		for _, a := range n.Accelerators {
			if slices.Contains(kinds, a.Kind) {
				shapes[shape{a.Kind, a.MemoryBytes}]++
			}
		}
	}
	feasible := func(kind string, set []int) (bool, bool) {
		model := latency.ModelForKind(kind)
		if model == nil {
			return false, false
		}
		loads := make([]latency.Load, len(set))
		for k, i := range set {
			loads[k] = entries[i].load
		}
		preds, err := model.Predict(loads)
		if err != nil {
			return false, false
		}
		for k, i := range set {
			if !preds[k].Stable || preds[k].P99Ms > keep*entries[i].obj {
				return false, true
			}
		}
		return true, true
	}
	var c Ceiling
	c.MaxCopies = make([]int, len(entries))
	for i, e := range entries {
		for sh := range shapes {
			if sh.kind != e.kind {
				continue
			}
			var set []int
			for k := 1; int64(k)*e.mem <= sh.memory; k++ {
				set = append(set, i)
				ok, valid := feasible(sh.kind, set)
				if !valid {
					return c, false
				}
				if !ok {
					break
				}
				c.MaxCopies[i] = max(c.MaxCopies[i], k)
			}
		}
	}
	weight := make([]float64, len(entries))
	for i, m := range c.MaxCopies {
		weight[i] = math.Inf(1)
		if m > 0 {
			weight[i] = 1 / float64(m)
		}
	}
	// Every set each shape can hold, as counts per entry.
	var all []shapeSets
	for sh, count := range shapes {
		ss := shapeSets{kind: sh.kind, count: count}
		// On a serial accelerator a set that misses an objective can hold
		// again with another copy of one of its models (fewer switches
		// for that model), so there only memory prunes the walk.
		_, serial := latency.ModelForKind(sh.kind).(latency.FCFS)
		visited, valid := 0, true
		var walk func(from int, set []int, used int64)
		walk = func(from int, set []int, used int64) {
			for i := from; i < len(entries) && valid; i++ {
				if entries[i].kind != sh.kind || used+entries[i].mem > sh.memory || c.MaxCopies[i] == 0 {
					continue
				}
				if visited++; visited > ceilingLimit {
					valid = false
					return
				}
				next := append(set, i)
				ok, v := feasible(sh.kind, next)
				if !v {
					valid = false
					return
				}
				if ok {
					counts := make([]int, len(entries))
					for _, k := range next {
						counts[k]++
					}
					ss.sets = append(ss.sets, counts)
				}
				if ok || serial {
					walk(i, next, used+entries[i].mem)
				}
			}
		}
		walk(0, nil, 0)
		if !valid {
			return c, false
		}
		all = append(all, ss)
	}
	// A kind's applications fit only on its accelerators, so each kind
	// bounds the prefix on its own (its entries weighed, the others 0);
	// N is the least of those bounds.
	c.N, c.Weights = -1, make([]float64, len(entries))
	for _, kind := range kinds {
		v := make([]float64, len(entries))
		has := false
		for i, e := range entries {
			if e.kind == kind {
				v[i], has = weight[i], true
			}
		}
		if !has {
			continue
		}
		n, capacity := ceilingFor(v, all, kind)
		for i, e := range entries {
			if e.kind == kind {
				c.Weights[i] = v[i]
			}
		}
		if c.N < 0 || n < c.N {
			c.N, c.Capacity = n, capacity
		}
	}
	return c, c.N >= 0
}

// ceilingFor lowers the weights v of one kind's entries (the others are
// 0) by a coordinate search and returns the longest prefix of the
// sequence whose weights fit the kind's capacity, and that capacity.
func ceilingFor(v []float64, all []shapeSets, kind string) (int, float64) {
	capacity := func(v []float64) float64 {
		total := 0.0
		for _, ss := range all {
			if ss.kind != kind {
				continue
			}
			best := 0.0
			for _, set := range ss.sets {
				sum := 0.0
				for i, k := range set {
					if k > 0 {
						sum += float64(k) * v[i]
					}
				}
				best = max(best, sum)
			}
			total += float64(ss.count) * best
		}
		return total
	}
	// Any weights give a valid bound; the tightest is a linear program's
	// dual. A coordinate search from 1/m_i lowers capacity ÷ Σ v (the
	// applications one round of the sequence weighs), which is what N
	// grows with.
	placeable := func(v []float64) float64 {
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		return sum
	}
	ratio := func(v []float64) float64 { return capacity(v) / placeable(v) }
	if !math.IsInf(placeable(v), 1) {
		cur := ratio(v)
		for range 100 {
			improved := false
			for i := range v {
				if v[i] == 0 {
					continue // another kind's entry
				}
				for _, f := range []float64{0, 0.5, 0.8, 0.95, 1.05, 1.25, 2} {
					old := v[i]
					v[i] = old * f
					if r := ratio(v); r < cur*(1-1e-12) && placeable(v) > 0 {
						cur, improved = r, true
						continue
					}
					v[i] = old
				}
			}
			if !improved {
				break
			}
		}
	}
	total := capacity(v)
	sum := 0.0
	for n := 0; ; n++ {
		sum += v[n%len(v)]
		if sum > total*(1+1e-9) {
			return n, total
		}
	}
}
