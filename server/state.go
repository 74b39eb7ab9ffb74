package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/store"
)

// state is a replica's in-memory mirror of the cluster, kept current by
// store watches. Every replica has one: readers (the API, the gateway's
// resolver, the reconciler) never go to the store on a hot path.
type state struct {
	st  store.Store
	log *slog.Logger

	mu        sync.RWMutex
	nodes     map[string]cluster.Node
	alive     map[string]aliveRecord
	nodeRev   map[string]int64 // node → revision of its last instance change
	status    map[string]cluster.NodeStatus
	models    map[string]cluster.ModelArtifact
	apps      map[string]cluster.Application
	instances map[string]cluster.Instance     // by instance ID
	profiles  map[string]cluster.ModelProfile // by "<model>/<kind>"
	rev       int64                           // highest revision applied
	prefixRev map[string]int64                // highest revision applied per prefix
	synced    map[string]bool                 // prefix → listed at least once
	changed   chan struct{}                   // closed and replaced on every change
}

var watchedPrefixes = []string{prefixNodes, prefixAlive, prefixStatus, prefixModels, prefixApps, prefixInstances, prefixProfiles}

func newState(st store.Store, log *slog.Logger) *state {
	return &state{st: st, log: log, nodes: map[string]cluster.Node{}, alive: map[string]aliveRecord{}, nodeRev: map[string]int64{}, prefixRev: map[string]int64{},
		status: map[string]cluster.NodeStatus{}, models: map[string]cluster.ModelArtifact{},
		apps: map[string]cluster.Application{}, instances: map[string]cluster.Instance{}, profiles: map[string]cluster.ModelProfile{},
		synced: map[string]bool{}, changed: make(chan struct{})}
}

// aliveRecord is the value of a node's leased alive key.
type aliveRecord struct {
	AgentID string        `json:"agentId"`
	Lease   store.LeaseID `json:"lease"`
}

// run keeps the mirror current until ctx ends: list each prefix, then
// watch it from the listed revision; on a watch error list again.
func (s *state) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range watchedPrefixes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.follow(ctx, p)
		}()
	}
	wg.Wait()
}

func (s *state) follow(ctx context.Context, prefix string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		kvs, rev, err := s.st.List(ctx, prefix)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("listing cluster state failed; retrying", "prefix", prefix, "err", err)
			}
			sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.replace(prefix, kvs, rev)
		wctx, cancel := context.WithCancel(ctx)
		for resp := range s.st.Watch(wctx, prefix, rev+1) {
			if resp.Err != nil {
				s.log.Warn("watch ended; listing again", "prefix", prefix, "err", resp.Err)
				break
			}
			s.apply(prefix, resp.Events)
		}
		cancel()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// replace swaps in a full listing of prefix.
func (s *state) replace(prefix string, kvs []store.KV, rev int64) {
	s.mu.Lock()
	switch prefix {
	case prefixNodes:
		s.nodes = map[string]cluster.Node{}
	case prefixAlive:
		s.alive = map[string]aliveRecord{}
	case prefixStatus:
		s.status = map[string]cluster.NodeStatus{}
	case prefixModels:
		s.models = map[string]cluster.ModelArtifact{}
	case prefixApps:
		s.apps = map[string]cluster.Application{}
	case prefixProfiles:
		s.profiles = map[string]cluster.ModelProfile{}
	case prefixInstances:
		s.instances = map[string]cluster.Instance{}
		for n := range s.nodeRev {
			s.nodeRev[n] = rev
		}
	}
	for _, kv := range kvs {
		s.setLocked(prefix, kv.Key, kv.Value, false, rev)
	}
	s.synced[prefix] = true
	if rev > s.rev {
		s.rev = rev
	}
	if rev > s.prefixRev[prefix] {
		s.prefixRev[prefix] = rev
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// apply applies one watch response: the events of one revision, all at
// once, so that no reader (an agent's long poll woken by the change) sees
// a revision half applied — and then waits for a change it already has
// the revision of.
func (s *state) apply(prefix string, evs []store.Event) {
	if len(evs) == 0 {
		return
	}
	s.mu.Lock()
	for _, ev := range evs {
		s.setLocked(prefix, ev.KV.Key, ev.KV.Value, ev.Type == store.EventDelete, ev.KV.Rev)
		if ev.KV.Rev > s.rev {
			s.rev = ev.KV.Rev
		}
		if ev.KV.Rev > s.prefixRev[prefix] {
			s.prefixRev[prefix] = ev.KV.Rev
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *state) setLocked(prefix, key string, val []byte, del bool, rev int64) {
	name := lastSegment(key, prefix)
	decode := func(v any) bool {
		if err := json.Unmarshal(val, v); err != nil {
			s.log.Error("undecodable value in store; ignoring it", "key", key, "err", err)
			return false
		}
		return true
	}
	switch prefix {
	case prefixNodes:
		var n cluster.Node
		if del {
			delete(s.nodes, name)
		} else if decode(&n) {
			s.nodes[name] = n
		}
	case prefixAlive:
		var a aliveRecord
		if del {
			delete(s.alive, name)
		} else if decode(&a) {
			s.alive[name] = a
		}
	case prefixStatus:
		var st cluster.NodeStatus
		if del {
			delete(s.status, name)
		} else if decode(&st) {
			s.status[name] = st
		}
	case prefixModels:
		var m cluster.ModelArtifact
		if del {
			delete(s.models, name)
		} else if decode(&m) {
			s.models[name] = m
		}
	case prefixApps:
		var a cluster.Application
		if del {
			delete(s.apps, name)
		} else if decode(&a) {
			s.apps[name] = a
		}
	case prefixProfiles:
		var p cluster.ModelProfile
		if del {
			delete(s.profiles, name)
		} else if decode(&p) {
			s.profiles[name] = p
		}
	case prefixInstances:
		node, id, _ := strings.Cut(name, "/")
		if rev > s.nodeRev[node] {
			s.nodeRev[node] = rev
		}
		var in cluster.Instance
		if del {
			delete(s.instances, id)
		} else if decode(&in) {
			s.instances[id] = in
		}
	}
}

func (s *state) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// changes returns a channel closed at the next change.
func (s *state) changes() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// isSynced reports whether every prefix was listed at least once.
func (s *state) isSynced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.syncedLocked()
}

// syncedLocked is isSynced for a caller that holds s.mu.
func (s *state) syncedLocked() bool { return len(s.synced) == len(watchedPrefixes) }

func (s *state) revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// waitPrefix waits until the mirror of prefix has applied revision rev
// (the writer's own change is visible), or ctx ends.
func (s *state) waitPrefix(ctx context.Context, prefix string, rev int64) error {
	for {
		s.mu.RLock()
		seen, ch := s.prefixRev[prefix], s.changed
		s.mu.RUnlock()
		if seen >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nodeRevision is the revision of the last change to a node's instances.
func (s *state) nodeRevision(node string) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nodeRev[node]
}

// view is a consistent copy for one decision or one API answer.
type view struct {
	Nodes     map[string]cluster.Node
	Alive     map[string]aliveRecord
	Status    map[string]cluster.NodeStatus
	Models    map[string]cluster.ModelArtifact
	Apps      map[string]cluster.Application
	Instances map[string]cluster.Instance
	Profiles  map[string]cluster.ModelProfile
	Rev       int64
	// InstancesRev is the highest revision of the instances prefix
	// applied: every later change to an instance has a higher revision
	// (Rev, the highest of all prefixes, may be ahead of instance changes
	// not yet applied).
	InstancesRev int64
}

func (s *state) snapshot() view {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := view{Nodes: make(map[string]cluster.Node, len(s.nodes)), Alive: make(map[string]aliveRecord, len(s.alive)),
		Status: make(map[string]cluster.NodeStatus, len(s.status)), Models: make(map[string]cluster.ModelArtifact, len(s.models)),
		Apps: make(map[string]cluster.Application, len(s.apps)), Instances: make(map[string]cluster.Instance, len(s.instances)),
		Profiles: make(map[string]cluster.ModelProfile, len(s.profiles)), Rev: s.rev, InstancesRev: s.prefixRev[prefixInstances]}
	for k, x := range s.profiles {
		v.Profiles[k] = x
	}
	for k, x := range s.nodes {
		v.Nodes[k] = x
	}
	for k, x := range s.alive {
		v.Alive[k] = x
	}
	for k, x := range s.status {
		v.Status[k] = x
	}
	for k, x := range s.models {
		v.Models[k] = x
	}
	for k, x := range s.apps {
		v.Apps[k] = x
	}
	for k, x := range s.instances {
		v.Instances[k] = x
	}
	return v
}

// instancesOn lists a node's instances sorted by ID.
func (v view) instancesOn(node string) []cluster.Instance {
	var out []cluster.Instance
	for _, in := range v.Instances {
		if in.Node == node {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// instancesOf lists an app's instances sorted by ID.
func (v view) instancesOf(app string) []cluster.Instance {
	var out []cluster.Instance
	for _, in := range v.Instances {
		if in.App == app {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// instanceState is the state an instance's agent last reported.
func (v view) instanceState(in cluster.Instance) cluster.InstanceStatus {
	if _, up := v.Alive[in.Node]; !up {
		return cluster.InstanceStatus{State: cluster.InstancePending, Reason: "node " + in.Node + " is down"}
	}
	if st, ok := v.Status[in.Node].Instances[in.ID]; ok {
		return st
	}
	return cluster.InstanceStatus{State: cluster.InstancePending}
}
