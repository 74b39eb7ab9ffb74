package sim_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/sim"
)

func app(name string, mem int64, rate float64) cluster.Application {
	return cluster.Application{
		APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{Model: "m", Rate: rate, Objective: cluster.Objective{P99Ms: 100},
			Replicas: cluster.Replicas{Min: 1, Max: 1}, MemoryBytes: mem},
	}
}

// TestFillThenRun places applications by memory alone until the cluster
// is full, then simulates them: packing by memory overloads the GPUs.
func TestFillThenRun(t *testing.T) {
	nodes := []cluster.Node{node("n1", acc("gpu0", "gpu", 1)), node("n2", acc("gpu0", "gpu", 1))}
	snap := scheduler.Snapshot{}
	for _, n := range nodes {
		snap.Nodes = append(snap.Nodes, scheduler.NodeState{Node: n, Up: true})
	}
	var apps []cluster.Application
	for i := range 20 {
		apps = append(apps, app(fmt.Sprintf("a%02d", i), 1<<30, 30))
	}
	snap.Apps = apps
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	ticks := 0
	clock := func() time.Time { ticks++; return time.Unix(0, int64(ticks)*1000) }
	res := sim.Fill(s, apps, scheduler.Policy{Top: 3}, sim.FillOptions{Clock: clock})
	if len(res.Placed) != 8 || res.Failed != "a08" || !errors.Is(res.Err, errdefs.ErrResourceExhausted) {
		t.Fatalf("placed %d, failed %q (%v); want 8 (4 GiB per GPU) and a08", len(res.Placed), res.Failed, res.Err)
	}
	if len(res.Decisions) != 9 || res.Decisions[0] != time.Microsecond {
		t.Errorf("decisions %v", res.Decisions)
	}
	sc := sim.Scenario{Nodes: nodes, Instances: res.Instances, Profiles: sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 10, CV: 0.5}},
		Duration: 60 * time.Second, Warmup: 5 * time.Second, Seed: 1}
	for i := range res.Placed {
		sc.Apps = append(sc.Apps, sim.AppFrom(&res.Placed[i]))
	}
	out, err := sim.Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	// 4 apps × 30/s × 10 ms = ρ 1.2 per GPU: every p99 breaks 100 ms.
	if out.Violations != 8 {
		t.Errorf("%d violations, want 8: %+v", out.Violations, out.Apps)
	}

	// KeepGoing skips what does not fit.
	s2, _ := scheduler.Prepare(snap)
	small := append([]cluster.Application{app("huge", 8<<30, 1)}, apps[:3]...)
	r2 := sim.Fill(s2, small, scheduler.Policy{}, sim.FillOptions{KeepGoing: true})
	if len(r2.Placed) != 3 || r2.Skipped != 1 || r2.Failed != "huge" {
		t.Errorf("keep going: placed %d, skipped %d, failed %q", len(r2.Placed), r2.Skipped, r2.Failed)
	}
}
