package bench

import (
	"math/rand/v2"
	"testing"

	"github.com/accelpool/accelpool/cluster"
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

// TestPlacementCeilingHeterogeneous: in a workload of GPU and TPU models
// each application is placed on its model's kind, TPU entries are judged
// by the FCFS model, and the model-driven placement stays under the
// ceiling.
func TestPlacementCeilingHeterogeneous(t *testing.T) {
	w, err := ReadWorkload("workloads/ibis-heter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Kinds(); len(got) != 2 || got[0] != "gpu" || got[1] != "tpu" {
		t.Fatalf("kinds %v, want [gpu tpu]", got)
	}
	nodes := w.Cluster(20, 1)
	c, ok := PlacementCeiling(w, nodes)
	if !ok {
		t.Fatal("no ceiling computed for the heterogeneous mix")
	}
	pols, err := Policies("model-driven,knapsack-first", w)
	if err != nil {
		t.Fatal(err)
	}
	acc := map[string]string{}
	for _, n := range nodes {
		for _, a := range n.Accelerators {
			acc[n.Name+"/"+a.ID] = a.Kind
		}
	}
	for _, pol := range pols {
		res, insts, placed, err := fill(nodes, w.Expand(capacityBound(w, nodes)), pol)
		if err != nil {
			t.Fatal(err)
		}
		kindOf := map[string]string{}
		for _, a := range placed {
			m, _ := w.Model(a.Spec.Model)
			kindOf[a.Metadata.Name] = w.kindOf(m)
		}
		tpu := 0
		for _, in := range insts {
			got := acc[in.Node+"/"+in.Accelerator]
			if want := kindOf[in.App]; got != want {
				t.Fatalf("%s: %s placed on a %q accelerator, want %q", pol.Name, in.App, got, want)
			}
			if got == "tpu" {
				tpu++
			}
		}
		t.Logf("%s: %d hosted (%d on TPUs), ceiling %d (copies alone %v)", pol.Name, res.Hosted, tpu, c.N, c.MaxCopies)
		if tpu == 0 {
			t.Errorf("%s placed nothing on the TPUs", pol.Name)
		}
		if pol.Name == "model-driven" && res.Hosted > c.N {
			t.Fatalf("model-driven placement hosts %d, above the ceiling %d", res.Hosted, c.N)
		}
	}
	for i, a := range w.Apps {
		if m, _ := w.Model(a.Model); w.kindOf(m) == "tpu" && c.MaxCopies[i] < 2 {
			t.Errorf("%s: %d copies alone on an Edge TPU, want several (it uses a few %% of one)", a.Name, c.MaxCopies[i])
		}
	}
}

// TestCeilingPruningHolds checks what PlacementCeiling's enumeration
// assumes of the latency model: adding an application to a set that
// misses an objective never makes every objective hold again (so no
// superset of a failing set need be tried). Random sets of the shipped
// workloads' applications, a thousand per workload.
func TestCeilingPruningHolds(t *testing.T) {
	for _, file := range []string{"workloads/ibis-gpu.yaml", "workloads/demo-cpu.yaml", "workloads/ibis-heter.yaml"} {
		w, err := ReadWorkload(file)
		if err != nil {
			t.Fatal(err)
		}
		// The applications on the workload's default kind, processor
		// shared (a serial kind is walked without this pruning).
		model := latency.ModelForKind(w.Kind)
		if _, serial := model.(latency.FCFS); serial {
			t.Fatalf("%s: default kind %s is serial", file, w.Kind)
		}
		var apps []cluster.Application
		for _, a := range w.Expand(len(w.Apps)) {
			if a.Spec.Constraints.AcceleratorKind == w.Kind {
				apps = append(apps, a)
			}
		}
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

// TestSerialCeilingNeedsNoPruning shows why PlacementCeiling walks a
// serial (TPU) accelerator without pruning on latency: under the FCFS
// model another copy of a model can shorten its predicted p99, since its
// requests then follow one of their own more often and switch less.
func TestSerialCeilingNeedsNoPruning(t *testing.T) {
	load := func(model string, s, c float64) latency.Load {
		return latency.Load{Name: model, Model: model, Rate: 1, Profile: latency.Profile{ServiceTimeMs: s, ServiceTimeCV: 0.01, SwitchCostMs: c}}
	}
	two := []latency.Load{load("efficientnet-s", 10.16, 17.31), load("mobilenet-v2", 7, 10.43)}
	before, err := latency.FCFS{}.Predict(two)
	if err != nil {
		t.Fatal(err)
	}
	after, err := latency.FCFS{}.Predict(append(two, load("efficientnet-s", 10.16, 17.31)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("efficientnet-s p99 %.2f ms beside mobilenet-v2, %.2f ms with a second copy of itself", before[0].P99Ms, after[0].P99Ms)
	if !(after[0].P99Ms < before[0].P99Ms) {
		t.Fatalf("a second copy did not shorten the p99 (%.2f -> %.2f ms): the FCFS model became monotone, and the ceiling could prune TPUs too", before[0].P99Ms, after[0].P99Ms)
	}
}
