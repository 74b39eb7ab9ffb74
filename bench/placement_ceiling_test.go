package bench

import (
	"math/rand/v2"
	"testing"

	"github.com/accelpool/accelpool/scheduler/latency"
)

// TestPlacementCeiling checks the bound where it is exact and where it must
// hold: one model whose copies fill an accelerator's memory before its
// latency gives exactly copies × accelerators; on the Ibis mix the
// model-driven placement (which keeps the same objectives) never hosts
// more than the ceiling, and a ResNet50 (predicted p99 within 2 % of its
// 150 ms objective beside any other application) counts as a whole GPU.
func TestPlacementCeiling(t *testing.T) {
	exact, err := ParseWorkload([]byte(`
source: test
kind: gpu
nodes:
  - {name: n, share: 1, accelerators: [{kind: gpu, memoryMiB: 3000, compute: 1}]}
models:
  - {name: m, serviceMs: 1, memoryMiB: 1000}
apps:
  - {name: a, model: m, rate: 10, objectiveMs: 100}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, ok := PlacementCeiling(exact, exact.Cluster(7, 1))
	if !ok || c.N != 21 || c.MaxCopies[0] != 3 {
		t.Fatalf("3 copies fit each of 7 accelerators by memory: ceiling %+v (computed %v), want N 21", c, ok)
	}

	w, err := ReadWorkload("workloads/ibis-gpu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	nodes := w.Cluster(30, 1)
	c, ok = PlacementCeiling(w, nodes)
	if !ok {
		t.Fatal("no ceiling computed for the Ibis mix")
	}
	for i, a := range w.Apps {
		if a.Model == "resnet50" && c.MaxCopies[i] != 1 {
			t.Errorf("%s: %d copies alone on a GPU, want 1", a.Name, c.MaxCopies[i])
		}
	}
	pols, err := Policies("model-driven", w)
	if err != nil {
		t.Fatal(err)
	}
	res, _, _, err := fill(nodes, w.Expand(capacityBound(w, nodes)), pols[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Ibis mix on 30 nodes: model-driven hosts %d, ceiling %d (copies alone %v, capacity %.2f)", res.Hosted, c.N, c.MaxCopies, c.Capacity)
	if res.Hosted > c.N {
		t.Fatalf("model-driven placement hosts %d, above the ceiling %d", res.Hosted, c.N)
	}
	if c.N >= capacityBound(w, nodes) {
		t.Fatalf("ceiling %d is no tighter than memory alone (%d)", c.N, capacityBound(w, nodes))
	}
}

// TestCeilingPruningHolds checks what PlacementCeiling's enumeration
// assumes of the latency model: adding an application to a set that
// misses an objective never makes every objective hold again (so no
// superset of a failing set need be tried). Random sets of the shipped
// workloads' applications, a thousand per workload.
func TestCeilingPruningHolds(t *testing.T) {
	for _, file := range []string{"workloads/ibis-gpu.yaml", "workloads/demo-cpu.yaml"} {
		w, err := ReadWorkload(file)
		if err != nil {
			t.Fatal(err)
		}
		model := latency.ModelForKind(w.Kind)
		apps := w.Expand(len(w.Apps))
		load := func(i int) latency.Load {
			m := w.byName[apps[i].Spec.Model]
			return latency.Load{Name: apps[i].Metadata.Name, Model: m.Name, Rate: apps[i].Spec.Rate,
				Profile: latency.Profile{ServiceTimeMs: m.ServiceMs, ServiceTimeCV: m.CV, SwitchCostMs: m.SwitchMs}}
		}
		holds := func(set []int) bool {
			loads := make([]latency.Load, len(set))
			for k, i := range set {
				loads[k] = load(i)
			}
			preds, err := model.Predict(loads)
			if err != nil {
				t.Fatal(err)
			}
			for k, i := range set {
				if !preds[k].Stable || preds[k].P99Ms > (1-latency.DefaultHeadroom)*apps[i].Spec.Objective.P99Ms {
					return false
				}
			}
			return true
		}
		r := rand.New(rand.NewPCG(1, 2))
		failing := 0
		for range 1000 {
			set := make([]int, 1+r.IntN(40))
			for k := range set {
				set[k] = r.IntN(len(apps))
			}
			if holds(set) {
				continue
			}
			failing++
			if bigger := append(set, r.IntN(len(apps))); holds(bigger) {
				t.Fatalf("%s: %v misses an objective but with %d added every objective holds", file, set, bigger[len(bigger)-1])
			}
		}
		if failing < 100 {
			t.Fatalf("%s: only %d of 1000 random sets miss an objective: the check says little", file, failing)
		}
	}
}
