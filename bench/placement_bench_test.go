package bench

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/scheduler/synth"
)

// synthProfiles is a profile registry of 1,000 distinct models for the
// synthetic clusters, whose applications each name their own model: a
// name maps to one of the 1,000 by its hash. A model's GPU service time
// is 0.02–0.2 ms (so an application of synth's 1–200 req/s takes about
// 1 % of a GPU and an accelerator half full of instances sits at a
// utilisation the latency checker mostly accepts), times scale, 2.5 times that on a CPU
// and 1.5 times on a TPU, with a 2 ms switch cost there.
type synthProfiles [1000][3]latency.Profile

func newSynthProfiles(scale float64) *synthProfiles {
	var p synthProfiles
	for i := range p {
		s := scale * (0.02 + 0.18*float64(i)/float64(len(p)))
		mem := int64(128+i%16*64) << 20
		p[i][0] = latency.Profile{ServiceTimeMs: s, ServiceTimeCV: 0.1, MemoryBytes: mem}
		p[i][1] = latency.Profile{ServiceTimeMs: 2.5 * s, ServiceTimeCV: 0.2, MemoryBytes: mem}
		p[i][2] = latency.Profile{ServiceTimeMs: 1.5 * s, ServiceTimeCV: 0.05, SwitchCostMs: 2, MemoryBytes: mem}
	}
	return &p
}

// Profile implements latency.ProfileSource.
func (p *synthProfiles) Profile(model, kind string) (latency.Profile, error) {
	k := 0
	switch kind {
	case "gpu":
	case "cpu":
		k = 1
	case "tpu":
		k = 2
	default:
		return latency.Profile{}, errdefs.New(errdefs.ErrNotFound, "no profile on "+kind)
	}
	h := fnv.New32a()
	h.Write([]byte(model))
	return p[h.Sum32()%uint32(len(p))][k], nil
}

var _ latency.ProfileSource = (*synthProfiles)(nil)

// BenchmarkPlacementDecision measures one placement decision on a
// synthetic heterogeneous cluster of 10,000 nodes holding the instances of
// 100,000 applications (scheduler/synth: about half the accelerator
// memory reserved, 5 % of nodes down), for the model-driven policy (the
// default checkers, then the latency checker predicting every co-located
// application's p99) and, as the baseline of the same run, the default
// bin-packing policy. Requests are new applications with synth's mix of
// constraints; the State is not changed between decisions. Both record
// the ten best candidates (Policy.Top = 10), as the control plane does.
// It reports the p50 and p99 decision latency on one prepared State (the
// latency checker's tenant cache warm), the median and worst of five
// decisions each on a freshly prepared State (cold: the checker resolves
// the tenants of every accelerator it evaluates) and, for model-driven,
// the ratio of its p99 to the baseline's. fill=0.075 is about one
// instance per application (~100,000 instances); fill=0.5 is synth's
// default (~680,000 instances). profiles=x15 makes every model 15 times
// slower, so that accelerators run at utilisations where the latency
// checker rejects much of what bin packing prefers: the latency checker
// runs only on candidates in rank order until it has the ten best that
// pass (scheduler.DeferredChecker), and this is its hard case.
func BenchmarkPlacementDecision(b *testing.B) {
	for _, c := range []struct{ fill, scale float64 }{{0.075, 1}, {0.5, 1}, {0.075, 15}, {0.075, 40}, {0.5, 3}} {
		b.Run(fmt.Sprintf("fill=%v/profiles=x%v", c.fill, c.scale), func(b *testing.B) { benchDecision(b, c.fill, c.scale) })
	}
}

func benchDecision(b *testing.B, fill, scale float64) {
	const nodes = 10000
	snap := synth.Cluster(synth.Config{Nodes: nodes, Seed: 42, Fill: fill, Apps: 100000})
	reqs := synth.Requests(1024, 1, nodes, 9)
	// New applications are looked up like the snapshot's.
	for _, r := range reqs {
		snap.Apps = append(snap.Apps, r.App)
	}
	src := newSynthProfiles(scale)
	s, err := scheduler.Prepare(snap)
	if err != nil {
		b.Fatal(err)
	}
	insts := 0
	for _, n := range snap.Nodes {
		insts += len(n.Instances)
	}
	policies := []struct {
		name string
		p    scheduler.Policy
	}{
		{"binpack", scheduler.BinPackPolicy()},
		{"model-driven", latency.ModelDrivenPolicy(src)},
	}
	var baseP99 time.Duration
	for _, pol := range policies {
		pol.p.Top = 10
		b.Run(fmt.Sprintf("nodes=%d/apps=%d/instances=%d/%s", nodes, len(snap.Apps), insts, pol.name), func(b *testing.B) {
			// Cold: the first decisions on freshly prepared States, whose
			// instance lists the latency checker's tenant cache has not
			// seen (what a decision right after a new snapshot costs).
			var cold []time.Duration
			for k := range 5 {
				fresh, err := scheduler.Prepare(snap)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if _, err := fresh.Place(reqs[k], pol.p); errors.Is(err, errdefs.ErrInvalid) {
					b.Fatal(err)
				}
				cold = append(cold, time.Since(t0))
			}
			slices.Sort(cold)
			// Warm the cache on the State the timed decisions use: one
			// decision recording every candidate runs the latency
			// checker on all of them (with Top it would see only those
			// it needs).
			full := pol.p
			full.Top = 0
			if _, err := s.Place(reqs[0], full); errors.Is(err, errdefs.ErrInvalid) {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			placed, rejected, checked := 0, 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				e, err := s.Place(reqs[i%len(reqs)], pol.p)
				lat = append(lat, time.Since(t0))
				if err == nil {
					placed++
				}
				// Candidates the latency checker judged: those it
				// rejected and those recorded as passing it.
				for _, f := range e.Filtered {
					if f.Checker == "latency" {
						rejected += f.Count
					}
				}
				checked += e.Feasible + e.Fallbacks - e.Unchecked
				if e.Evaluated == 0 {
					b.Fatal("no candidates")
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			p99 := lat[min(len(lat)-1, len(lat)*99/100)]
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(placed)/float64(b.N), "placed-frac")
			if pol.name == "model-driven" {
				b.ReportMetric(float64(rejected)/float64(b.N), "latency-rejected/op")
				b.ReportMetric(float64(checked+rejected)/float64(b.N), "latency-checked/op")
			}
			b.ReportMetric(float64(cold[len(cold)/2].Microseconds())/1000, "cold-p50-ms")
			b.ReportMetric(float64(cold[len(cold)-1].Microseconds())/1000, "cold-max-ms")
			b.ReportMetric(float64(insts), "instances")
			if pol.name == "binpack" {
				baseP99 = p99
			} else if baseP99 > 0 {
				b.ReportMetric(float64(p99)/float64(baseP99), "p99-vs-binpack")
			}
		})
	}
}
