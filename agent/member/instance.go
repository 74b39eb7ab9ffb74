package member

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// markerFile marks a repository directory as written by this package, so a
// restarted agent can tell stale instance directories from models the
// operator put there.
const markerFile = ".accelpool-instance"

// teardownTimeout bounds unloading a removed instance's model.
const teardownTimeout = 30 * time.Second

// instance is one assigned instance and the goroutine that serves it.
type instance struct {
	spec   cluster.Instance
	log    *slog.Logger
	cancel context.CancelFunc
	kick   func()

	mu     sync.Mutex
	status cluster.InstanceStatus
}

func (in *instance) get() cluster.InstanceStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.status
}

// set records a state and asks for a heartbeat when it changed.
func (in *instance) set(state, reason string) {
	in.mu.Lock()
	changed := in.status.State != state || in.status.Reason != reason
	in.status = cluster.InstanceStatus{State: state, Reason: reason}
	in.mu.Unlock()
	if changed {
		in.log.Debug("instance state", "state", state, "reason", reason)
		in.kick()
	}
}

// sameSpec reports whether two versions of an instance need the same
// thing served.
func sameSpec(a, b cluster.Instance) bool {
	return a.ModelDigest == b.ModelDigest && a.ServedName == b.ServedName && a.Batching == b.Batching &&
		a.Accelerator == b.Accelerator && a.MemoryBytes == b.MemoryBytes && repository.SameConfig(a.Serving, b.Serving)
}

// reconcile starts the instances that are new in want and stops those no
// longer in it. An instance whose spec changed is replaced. On the first
// answer it also clears repository directories of instances removed while
// the agent was away.
func (m *member) reconcile(want []cluster.Instance, first bool) {
	byID := make(map[string]cluster.Instance, len(want))
	for _, in := range want {
		if in.Node != "" && in.Node != m.cfg.Node.Name {
			m.log.Warn("ignoring an instance assigned to another node", "instance", in.ID, "assigned", in.Node)
			continue
		}
		byID[in.ID] = in
	}
	m.mu.Lock()
	changed := false
	for id, in := range m.instances {
		if spec, ok := byID[id]; !ok || !sameSpec(spec, in.spec) {
			in.log.Info("instance removed")
			in.cancel()
			delete(m.instances, id)
			changed = true
		}
	}
	for id, spec := range byID {
		if _, ok := m.instances[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(m.runCtx)
		in := &instance{spec: spec, cancel: cancel, kick: m.kick,
			log:    m.log.With("instance", id, "app", spec.App, "served", spec.ServedName),
			status: cluster.InstanceStatus{State: cluster.InstancePending}}
		in.log.Info("instance assigned", "model", spec.ModelName, "digest", spec.ModelDigest, "accelerator", spec.Accelerator)
		m.instances[id] = in
		m.refs[spec.ServedName]++
		changed = true
		m.wg.Go(func() { m.serve(ctx, in) })
	}
	var stale []string
	if first {
		stale = m.staleDirs()
	}
	m.mu.Unlock()
	for _, name := range stale {
		m.removeStale(name)
	}
	if changed {
		m.kick()
	}
}

// serve runs one instance: pull, install, load; then waits until the
// instance is removed (tearing it down) or the agent stops.
func (m *member) serve(ctx context.Context, in *instance) {
	m.setup(ctx, in)
	<-ctx.Done()
	removed := m.runCtx.Err() == nil
	if removed || m.cfg.UnloadOnExit {
		m.teardown(in, removed)
	}
}

func (m *member) setup(ctx context.Context, in *instance) {
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		in.log.Error("instance failed", "err", err)
		in.set(cluster.InstanceFailed, err.Error())
	}
	name := in.spec.ServedName
	if !repository.ValidName(name) {
		fail(errdefs.Invalid(fmt.Sprintf("invalid served name %q", name)))
		return
	}
	in.set(cluster.InstancePulling, "")
	blob, err := m.blobs.ensure(ctx, in.spec.ModelDigest, in.log, func(err error) {
		in.set(cluster.InstancePulling, "retrying: "+err.Error())
	})
	if err != nil {
		fail(err)
		return
	}
	in.set(cluster.InstanceLoading, "")
	unlock, err := m.names.lock(ctx, "model:"+name)
	if err != nil {
		return
	}
	defer unlock()
	changed, err := m.install(in.spec, blob)
	m.mu.Lock()
	if changed {
		m.stale[name] = true
	}
	stale := m.stale[name]
	m.mu.Unlock()
	if err != nil {
		fail(err)
		return
	}
	if !stale {
		if ok, _ := m.cfg.Manager.ModelReady(ctx, name, ""); ok {
			in.log.Info("instance ready (already serving this model)")
			in.set(cluster.InstanceReady, "")
			return
		}
	}
	start := time.Now()
	if err := m.cfg.Manager.LoadModel(ctx, name); err != nil {
		fail(err)
		return
	}
	m.mu.Lock()
	delete(m.stale, name)
	m.mu.Unlock()
	in.log.Info("instance ready", "load", time.Since(start).Round(time.Millisecond))
	in.set(cluster.InstanceReady, "")
	m.maybeProfile(ctx, in.spec)
}

// teardown unloads a stopped instance's model unless another assigned
// instance serves the same name; when the instance was removed it also
// deletes the repository directory.
func (m *member) teardown(in *instance, removed bool) {
	name := in.spec.ServedName
	if !repository.ValidName(name) {
		return
	}
	unlock, _ := m.names.lock(context.Background(), "model:"+name)
	defer unlock()
	m.mu.Lock()
	m.refs[name]--
	last := m.refs[name] <= 0
	if last {
		delete(m.refs, name)
		delete(m.stale, name)
	}
	m.mu.Unlock()
	if !last {
		in.log.Info("instance stopped; its model stays for another instance")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if err := m.cfg.Manager.UnloadModel(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		in.log.Warn("unloading model", "err", err)
	}
	if removed {
		if err := os.RemoveAll(filepath.Join(m.repo, name)); err != nil {
			in.log.Warn("removing repository directory", "err", err)
		}
	}
	in.log.Info("instance stopped", "unloaded", true, "removed", removed)
}

// modelConfig is the config.yaml an instance is served with: its
// application's spec.serving and spec.batching. The application was
// validated when it was deployed; a config that still fails is reported
// by the model's load.
func modelConfig(spec cluster.Instance) ([]byte, error) {
	c := repository.DefaultConfig()
	if spec.Serving != nil {
		c = spec.Serving.WithDefaults()
	}
	c.MaxBatchSize, c.MaxQueueDelayMS = spec.Batching.MaxBatchSize, spec.Batching.MaxQueueDelayMs
	return yaml.Marshal(c)
}

// install lays the instance out in the repository:
// <repo>/<served>/1/model.onnx (a hard link to the blob, or a copy) and
// <repo>/<served>/config.yaml. It reports whether anything changed.
func (m *member) install(spec cluster.Instance, blob string) (changed bool, err error) {
	dir := filepath.Join(m.repo, spec.ServedName)
	vdir := filepath.Join(dir, "1")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), []byte(spec.ID+"\n"), 0o644); err != nil {
		return false, fmt.Errorf("install: %w", err)
	}

	cfg, err := modelConfig(spec)
	if err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	cfgPath := filepath.Join(dir, repository.ConfigFile)
	if old, err := os.ReadFile(cfgPath); err != nil || string(old) != string(cfg) {
		changed = true
		if err := writeAtomic(cfgPath, cfg); err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
	}

	model := filepath.Join(vdir, repository.ModelFile)
	if same(model, blob) {
		return changed, nil
	}
	tmp := filepath.Join(vdir, "."+repository.ModelFile+".tmp")
	_ = os.Remove(tmp)
	if err := os.Link(blob, tmp); err != nil {
		if err := copyFile(blob, tmp); err != nil {
			return false, fmt.Errorf("install: copy %s: %w", blob, err)
		}
	}
	if err := os.Rename(tmp, model); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("install: %w", err)
	}
	return true, nil
}

// same reports whether the model file already holds the blob: the same
// file (hard link), or a copy of equal size and content.
func same(model, blob string) bool {
	a, err := os.Stat(model)
	if err != nil {
		return false
	}
	b, err := os.Stat(blob)
	if err != nil {
		return false
	}
	if os.SameFile(a, b) {
		return true
	}
	if a.Size() != b.Size() {
		return false
	}
	x, err := os.ReadFile(model)
	if err != nil {
		return false
	}
	y, err := os.ReadFile(blob)
	return err == nil && string(x) == string(y)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		_ = os.Remove(dst)
		return err
	}
	return out.Close()
}

// staleDirs lists repository directories this package wrote whose served
// name no assigned instance has. Called with m.mu held.
func (m *member) staleDirs() []string {
	entries, err := os.ReadDir(m.repo)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || m.refs[e.Name()] > 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(m.repo, e.Name(), markerFile)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// removeStale unloads and deletes the directory of an instance that was
// removed while the agent was away.
func (m *member) removeStale(name string) {
	unlock, err := m.names.lock(m.runCtx, "model:"+name)
	if err != nil {
		return
	}
	defer unlock()
	m.mu.Lock()
	assigned := m.refs[name] > 0
	m.mu.Unlock()
	if assigned {
		return
	}
	log := m.log.With("served", name)
	if ok, _ := m.cfg.Manager.ModelReady(m.runCtx, name, ""); ok {
		if err := m.cfg.Manager.UnloadModel(m.runCtx, name); err != nil {
			log.Warn("unloading a stale instance's model", "err", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(m.repo, name)); err != nil {
		log.Warn("removing a stale instance's directory", "err", err)
		return
	}
	log.Info("removed the directory of an instance no longer assigned")
}
