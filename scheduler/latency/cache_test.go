package latency_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/scheduler/synth"
)

// TestTenantCacheAgrees places synthetic requests one after another,
// committing each placement with State.Add, with a cached and an
// uncached checker side by side: every outcome (placements, rejection
// reasons) must be the same.
func TestTenantCacheAgrees(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 60, Seed: 7, Fill: 0.3})
	cached, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	// A twentieth of synth's rates, so that many accelerators pass the
	// utilisation bound and the objectives decide.
	tenth := func(a *cluster.Application) float64 { return a.Spec.Rate / 20 }
	// CPUs run Compute/2 requests at once (two intra-op threads each).
	servers := latency.CPUServers(2)
	withCache := latency.Checker{Profiles: synthProfiles, Share: tenth, Cache: latency.NewTenantCache(), Servers: servers}
	without := latency.Checker{Profiles: synthProfiles, Share: tenth, Servers: servers}
	pc := scheduler.Policy{Checkers: append(scheduler.DefaultCheckers(), withCache)}
	pp := scheduler.Policy{Checkers: append(scheduler.DefaultCheckers(), without)}
	reqs := synth.Requests(80, 2, 60, 3)
	placed, rejectedByLatency, objective := 0, 0, 0
	// The control plane's way: only the ten best recorded, so the latency
	// checker runs deferred, in rank order, asked without its reason where
	// that is not recorded. It must decide the same.
	pTop := pc
	pTop.Top = 10
	unchecked := 0
	for i, r := range reqs {
		et, errt := cached.Place(r, pTop)
		ec, errc := cached.Place(r, pc)
		ep, errp := plain.Place(r, pp)
		if (errt == nil) != (errc == nil) || fmt.Sprint(where(et)) != fmt.Sprint(where(ec)) || et.Failure != ec.Failure {
			t.Fatalf("request %d: deferred %v (%v), full %v (%v)", i, where(et), errt, where(ec), errc)
		}
		unchecked += et.Unchecked
		if (errc == nil) != (errp == nil) || fmt.Sprint(where(ec)) != fmt.Sprint(where(ep)) {
			t.Fatalf("request %d: cached %v (%v), uncached %v (%v)", i, where(ec), errc, where(ep), errp)
		}
		if !slices.EqualFunc(ec.Candidates, ep.Candidates, func(a, b scheduler.Outcome) bool { return a.Why() == b.Why() && a.Score == b.Score }) {
			t.Fatalf("request %d: outcomes differ\ncached:\n%s\nuncached:\n%s", i, format(ec), format(ep))
		}
		for _, o := range ec.Candidates {
			if o.Checker == "latency" && len(o.Reason) > 4 && o.Reason[:4] == "app " {
				objective++
			}
		}
		for _, f := range ec.Filtered {
			if f.Checker == "latency" {
				rejectedByLatency += f.Count
			}
		}
		for k, p := range ec.Placements {
			in := p.Instance
			in.ID = fmt.Sprintf("new-%d-%d", i, k)
			if err := cached.Add(in); err != nil {
				t.Fatal(err)
			}
			if err := plain.Add(in); err != nil {
				t.Fatal(err)
			}
			placed++
		}
	}
	t.Logf("placed %d instances; %d candidates rejected by latency, %d for an objective", placed, rejectedByLatency, objective)
	if placed == 0 || rejectedByLatency == 0 || objective == 0 || unchecked == 0 {
		t.Error("the test exercises too little")
	}
	if n := withCache.Cache.Len(); n == 0 {
		t.Error("nothing cached")
	}
	withCache.Cache.Forget()
	if n := withCache.Cache.Len(); n != 0 {
		t.Errorf("%d entries after Forget", n)
	}
}

// TestTenantCacheConcurrent runs decisions on one State from several
// goroutines, as the scheduler allows, sharing one cache (go test -race).
func TestTenantCacheConcurrent(t *testing.T) {
	snap := synth.Cluster(synth.Config{Nodes: 40, Seed: 5})
	s, err := scheduler.Prepare(snap)
	if err != nil {
		t.Fatal(err)
	}
	p := latency.ModelDrivenPolicy(synthProfiles)
	reqs := synth.Requests(64, 1, 40, 5)
	want := make([]string, len(reqs))
	for i, r := range reqs {
		e, _ := s.Place(r, p)
		want[i] = fmt.Sprint(where(e))
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4*len(reqs))
	for range 4 {
		wg.Go(func() {
			for i, r := range reqs {
				e, _ := s.Place(r, p)
				if got := fmt.Sprint(where(e)); got != want[i] {
					errs <- fmt.Sprintf("request %d: %s, want %s", i, got, want[i])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
