package bench

import (
	"math"

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
// sets of entries the shape can hold (enumerated; a set that fails the
// model makes every superset fail, since adding load on a shared
// accelerator never shortens a prediction: TestCeilingPruningHolds checks
// it of the models on random sets). Accelerator shapes are told apart by
// memory; the model is the bench's model-driven one (one server per
// accelerator). Every accelerator's tenants
// then weigh at most its u_s, so the first N applications of the sequence
// can be hosted only if their weights sum to at most Σ u_s over the
// cluster. N is the largest such prefix.
//
// ok is false when the bound was not computed: a shape allows more than
// ceilingLimit sets, or the model rejects an input.
type Ceiling struct {
	N int
	// MaxCopies is m_i per application entry; 0 means it fits nowhere.
	MaxCopies []int
	// Weights are the v_i the bound used; Capacity is Σ u_s over the
	// cluster's accelerators for them.
	Weights  []float64
	Capacity float64
}

// ceilingLimit bounds the sets enumerated per accelerator shape.
const ceilingLimit = 200_000

// PlacementCeiling computes the Ceiling of w on nodes.
func PlacementCeiling(w *Workload, nodes []cluster.Node) (Ceiling, bool) {
	if w.countCores {
		return Ceiling{}, false // the policy's model counts cores; this bound does not
	}
	model := latency.ModelForKind(w.Kind)
	keep := 1 - latency.DefaultHeadroom
	apps := w.Expand(len(w.Apps))
	type entry struct {
		load latency.Load
		mem  int64
		obj  float64
	}
	entries := make([]entry, len(apps))
	for i, a := range apps {
		m := w.byName[a.Spec.Model]
		entries[i] = entry{
			load: latency.Load{Name: a.Metadata.Name, Model: m.Name, Rate: a.Spec.Rate,
				Profile: latency.Profile{ServiceTimeMs: m.ServiceMs, ServiceTimeCV: m.CV, SwitchCostMs: m.SwitchMs}},
			mem: a.Spec.MemoryBytes, obj: a.Spec.Objective.P99Ms,
		}
	}
	// Accelerator shapes of the workload's kind: memory → how many.
	shapes := map[int64]int{}
	for _, n := range nodes {
		for _, a := range n.Accelerators {
			if a.Kind == w.Kind {
				shapes[a.MemoryBytes]++
			}
		}
	}
	feasible := func(set []int) (bool, bool) {
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
		for memory := range shapes {
			var set []int
			for k := 1; int64(k)*e.mem <= memory; k++ {
				set = append(set, i)
				ok, valid := feasible(set)
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
	type shapeSets struct {
		count int
		sets  [][]int
	}
	var all []shapeSets
	for memory, count := range shapes {
		ss := shapeSets{count: count}
		visited, valid := 0, true
		var walk func(from int, set []int, used int64)
		walk = func(from int, set []int, used int64) {
			for i := from; i < len(entries) && valid; i++ {
				if used+entries[i].mem > memory || c.MaxCopies[i] == 0 {
					continue
				}
				if visited++; visited > ceilingLimit {
					valid = false
					return
				}
				next := append(set, i)
				ok, v := feasible(next)
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
	capacity := func(v []float64) float64 {
		total := 0.0
		for _, ss := range all {
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
	if !math.IsInf(placeable(weight), 1) {
		cur := ratio(weight)
		for range 100 {
			improved := false
			for i := range weight {
				for _, f := range []float64{0, 0.5, 0.8, 0.95, 1.05, 1.25, 2} {
					old := weight[i]
					weight[i] = old * f
					if r := ratio(weight); r < cur*(1-1e-12) && placeable(weight) > 0 {
						cur, improved = r, true
						continue
					}
					weight[i] = old
				}
			}
			if !improved {
				break
			}
		}
	}
	c.Capacity = capacity(weight)
	c.Weights = weight
	sum := 0.0
	for n := 0; ; n++ {
		sum += weight[n%len(weight)]
		if sum > c.Capacity*(1+1e-9) {
			c.N = n
			return c, true
		}
	}
}
