package scheduler_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/synth"
)

var benchStates = map[int]*scheduler.State{}

// benchState returns the prepared synthetic cluster of n nodes (10
// applications per node, half the memory reserved, 5 % down), built once
// per process.
func benchState(b *testing.B, n int) *scheduler.State {
	if s, ok := benchStates[n]; ok {
		return s
	}
	s, err := scheduler.Prepare(synth.Cluster(synth.Config{Nodes: n, Seed: 42}))
	if err != nil {
		b.Fatal(err)
	}
	benchStates[n] = s
	return s
}

// BenchmarkPlace measures one decision on synthetic heterogeneous
// clusters, for requests of 1 and 3 instances with the mixed constraints
// of synth.App, recording every candidate (record=all, what `accelpool
// explain` shows) or the ten best and a sample of rejections (record=top10,
// the control plane's setting). It reports decisions/s and the 99th
// percentile of the per-decision latency.
func BenchmarkPlace(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, count := range []int{1, 3} {
			for _, top := range []int{0, 10} {
				record := "all"
				if top > 0 {
					record = fmt.Sprintf("top%d", top)
				}
				b.Run(fmt.Sprintf("nodes=%d/count=%d/record=%s", n, count, record), func(b *testing.B) {
					benchPlace(b, n, count, scheduler.Policy{Top: top})
				})
			}
		}
	}
}

func benchPlace(b *testing.B, n, count int, p scheduler.Policy) {
	s := benchState(b, n)
	reqs := synth.Requests(512, count, n, 9)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		e, _ := s.Place(reqs[i%len(reqs)], p)
		lat = append(lat, time.Since(t0))
		if e.Evaluated == 0 {
			b.Fatal("no candidates")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	slices.Sort(lat)
	p99 := lat[min(len(lat)-1, len(lat)*99/100)]
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(s.Accelerators()), "candidates")
}

// BenchmarkPrepare measures indexing a 10,000-node snapshot (about
// 100,000 applications' instances), done once per snapshot.
func BenchmarkPrepare(b *testing.B) {
	snap := synth.Cluster(synth.Config{Nodes: 10000, Seed: 42})
	insts := 0
	for _, n := range snap.Nodes {
		insts += len(n.Instances)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := scheduler.Prepare(snap); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(insts), "instances")
}
