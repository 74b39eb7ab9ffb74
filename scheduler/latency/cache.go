package latency

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

// TenantCache keeps, per accelerator (node name, accelerator ID), the
// tenants a Checker resolved from the instances placed there: their
// loads, objectives and processor-sharing utilisation Σ λ_i·s_i. An
// entry is valid for the exact instance list it was built from: the
// scheduler's State gives each accelerator a new list (a new backing
// array) on Prepare, Add and Remove, so the entry is reused while that
// list is the candidate's and rebuilt, for that accelerator alone, when
// it changes. It holds the list's address, length and first and last
// the entry keeps that array alive, so no other list can take its
// address while it is cached, and the candidate's instances are never
// read to validate it. A multi-instance decision shows the accelerators
// it placed on as a new list each time: their tenants are resolved
// again, and the next State's lists rebuild the entries anyway. What the
// list does not show, a profile or an application's rate or objective
// changed within one prepared State, needs Forget.
//
// With it, a decision costs O(1) map work per candidate plus a
// prediction over the tenants of candidates that pass the utilisation
// bound, instead of resolving every instance of the cluster. It is safe
// for concurrent decisions; entries of accelerators that leave the
// cluster stay until Forget.
type TenantCache struct {
	mu sync.RWMutex
	m  map[cacheKey]*tenantSet
	// proposed is the last proposed instance resolved per accelerator
	// kind (cpu, gpu, tpu, other): a decision proposes the same one on
	// every candidate.
	proposed [4]atomic.Pointer[proposal]
}

// proposal is a resolved proposed instance.
type proposal struct {
	app   *cluster.Application
	rate  float64
	p99   float64
	model string
	kind  string
	load  Load
}

type cacheKey struct{ node, accel string }

// tenantSet is one accelerator's resolved tenants.
type tenantSet struct {
	// The instance list it was built from.
	data *cluster.Instance
	n    int

	loads  []Load
	objs   []float64
	rho    float64 // Σ λ_i·s_i
	reason string  // non-empty: a tenant cannot be resolved
}

// NewTenantCache returns an empty cache.
func NewTenantCache() *TenantCache { return &TenantCache{m: map[cacheKey]*tenantSet{}} }

// Forget drops every entry.
func (tc *TenantCache) Forget() {
	tc.mu.Lock()
	clear(tc.m)
	tc.mu.Unlock()
	for i := range tc.proposed {
		tc.proposed[i].Store(nil)
	}
}

// Len is the number of accelerators cached.
func (tc *TenantCache) Len() int {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return len(tc.m)
}

// resolveProposed resolves the candidate's proposed instance, reusing the
// last one when it is the same application (same specification, rate and
// objective), model and accelerator kind.
func (tc *TenantCache) resolveProposed(c *scheduler.Candidate, src ProfileSource, share RateShare) (Load, float64, error) {
	in := c.Proposed()
	kind := c.Accelerator().Kind
	slot := &tc.proposed[kindSlot(kind)]
	app, ok := c.LookupApp(in.App)
	if ok {
		if p := slot.Load(); p != nil && p.app == app && p.rate == app.Spec.Rate &&
			p.p99 == app.Spec.Objective.P99Ms && p.model == in.ModelName && p.kind == kind {
			return p.load, p.p99, nil
		}
	}
	l, app, err := resolve(c, in, src, share)
	if err != nil {
		return Load{}, 0, err
	}
	slot.Store(&proposal{app: app, rate: app.Spec.Rate, p99: app.Spec.Objective.P99Ms, model: in.ModelName, kind: kind, load: l})
	return l, app.Spec.Objective.P99Ms, nil
}

// get returns the resolved tenants of ins, the candidate's snapshot
// instances, building them if the cached entry is for another list.
func (tc *TenantCache) get(c *scheduler.Candidate, ins []cluster.Instance, src ProfileSource, share RateShare) *tenantSet {
	if len(ins) == 0 {
		return &tenantSet{}
	}
	k := cacheKey{c.Node().Name, c.Accelerator().ID}
	tc.mu.RLock()
	set := tc.m[k]
	tc.mu.RUnlock()
	if set != nil && set.data == unsafe.SliceData(ins) && set.n == len(ins) {
		return set
	}
	set = &tenantSet{data: unsafe.SliceData(ins), n: len(ins)}
	set.loads = make([]Load, 0, len(ins))
	set.objs = make([]float64, 0, len(ins))
	for _, in := range ins {
		l, app, err := resolve(c, in, src, share)
		if err != nil {
			set.reason = err.Error()
			set.loads, set.objs = nil, nil
			break
		}
		set.loads = append(set.loads, l)
		set.objs = append(set.objs, app.Spec.Objective.P99Ms)
		set.rho += l.Rate / 1000 * l.Profile.ServiceTimeMs
	}
	tc.mu.Lock()
	tc.m[k] = set
	tc.mu.Unlock()
	return set
}

func kindSlot(kind string) int {
	switch kind {
	case "cpu":
		return 0
	case "gpu":
		return 1
	case "tpu":
		return 2
	}
	return 3
}
