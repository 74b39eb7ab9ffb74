package latency_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/scheduler/synth"
)

// synthProfiles gives every model a profile derived from its name: 2–10
// ms on a GPU, 5x that on a CPU, on a TPU the GPU time plus an 8 ms
// switch.
var synthProfiles = latency.ProfileFunc(func(model, kind string) (latency.Profile, error) {
	h := uint32(2166136261) // FNV-1a, without allocating
	for i := 0; i < len(model); i++ {
		h = (h ^ uint32(model[i])) * 16777619
	}
	ms := 2 + float64(h%800)/100
	switch kind {
	case "cpu":
		ms *= 5
	case "tpu":
		return latency.Profile{ServiceTimeMs: ms, SwitchCostMs: 8}, nil
	}
	return latency.Profile{ServiceTimeMs: ms}, nil
})

// BenchmarkPlaceModelDriven measures one decision with the latency
// checker on the scheduler's synthetic clusters (10 applications per
// node, half the memory reserved; synth.App rates of 1–200 req/s), next
// to the same decision under BinPackPolicy in the same run, recording the
// ten best candidates as the control plane does. It reports the p99 and
// p50 per decision once the State's tenants are cached, and the first
// decision's time (cold-ms).
func BenchmarkPlaceModelDriven(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		snap := synth.Cluster(synth.Config{Nodes: n, Seed: 42})
		s, err := scheduler.Prepare(snap)
		if err != nil {
			b.Fatal(err)
		}
		reqs := synth.Requests(512, 1, n, 9)
		md := latency.ModelDrivenPolicy(synthProfiles)
		md.Top = 10
		bp := scheduler.BinPackPolicy()
		bp.Top = 10
		for _, pc := range []struct {
			name string
			p    scheduler.Policy
		}{{"binpack", bp}, {"model-driven", md}} {
			b.Run(fmt.Sprintf("nodes=%d/policy=%s", n, pc.name), func(b *testing.B) {
				// The first decision on a State resolves every
				// accelerator's tenants (the TenantCache); measured
				// apart as cold-ms.
				t0 := time.Now()
				s.Place(reqs[len(reqs)-1], pc.p)
				cold := time.Since(t0)
				lat := make([]time.Duration, 0, b.N)
				for i := 0; b.Loop(); i++ {
					t0 := time.Now()
					e, _ := s.Place(reqs[i%len(reqs)], pc.p)
					lat = append(lat, time.Since(t0))
					if e.Evaluated == 0 {
						b.Fatal("no candidates")
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(cold.Microseconds())/1000, "cold-ms")
			})
		}
	}
}
