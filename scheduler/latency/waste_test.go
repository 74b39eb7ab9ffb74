package latency_test

import (
	"math"
	"slices"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
)

// TestLeastWasteRanker: BinPack would strand memory in both cases below;
// the model-driven policy, ranked by least waste, does not.
func TestLeastWasteRanker(t *testing.T) {
	// Ibis's ResNet50 on a Jetson GPU (29.4 ms, 150 ms objective, 10
	// req/s) passes alone but not beside a second copy: alone-bound.
	// light (10 ms, 100 ms objective) shares easily.
	src := profiles(map[string]float64{"heavy": 29.4, "light": 10})
	mem := func(m int64) func(*cluster.AppSpec) { return func(s *cluster.AppSpec) { s.MemoryBytes = m } }
	heavy := app("heavy", 10, 150, mem(700*mib))
	light := app("light", 10, 100, mem(893*mib))
	binpack := latency.ModelDrivenPolicy(src)
	binpack.Rankers = []scheduler.Weighted{{Ranker: scheduler.BinPack{}, Weight: 1}}
	place := func(snap scheduler.Snapshot, a cluster.Application, p scheduler.Policy) scheduler.Explanation {
		t.Helper()
		e, err := scheduler.Place(snap, scheduler.Request{App: a}, p)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	// 1. The alone-bound application takes the smaller accelerator, though
	// the other is fuller once it is placed (its node has less memory
	// besides): the rest of either is lost to it.
	small := node("small", accel("gpu0", "gpu", 1400*mib), accel("cpu0", "cpu", 8*gib))
	mid := node("mid", accel("gpu0", "gpu", 2000*mib))
	snap := scheduler.Snapshot{Nodes: []scheduler.NodeState{small, mid}, Apps: []cluster.Application{heavy}}
	if got := where(place(snap, heavy, binpack)); !slices.Equal(got, []string{"mid/gpu0"}) {
		t.Fatalf("binpack placed heavy on %v; the case no longer tells the rankers apart", got)
	}
	e := place(snap, heavy, latency.ModelDrivenPolicy(src))
	if got := where(e); !slices.Equal(got, []string{"small/gpu0"}) {
		t.Errorf("least waste placed heavy on %v, want small/gpu0\n%s", got, format(e))
	}
	if o := gpuOutcome(e, "small"); math.Abs(o.Score-1/(1+1400.0/1024)) > 1e-9 {
		t.Errorf("alone-bound score on 1400 MiB: %v", o.Score)
	}

	// 2. An application that would leave a hole smaller than itself on a
	// small accelerator goes where the rest stays usable.
	large := node("large", accel("gpu0", "gpu", 3400*mib))
	small = node("small", accel("gpu0", "gpu", 1400*mib))
	snap = scheduler.Snapshot{Nodes: []scheduler.NodeState{small, large}, Apps: []cluster.Application{light}}
	if got := where(place(snap, light, binpack)); !slices.Equal(got, []string{"small/gpu0"}) {
		t.Fatalf("binpack placed light on %v; the case no longer tells the rankers apart", got)
	}
	e = place(snap, light, latency.ModelDrivenPolicy(src))
	if got := where(e); !slices.Equal(got, []string{"large/gpu0"}) {
		t.Errorf("least waste placed light on %v, want large/gpu0\n%s", got, format(e))
	}
	// Without a hole it packs like BinPack: a 700 MiB light fills half
	// the small accelerator, and its score is BinPack's.
	light700 := app("light", 10, 100, mem(700*mib))
	snap.Apps = []cluster.Application{light700}
	e = place(snap, light700, latency.ModelDrivenPolicy(src))
	if got := where(e); !slices.Equal(got, []string{"small/gpu0"}) {
		t.Errorf("least waste placed a 700 MiB light on %v, want small/gpu0\n%s", got, format(e))
	}
	if o := gpuOutcome(e, "small"); math.Abs(o.Score-0.5) > 1e-9 {
		t.Errorf("score without a hole %v, want BinPack's 0.5", o.Score)
	}
}

func gpuOutcome(e scheduler.Explanation, n string) scheduler.Outcome {
	for _, o := range e.Candidates {
		if o.Node == n && o.Accelerator == "gpu0" {
			return o
		}
	}
	return scheduler.Outcome{}
}
