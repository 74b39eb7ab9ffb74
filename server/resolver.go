package server

import (
	"fmt"
	"sort"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/gateway"
)

// resolver answers the gateway from the replica's mirror of the cluster:
// an application's instances, ready when their node is alive and its agent
// reported them Ready.
type resolver struct{ s *state }

var _ gateway.Resolver = resolver{}

func (r resolver) Endpoints(app string) ([]gateway.Endpoint, error) {
	r.s.mu.RLock()
	defer r.s.mu.RUnlock()
	if !r.s.syncedLocked() {
		return nil, errdefs.New(errdefs.ErrUnavailable, "the control plane has not loaded the cluster's state yet; retry shortly")
	}
	if _, ok := r.s.apps[app]; !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown application %q", app))
	}
	var out []gateway.Endpoint
	for _, in := range r.s.instances {
		if in.App != app {
			continue
		}
		n := r.s.nodes[in.Node]
		_, up := r.s.alive[in.Node]
		st := r.s.status[in.Node].Instances[in.ID]
		out = append(out, gateway.Endpoint{InstanceID: in.ID, App: app, Node: in.Node, Tier: string(n.Tier), Site: n.Site,
			GRPCAddr: n.GRPCAddr, HTTPAddr: n.HTTPAddr, ServedName: in.ServedName,
			Ready: up && st.State == cluster.InstanceReady})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].InstanceID < out[j].InstanceID })
	return out, nil
}

func (r resolver) Apps() []string {
	r.s.mu.RLock()
	defer r.s.mu.RUnlock()
	out := make([]string, 0, len(r.s.apps))
	for a := range r.s.apps {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Resolver returns the gateway resolver backed by this replica's state.
func (s *Server) Resolver() gateway.Resolver { return resolver{s.state} }
