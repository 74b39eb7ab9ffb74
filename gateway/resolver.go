package gateway

import (
	"fmt"
	"slices"
	"sync"

	"github.com/accelpool/accelpool/errdefs"
)

// Endpoint is one instance of an application as the gateway sees it.
type Endpoint struct {
	InstanceID string
	App        string
	Node       string
	Tier       string
	Site       string
	// GRPCAddr and HTTPAddr are the Open Inference Protocol endpoints of
	// the agent serving the instance (host:port). The gateway forwards over
	// gRPC; an endpoint without GRPCAddr is never a candidate.
	GRPCAddr string
	HTTPAddr string
	// ServedName is the model name the agent serves the instance under.
	ServedName string
	// Ready is true when the instance can take requests.
	Ready bool
}

// Resolver tells the gateway where an application's instances are. The
// control plane implements it from its watch of the cluster state. Both
// methods are called on every request or index listing and must be cheap
// and safe for concurrent use; callers must not modify what they return.
type Resolver interface {
	// Endpoints returns the instances placed for app, ready or not. An
	// unknown application is an error wrapping errdefs.ErrNotFound whose
	// message names it; a known one may have no instances.
	Endpoints(app string) ([]Endpoint, error)
	// Apps lists the known applications.
	Apps() []string
}

// StaticResolver is a Resolver over a fixed, editable table: for tests and
// setups without a control plane. The zero value is empty and ready to use.
type StaticResolver struct {
	mu   sync.RWMutex
	apps map[string][]Endpoint
}

var _ Resolver = (*StaticResolver)(nil)

// NewStaticResolver returns a StaticResolver holding eps, grouped by their
// App field.
func NewStaticResolver(eps ...Endpoint) *StaticResolver {
	r := &StaticResolver{}
	for _, ep := range eps {
		r.Add(ep)
	}
	return r
}

// Set replaces app's endpoints; an empty list keeps the application known
// with no instances.
func (r *StaticResolver) Set(app string, eps []Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.apps == nil {
		r.apps = map[string][]Endpoint{}
	}
	r.apps[app] = append([]Endpoint{}, eps...)
}

// Add appends ep to the endpoints of ep.App, making the application known.
func (r *StaticResolver) Add(ep Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.apps == nil {
		r.apps = map[string][]Endpoint{}
	}
	r.apps[ep.App] = append(slices.Clip(r.apps[ep.App]), ep)
}

// Delete forgets app.
func (r *StaticResolver) Delete(app string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.apps, app)
}

// Remove drops the endpoint of an instance and reports whether it was there.
func (r *StaticResolver) Remove(instanceID string) bool {
	return r.edit(instanceID, func(eps []Endpoint, i int) []Endpoint { return slices.Delete(slices.Clone(eps), i, i+1) })
}

// SetReady marks an instance ready or not and reports whether it was found.
func (r *StaticResolver) SetReady(instanceID string, ready bool) bool {
	return r.edit(instanceID, func(eps []Endpoint, i int) []Endpoint {
		eps = slices.Clone(eps)
		eps[i].Ready = ready
		return eps
	})
}

// edit replaces, copy on write, the endpoint list holding instanceID, so
// that lists already handed out never change.
func (r *StaticResolver) edit(instanceID string, f func([]Endpoint, int) []Endpoint) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for app, eps := range r.apps {
		if i := slices.IndexFunc(eps, func(ep Endpoint) bool { return ep.InstanceID == instanceID }); i >= 0 {
			r.apps[app] = f(eps, i)
			return true
		}
	}
	return false
}

// Endpoints implements Resolver.
func (r *StaticResolver) Endpoints(app string) ([]Endpoint, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	eps, ok := r.apps[app]
	if !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown application %q", app))
	}
	return eps, nil
}

// Apps implements Resolver, in name order.
func (r *StaticResolver) Apps() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.apps))
	for app := range r.apps {
		out = append(out, app)
	}
	slices.Sort(out)
	return out
}
