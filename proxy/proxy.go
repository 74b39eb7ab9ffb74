package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/offload"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/tensor"
)

// ServerName is what ServerMetadata reports.
const ServerName = "accelpool-proxy"

// Response parameters the proxy adds.
const (
	ParamTarget    = "accelpool_target"
	ParamPredicted = "accelpool_predicted_us"
	ParamAttempts  = "accelpool_attempts"
	// ParamCompressed is true on an answer that crossed the link with
	// zero-run compression.
	ParamCompressed = "accelpool_compressed"
)

// Compression of the link to a target (Config.Compress): each request and
// its answer may cross it compressed with internal/zrun, which removes runs
// of zero bytes. Detection maps and masks are mostly zeros and shrink
// several times for a decoding cost of a memclr; dense tensors do not
// shrink and pay a copy.
const (
	// CompressAuto offers each target plain, and compressed too once a
	// sampled plain answer of the model there (the first, then one every
	// shrinkEvery; see learnAnswer) shrinks below worthShrink. The two
	// options are then each explored once and predicted from what they
	// measured, so compression is used where it makes answers arrive
	// sooner.
	CompressAuto = "auto"
	// CompressAlways offers each target compressed only, CompressNever
	// plain only. Whatever the mode, a target that refused a compressed
	// request (see compressionRefused) and then answered it plain is
	// offered plain only from then on.
	CompressAlways = "always"
	CompressNever  = "never"
)

// LocalName is the option name of the device itself.
const LocalName = "local"

// Modes restrict the options, for baselines and debugging.
const (
	ModeAuto   = "auto"   // the fastest predicted option (default)
	ModeLocal  = "local"  // the device only
	ModeRemote = "remote" // remote targets only
)

// Defaults for Config fields left zero.
const (
	DefaultProbeInterval     = time.Second
	DefaultBandwidthEvery    = 5
	DefaultTimeout           = 30 * time.Second
	DefaultDiscoverInterval  = 5 * time.Second
	DefaultProbeTimeout      = 2 * time.Second
	DefaultRefreshAfter      = 30 * time.Second
	defaultProbeBytes        = 64 << 10
	minProbeBytes, maxProbeB = 16 << 10, 256 << 10
	// probeWindow is how long a bandwidth probe's transfers should take at
	// the last estimate, up to maxProbeB: a few slices of a slow device's
	// CPU quota, so that probes from it agree with each other (they cannot
	// tell a fast link's bandwidth, only say when it changes).
	probeWindow = 20 * time.Millisecond
)

// Target is a remote Open Inference Protocol endpoint: an agent or a
// gateway.
type Target struct {
	// Name identifies it (a node name, or what the user called it).
	Name string
	// Addr is its gRPC address, host:port.
	Addr string
	// Tier (device, edge, cloud) and Site say where it is.
	Tier, Site string
	// Models maps the model names the device asks for to the names the
	// target serves them under. Nil means the target serves every model
	// under the name asked for (a gateway, or a fixed agent).
	Models map[string]string
}

// serves reports whether t serves model and under which name.
func (t Target) serves(model string) (string, bool) {
	if t.Models == nil {
		return model, true
	}
	s, ok := t.Models[model]
	return s, ok
}

// Config configures a Proxy.
type Config struct {
	// Local runs models on the device; nil when it runs none.
	Local oip.Service
	// Targets are fixed remote endpoints.
	Targets []Target
	// Discover, when set, returns more targets (from the control plane);
	// it is called at start and every DiscoverInterval. A failed call
	// keeps the targets of the last good one.
	Discover         func(context.Context) ([]Target, error)
	DiscoverInterval time.Duration
	// ProbeInterval is how often each link's round trip is probed
	// (default 1s); BandwidthEvery is every how many probes bandwidth is
	// measured too (default 5).
	ProbeInterval  time.Duration
	BandwidthEvery int
	// RefreshAfter is how long a remote option may go without an answer
	// for a model before one request explores it again (default 30s;
	// negative: never). Probes follow a link, but only answers tell the
	// far end's own time, which its load changes: without a refresh a
	// target judged slow once would stay unused however fast it became.
	// The refresh's answer restarts the option's estimates.
	RefreshAfter time.Duration
	// Timeout bounds requests that bring no deadline (default 30s).
	Timeout time.Duration
	// Mode restricts the options: ModeAuto (default), ModeLocal, ModeRemote.
	Mode string
	// Compress is CompressAuto (default), CompressAlways or CompressNever.
	Compress string
	// DialOptions apply to every connection to a target, after the
	// defaults (plaintext, large messages), which they override.
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
	Registry    prometheus.Registerer
	Version     string
}

// Proxy is an oip.Service that runs each request where it will finish
// soonest. Create it with New; stop it with Close.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu      sync.RWMutex
	targets map[string]*target // by name
	local   map[string]*localStats

	// busy counts the requests in the proxy; bandwidth probes wait until
	// it is zero (a probe would slow a request on a device with little
	// CPU, and be slowed by it).
	busy atomic.Int64
	// arrived counts the requests that entered the proxy: a bandwidth
	// probe that a request overlapped (it changed, or busy is non-zero at
	// the probe's end) shared the link and the device's CPU with it and is
	// not a measurement of the link.
	arrived atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

var _ oip.Service = (*Proxy)(nil)

// localStats is what is known about running one model on the device.
type localStats struct {
	mu       sync.Mutex
	service  offload.Mean // nanoseconds per request, without queueing
	overhead offload.Recent
	inflight atomic.Int64
}

// New starts a Proxy: it connects to the fixed targets, runs discovery
// once (an error is logged, not returned: targets may come later) and
// starts probing. It returns an error only for a bad Config.
func New(cfg Config) (*Proxy, error) {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.BandwidthEvery <= 0 {
		cfg.BandwidthEvery = DefaultBandwidthEvery
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RefreshAfter == 0 {
		cfg.RefreshAfter = DefaultRefreshAfter
	}
	if cfg.DiscoverInterval <= 0 {
		cfg.DiscoverInterval = DefaultDiscoverInterval
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeAuto
	case ModeAuto, ModeLocal, ModeRemote:
	default:
		return nil, errdefs.Invalid(fmt.Sprintf("proxy mode %q is not one of auto, local, remote", cfg.Mode))
	}
	switch cfg.Compress {
	case "":
		cfg.Compress = CompressAuto
	case CompressAuto, CompressAlways, CompressNever:
	default:
		return nil, errdefs.Invalid(fmt.Sprintf("proxy compression %q is not one of auto, always, never", cfg.Compress))
	}
	if cfg.Mode == ModeLocal && cfg.Local == nil {
		return nil, errdefs.Invalid("proxy mode local needs local models")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	seen := map[string]bool{}
	for _, t := range cfg.Targets {
		if t.Name == "" || t.Addr == "" {
			return nil, errdefs.Invalid(fmt.Sprintf("target %+v needs a name and an address", t))
		}
		if t.Name == LocalName || seen[t.Name] {
			return nil, errdefs.Invalid(fmt.Sprintf("target name %q is used twice or reserved", t.Name))
		}
		seen[t.Name] = true
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "proxy"),
		metrics: newMetrics(cfg.Registry),
		targets: map[string]*target{},
		local:   map[string]*localStats{},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := p.setTargets(cfg.Targets, nil); err != nil {
		p.Close()
		return nil, err
	}
	if cfg.Discover != nil {
		p.discover()
		p.wg.Add(1)
		go p.discoverLoop()
	}
	return p, nil
}

// Close stops probing and discovery and closes the connections. Requests
// in flight finish or fail on their own deadlines.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, t := range p.targets {
		t.close()
		delete(p.targets, name)
	}
	return nil
}

// ServerMetadata implements oip.Service.
func (p *Proxy) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: ServerName, Version: p.cfg.Version}
}

// Live implements oip.Service.
func (p *Proxy) Live() bool { return !p.closed.Load() }

// Ready is true when some option exists: local models or a target.
func (p *Proxy) Ready() bool {
	if p.closed.Load() {
		return false
	}
	if p.cfg.Local != nil && p.cfg.Mode != ModeRemote && p.cfg.Local.Ready() {
		return true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg.Mode != ModeLocal && len(p.targets) > 0
}

// ModelMetadata asks the local runtime, then each target serving the model.
func (p *Proxy) ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error) {
	var md oip.ModelMetadata
	err := p.each(ctx, name, func(ctx context.Context, s oip.Service, served string) error {
		m, err := s.ModelMetadata(ctx, served, version)
		if err == nil {
			m.Name = name
			md = m
		}
		return err
	})
	return md, err
}

// ModelReady is true when some option serves the model ready.
func (p *Proxy) ModelReady(ctx context.Context, name, version string) (bool, error) {
	ready := false
	err := p.each(ctx, name, func(ctx context.Context, s oip.Service, served string) error {
		ok, err := s.ModelReady(ctx, served, version)
		if err == nil && !ok {
			err = errdefs.New(errdefs.ErrUnavailable, "not ready")
		}
		ready = err == nil
		return err
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, err
	}
	return ready, nil
}

// each calls f on the options for model in order (local first) until one
// succeeds; the last error, or ErrNotFound when there is no option.
func (p *Proxy) each(ctx context.Context, model string, f func(context.Context, oip.Service, string) error) error {
	var last error
	if p.cfg.Local != nil && p.cfg.Mode != ModeRemote {
		if last = f(ctx, p.cfg.Local, model); last == nil {
			return nil
		}
	}
	if p.cfg.Mode != ModeLocal {
		for _, t := range p.targetsFor(model) {
			cctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
			served, _ := t.servedName(model)
			last = f(cctx, t.client, served)
			cancel()
			if last == nil {
				return nil
			}
		}
	}
	if last == nil {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model %q: not on this device and no reachable target serves it", model))
	}
	return last
}

// RepositoryIndex lists the local models and the models targets serve.
func (p *Proxy) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	var out []oip.ModelIndexEntry
	seen := map[string]bool{}
	if p.cfg.Local != nil && p.cfg.Mode != ModeRemote {
		idx, err := p.cfg.Local.RepositoryIndex(ctx, readyOnly)
		if err != nil {
			return nil, err
		}
		for _, e := range idx {
			seen[e.Name] = true
			out = append(out, e)
		}
	}
	if p.cfg.Mode != ModeLocal {
		p.mu.RLock()
		for _, t := range p.targets {
			for m := range t.spec.Models {
				if !seen[m] {
					seen[m] = true
					out = append(out, oip.ModelIndexEntry{Name: m, State: "READY", Reason: "served by " + t.spec.Name})
				}
			}
		}
		p.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b oip.ModelIndexEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// LoadModel loads a model into the device's own runtime.
func (p *Proxy) LoadModel(ctx context.Context, name string) error {
	if p.cfg.Local == nil {
		return errdefs.New(errdefs.ErrUnavailable, "this proxy runs no models locally (start it with --models)")
	}
	return p.cfg.Local.LoadModel(ctx, name)
}

// UnloadModel unloads a model from the device's own runtime.
func (p *Proxy) UnloadModel(ctx context.Context, name string) error {
	if p.cfg.Local == nil {
		return errdefs.New(errdefs.ErrUnavailable, "this proxy runs no models locally")
	}
	return p.cfg.Local.UnloadModel(ctx, name)
}

// localFor returns the local stats of model if the device can run it now.
func (p *Proxy) localFor(ctx context.Context, model, version string) *localStats {
	if p.cfg.Local == nil || p.cfg.Mode == ModeRemote {
		return nil
	}
	if ok, err := p.cfg.Local.ModelReady(ctx, model, version); err != nil || !ok {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := p.local[model]
	if ls == nil {
		ls = &localStats{}
		p.local[model] = ls
	}
	return ls
}

// targetsFor lists the targets serving model, by name.
func (p *Proxy) targetsFor(model string) []*target {
	if p.cfg.Mode == ModeLocal {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []*target
	for _, t := range p.targets {
		if _, ok := t.spec.serves(model); ok {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *target) int { return strings.Compare(a.spec.Name, b.spec.Name) })
	return out
}

// inputBytes is what a request puts on the wire, near enough.
func inputBytes(req *oip.InferRequest) int64 {
	var n int64
	for i := range req.Inputs {
		n += WireBytes(req.Inputs[i].Tensor)
	}
	return n
}

// WireBytes is what tensors take on the wire, near enough: their data,
// names and shapes, and a few bytes of framing each.
func WireBytes(ts ...tensor.Tensor) int64 {
	var n int64
	for _, t := range ts {
		n += int64(len(t.Data)) + int64(len(t.Name)) + 8*int64(len(t.Shape)) + 16
	}
	return n
}

// Infer implements oip.Service: it ranks the options and tries them in
// order until one answers.
func (p *Proxy) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	ctx, cancel := p.requestContext(ctx)
	defer cancel()
	pl, err := p.plan(ctx, req.ModelName, req.ModelVersion, inputBytes(req))
	if err != nil {
		return nil, err
	}
	return p.run(ctx, pl, 0, req)
}

// requestContext gives ctx the proxy's default deadline when it has none
// and counts the request as in the proxy until cancel is called.
func (p *Proxy) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	p.busy.Add(1)
	p.arrived.Add(1)
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() { p.busy.Add(-1) }
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	return ctx, func() { cancel(); p.busy.Add(-1) }
}

// plan is one request's options, ranked, and its attempts so far.
type plan struct {
	model  string
	in     int64 // input bytes, as WireBytes counts them
	start  time.Time
	ls     *localStats
	ranked []offload.Predicted
	byName map[string]*target
	errs   []string
	// failedTargets are the targets an attempt failed on: their other
	// option (compressed or not) is skipped, it would fail alike. A
	// compressed attempt the target refused for its compression is not
	// counted: the plain one may well succeed.
	failedTargets map[string]bool
	// refused are the targets that answered a compressed attempt
	// Unimplemented, with that error: if their plain attempt answers,
	// they are taken to have no zero-run decompressor.
	refused map[string]error
}

// offerPlain makes sure pl tries t's plain option after the i'th: when
// t's compression was refused in a plan that offered it compressed only
// (CompressAlways), the plain option takes the refused one's place.
func (pl *plan) offerPlain(i int, t *target) {
	if slices.ContainsFunc(pl.ranked, func(o offload.Predicted) bool { return !o.Local && !o.Compressed && o.Name == t.spec.Name }) {
		return
	}
	plain := offload.Rank([]offload.Option{t.option(pl.model, pl.in, false)}, pl.in, 0)[0]
	pl.ranked = slices.Insert(pl.ranked, i+1, plain)
}

// nextAfter is the option to try after option i: the next one whose target
// has not failed in this request; len(pl.ranked) when there is none.
func (pl *plan) nextAfter(i int) int {
	for j := i + 1; j < len(pl.ranked); j++ {
		if o := pl.ranked[j]; o.Local || !pl.failedTargets[o.Name] {
			return j
		}
	}
	return len(pl.ranked)
}

// plan ranks the options for a request of in bytes for model.
func (p *Proxy) plan(ctx context.Context, model, version string, in int64) (*plan, error) {
	if p.closed.Load() {
		return nil, errdefs.New(errdefs.ErrUnavailable, "proxy is shutting down")
	}
	pl := &plan{model: model, in: in, start: time.Now()}
	pl.ls = p.localFor(ctx, model, version)
	targets := p.targetsFor(model)
	if pl.ls == nil && len(targets) == 0 {
		p.metrics.request(unknownModel, "none", "not_found")
		return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model %q: this device cannot run it and no reachable target serves it", model))
	}
	opts := make([]offload.Option, 0, len(targets)+1)
	if pl.ls != nil {
		opts = append(opts, pl.ls.option())
	}
	for _, t := range targets {
		takes := t.takesCompression()
		if p.cfg.Compress != CompressAlways || !takes {
			opts = append(opts, t.option(model, in, false))
		}
		if takes && (p.cfg.Compress == CompressAlways || p.cfg.Compress == CompressAuto && t.compressible(model)) {
			opts = append(opts, t.option(model, in, true))
		}
	}
	dl, _ := ctx.Deadline()
	pl.ranked = offload.Rank(opts, in, time.Until(dl))
	pl.byName = make(map[string]*target, len(targets))
	for _, t := range targets {
		pl.byName[t.spec.Name] = t
	}
	return pl, nil
}

// run tries the options of pl from the from'th on, in order, until one
// answers.
func (p *Proxy) run(ctx context.Context, pl *plan, from int, req *oip.InferRequest) (*oip.InferResponse, error) {
	for i := from; i < len(pl.ranked); i = pl.nextAfter(i) {
		if ctx.Err() != nil {
			break
		}
		opt := pl.ranked[i]
		var resp *oip.InferResponse
		var err error
		if opt.Local {
			resp, err = p.runLocal(ctx, pl.ls, req)
		} else {
			resp, err = p.runRemote(ctx, p.budget(ctx, pl.ranked[i:], pl.ls), pl.byName[opt.Name], pl.model, opt.Compressed, req, pl.in, opt.Latency)
		}
		if err == nil {
			if resp.Parameters == nil {
				resp.Parameters = oip.Parameters{}
			}
			resp.ModelName = pl.model
			if i > 0 {
				noteNone(ctx) // failed attempts' time is in the request's
			}
			for k, v := range p.answered(pl, i) {
				resp.Parameters[k] = v
			}
			return resp, nil
		}
		if err := p.failed(pl, i, err); err != nil {
			return nil, err
		}
	}
	return nil, p.expired(ctx, pl)
}

// answered records that option i of pl answered and returns the
// parameters the proxy adds to the response.
func (p *Proxy) answered(pl *plan, i int) oip.Parameters {
	opt := pl.ranked[i]
	if err, ok := pl.refused[opt.Name]; ok && !opt.Compressed && pl.byName[opt.Name].refuseCompression() {
		p.log.Warn("target refused a compressed request and took it plain; its requests go plain from now on", "target", opt.Name, "err", err)
	}
	p.metrics.observe(pl.model, opt, time.Since(pl.start), i == 0)
	p.metrics.request(pl.model, opt.Name, "success")
	// Every attempt before this one failed and left its error.
	params := oip.Parameters{ParamTarget: opt.Name, ParamAttempts: int64(len(pl.errs) + 1)}
	if opt.Compressed {
		params[ParamCompressed] = true
	}
	if !opt.Explore {
		params[ParamPredicted] = opt.Latency.Microseconds()
	}
	return params
}

// failed records that option i of pl failed with err; it returns the
// request's error when no option is to follow, nil when the next one is.
func (p *Proxy) failed(pl *plan, i int, err error) error {
	opt := pl.ranked[i]
	p.metrics.request(pl.model, opt.Name, errdefs.Outcome(err))
	pl.errs = append(pl.errs, fmt.Sprintf("%s: %v", opt.Name, err))
	switch {
	case opt.Local:
	case opt.Compressed && isCompressionRefused(err):
		// Unimplemented may also mean the target lacks what the request
		// needs whatever its encoding: the target is taken to refuse
		// compression only once the plain attempt succeeds (answered).
		if pl.refused == nil {
			pl.refused = map[string]error{}
		}
		pl.refused[opt.Name] = err
		pl.offerPlain(i, pl.byName[opt.Name])
	default:
		if pl.failedTargets == nil {
			pl.failedTargets = map[string]bool{}
		}
		pl.failedTargets[opt.Name] = true
	}
	next := pl.nextAfter(i)
	if !fallBack(err) || next == len(pl.ranked) {
		if len(pl.errs) > 1 {
			return errdefs.WithMessage(err, fmt.Sprintf("model %q: every option failed: %s", pl.model, strings.Join(pl.errs, "; ")))
		}
		return errdefs.WithMessage(err, fmt.Sprintf("model %q on %s", pl.model, pl.errs[0]))
	}
	p.metrics.fallbacks.WithLabelValues(p.metrics.model(pl.model), opt.Name, errdefs.Outcome(err)).Inc()
	p.log.Debug("falling back", "model", pl.model, "from", opt.Name, "to", pl.ranked[next].Name, "err", err)
	return nil
}

// compressionRefused is the error of a compressed attempt that the target
// answered with gRPC status Unimplemented: most likely it has no zero-run
// decompressor (a Triton server, an older accelpool; grpc-go says
// "Decompressor is not installed for grpc-encoding"), and the same
// request sent plain may well succeed there. errdefs.FromGRPC reads
// Unimplemented as an internal error, so the attempt notes the code
// before it is lost (see refusedByCode).
type compressionRefused struct{ err error }

func (e *compressionRefused) Error() string { return e.err.Error() }
func (e *compressionRefused) Unwrap() error { return e.err }

// isCompressionRefused reports whether err is a compressionRefused.
func isCompressionRefused(err error) bool {
	var r *compressionRefused
	return errors.As(err, &r)
}

// refusedByCode reports whether a compressed call ended with the status
// a server without the call's decompressor answers.
func refusedByCode(err error) bool { return status.Code(err) == codes.Unimplemented }

// expired is the error of a request whose context ended between attempts.
func (p *Proxy) expired(ctx context.Context, pl *plan) error {
	if err := ctx.Err(); err != nil {
		msg := fmt.Sprintf("model %q: deadline exceeded after %v", pl.model, time.Since(pl.start).Round(time.Millisecond))
		if len(pl.errs) > 0 {
			msg += " (" + strings.Join(pl.errs, "; ") + ")"
		}
		if errors.Is(err, context.Canceled) {
			return errdefs.New(errdefs.ErrCanceled, msg)
		}
		return errdefs.New(errdefs.ErrDeadline, msg)
	}
	return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("model %q: %s", pl.model, strings.Join(pl.errs, "; ")))
}

// budget is how long the attempt at rest[0] may take: what is left of the
// request's time, less, for a remote attempt when local can follow, the
// local prediction (so the fallback still fits) — but never less than
// twice the attempt's own prediction.
func (p *Proxy) budget(ctx context.Context, rest []offload.Predicted, ls *localStats) time.Duration {
	dl, _ := ctx.Deadline()
	left := time.Until(dl)
	opt := rest[0]
	if opt.Local || ls == nil {
		return left
	}
	for _, later := range rest[1:] {
		if later.Local && !later.Explore {
			// Twice the local prediction: the fallback must fit with room.
			b := left - 2*later.Latency
			if !opt.Explore {
				b = max(b, 2*opt.Latency)
			}
			return min(max(b, 0), left)
		}
	}
	return left
}

// fallBack reports whether a failed attempt should be followed by the
// next option: anything but a request that is wrong everywhere or a
// request whose own context ended.
func fallBack(err error) bool {
	switch {
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrTooLarge), errors.Is(err, errdefs.ErrCanceled):
		return false
	}
	return true
}

func (ls *localStats) option() offload.Option {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return offload.Option{Name: LocalName, Local: true, Tier: "device", Measured: ls.service.N() > 0,
		Service: ls.service.Duration(), Waiting: int(ls.inflight.Load()), InFlight: int(ls.inflight.Load()),
		Residual: ls.overhead.Duration()}
}

func (p *Proxy) runLocal(ctx context.Context, ls *localStats, req *oip.InferRequest) (*oip.InferResponse, error) {
	ls.inflight.Add(1)
	defer ls.inflight.Add(-1)
	start := time.Now()
	resp, err := p.cfg.Local.Infer(ctx, req)
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	// Service time without the local queue, when the runtime says.
	service := took
	if q, ok := paramDuration(resp.Parameters, "queue_us"); ok && q < took {
		service = took - q
	}
	ls.mu.Lock()
	ls.service.Add(float64(service))
	ls.mu.Unlock()
	noteLocal(ctx, ls, took)
	return resp, nil
}

func (p *Proxy) runRemote(ctx context.Context, budget time.Duration, t *target, model string, compressed bool, req *oip.InferRequest, in int64, predicted time.Duration) (*oip.InferResponse, error) {
	actx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	fwd := *req
	served, renamed := t.servedName(model)
	fwd.ModelName = served
	if renamed {
		// The target numbers its own versions of what it serves.
		fwd.ModelVersion = ""
	}
	t.inflight.Add(1)
	defer t.inflight.Add(-1)
	defer t.endFlight(t.beginFlight(predicted))
	start := time.Now()
	var opts []grpc.CallOption
	// refused is set when the call ends with the status of a refused
	// compression, which InferWith's error no longer carries.
	var refused atomic.Bool
	if compressed {
		opts = append(opts, grpcsvc.Compressed(), grpc.OnFinish(func(err error) { refused.Store(refusedByCode(err)) }))
	}
	resp, err := t.client.InferWith(actx, &fwd, opts...)
	took := time.Since(start)
	if err != nil {
		if ctx.Err() == nil && actx.Err() != nil {
			err = budgetSpent(t, budget)
		} else if refused.Load() {
			err = &compressionRefused{err}
		}
		return nil, err
	}
	var server time.Duration
	for _, k := range []string{"queue_us", "preprocess_us", "compute_us"} {
		if d, ok := paramDuration(resp.Parameters, k); ok {
			server += d
		}
	}
	p.learnAnswer(ctx, t, model, compressed, server, in, WireBytes(resp.Outputs...), took, predicted, func() [][]byte {
		bufs := make([][]byte, len(resp.Outputs))
		for i, o := range resp.Outputs {
			bufs[i] = o.Data
		}
		return bufs
	})
	return resp, nil
}

// budgetSpent is the error of an attempt at t that used up its budget.
func budgetSpent(t *target, budget time.Duration) error {
	return errdefs.New(errdefs.ErrDeadline, fmt.Sprintf("%s did not answer within its budget of %v, leaving time to run elsewhere", t.spec.Name, budget.Round(time.Millisecond)))
}

// learnAnswer folds an answer from t into what is known of model there
// (sent compressed or not) and notes it for the overhead measurement; a
// sampled plain answer's data (from answer) is measured for how much it
// would shrink.
func (p *Proxy) learnAnswer(ctx context.Context, t *target, model string, compressed bool, server time.Duration, in, out int64, took, predicted time.Duration, answer func() [][]byte) {
	key := statsKey(model, compressed)
	if t.learn(key, server, in, out, took, predicted) && !compressed && p.cfg.Compress == CompressAuto {
		t.setShrink(key, shrinkOf(answer()...))
	}
	noteRemote(ctx, t, key, took)
}

// paramDuration reads an integer microsecond parameter.
func paramDuration(p oip.Parameters, key string) (time.Duration, bool) {
	return durationValue(p[key])
}

// durationValue reads a parameter value as microseconds.
func durationValue(v any) (time.Duration, bool) {
	switch v := v.(type) {
	case int64:
		return time.Duration(v) * time.Microsecond, true
	case uint64:
		return time.Duration(v) * time.Microsecond, true
	case float64:
		return time.Duration(v * float64(time.Microsecond)), true
	}
	return 0, false
}
