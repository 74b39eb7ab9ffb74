package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accelpool/accelpool/agent/batch"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

// Response parameters: server-side timings of a successful inference, in
// microseconds (int64), so that a client can tell the node's work from the
// network's. PreprocessParameter is set only when the request sent encoded
// images that the agent decoded.
const (
	// QueueParameter is the time from batching Submit until the execution
	// that ran the request started.
	QueueParameter = "queue_us"
	// ComputeParameter is that execution's duration (the whole batch's).
	ComputeParameter = "compute_us"
	// PreprocessParameter is the time spent decoding and preprocessing
	// images on the request's goroutine, before it was queued.
	PreprocessParameter = "preprocess_us"
)

// MinImagesPerRequest is how many encoded images one request may carry
// for an input whose batch dimension is dynamic, or the model's
// max_batch_size if that is larger: each small file becomes a full-size
// tensor, so the count is bounded rather than left to the message size.
const MinImagesPerRequest = 64

// Model states, as the repository index reports them.
const (
	StateReady       = "READY"
	StateLoading     = "LOADING"
	StateUnloading   = "UNLOADING"
	StateUnavailable = "UNAVAILABLE"
)

// Config configures a Manager.
type Config struct {
	// Repository is the model repository directory.
	Repository string
	// Backend executes models.
	Backend runtime.Backend
	// Registry receives the metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// ServerName and Version answer server metadata.
	ServerName string
	Version    string
	// Providers, when set, is the default execution provider list for
	// models whose config.yaml names none.
	Providers []string
	// KeepGOMAXPROCS leaves GOMAXPROCS alone instead of adding a P per
	// executor (procs.go). The device proxy sets it: on a weak device
	// under a CPU quota the extra Ps spend the quota spinning — measured
	// with `bench offload`, the proxy used 4.0–4.2 ms of CPU per relayed
	// 1 MB answer with GOMAXPROCS 2 and 4.7–5.5 ms with the executors
	// added.
	KeepGOMAXPROCS bool
	// ImageDecodeBytes bounds the memory that encoded images being
	// decoded at once may take across all requests (preprocess.Budget);
	// 0 is DefaultImageDecodeBytes. A request waits for its share within
	// its deadline.
	ImageDecodeBytes int64
}

// DefaultImageDecodeBytes is Config.ImageDecodeBytes's default: room for
// two of the largest images at once, or hundreds of camera frames.
const DefaultImageDecodeBytes = 2 * preprocess.MaxImageBytes

// Manager serves the models of one repository on one backend. It
// implements oip.Service.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.RWMutex
	models map[string]*model
	closed bool

	loadMu sync.Mutex // serialises load/unload of models

	decode *preprocess.Budget // shared by every request's image decoding

	busyNanos atomic.Int64 // total execution time of every model
	procs     int          // GOMAXPROCS last set for the executors (procs.go); loadMu held
}

var _ oip.Service = (*Manager)(nil)

type model struct {
	name      string
	version   string
	versions  []string
	state     string
	reason    string
	cfg       repository.Config
	meta      runtime.Metadata
	session   runtime.Session
	sched     *batch.Scheduler
	batchable bool
	// pre holds, by input name, how to turn encoded images into that
	// input (config.yaml preprocess, resolved against the model).
	pre map[string]*imageInput
}

// imageInput is a preprocess entry resolved against the model's input.
type imageInput struct {
	spec preprocess.Spec
	// batch is the input's first dimension: -1 when dynamic.
	batch int64
}

// resolvePreprocess checks each preprocess entry of config.yaml against the
// model's inputs and fills in what the input's shape implies. Errors name
// the entry's field, as config.yaml errors do.
func resolvePreprocess(entries map[string]repository.ImageInput, inputs []runtime.IOSpec) (map[string]*imageInput, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := make(map[string]*imageInput, len(entries))
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		p := entries[name]
		field := "preprocess." + name
		bad := func(field, format string, a ...any) error {
			return errdefs.Invalid(fmt.Sprintf("%s: %s: %s", repository.ConfigFile, field, fmt.Sprintf(format, a...)))
		}
		i := slices.IndexFunc(inputs, func(s runtime.IOSpec) bool { return s.Name == name })
		if i < 0 {
			names := make([]string, len(inputs))
			for j, s := range inputs {
				names[j] = s.Name
			}
			return nil, bad(field, "the model has no input %q (its inputs: %s)", name, strings.Join(names, ", "))
		}
		in := inputs[i]
		shape := in.Shape
		if len(shape) != 4 {
			return nil, bad(field, "input %q has shape %v; images need a 4-D input (NCHW or NHWC)", name, shape)
		}
		if p.DataType != "" && p.DataType != in.DataType.String() {
			return nil, bad(field+".datatype", "%s, but the model input %q is %s", p.DataType, name, in.DataType)
		}
		if !preprocess.Supported(in.DataType) {
			return nil, bad(field, "input %q is %s; images can only become FP32, FP16 or UINT8 tensors", name, in.DataType)
		}
		layout := preprocess.Layout(p.Layout)
		if layout == "" {
			nchw, nhwc := shape[1] == 3, shape[3] == 3
			switch {
			case nchw && nhwc:
				return nil, bad(field+".layout", "input shape %v could be NCHW or NHWC; set layout", shape)
			case nchw:
				layout = preprocess.NCHW
			case nhwc:
				layout = preprocess.NHWC
			default:
				return nil, bad(field+".layout", "cannot infer it from input shape %v (neither dimension 1 nor 3 is 3); set layout", shape)
			}
		}
		c, hi, wi := 1, 2, 3
		if layout == preprocess.NHWC {
			c, hi, wi = 3, 1, 2
		}
		if shape[c] != 3 && shape[c] != -1 {
			return nil, bad(field+".layout", "%s puts the 3 colour channels in dimension %d, which is %d in input shape %v", layout, c, shape[c], shape)
		}
		size := func(key string, set int, dim int64) (int, error) {
			switch {
			case dim < 0 && set == 0:
				return 0, bad(field+"."+key, "the model input's %s is dynamic (shape %v); set %s", key, shape, key)
			case dim < 0:
				return set, nil
			case set != 0 && int64(set) != dim:
				return 0, bad(field+"."+key, "%d disagrees with the model input's fixed %s %d (shape %v)", set, key, dim, shape)
			case dim == 0 || dim > repository.MaxImageSide:
				return 0, bad(field+"."+key, "the model input's %s %d is outside 1..%d", key, dim, repository.MaxImageSide)
			}
			return int(dim), nil
		}
		w, err := size("width", p.Width, shape[wi])
		if err != nil {
			return nil, err
		}
		h, err := size("height", p.Height, shape[hi])
		if err != nil {
			return nil, err
		}
		spec := preprocess.Spec{Width: w, Height: h, Layout: layout, BGR: p.BGR, DataType: in.DataType, Scale: repository.DefaultImageScale}
		if in.DataType == tensor.Uint8 {
			spec.Scale = 1
		}
		if p.Scale != nil {
			spec.Scale = float32(*p.Scale)
		}
		spec.Std = [3]float32{1, 1, 1}
		for c := range p.Mean {
			spec.Mean[c] = float32(p.Mean[c])
		}
		for c := range p.Std {
			spec.Std[c] = float32(p.Std[c])
		}
		out[name] = &imageInput{spec: spec, batch: shape[0]}
	}
	return out, nil
}

// NewManager returns a Manager with no models loaded; call LoadAll or
// LoadModel.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Backend == nil {
		return nil, errors.New("agent: no runtime backend")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "accelpool"
	}
	if cfg.ImageDecodeBytes < 0 {
		return nil, fmt.Errorf("agent: image decode budget %d bytes is negative", cfg.ImageDecodeBytes)
	}
	if cfg.ImageDecodeBytes == 0 {
		cfg.ImageDecodeBytes = DefaultImageDecodeBytes
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "agent"), metrics: newMetrics(cfg.Registry), models: map[string]*model{},
		decode: preprocess.NewBudget(cfg.ImageDecodeBytes)}, nil
}

// LoadAll loads every model in the repository. A model that fails to load
// is recorded as UNAVAILABLE with its reason; the others keep loading. The
// returned error only reports an unreadable repository.
func (m *Manager) LoadAll(ctx context.Context) error {
	found, err := repository.Scan(m.cfg.Repository)
	if err != nil {
		return err
	}
	for _, f := range found {
		if err := m.LoadModel(ctx, f.Name); err != nil {
			m.log.Warn("model not loaded", "model", f.Name, "err", err)
		}
	}
	return nil
}

// ServerMetadata implements oip.Service.
func (m *Manager) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: m.cfg.ServerName, Version: m.cfg.Version,
		Extensions: []string{"binary_tensor_data", "classification", "model_repository", "parameters"}}
}

// Live implements oip.Service.
func (m *Manager) Live() bool { return true }

// Ready implements oip.Service: the server is ready when it is open and
// every model it tried to load is ready (as Triton's strict readiness).
func (m *Manager) Ready() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return false
	}
	for _, md := range m.models {
		if md.state == StateLoading {
			return false
		}
	}
	return true
}

// lookup finds a model by name and optional version.
func (m *Manager) lookup(name, version string) (*model, error) {
	m.mu.RLock()
	md := m.models[name]
	m.mu.RUnlock()
	if md == nil {
		return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown model %q", name))
	}
	if err := oip.CheckVersion(version); err != nil {
		return nil, err
	}
	if version != "" && version != md.version {
		for _, v := range md.versions {
			if v == version {
				return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model %q version %q is not loaded (serving version %s)", name, version, md.version))
			}
		}
		return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown version %q of model %q", version, name))
	}
	return md, nil
}

func (m *Manager) ready(name, version string) (*model, error) {
	md, err := m.lookup(name, version)
	if err != nil {
		return nil, err
	}
	if md.state != StateReady {
		reason := md.state
		if md.reason != "" {
			reason += ": " + md.reason
		}
		return nil, errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("model %q is not ready (%s)", name, reason))
	}
	return md, nil
}

// ModelMetadata implements oip.Service.
func (m *Manager) ModelMetadata(_ context.Context, name, version string) (oip.ModelMetadata, error) {
	md, err := m.ready(name, version)
	if err != nil {
		return oip.ModelMetadata{}, err
	}
	conv := func(specs []runtime.IOSpec) []oip.TensorMetadata {
		out := make([]oip.TensorMetadata, len(specs))
		for i, s := range specs {
			out[i] = oip.TensorMetadata{Name: s.Name, DataType: s.DataType, Shape: append([]int64(nil), s.Shape...)}
		}
		return out
	}
	return oip.ModelMetadata{Name: md.name, Versions: []string{md.version}, Platform: "onnxruntime_onnx",
		Inputs: conv(md.meta.Inputs), Outputs: conv(md.meta.Outputs)}, nil
}

// ModelReady implements oip.Service.
func (m *Manager) ModelReady(_ context.Context, name, version string) (bool, error) {
	md, err := m.lookup(name, version)
	if err != nil {
		return false, err
	}
	return md.state == StateReady, nil
}

// RepositoryIndex implements oip.Service: every model in the repository,
// loaded or not.
func (m *Manager) RepositoryIndex(_ context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	found, err := repository.Scan(m.cfg.Repository)
	if err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	seen := map[string]bool{}
	var out []oip.ModelIndexEntry
	add := func(e oip.ModelIndexEntry) {
		if !readyOnly || e.State == StateReady {
			out = append(out, e)
		}
	}
	for _, f := range found {
		seen[f.Name] = true
		if md := m.models[f.Name]; md != nil {
			add(oip.ModelIndexEntry{Name: md.name, Version: md.version, State: md.state, Reason: md.reason})
			continue
		}
		add(oip.ModelIndexEntry{Name: f.Name, Version: f.Latest(), State: StateUnavailable, Reason: "not loaded"})
	}
	for name, md := range m.models {
		if !seen[name] {
			add(oip.ModelIndexEntry{Name: md.name, Version: md.version, State: md.state, Reason: md.reason})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// LoadModel implements oip.Service: loads (or reloads) the latest version
// of a model from the repository. On failure the model is recorded as
// UNAVAILABLE with the reason and the error is returned; a model that was
// serving before a failed reload keeps serving.
func (m *Manager) LoadModel(ctx context.Context, name string) error {
	if !repository.ValidName(name) {
		return errdefs.Invalid(fmt.Sprintf("invalid model name %q", name))
	}
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	m.mu.RLock()
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return errdefs.New(errdefs.ErrUnavailable, "server is shutting down")
	}
	f, ok, err := repository.Read(m.cfg.Repository, name)
	if err != nil {
		return err
	}
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model %q is not in the repository %s (want %s/%s/<version>/%s)", name, m.cfg.Repository, m.cfg.Repository, name, repository.ModelFile))
	}
	fail := func(err error) error {
		m.mu.Lock()
		if old := m.models[name]; old == nil || old.state != StateReady {
			m.models[name] = &model{name: name, version: f.Latest(), versions: f.Versions, state: StateUnavailable, reason: err.Error()}
		}
		m.mu.Unlock()
		if ctx.Err() != nil { // stopped (shutdown, instance removed), not broken
			m.log.Info("model load stopped", "model", name, "version", f.Latest(), "err", err)
		} else {
			m.log.Error("model load failed", "model", name, "version", f.Latest(), "err", err)
		}
		return fmt.Errorf("load model %q: %w", name, err)
	}
	if f.ConfigErr != nil {
		return fail(f.ConfigErr)
	}
	m.mu.Lock()
	if old := m.models[name]; old == nil || old.state != StateReady {
		m.models[name] = &model{name: name, version: f.Latest(), versions: f.Versions, state: StateLoading}
	}
	m.mu.Unlock()

	providers := f.Config.Providers
	if len(providers) == 0 {
		providers = m.cfg.Providers
	}
	start := time.Now()
	sess, err := m.cfg.Backend.Load(ctx, f.Path(f.Latest()), runtime.Options{
		IntraOpThreads: f.Config.IntraOpThreads, InterOpThreads: f.Config.InterOpThreads, Providers: providers,
		AllowSpinning: f.Config.AllowSpinning})
	if err != nil {
		return fail(err)
	}
	m.metrics.loadTime.WithLabelValues(name).Observe(time.Since(start).Seconds())
	meta := sess.Metadata()
	pre, err := resolvePreprocess(f.Config.Preprocess, meta.Inputs)
	if err != nil {
		if cerr := sess.Close(); cerr != nil {
			m.log.Warn("closing session", "model", name, "err", cerr)
		}
		return fail(err)
	}
	batchable := f.Config.MaxBatchSize > 1 && meta.Batchable()
	if f.Config.MaxBatchSize > 1 && !batchable {
		m.log.Warn("dynamic batching off: the model's inputs and outputs do not all have a dynamic first dimension", "model", name)
	}
	md := &model{name: name, version: f.Latest(), versions: f.Versions, state: StateReady, cfg: f.Config, meta: meta, session: sess, batchable: batchable, pre: pre}
	observe := m.metrics.batch(name)
	bcfg := batch.Config{Name: name, QueueSize: f.Config.MaxQueueSize, Concurrency: f.Config.Concurrency,
		MaxDelay: f.Config.QueueDelay(), OnBatch: func(rows, requests int, d time.Duration) {
			m.busyNanos.Add(int64(d))
			observe(rows, requests, d)
		}}
	if batchable {
		bcfg.MaxBatchSize = f.Config.MaxBatchSize
	}
	md.sched = batch.New(bcfg, sess.Run)

	m.mu.Lock()
	old := m.models[name]
	m.models[name] = md
	m.mu.Unlock()
	if old != nil && old.sched != nil {
		m.retire(old)
	}
	m.updateLoaded()
	m.log.Info("model loaded", "model", name, "version", md.version, "provider", sess.Provider(),
		"inputs", len(meta.Inputs), "outputs", len(meta.Outputs), "batching", batchable, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// retire drains a model's queue and frees its session.
func (m *Manager) retire(md *model) {
	md.sched.Close()
	if err := md.session.Close(); err != nil {
		m.log.Warn("closing session", "model", md.name, "err", err)
	}
}

// UnloadModel implements oip.Service: stops accepting requests for the
// model, lets queued ones finish and frees its session.
func (m *Manager) UnloadModel(_ context.Context, name string) error {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	m.mu.Lock()
	md := m.models[name]
	if md == nil {
		m.mu.Unlock()
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("unknown model %q", name))
	}
	m.models[name] = &model{name: name, version: md.version, versions: md.versions, state: StateUnloading}
	m.mu.Unlock()
	if md.sched != nil {
		m.retire(md)
	}
	m.mu.Lock()
	m.models[name] = &model{name: name, version: md.version, versions: md.versions, state: StateUnavailable, reason: "unloaded"}
	m.mu.Unlock()
	m.updateLoaded()
	m.log.Info("model unloaded", "model", name)
	return nil
}

func (m *Manager) updateLoaded() {
	m.mu.RLock()
	n, executors := 0, 0
	for _, md := range m.models {
		if md.state == StateReady {
			n++
			executors += max(md.cfg.Concurrency, 1)
		}
	}
	m.mu.RUnlock()
	m.metrics.loaded.Set(float64(n))
	if m.cfg.KeepGOMAXPROCS {
		return
	}
	if procs := setExecutors(m, executors); procs != m.procs {
		m.procs = procs
		m.log.Debug("GOMAXPROCS sized for the executors", "executors", executors, "gomaxprocs", procs)
	}
}

// Close unloads every model. Queued requests finish first.
func (m *Manager) Close() error {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	m.mu.Lock()
	m.closed = true
	models := m.models
	m.models = map[string]*model{}
	m.mu.Unlock()
	for _, md := range models {
		if md.sched != nil {
			m.retire(md)
		}
	}
	m.metrics.loaded.Set(0)
	if !m.cfg.KeepGOMAXPROCS {
		setExecutors(m, 0)
	}
	return nil
}

// Infer implements oip.Service.
func (m *Manager) Infer(ctx context.Context, req *oip.InferRequest) (resp *oip.InferResponse, err error) {
	defer func() {
		outcome := "success"
		if err != nil {
			outcome = errdefs.Outcome(err)
		}
		m.metrics.requests.WithLabelValues(metricModel(m, req.ModelName), outcome).Inc()
	}()
	for attempt := 0; ; attempt++ {
		md, err := m.ready(req.ModelName, req.ModelVersion)
		if err != nil {
			return nil, err
		}
		resp, err := m.inferOn(ctx, md, req)
		if attempt == 0 && errors.Is(err, batch.ErrClosed) && m.replaced(md) {
			// Looked up just before a reload retired this version, and
			// refused by its closed queue (nothing ran): the new version
			// serves the request (checked against its own inputs), once.
			// A request that timed out or was canceled is not retried.
			if testHookRetry != nil {
				testHookRetry()
			}
			continue
		}
		return resp, err
	}
}

// testHookBeforeSubmit and testHookRetry let a test reload a model between
// a request's lookup and its submission, and see the retry.
var testHookBeforeSubmit, testHookRetry func()

// replaced reports whether another model now holds md's name.
func (m *Manager) replaced(md *model) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.models[md.name] != md
}

// inferOn runs a request on one loaded version of a model.
func (m *Manager) inferOn(ctx context.Context, md *model, req *oip.InferRequest) (*oip.InferResponse, error) {
	inputs, outputs, images, err := validate(md, req)
	if err != nil {
		return nil, err
	}
	if _, has := ctx.Deadline(); !has && md.cfg.DefaultTimeout() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, md.cfg.DefaultTimeout())
		defer cancel()
	}
	var preTime time.Duration
	if len(images) > 0 {
		// On the request's goroutine, so requests decode in parallel and
		// the executors only run the model.
		start := time.Now()
		if err := decodeImages(ctx, md.name, inputs, images, m.decode); err != nil {
			return nil, err
		}
		preTime = time.Since(start)
	}
	if testHookBeforeSubmit != nil {
		testHookBeforeSubmit()
	}
	m.metrics.queueLen.WithLabelValues(md.name).Set(float64(md.sched.QueueLen()))
	res, err := md.sched.Submit(ctx, inputs, outputs)
	if err != nil {
		return nil, err
	}
	m.metrics.queueTime.WithLabelValues(md.name).Observe(res.QueueTime.Seconds())
	for _, o := range req.Outputs {
		k, _ := classifyCount(o) // checked by validate
		if k == 0 {
			continue
		}
		for i := range res.Outputs {
			if res.Outputs[i].Name == o.Name {
				if res.Outputs[i], err = classify(res.Outputs[i], k, md.cfg.MaxBatchSize > 0); err != nil {
					return nil, fmt.Errorf("model %q: %w", md.name, err)
				}
			}
		}
	}
	params := oip.Parameters{QueueParameter: res.QueueTime.Microseconds(), ComputeParameter: res.ComputeTime.Microseconds()}
	if len(images) > 0 {
		params[PreprocessParameter] = preTime.Microseconds()
	}
	return &oip.InferResponse{ModelName: md.name, ModelVersion: md.version, ID: req.ID, Parameters: params, Outputs: res.Outputs}, nil
}

// imageJob is an input sent as encoded images, to be decoded into
// inputs[index].
type imageJob struct {
	index  int
	name   string
	images [][]byte
	pre    *imageInput
}

// decodeImages decodes and preprocesses every image job into inputs within
// budget, checking ctx between images.
func decodeImages(ctx context.Context, model string, inputs []tensor.Tensor, jobs []imageJob, budget *preprocess.Budget) error {
	for _, j := range jobs {
		t, err := preprocess.Images(ctx, j.name, j.images, j.pre.spec, budget)
		switch {
		case errors.Is(err, context.Canceled):
			return errdefs.New(errdefs.ErrCanceled, fmt.Sprintf("model %q: input %q: request canceled while decoding images", model, j.name))
		case errors.Is(err, context.DeadlineExceeded):
			return errdefs.New(errdefs.ErrDeadline, fmt.Sprintf("model %q: input %q: deadline exceeded while decoding images", model, j.name))
		case err != nil:
			return fmt.Errorf("model %q: input %q: %w", model, j.name, err)
		}
		inputs[j.index] = t
	}
	return nil
}

// imageRequest checks an input sent as encoded images for a model input
// with a preprocess entry and returns the job that will decode it.
func imageRequest(md *model, spec runtime.IOSpec, in *oip.InferInput, pre *imageInput, index int) (imageJob, error) {
	invalid := func(format string, a ...any) error {
		return errdefs.Invalid(fmt.Sprintf("model %q: input %q: ", md.name, spec.Name) + fmt.Sprintf(format, a...))
	}
	if len(in.Shape) != 1 || in.Shape[0] < 1 {
		return imageJob{}, invalid("encoded images take BYTES of shape [N], N ≥ 1, one %s file per element; got shape %v", preprocess.Formats, in.Shape)
	}
	n := in.Shape[0]
	switch limit := max(MinImagesPerRequest, int64(md.cfg.MaxBatchSize), pre.batch); {
	case pre.batch >= 0 && n != pre.batch:
		return imageJob{}, invalid("%d images, but the model's batch dimension is fixed at %d (shape %v): send %d per request", n, pre.batch, spec.Shape, pre.batch)
	case n > limit:
		return imageJob{}, invalid("%d images is more than the %d one request may carry", n, limit)
	}
	images, err := tensor.SplitBytes(in.Data, n)
	if err != nil {
		return imageJob{}, fmt.Errorf("model %q: input %q: %w", md.name, spec.Name, err)
	}
	return imageJob{index: index, name: spec.Name, images: images, pre: pre}, nil
}

// metricModel bounds label cardinality: unknown model names share a label.
func metricModel(m *Manager, name string) string {
	m.mu.RLock()
	_, ok := m.models[name]
	m.mu.RUnlock()
	if !ok {
		return "_unknown"
	}
	return name
}

// validate checks a request against the model's metadata and returns the
// inputs in model order, the outputs to compute (nil: all) and the inputs
// sent as encoded images, whose places in inputs are left empty for
// decodeImages.
func validate(md *model, req *oip.InferRequest) ([]tensor.Tensor, []string, []imageJob, error) {
	if err := checkSequence(req.Parameters); err != nil {
		return nil, nil, nil, fmt.Errorf("model %q: %w", md.name, err)
	}
	byName := make(map[string]*oip.InferInput, len(req.Inputs))
	for i := range req.Inputs {
		in := &req.Inputs[i]
		if _, dup := byName[in.Name]; dup {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("input %q given twice", in.Name))
		}
		byName[in.Name] = in
	}
	inputs := make([]tensor.Tensor, 0, len(md.meta.Inputs))
	var images []imageJob
	for _, spec := range md.meta.Inputs {
		in := byName[spec.Name]
		if in == nil {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q: missing input %q", md.name, spec.Name))
		}
		delete(byName, spec.Name)
		if in.DataType == tensor.Bytes && spec.DataType != tensor.Bytes {
			pre := md.pre[spec.Name]
			if pre == nil {
				return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q: input %q has datatype BYTES, model expects %s (encoded images are accepted only for inputs with a preprocess entry in the model's %s)", md.name, spec.Name, spec.DataType, repository.ConfigFile))
			}
			job, err := imageRequest(md, spec, in, pre, len(inputs))
			if err != nil {
				return nil, nil, nil, err
			}
			images = append(images, job)
			inputs = append(inputs, tensor.Tensor{})
			continue
		}
		if in.DataType != spec.DataType {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q: input %q has datatype %s, model expects %s", md.name, spec.Name, in.DataType, spec.DataType))
		}
		if !shapeMatches(spec.Shape, in.Shape) {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q: input %q has shape %v, model expects %v (-1 = any)", md.name, spec.Name, in.Shape, spec.Shape))
		}
		if err := in.Tensor.Validate(); err != nil {
			return nil, nil, nil, fmt.Errorf("model %q: %w", md.name, err)
		}
		inputs = append(inputs, in.Tensor)
	}
	for name := range byName {
		return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q has no input %q", md.name, name))
	}
	if len(req.Outputs) == 0 {
		return inputs, nil, images, nil
	}
	outputs := make([]string, 0, len(req.Outputs))
	seen := map[string]bool{}
	for _, o := range req.Outputs {
		if seen[o.Name] {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("output %q requested twice", o.Name))
		}
		seen[o.Name] = true
		i := slices.IndexFunc(md.meta.Outputs, func(spec runtime.IOSpec) bool { return spec.Name == o.Name })
		if i < 0 {
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q has no output %q", md.name, o.Name))
		}
		switch k, err := classifyCount(o); {
		case err != nil:
			return nil, nil, nil, fmt.Errorf("model %q: %w", md.name, err)
		case k > 0 && md.meta.Outputs[i].DataType == tensor.Bytes:
			return nil, nil, nil, errdefs.Invalid(fmt.Sprintf("model %q: output %q is BYTES; classification needs a numeric output", md.name, o.Name))
		}
		outputs = append(outputs, o.Name)
	}
	return inputs, outputs, images, nil
}

func shapeMatches(want, got []int64) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if want[i] >= 0 && want[i] != got[i] {
			return false
		}
	}
	return true
}

// QueueLength is the number of requests waiting for a loaded model (0
// when the model is not loaded).
func (m *Manager) QueueLength(name string) int {
	m.mu.RLock()
	md := m.models[name]
	m.mu.RUnlock()
	if md == nil || md.sched == nil {
		return 0
	}
	return md.sched.QueueLen()
}

// Busy is the total time models have spent executing since the Manager
// started; its growth over an interval, divided by the interval, is the
// node's utilisation.
func (m *Manager) Busy() time.Duration { return time.Duration(m.busyNanos.Load()) }

// Backend is the runtime the Manager loads models into.
func (m *Manager) Backend() runtime.Backend { return m.cfg.Backend }
