package member

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/accelpool/accelpool/agent/profile"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// maybeProfile measures an instance's model on this node the first time
// the registry has no profile for it on this accelerator kind, and stores
// the result, so the placement's latency models have data for the model
// as soon as it is first deployed. It runs after the instance is Ready,
// once per (model, kind) per agent process, in the background.
func (m *member) maybeProfile(ctx context.Context, spec cluster.Instance) {
	if !m.cfg.AutoProfile {
		return
	}
	kind := "cpu"
	for _, a := range m.cfg.Node.Accelerators {
		if a.ID == spec.Accelerator {
			kind = a.Kind
		}
	}
	key := spec.ModelName + "/" + kind
	m.mu.Lock()
	if m.profiled[key] {
		m.mu.Unlock()
		return
	}
	m.profiled[key] = true
	m.mu.Unlock()
	path := "/api/v1/profiles/" + url.PathEscape(spec.ModelName) + "/" + url.PathEscape(kind)
	var existing cluster.ModelProfile
	err := m.c.call(ctx, http.MethodGet, path, nil, &existing, 10*time.Second)
	if err == nil && existing.Digest == spec.ModelDigest {
		return
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		m.log.Warn("cannot read the profile registry; not profiling", "model", spec.ModelName, "err", err)
		m.mu.Lock()
		delete(m.profiled, key)
		m.mu.Unlock()
		return
	}
	modelFile := filepath.Join(m.repo, spec.ServedName, "1", repository.ModelFile)
	backend := m.cfg.Manager.Backend()
	opts := profile.Options{BatchSizes: []int{1, 2, 4, 8}, Concurrency: []int{1, 2, 4}, Iterations: 20, AcceleratorKind: kind}
	start := time.Now()
	p, err := profile.Run(ctx, backend, modelFile, spec.ModelName, opts, nil)
	if err != nil {
		m.log.Warn("profiling failed", "model", spec.ModelName, "kind", kind, "err", err)
		return
	}
	p.Digest = spec.ModelDigest
	p.Host = m.cfg.Node.Name + " (" + p.Host + ")"
	if err := m.c.call(ctx, http.MethodPut, path, p, nil, 10*time.Second); err != nil {
		m.log.Warn("storing the profile failed", "model", spec.ModelName, "err", err)
		return
	}
	m.log.Info("model profiled", "model", spec.ModelName, "kind", kind, "service_ms", p.ServiceMs[1],
		"memory", p.MemoryBytes, "took", time.Since(start).Round(time.Millisecond))
}
