package gateway

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// Policy chooses the instance a request goes to. It is a pure decision
// over what it is given: candidates are the Ready endpoints with a gRPC
// address that this request has not tried yet (never empty), and
// outstanding reports the requests in flight through the gateway to an
// instance. Pick returns one of the candidates, or false to refuse them
// all. Implementations must be safe for concurrent use.
type Policy interface {
	Pick(app string, candidates []Endpoint, outstanding func(instanceID string) int) (Endpoint, bool)
}

// LeastOutstanding picks the candidate with the fewest requests in flight.
// Ties are broken round-robin per application: the k-th tied pick for an
// application (counting from zero) takes the (k mod n)-th of the n tied
// candidates in InstanceID order. Endpoints not Ready are skipped. The zero
// value is ready to use; it must not be copied after first use.
type LeastOutstanding struct {
	next sync.Map // app -> *atomic.Uint64, tied picks so far
}

var _ Policy = (*LeastOutstanding)(nil)

// Pick implements Policy.
func (p *LeastOutstanding) Pick(app string, candidates []Endpoint, outstanding func(string) int) (Endpoint, bool) {
	best := -1
	var ties []Endpoint
	for _, c := range candidates {
		if !c.Ready {
			continue
		}
		n := outstanding(c.InstanceID)
		switch {
		case best < 0 || n < best:
			best = n
			ties = append(ties[:0], c)
		case n == best:
			ties = append(ties, c)
		}
	}
	switch len(ties) {
	case 0:
		return Endpoint{}, false
	case 1:
		return ties[0], true
	}
	slices.SortFunc(ties, func(a, b Endpoint) int { return cmp.Compare(a.InstanceID, b.InstanceID) })
	ctr, ok := p.next.Load(app)
	if !ok {
		ctr, _ = p.next.LoadOrStore(app, new(atomic.Uint64))
	}
	k := ctr.(*atomic.Uint64).Add(1) - 1
	return ties[k%uint64(len(ties))], true
}

// Forget drops the tie-breaking state of an application that is gone.
func (p *LeastOutstanding) Forget(app string) { p.next.Delete(app) }
