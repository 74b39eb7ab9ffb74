package baseline_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/baseline"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/scheduler/latency/ibis"
)

// ibisGPUMix reads gpu-workload1.yaml: the applications (model, rate,
// objective, memory) in file order, and each model's GPU profile (service
// time 1000/service_rate ms; the file gives no variability, so CV 0).
func ibisGPUMix(t testing.TB) ([]ibis.WorkloadModel, latency.StaticProfiles) {
	t.Helper()
	d := ibis.DirForTest(t)
	w, err := ibis.ReadWorkloadFile(d, ibis.GPUWorkload)
	if err != nil {
		t.Fatal(err)
	}
	src := latency.StaticProfiles{}
	for _, m := range w.Models {
		src[latency.ProfileKey{Model: m.Name, Kind: "gpu"}] = latency.Profile{ServiceTimeMs: m.ServiceTimeMs()}
	}
	return w.Models, src
}

type hosting struct {
	placed int
	// violating is the number of applications whose predicted p99
	// exceeds their objective once every placed one runs.
	violating int
	// clean is the number placed before the first predicted violation:
	// what the policy hosts with no violation.
	clean int
}

// host adds the workload's applications one at a time, cycling through
// it, until the next cannot be placed, and predicts every accelerator's
// latencies (PS) after each placement.
func host(t testing.TB, snap scheduler.Snapshot, apps []cluster.Application, p scheduler.Policy, src latency.ProfileSource) hosting {
	t.Helper()
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*cluster.Application{}
	for i := range apps {
		byName[apps[i].Metadata.Name] = &apps[i]
	}
	on := map[string][]latency.Load{} // node/accelerator -> loads
	objective := map[string]float64{}
	var h hosting
	violated := false
	for i := range apps {
		e, err := s.Place(scheduler.Request{App: apps[i]}, p)
		if err != nil {
			break
		}
		in := e.Placements[0].Instance
		in.ID = fmt.Sprint(i)
		if err := s.Add(in); err != nil {
			t.Fatal(err)
		}
		h.placed++
		model, _ := apps[i].Spec.ModelRef()
		prof, err := src.Profile(model, "gpu")
		if err != nil {
			t.Fatal(err)
		}
		key := in.Node + "/" + in.Accelerator
		on[key] = append(on[key], latency.Load{Name: in.App, Model: model, Rate: latency.EvenShare(&apps[i]), Profile: prof})
		objective[in.App] = apps[i].Spec.Objective.P99Ms
		h.violating = 0
		for _, loads := range on {
			pred, err := latency.PS{}.Predict(loads)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range pred {
				if q.P99Ms > objective[q.Name] {
					h.violating++
				}
			}
		}
		if h.violating > 0 {
			violated = true
		}
		if !violated {
			h.clean = h.placed
		}
	}
	return h
}

// TestIbisGPUMix compares model-driven placement with the knapsacks on
// the Ibis GPU workload: a cluster of Jetson Nano-like nodes (one GPU, 4
// GiB), the 11 applications of gpu-workload1.yaml (each reserving its
// backend_memory) added in file order, again and again, until the next
// cannot be placed. The latencies are predicted by the PS model, which
// TestValidationGPUProcessSharing checks against the same paper's
// measurements; the real-serving and simulated comparisons are the
// bench's.
func TestIbisGPUMix(t *testing.T) {
	for _, nodes := range []int{4, 6, 10} {
		t.Run(fmt.Sprintf("%d nodes", nodes), func(t *testing.T) { ibisGPUMixOn(t, nodes) })
	}
}

func ibisGPUMixOn(t *testing.T, nodes int) {
	models, src := ibisGPUMix(t)
	var snap scheduler.Snapshot
	for i := range nodes {
		snap.Nodes = append(snap.Nodes, gpuNode(fmt.Sprintf("nano-%d", i+1), 4*gib))
	}
	var apps []cluster.Application
	for i := range 200 {
		m := models[i%len(models)]
		apps = append(apps, cluster.Application{
			APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
			Metadata: cluster.Metadata{Name: fmt.Sprintf("%s-%d", m.Name, i)},
			Spec: cluster.AppSpec{
				Model: m.Name, Rate: m.InputRate, Objective: cluster.Objective{P99Ms: m.SLAMs},
				Replicas: cluster.Replicas{Min: 1, Max: 1}, MemoryBytes: int64(m.BackendMemoryMB) * mib,
			},
		})
	}
	snap.Apps = apps

	policies := append([]baseline.Named{{Name: "model-driven", Policy: latency.ModelDrivenPolicy(src)}}, baseline.Knapsacks(src)...)
	var b strings.Builder
	fmt.Fprintf(&b, "Ibis GPU mix (%s), %d nodes with one 4 GiB GPU\n", ibis.GPUWorkload, nodes)
	fmt.Fprintf(&b, "%-22s %7s %10s %26s\n", "policy", "placed", "violating", "hosted before a violation")
	results := map[string]hosting{}
	bestKnapsack := 0
	for _, p := range policies {
		h := host(t, snap, apps, p.Policy, src)
		results[p.Name] = h
		if p.Name != "model-driven" {
			bestKnapsack = max(bestKnapsack, h.clean)
		}
		fmt.Fprintf(&b, "%-22s %7d %10d %26d\n", p.Name, h.placed, h.violating, h.clean)
	}
	md := results["model-driven"]
	fmt.Fprintf(&b, "model-driven hosts %d with no predicted violation; the best knapsack %d before its first (%.2fx)\n",
		md.placed, bestKnapsack, float64(md.placed)/math.Max(1, float64(bestKnapsack)))
	t.Log("\n" + b.String())
	if md.violating != 0 || md.clean != md.placed {
		t.Errorf("model-driven placement predicts %d violations", md.violating)
	}
	for _, name := range []string{"memory-first-fit", "memory-best-fit", "memory-worst-fit"} {
		if k := results[name]; md.placed <= k.clean {
			t.Errorf("model-driven hosts %d, %s %d with no violation", md.placed, name, k.clean)
		}
	}
}
