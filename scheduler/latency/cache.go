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
	// byList finds an entry by its instance list's backing array (a
	// pointer hashes faster than two names); byAccel is the list each
	// accelerator's entry was last built from, so that a rebuilt entry
	// replaces the old one instead of piling up.
	byList  map[*cluster.Instance]*tenantSet
	byAccel map[cacheKey]*cluster.Instance
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
	own   float64 // psOwn of the load's profile
	bad   string  // the load's validation error as the PS model words it
}

type cacheKey struct{ node, accel string }

// tenantSet is one accelerator's resolved tenants.
type tenantSet struct {
	// The instance list it was built from, and the accelerator kind
	// its profiles are for.
	data *cluster.Instance
	n    int
	kind string

	loads  []Load
	objs   []float64
	own    []float64 // psOwn per load, for the processor-sharing check
	rho    float64   // Σ λ_i·s_i
	lam    float64   // Σ λ_i, per ms
	reason string    // non-empty: a tenant cannot be resolved
	bad    string    // non-empty: a tenant's load is invalid (PS's words)
}

// NewTenantCache returns an empty cache.
func NewTenantCache() *TenantCache {
	return &TenantCache{byList: map[*cluster.Instance]*tenantSet{}, byAccel: map[cacheKey]*cluster.Instance{}}
}

// Forget drops every entry.
func (tc *TenantCache) Forget() {
	tc.mu.Lock()
	clear(tc.byList)
	clear(tc.byAccel)
	tc.mu.Unlock()
	for i := range tc.proposed {
		tc.proposed[i].Store(nil)
	}
}

// Len is the number of accelerators cached.
func (tc *TenantCache) Len() int {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return len(tc.byAccel)
}

// resolveProposed resolves the candidate's proposed instance, reusing the
// last one when it is the same application (same specification, rate and
// objective), model and accelerator kind.
func (tc *TenantCache) resolveProposed(c *scheduler.Candidate, src ProfileSource, share RateShare) (Load, float64, error) {
	p, err := tc.proposal(c, src, share)
	if err != nil {
		return Load{}, 0, err
	}
	return p.load, p.p99, nil
}

// proposal is resolveProposed's cached entry.
func (tc *TenantCache) proposal(c *scheduler.Candidate, src ProfileSource, share RateShare) (*proposal, error) {
	in := c.Proposed()
	kind := c.Accelerator().Kind
	slot := &tc.proposed[kindSlot(kind)]
	app, ok := c.LookupApp(in.App)
	if ok {
		if p := slot.Load(); p != nil && p.app == app && p.rate == app.Spec.Rate &&
			p.p99 == app.Spec.Objective.P99Ms && p.model == in.ModelName && p.kind == kind {
			return p, nil
		}
	}
	l, app, err := resolve(c, in, src, share)
	if err != nil {
		return nil, err
	}
	p := &proposal{app: app, rate: app.Spec.Rate, p99: app.Spec.Objective.P99Ms, model: in.ModelName, kind: kind, load: l}
	if _, err := validate(PS{}.Name(), []Load{l}); err != nil {
		p.bad = err.Error()
	} else {
		p.own = psOwn(l.Profile.ServiceTimeMs, l.Profile.ServiceTimeCV)
	}
	slot.Store(p)
	return p, nil
}

// noTenants is the tenant set of an empty accelerator; read only.
var noTenants = &tenantSet{}

// get returns the resolved tenants of ins, the candidate's snapshot
// instances, building them if the cached entry is for another list.
func (tc *TenantCache) get(c *scheduler.Candidate, ins []cluster.Instance, src ProfileSource, share RateShare) *tenantSet {
	if len(ins) == 0 {
		return noTenants
	}
	data, kind := unsafe.SliceData(ins), c.Accelerator().Kind
	tc.mu.RLock()
	set := tc.byList[data]
	tc.mu.RUnlock()
	// The same array and length are the same instances; the kind picks
	// their profiles.
	if set != nil && set.n == len(ins) && set.kind == kind {
		return set
	}
	set = &tenantSet{data: data, n: len(ins), kind: kind}
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
		set.lam += l.Rate / 1000
	}
	if set.reason == "" {
		if _, err := validate(PS{}.Name(), set.loads); err != nil {
			set.bad = err.Error()
		} else {
			set.own = make([]float64, len(set.loads))
			for i, l := range set.loads {
				set.own[i] = psOwn(l.Profile.ServiceTimeMs, l.Profile.ServiceTimeCV)
			}
		}
	}
	k := cacheKey{c.Node().Name, c.Accelerator().ID}
	tc.mu.Lock()
	if old, ok := tc.byAccel[k]; ok && old != data {
		delete(tc.byList, old)
	}
	tc.byAccel[k] = data
	tc.byList[data] = set
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
