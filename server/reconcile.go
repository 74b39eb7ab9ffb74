package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/store"
)

// snapshotOf turns a view into the scheduler's input. Only instances that
// survive this pass (not in drop) count.
func snapshotOf(v view, drop map[string]bool, forceUp bool) scheduler.Snapshot {
	names := make([]string, 0, len(v.Nodes))
	for n := range v.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	snap := scheduler.Snapshot{Nodes: make([]scheduler.NodeState, 0, len(names))}
	for _, name := range names {
		_, up := v.Alive[name]
		ns := scheduler.NodeState{Node: v.Nodes[name], Up: up || forceUp}
		if !forceUp {
			for _, in := range v.instancesOn(name) {
				if !drop[in.ID] {
					ns.Instances = append(ns.Instances, in)
				}
			}
			if up {
				ns.FreeMemory = v.Status[name].FreeMemoryBytes
			}
		}
		snap.Nodes = append(snap.Nodes, ns)
	}
	for _, a := range v.Apps {
		snap.Apps = append(snap.Apps, a)
	}
	sort.Slice(snap.Apps, func(i, j int) bool { return snap.Apps[i].Metadata.Name < snap.Apps[j].Metadata.Name })
	return snap
}

// instanceMemory is what one instance of app reserves on an accelerator.
func instanceMemory(v view, a cluster.Application) int64 {
	if a.Spec.MemoryBytes > 0 {
		return a.Spec.MemoryBytes
	}
	name, _ := a.Spec.ModelRef()
	return cluster.DefaultMemory(v.Models[name].Size)
}

// modelDigest resolves the artifact an app's new instances serve.
func modelDigest(v view, a cluster.Application) (name, digest string, err error) {
	name, digest = a.Spec.ModelRef()
	if digest != "" {
		return name, digest, nil
	}
	m, ok := v.Models[name]
	if !ok {
		return name, "", errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model %q is not in the registry", name))
	}
	return name, m.Digest, nil
}

func newInstanceID(app string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return app + "-" + hex.EncodeToString(b[:])
}

// reconcile is one leader pass: remove instances whose application is
// gone or whose node is down, trim applications above their maximum, roll
// outdated instances, and place instances for those below their minimum.
// Its writes go through lead's fenced transaction: a pass computed by a
// leader that was replaced meanwhile writes nothing.
func (s *Server) reconcile(ctx context.Context, lead store.Leadership) error {
	v := s.state.snapshot()
	var ops []store.Op
	drop := map[string]bool{}
	up := 0
	for name := range v.Nodes {
		if _, ok := v.Alive[name]; ok {
			up++
		}
	}
	s.metrics.nodesUp.Set(float64(up))
	for id, in := range v.Instances {
		_, appOK := v.Apps[in.App]
		_, nodeUp := v.Alive[in.Node]
		switch {
		case !appOK:
			s.log.Info("removing instance of deleted application", "instance", id, "app", in.App, "node", in.Node)
		case !nodeUp:
			s.log.Warn("node down: placing its instance again elsewhere", "instance", id, "app", in.App, "node", in.Node)
		default:
			continue
		}
		drop[id] = true
		ops = append(ops, store.Op{Key: instanceKey(in.Node, id), Delete: true})
		s.metrics.placements.WithLabelValues("removed").Inc()
	}

	snap := snapshotOf(v, drop, false)
	st, err := scheduler.Prepare(snap)
	if err != nil {
		return fmt.Errorf("prepare placement: %w", err)
	}
	apps := make([]string, 0, len(v.Apps))
	for a := range v.Apps {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	explains := map[string][]byte{}
	for _, name := range apps {
		a := v.Apps[name]
		var live []cluster.Instance
		for _, in := range v.instancesOf(name) {
			if !drop[in.ID] {
				live = append(live, in)
			}
		}
		remove := func(in cluster.Instance) {
			ops = append(ops, store.Op{Key: instanceKey(in.Node, in.ID), Delete: true})
			_ = st.Remove(in.Node, in.Accelerator, in.ID)
		}
		scaleDown := func(in cluster.Instance, reason string) {
			s.log.Info("scaling down", "app", name, "instance", in.ID, "reason", reason)
			remove(in)
		}
		t, terr := targetOf(v, a)
		if terr != nil {
			// The model is gone from the registry: nothing to roll to.
			// What runs keeps running, trimmed to the maximum.
			s.setFailure(name, terr.Error())
			for _, r := range st.ChooseRemovals(live, a.Spec.Replicas.Max) {
				scaleDown(r.Instance, r.Reason)
			}
			continue
		}
		current, old, why := rollout(v, t, live)
		retire := func(in cluster.Instance, msg string) {
			s.log.Info(msg, "app", name, "instance", in.ID, "node", in.Node, "outdated", why[in.ID])
			remove(in)
			s.metrics.placements.WithLabelValues("replaced").Inc()
		}
		if excess := len(current) - a.Spec.Replicas.Max; excess > 0 {
			// Up-to-date instances that serve nothing go first, then the
			// scheduler's choice among the rest.
			var keep []cluster.Instance
			for _, in := range current {
				if excess > 0 && v.instanceState(in).State != cluster.InstanceReady {
					scaleDown(in, "above spec.replicas.max, and not ready")
					excess--
					continue
				}
				keep = append(keep, in)
			}
			gone := map[string]bool{}
			for _, r := range st.ChooseRemovals(keep, a.Spec.Replicas.Max) {
				scaleDown(r.Instance, r.Reason)
				gone[r.Instance.ID] = true
			}
			current = current[:0]
			for _, in := range keep {
				if !gone[in.ID] {
					current = append(current, in)
				}
			}
		}
		// How many instances the application keeps serving through a
		// rollout: its minimum, or as many as it runs, up to its maximum.
		want := max(a.Spec.Replicas.Min, min(len(live), a.Spec.Replicas.Max))
		retired := map[string]bool{}
		for _, in := range retireOutdated(v, want, current, old) {
			retire(in, "removing an outdated instance")
			retired[in.ID] = true
		}
		need := want - len(current)
		if need <= 0 {
			continue
		}
		pol, how := policyFor(v, a, 20)
		req := scheduler.Request{App: a, MemoryBytes: t.memory, Count: need}
		ex, perr := st.Place(req, pol)
		serving := countReady(v, current) + len(old) - len(retired) // the outdated left are Ready
		if len(ex.Placements) == 0 && errors.Is(perr, errdefs.ErrResourceExhausted) && allReady(v, current) &&
			(serving > 1 || want <= 1) {
			// No room beside the outdated instances: make room by
			// removing one that still serves, if that is enough, only
			// while no replacement is still loading (one at a time) and
			// another instance keeps serving — unless the application
			// asks for one instance, which cannot roll without a gap.
			for i := len(old) - 1; i >= 0; i-- {
				in := old[i]
				if retired[in.ID] {
					continue
				}
				_ = st.Remove(in.Node, in.Accelerator, in.ID)
				if ex2, perr2 := st.Place(req, pol); len(ex2.Placements) > 0 {
					_ = st.Add(in) // retire removes it again
					retire(in, "no room beside the outdated instances: replacing one in place")
					ex, perr = ex2, perr2
					break
				}
				_ = st.Add(in)
			}
		}
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "policy: %s\n", how)
		_ = ex.Format(&buf)
		explains[name] = buf.Bytes()
		if perr != nil {
			s.setFailure(name, perr.Error())
			s.metrics.placements.WithLabelValues("unplaceable").Inc()
			if !errors.Is(perr, errdefs.ErrResourceExhausted) {
				s.log.Error("placement failed", "app", name, "err", perr)
			}
		} else {
			s.setFailure(name, "")
		}
		for _, p := range ex.Placements {
			in := p.Instance
			in.ID = newInstanceID(name)
			in.App, in.ServedName = name, in.ID
			in.ModelName, in.ModelDigest = t.model, t.digest
			in.Batching, in.Serving = a.Spec.Batching, a.Spec.Serving
			in.MemoryBytes = t.memory
			in.Created = time.Now().UTC()
			val, _ := json.Marshal(in)
			ops = append(ops, store.Op{Key: instanceKey(in.Node, in.ID), Value: val, CreateOnly: true})
			_ = st.Add(in)
			s.metrics.placements.WithLabelValues("placed").Inc()
			s.log.Info("instance placed", "app", name, "instance", in.ID, "node", in.Node, "accelerator", in.Accelerator,
				"memory", in.MemoryBytes, "score", math.Round(p.Score*1000)/1000)
		}
	}
	instanceOps := len(ops)
	s.failMu.Lock()
	for app := range s.explained {
		if _, ok := v.Apps[app]; !ok {
			// Deleted, and its explanation with it: one for an
			// application of the same name deployed later is written
			// afresh, even if it reads the same.
			delete(s.explained, app)
		}
	}
	for app, text := range explains {
		if s.explained[app] != string(text) {
			ops = append(ops, store.Op{Key: explainKey(app), Value: text})
		}
	}
	s.failMu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	rev, err := lead.Txn(ctx, ops)
	if err != nil {
		return err
	}
	s.failMu.Lock()
	for app, text := range explains {
		s.explained[app] = string(text)
	}
	s.failMu.Unlock()
	if instanceOps == 0 {
		return nil
	}
	// The next pass must see these changes, or it would place again.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.state.waitPrefix(wctx, prefixInstances, rev)
}

func (s *Server) setFailure(app, msg string) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if msg == "" {
		delete(s.failures, app)
		return
	}
	s.failures[app] = msg
}

func (s *Server) lastPlacementError(app string) string {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failures[app]
}

// staticInfeasible says why no registered node could ever run a (every
// node up and empty); "" when some node could.
func staticInfeasible(v view, a *cluster.Application) string {
	snap := snapshotOf(v, nil, true)
	ex, err := scheduler.Place(snap, scheduler.Request{App: *a, MemoryBytes: 1, Count: 1}, scheduler.BinPackPolicy())
	if err == nil {
		return ""
	}
	if ex.Failure != "" {
		return ex.Failure
	}
	return err.Error()
}

// dryRun explains where one more instance of a would go now.
func (s *Server) dryRun(v view, a cluster.Application) string {
	pol, how := policyFor(v, a, 0)
	ex, err := scheduler.Place(snapshotOf(v, nil, false), scheduler.Request{App: a, MemoryBytes: instanceMemory(v, a), Count: 1}, pol)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "policy: %s\n", how)
	_ = ex.Format(&buf)
	if err != nil && ex.App == "" {
		return err.Error()
	}
	return buf.String()
}
