package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/store"
)

// APIHandler serves the admin API and the agent protocol under /api/v1,
// health under /healthz and /readyz (open), everything else token-guarded.
func (s *Server) APIHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, fn func(http.ResponseWriter, *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("panic in API handler", "path", r.URL.Path, "panic", p)
					writeError(w, errdefs.New(errdefs.ErrInternal, "internal error"))
				}
			}()
			if !s.Synced() && !unsyncedOK[pattern] {
				// An answer from an empty mirror would read as "nothing
				// there": an agent told it has no instances unloads them.
				writeError(w, errdefs.New(errdefs.ErrUnavailable, "cluster state not loaded yet; retry shortly"))
				return
			}
			if err := fn(w, r); err != nil {
				writeError(w, err)
			}
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Synced() {
			writeError(w, errdefs.New(errdefs.ErrUnavailable, "cluster state not loaded yet"))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h("POST /api/v1/agent/join", s.handleJoin)
	h("POST /api/v1/agent/heartbeat", s.handleHeartbeat)
	h("GET /api/v1/agent/assignments", s.handleAssignments)
	h("GET /api/v1/blobs/{digest}", s.handleBlob)
	h("POST /api/v1/models/{name}", s.writeOnLeader(s.handlePush))
	h("GET /api/v1/models", s.handleListModels)
	h("GET /api/v1/models/{name}", s.handleGetModel)
	h("DELETE /api/v1/models/{name}", s.writeOnLeader(s.handleDeleteModel))
	h("POST /api/v1/apps", s.writeOnLeader(s.handleDeploy))
	h("GET /api/v1/apps", s.handleListApps)
	h("GET /api/v1/apps/{name}", s.handleGetApp)
	h("DELETE /api/v1/apps/{name}", s.writeOnLeader(s.handleDeleteApp))
	h("GET /api/v1/apps/{name}/explain", s.handleExplain)
	h("GET /api/v1/nodes", s.handleListNodes)
	h("GET /api/v1/nodes/{name}", s.handleGetNode)
	h("GET /api/v1/leader", s.handleLeader)
	h("PUT /api/v1/profiles/{model}/{kind}", s.writeOnLeader(s.handlePutProfile))
	h("GET /api/v1/profiles", s.handleListProfiles)
	h("GET /api/v1/profiles/{model}/{kind}", s.handleGetProfile)
	h("/api/", func(w http.ResponseWriter, r *http.Request) error {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path))
	})
	return auth.HTTP(mux, s.cfg.Token, "/healthz", "/readyz")
}

// unsyncedOK are the API routes a replica answers before its mirror of
// the cluster is loaded: they write to the store or read nothing from the
// mirror. Every other route answers 503 until then.
var unsyncedOK = map[string]bool{
	"POST /api/v1/agent/join":      true,
	"POST /api/v1/agent/heartbeat": true,
	"GET /api/v1/blobs/{digest}":   true,
	"GET /api/v1/leader":           true,
	"/api/":                        true,
}

// writeOnLeader forwards the request to the leader unless this replica leads.
func (s *Server) writeOnLeader(fn func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		done, err := s.forwardToLeader(w, r)
		if done || err != nil {
			return err
		}
		return fn(w, r)
	}
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(errdefs.HTTPStatus(err))
	b, _ := json.Marshal(map[string]string{"error": errdefs.Clip(err.Error())})
	_, _ = w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, err = w.Write(append(b, '\n'))
	return err
}

const maxControlBody = 1 << 20

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxControlBody+1))
	if err != nil {
		return errdefs.Invalid(fmt.Sprintf("reading body: %v", err))
	}
	if len(body) > maxControlBody {
		return errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("body larger than %d bytes", maxControlBody))
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Invalid(fmt.Sprintf("malformed JSON body: %v", err))
	}
	return nil
}

// --- agent protocol ---

func validateNode(n *cluster.Node) error {
	switch {
	case !cluster.ValidName(n.Name):
		return cluster.FieldError("node.name", "%q must be 1-63 lowercase letters, digits or '-'", n.Name)
	case !n.Tier.Valid():
		return cluster.FieldError("node.tier", "%q is not one of device, edge, cloud", n.Tier)
	case n.AgentID == "":
		return cluster.FieldError("node.agentId", "is required")
	case n.GRPCAddr == "" && n.HTTPAddr == "":
		return cluster.FieldError("node.grpcAddr", "the agent must advertise an inference endpoint")
	case len(n.Accelerators) == 0:
		return cluster.FieldError("node.accelerators", "at least one accelerator is required")
	}
	seen := map[string]bool{}
	for i, a := range n.Accelerators {
		f := fmt.Sprintf("node.accelerators[%d]", i)
		switch {
		case a.ID == "" || seen[a.ID]:
			return cluster.FieldError(f+".id", "%q is empty or repeated", a.ID)
		case a.Kind != "cpu" && a.Kind != "gpu" && a.Kind != "tpu":
			return cluster.FieldError(f+".kind", "%q is not one of cpu, gpu, tpu", a.Kind)
		case a.MemoryBytes <= 0:
			return cluster.FieldError(f+".memoryBytes", "%d must be positive", a.MemoryBytes)
		case !(a.Compute > 0):
			return cluster.FieldError(f+".compute", "%v must be positive", a.Compute)
		}
		seen[a.ID] = true
	}
	return nil
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) error {
	var req cluster.JoinRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	n := req.Node
	if err := validateNode(&n); err != nil {
		return err
	}
	ctx := r.Context()
	if kv, err := s.store.Get(ctx, aliveKey(n.Name)); err == nil {
		var a aliveRecord
		if json.Unmarshal(kv.Value, &a) == nil && a.AgentID != n.AgentID {
			return errdefs.New(errdefs.ErrConflict, fmt.Sprintf("node name %q is held by another live agent (%s); give this agent another --name, or stop the other one and wait %v for its lease to lapse",
				n.Name, a.AgentID, s.cfg.LeaseTTL))
		}
		if json.Unmarshal(kv.Value, &a) == nil {
			_ = s.store.Revoke(ctx, a.Lease) // the same agent rejoining: drop its old lease
		}
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	lease, err := s.store.Grant(ctx, s.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	n.Joined = time.Now().UTC()
	nodeVal, _ := json.Marshal(n)
	aliveVal, _ := json.Marshal(aliveRecord{AgentID: n.AgentID, Lease: lease})
	statusVal, _ := json.Marshal(cluster.NodeStatus{Up: true, LastHeartbeat: n.Joined})
	if _, err := s.store.Txn(ctx, []store.Op{
		{Key: nodeKey(n.Name), Value: nodeVal},
		{Key: aliveKey(n.Name), Value: aliveVal, Lease: lease, CreateOnly: true},
		{Key: statusKey(n.Name), Value: statusVal, Lease: lease},
	}); err != nil {
		_ = s.store.Revoke(ctx, lease)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return errdefs.New(errdefs.ErrConflict, fmt.Sprintf("node name %q was just taken by another agent", n.Name))
		}
		return err
	}
	s.log.Info("node joined", "node", n.Name, "tier", n.Tier, "site", n.Site, "agent", n.AgentID, "accelerators", len(n.Accelerators))
	s.kick()
	return writeJSON(w, http.StatusOK, cluster.JoinResponse{HeartbeatInterval: s.cfg.LeaseTTL / 3, LeaseTTL: s.cfg.LeaseTTL})
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) error {
	var req cluster.HeartbeatRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	kv, err := s.store.Get(ctx, aliveKey(req.Name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("node %q has no live lease: join again", req.Name))
	} else if err != nil {
		return err
	}
	var a aliveRecord
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return err
	}
	if a.AgentID != req.AgentID {
		return errdefs.New(errdefs.ErrConflict, fmt.Sprintf("node %q is held by agent %s, not %s", req.Name, a.AgentID, req.AgentID))
	}
	if err := s.store.KeepAlive(ctx, a.Lease); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("node %q lease lapsed: join again", req.Name))
		}
		return err
	}
	st := req.Status
	st.Up = true
	st.LastHeartbeat = time.Now().UTC()
	val, _ := json.Marshal(st)
	if _, err := s.store.Put(ctx, statusKey(req.Name), val, a.Lease); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, cluster.HeartbeatResponse{OK: true})
}

func (s *Server) handleAssignments(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	node := q.Get("node")
	if !cluster.ValidName(node) {
		return errdefs.Invalid(fmt.Sprintf("node %q is not a valid node name", node))
	}
	var after int64
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return errdefs.Invalid(fmt.Sprintf("after %q must be a non-negative revision", v))
		}
	}
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 5*time.Minute {
			return errdefs.Invalid(fmt.Sprintf("wait %q must be a duration up to 5m", v))
		}
		wait = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for after > 0 && s.state.nodeRevision(node) <= after && s.state.isSynced() {
		ch := s.state.changes()
		if s.state.nodeRevision(node) > after {
			break
		}
		select {
		case <-ch:
			continue
		case <-ctx.Done():
		}
		break
	}
	v := s.state.snapshot()
	ins := v.instancesOn(node)
	if ins == nil {
		ins = []cluster.Instance{}
	}
	// The instances prefix's revision, not v.Rev: the agent next waits for
	// a node revision above it, and v.Rev may already be past an instance
	// change still on its way to the mirror.
	return writeJSON(w, http.StatusOK, cluster.Assignments{Revision: max(v.InstancesRev, after), Instances: ins})
}

func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request) error {
	br, err := s.openBlob(r.Context(), r.PathValue("digest"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+br.meta.Digest+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, br)
	return nil
}

// --- models ---

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > s.cfg.MaxModelBytes {
		return errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("model of %d bytes exceeds the %d-byte limit", r.ContentLength, s.cfg.MaxModelBytes))
	}
	art, err := s.pushModel(r.Context(), r.PathValue("name"), r.Body, s.cfg.MaxModelBytes, s.cfg.DataDir)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, art)
}

func (s *Server) handleListModels(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	out := make([]cluster.ModelArtifact, 0, len(v.Models))
	for _, m := range v.Models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetModel(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	m, ok := v.Models[r.PathValue("name")]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown model %q", r.PathValue("name")))
	}
	return writeJSON(w, http.StatusOK, m)
}

func (s *Server) handleDeleteModel(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	v := s.state.snapshot()
	if _, ok := v.Models[name]; !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown model %q", name))
	}
	for _, a := range v.Apps {
		if n, _ := a.Spec.ModelRef(); n == name {
			return errdefs.New(errdefs.ErrConflict, fmt.Sprintf("model %q is used by application %q; delete the application first", name, a.Metadata.Name))
		}
	}
	if err := s.store.Delete(r.Context(), modelKey(name)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- applications ---

func (s *Server) handleDeploy(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, cluster.MaxDocumentBytes+1))
	if err != nil {
		return errdefs.Invalid(fmt.Sprintf("reading body: %v", err))
	}
	apps, err := cluster.ParseApplications(body)
	if err != nil {
		return err
	}
	replace := r.URL.Query().Get("replace") == "true"
	force := r.URL.Query().Get("allowPending") == "true"
	v := s.state.snapshot()
	ops := make([]store.Op, 0, len(apps))
	for i := range apps {
		a := &apps[i]
		if err := s.checkDeployable(r.Context(), v, a, force); err != nil {
			return fmt.Errorf("application %q: %w", a.Metadata.Name, err)
		}
		val, err := json.Marshal(a)
		if err != nil {
			// Validation should have refused what JSON cannot hold (NaN,
			// say); nothing is written that the mirror could not read.
			return errdefs.Invalid(fmt.Sprintf("application %q: %v; nothing was applied", a.Metadata.Name, err))
		}
		ops = append(ops, store.Op{Key: appKey(a.Metadata.Name), Value: val, CreateOnly: !replace})
	}
	if _, err := s.store.Txn(r.Context(), ops); err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return errdefs.New(errdefs.ErrAlreadyExists, fmt.Sprintf("%v: an application with that name exists (deploy with --replace to update it); nothing was applied", err))
		}
		return err
	}
	names := make([]string, len(apps))
	for i, a := range apps {
		names[i] = a.Metadata.Name
	}
	s.log.Info("applications deployed", "apps", names, "replace", replace)
	s.kick()
	return writeJSON(w, http.StatusCreated, apps)
}

// checkDeployable verifies the model exists and that some registered node
// could ever satisfy the constraints. A model or artifact the store does
// not hold is ErrNotFound; a store that cannot answer is its own error
// (unavailable, deadline), never reported as an unknown model.
func (s *Server) checkDeployable(ctx context.Context, v view, a *cluster.Application, allowPending bool) error {
	name, digest := a.Spec.ModelRef()
	m, ok := v.Models[name]
	if !ok {
		// The mirror may not have seen a push this replica or another
		// just made: the store decides.
		kv, err := s.store.Get(ctx, modelKey(name))
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("spec.model: unknown model %q (push it first: accelpool model push FILE --name %s)", name, name))
		case err != nil:
			return fmt.Errorf("spec.model: looking up model %q: %w", name, err)
		}
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return fmt.Errorf("spec.model: the store's record of model %q is unreadable: %v", name, err)
		}
	}
	if digest != "" && digest != m.Digest {
		_, err := s.store.Get(ctx, blobMetaKey(digest))
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("spec.model: no artifact %s with digest %s", name, digest))
		case err != nil:
			return fmt.Errorf("spec.model: looking up artifact %s of %s: %w", digest, name, err)
		}
	}
	if allowPending || len(v.Nodes) == 0 {
		return nil
	}
	if reason := staticInfeasible(v, a); reason != "" {
		return errdefs.Invalid(fmt.Sprintf("spec.constraints: no registered node can ever run it (%s); fix the constraints or deploy with --allow-pending", reason))
	}
	return nil
}

func (s *Server) handleListApps(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	out := make([]cluster.AppView, 0, len(v.Apps))
	for _, a := range v.Apps {
		out = append(out, s.appView(v, a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetApp(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	a, ok := v.Apps[r.PathValue("name")]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown application %q", r.PathValue("name")))
	}
	return writeJSON(w, http.StatusOK, s.appView(v, a))
}

func (s *Server) appView(v view, a cluster.Application) cluster.AppView {
	av := cluster.AppView{Application: a, Status: cluster.AppStatus{Desired: a.Spec.Replicas.Min, Instances: []cluster.InstanceView{}}}
	t, terr := targetOf(v, a)
	for _, in := range v.instancesOf(a.Metadata.Name) {
		st := v.instanceState(in)
		iv := cluster.InstanceView{Instance: in, State: st.State, Reason: st.Reason}
		if terr == nil {
			iv.Outdated = t.outdated(v, in)
		}
		switch {
		case iv.Outdated != "":
			av.Status.Outdated++
		case st.State == cluster.InstanceReady:
			av.Status.Ready++
		}
		av.Status.Instances = append(av.Status.Instances, iv)
	}
	if len(av.Status.Instances)-av.Status.Outdated < av.Status.Desired {
		av.Status.Message = s.lastPlacementError(a.Metadata.Name)
	}
	if av.Status.Outdated > 0 && av.Status.Message == "" {
		av.Status.Message = fmt.Sprintf("rolling out a changed spec: %d outdated instance(s) serve until the new ones are ready", av.Status.Outdated)
		for _, iv := range av.Status.Instances {
			if iv.Outdated == "" && iv.State == cluster.InstanceFailed {
				av.Status.Message = fmt.Sprintf("rolling out a changed spec is stuck: new instance %s failed (%s); %d outdated instance(s) still serve",
					iv.ID, iv.Reason, av.Status.Outdated)
				break
			}
		}
	}
	return av
}

func (s *Server) handleDeleteApp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := s.store.Txn(r.Context(), []store.Op{{Key: appKey(name), Delete: true, MustExist: true}}); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown application %q", name))
		}
		return err
	}
	_ = s.store.Delete(r.Context(), explainKey(name))
	// The leader writes an explanation only when it changes: forget this
	// one, so that an application of this name deployed again gets its
	// own even if it reads the same.
	s.failMu.Lock()
	delete(s.explained, name)
	s.failMu.Unlock()
	s.kick()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleExplain(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	v := s.state.snapshot()
	a, ok := v.Apps[name]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown application %q", name))
	}
	ev := cluster.ExplainView{App: name, DryRun: s.dryRun(v, a)}
	if kv, err := s.store.Get(r.Context(), explainKey(name)); err == nil {
		ev.Last = string(kv.Value)
	}
	return writeJSON(w, http.StatusOK, ev)
}

// --- nodes ---

func (s *Server) nodeView(v view, n cluster.Node) cluster.NodeView {
	_, up := v.Alive[n.Name]
	nv := cluster.NodeView{Node: n, Up: up, Status: v.Status[n.Name], Instances: []string{}, ReservedMemoryBytes: map[string]int64{}}
	for _, in := range v.instancesOn(n.Name) {
		nv.Instances = append(nv.Instances, in.ID)
		nv.ReservedMemoryBytes[in.Accelerator] += in.MemoryBytes
	}
	return nv
}

func (s *Server) handleListNodes(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	out := make([]cluster.NodeView, 0, len(v.Nodes))
	for _, n := range v.Nodes {
		out = append(out, s.nodeView(v, n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetNode(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	n, ok := v.Nodes[r.PathValue("name")]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown node %q", r.PathValue("name")))
	}
	return writeJSON(w, http.StatusOK, s.nodeView(v, n))
}

func (s *Server) handleLeader(w http.ResponseWriter, r *http.Request) error {
	id, err := s.leaderURL(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, cluster.LeaderView{Leader: id, Self: s.cfg.AdvertiseURL, IsLeader: s.IsLeader()})
}

// --- profiles ---

func (s *Server) handlePutProfile(w http.ResponseWriter, r *http.Request) error {
	var p cluster.ModelProfile
	if err := readJSON(r, &p); err != nil {
		return err
	}
	model, kind := r.PathValue("model"), r.PathValue("kind")
	switch {
	case !cluster.ValidModelName(model):
		return cluster.FieldError("model", "%q is not a valid model name", model)
	case kind != "cpu" && kind != "gpu" && kind != "tpu":
		return cluster.FieldError("acceleratorKind", "%q is not one of cpu, gpu, tpu", kind)
	case !(p.ServiceMs[1] > 0):
		return cluster.FieldError("serviceMs", "needs a positive batch-1 service time")
	}
	p.Model, p.AcceleratorKind = model, kind
	val, _ := json.Marshal(p)
	if _, err := s.store.Put(r.Context(), profileKey(model, kind), val, store.NoLease); err != nil {
		return err
	}
	s.kick()
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleListProfiles(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	out := make([]cluster.ModelProfile, 0, len(v.Profiles))
	for _, p := range v.Profiles {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Model+"/"+out[i].AcceleratorKind < out[j].Model+"/"+out[j].AcceleratorKind
	})
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetProfile(w http.ResponseWriter, r *http.Request) error {
	v := s.state.snapshot()
	p, ok := v.Profiles[r.PathValue("model")+"/"+r.PathValue("kind")]
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no profile of model %q on %s", r.PathValue("model"), r.PathValue("kind")))
	}
	return writeJSON(w, http.StatusOK, p)
}
