package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// ServerName is what ServerMetadata reports.
const ServerName = "accelpool-gateway"

// AppVersion is the one version under which the gateway serves every
// application.
const AppVersion = "1"

// Defaults for Config fields left zero.
const (
	DefaultMaxAttempts   = 3
	DefaultCooldown      = 5 * time.Second
	DefaultPruneInterval = 30 * time.Second
)

// Config configures a Gateway.
type Config struct {
	// Resolver says where applications' instances are. Required.
	Resolver Resolver
	// Policy picks an instance per attempt; nil means a LeastOutstanding.
	Policy Policy
	// DialOptions apply to every connection to an agent, after the
	// defaults (plaintext, 64 MiB messages), which they override: the
	// server passes transport credentials and per-RPC token credentials.
	DialOptions []grpc.DialOption
	// MaxAttempts bounds the instances one request is tried on (default 3).
	MaxAttempts int
	// Cooldown is how long an instance whose attempt failed with
	// ErrUnavailable or ErrNotFound is passed over while other instances
	// remain (default 5s; negative: never).
	Cooldown time.Duration
	// PruneInterval is how often connections to addresses the Resolver no
	// longer lists are closed (default 30s; negative: only when Prune is
	// called).
	PruneInterval time.Duration
	// Logger receives the gateway's records; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	// Version answers server metadata.
	Version string
}

// Gateway is an oip.Service that forwards each request for an application
// to one of its ready instances. Create it with New; stop it with Close.
// It is safe for concurrent use.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	conns   *pool
	now     func() time.Time

	omu      sync.RWMutex
	inflight map[string]*atomic.Int64 // instance ID -> requests in flight

	cmu     sync.RWMutex
	cooling map[string]time.Time // instance ID -> passed over until

	closed    atomic.Bool
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ oip.Service = (*Gateway)(nil)

// forgetter is what a Policy with per-application state implements to have
// Prune drop the state of applications that are gone.
type forgetter interface{ Forget(app string) }

// New returns a Gateway. It panics if cfg.Resolver is nil. Connections are
// made on first use.
func New(cfg Config) *Gateway {
	if cfg.Resolver == nil {
		panic("gateway: Config.Resolver is nil")
	}
	if cfg.Policy == nil {
		cfg.Policy = &LeastOutstanding{}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = DefaultCooldown
	}
	if cfg.PruneInterval == 0 {
		cfg.PruneInterval = DefaultPruneInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gateway"),
		metrics:  newMetrics(cfg.Registry),
		conns:    newPool(cfg.DialOptions),
		now:      time.Now,
		inflight: map[string]*atomic.Int64{},
		cooling:  map[string]time.Time{},
		stop:     make(chan struct{}),
	}
	if cfg.PruneInterval > 0 {
		g.wg.Add(1)
		go g.pruneLoop()
	}
	return g
}

func (g *Gateway) pruneLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.Prune()
		}
	}
}

// Close stops the gateway: new calls fail with ErrUnavailable, and the
// cached connections close once the requests using them are done.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		close(g.stop)
		g.wg.Wait()
		g.conns.close()
	})
	return nil
}

// Prune closes the connections to addresses the Resolver no longer lists
// and forgets the counters, cooldowns and metric series of instances and
// applications that are gone. The gateway runs it every PruneInterval; the
// server may also call it after applying a cluster change.
func (g *Gateway) Prune() {
	apps := g.cfg.Resolver.Apps()
	keepApps := make(map[string]bool, len(apps))
	addrs := map[string]bool{}
	ids := map[string]bool{}
	for _, app := range apps {
		keepApps[app] = true
		eps, err := g.cfg.Resolver.Endpoints(app)
		if err != nil {
			continue
		}
		for _, ep := range eps {
			if ep.GRPCAddr != "" {
				addrs[ep.GRPCAddr] = true
			}
			ids[ep.InstanceID] = true
		}
	}
	g.conns.retain(addrs)

	g.omu.Lock()
	for id, n := range g.inflight {
		if !ids[id] && n.Load() == 0 {
			delete(g.inflight, id)
		}
	}
	g.omu.Unlock()

	now := g.now()
	g.cmu.Lock()
	for id, until := range g.cooling {
		if !ids[id] || !now.Before(until) {
			delete(g.cooling, id)
		}
	}
	g.cmu.Unlock()

	gone := g.metrics.forget(keepApps)
	if f, ok := g.cfg.Policy.(forgetter); ok {
		for _, app := range gone {
			f.Forget(app)
		}
	}
}

// Outstanding returns the requests in flight through the gateway to an
// instance.
func (g *Gateway) Outstanding(instanceID string) int {
	g.omu.RLock()
	n := g.inflight[instanceID]
	g.omu.RUnlock()
	if n == nil {
		return 0
	}
	return int(n.Load())
}

func (g *Gateway) counter(instanceID string) *atomic.Int64 {
	g.omu.RLock()
	n := g.inflight[instanceID]
	g.omu.RUnlock()
	if n != nil {
		return n
	}
	g.omu.Lock()
	defer g.omu.Unlock()
	if n = g.inflight[instanceID]; n == nil {
		n = new(atomic.Int64)
		g.inflight[instanceID] = n
	}
	return n
}

// ServerMetadata implements oip.Service.
func (g *Gateway) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: ServerName, Version: g.cfg.Version,
		Extensions: []string{"binary_tensor_data", "classification", "model_repository", "parameters"}}
}

// Live implements oip.Service.
func (g *Gateway) Live() bool { return true }

// Ready implements oip.Service: the gateway is ready until it is closed,
// whatever the state of the applications (ModelReady tells those).
func (g *Gateway) Ready() bool { return !g.closed.Load() }

// resolve checks the name and version a client gave and returns the
// application's endpoints; known reports whether the Resolver knows app.
func (g *Gateway) resolve(app, version string) (eps []Endpoint, known bool, err error) {
	if app == "" {
		return nil, false, errdefs.Invalid("no model name: name the application")
	}
	if err := oip.CheckVersion(version); err != nil {
		return nil, false, err
	}
	if eps, err = g.cfg.Resolver.Endpoints(app); err != nil {
		return nil, false, err
	}
	if g.closed.Load() {
		return nil, true, errdefs.New(errdefs.ErrUnavailable, "gateway is closed")
	}
	if version != "" && version != AppVersion {
		return nil, true, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("application %q has no version %q (the gateway serves every application as version %s)", app, version, AppVersion))
	}
	return eps, true, nil
}

// ModelMetadata implements oip.Service: the metadata of one ready
// instance, named after the application, with the one version AppVersion.
func (g *Gateway) ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error) {
	eps, _, err := g.resolve(name, version)
	if err != nil {
		return oip.ModelMetadata{}, err
	}
	var md oip.ModelMetadata
	err = g.forward(ctx, name, eps, func(ctx context.Context, c *grpcsvc.Client, ep Endpoint) error {
		var err error
		md, err = c.ModelMetadata(ctx, ep.ServedName, "")
		return err
	})
	if err != nil {
		return oip.ModelMetadata{}, err
	}
	md.Name, md.Versions = name, []string{AppVersion}
	return md, nil
}

// ModelReady implements oip.Service: an application is ready when the
// Resolver reports any of its instances ready.
func (g *Gateway) ModelReady(_ context.Context, name, version string) (bool, error) {
	eps, _, err := g.resolve(name, version)
	if err != nil {
		return false, err
	}
	_, ready := counts(eps)
	return ready > 0, nil
}

// counts returns how many endpoints are placed and how many can be routed to.
func counts(eps []Endpoint) (placed, ready int) {
	for _, ep := range eps {
		if ep.Ready && ep.GRPCAddr != "" {
			ready++
		}
	}
	return len(eps), ready
}

// RepositoryIndex implements oip.Service: one entry per application,
// READY when any instance is, UNAVAILABLE with the reason otherwise.
func (g *Gateway) RepositoryIndex(_ context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	if g.closed.Load() {
		return nil, errdefs.New(errdefs.ErrUnavailable, "gateway is closed")
	}
	var out []oip.ModelIndexEntry
	for _, app := range g.cfg.Resolver.Apps() {
		e := oip.ModelIndexEntry{Name: app, Version: AppVersion, State: "READY"}
		eps, err := g.cfg.Resolver.Endpoints(app)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			continue // deleted since Apps
		case err != nil:
			e.State, e.Reason = "UNAVAILABLE", err.Error()
		default:
			if placed, ready := counts(eps); ready == 0 {
				e.State, e.Reason = "UNAVAILABLE", fmt.Sprintf("no ready instance (%d placed)", placed)
			}
		}
		if !readyOnly || e.State == "READY" {
			out = append(out, e)
		}
	}
	return out, nil
}

// errManaged answers LoadModel and UnloadModel.
func errManaged(verb, name string) error {
	return errdefs.Invalid(fmt.Sprintf("cannot %s %q through the gateway: applications are managed by the control plane: use `accelpool deploy` / `accelpool delete`", verb, name))
}

// LoadModel implements oip.Service: refused with ErrInvalid.
func (g *Gateway) LoadModel(_ context.Context, name string) error { return errManaged("load", name) }

// UnloadModel implements oip.Service: refused with ErrInvalid.
func (g *Gateway) UnloadModel(_ context.Context, name string) error {
	return errManaged("unload", name)
}

// Infer implements oip.Service: req.ModelName names the application; the
// request goes to one of its ready instances, and to others while the
// failures say the instance did not process it (see the package doc). req
// is not modified and its tensor data is forwarded without a copy.
func (g *Gateway) Infer(ctx context.Context, req *oip.InferRequest) (resp *oip.InferResponse, err error) {
	label := unknownApp
	defer func() {
		g.metrics.use(label)
		g.metrics.requests.WithLabelValues(label, errdefs.Outcome(err)).Inc()
	}()
	if req == nil {
		return nil, errdefs.Invalid("no request")
	}
	app := req.ModelName
	eps, known, err := g.resolve(app, req.ModelVersion)
	if known {
		label = app
	}
	if err != nil {
		return nil, err
	}
	gauge := g.metrics.outstanding.WithLabelValues(app)
	gauge.Inc()
	defer gauge.Dec()
	err = g.forward(ctx, app, eps, func(ctx context.Context, c *grpcsvc.Client, ep Endpoint) error {
		var err error
		resp, err = c.Infer(ctx, forwardRequest(req, ep.ServedName))
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.ModelName, resp.ModelVersion = app, AppVersion
	return resp, nil
}

// forwardRequest is req addressed to an instance: a copy of the header
// fields sharing the inputs (and so the tensor bytes), parameters and
// requested outputs, which the transport only reads.
func forwardRequest(req *oip.InferRequest, servedName string) *oip.InferRequest {
	fwd := *req
	fwd.ModelName = servedName
	fwd.ModelVersion = ""
	return &fwd
}

// attemptFunc makes one call to one instance.
type attemptFunc func(ctx context.Context, c *grpcsvc.Client, ep Endpoint) error

// forward runs op on instances of app picked by the policy until one
// succeeds, a failure is not worth retrying, MaxAttempts instances were
// tried, no untried candidate is left or ctx ends.
func (g *Gateway) forward(ctx context.Context, app string, eps []Endpoint, op attemptFunc) error {
	g.metrics.use(app)
	placed, ready := counts(eps)
	if ready == 0 {
		return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("application %q has no ready instance (%d placed, none ready)", app, placed))
	}
	tried := make([]string, 0, g.cfg.MaxAttempts)
	var (
		last     error
		lastEp   Endpoint
		attempts int
	)
	for attempts < g.cfg.MaxAttempts && ctx.Err() == nil {
		ep, ok := g.pick(app, eps, tried)
		if !ok {
			break
		}
		tried = append(tried, ep.InstanceID)
		attempts++
		if attempts > 1 {
			g.metrics.retries.WithLabelValues(app).Inc()
		}
		err := g.attempt(ctx, app, ep, op)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			hint := ""
			if errors.Is(err, errdefs.ErrTooLarge) {
				hint = " (the gateway forwards tensors to agents in gRPC messages of bounded size, set by --max-body-bytes; JSON numbers can take up to 4 times their text's size as tensors: split the request, or raise the limit)"
			}
			return fmt.Errorf("application %q, instance %s on node %s: %w%s", app, ep.InstanceID, ep.Node, err, hint)
		}
		g.log.Debug("attempt failed; trying another instance", "app", app, "instance", ep.InstanceID,
			"node", ep.Node, "attempt", attempts, "err", err)
		last, lastEp = err, ep
	}
	if err := ctx.Err(); err != nil {
		kind := errdefs.ErrDeadline
		if errors.Is(err, context.Canceled) {
			kind = errdefs.ErrCanceled
		}
		msg := fmt.Sprintf("application %q: %v", app, err)
		if attempts > 0 {
			msg += fmt.Sprintf(" after %d attempts; the last, on instance %s (node %s), failed: %v", attempts, lastEp.InstanceID, lastEp.Node, last)
		}
		return errdefs.New(kind, msg)
	}
	if attempts == 0 {
		return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("application %q: the routing policy refused all %d ready instances", app, ready))
	}
	return fmt.Errorf("application %q: %d attempts failed, the last on instance %s (node %s): %w", app, attempts, lastEp.InstanceID, lastEp.Node, last)
}

// retryable reports whether a failed attempt means the instance did not
// process the request, so that another may.
func retryable(err error) bool {
	switch {
	case errors.Is(err, errdefs.ErrResourceExhausted), errors.Is(err, errdefs.ErrUnavailable), errors.Is(err, errdefs.ErrNotFound):
		return true
	}
	return false
}

// pick offers the policy the routable, untried instances, leaving out
// those cooling down unless nothing else is left.
func (g *Gateway) pick(app string, eps []Endpoint, tried []string) (Endpoint, bool) {
	now := g.now()
	cands := make([]Endpoint, 0, len(eps))
	var cooling []Endpoint
	g.cmu.RLock()
	for _, ep := range eps {
		if !ep.Ready || ep.GRPCAddr == "" || slices.Contains(tried, ep.InstanceID) {
			continue
		}
		if until, ok := g.cooling[ep.InstanceID]; ok && now.Before(until) {
			cooling = append(cooling, ep)
			continue
		}
		cands = append(cands, ep)
	}
	g.cmu.RUnlock()
	if len(cands) == 0 {
		cands = cooling
	}
	if len(cands) == 0 {
		return Endpoint{}, false
	}
	return g.cfg.Policy.Pick(app, cands, g.Outstanding)
}

// attempt runs op on one instance, counting it in flight, and learns from
// the outcome: a failure saying the instance is gone or not serving starts
// its cooldown (and drops a broken connection); a success ends it.
func (g *Gateway) attempt(ctx context.Context, app string, ep Endpoint, op attemptFunc) error {
	c, err := g.conns.acquire(ep.GRPCAddr)
	if err != nil {
		return err
	}
	defer g.conns.release(c)
	n := g.counter(ep.InstanceID)
	n.Add(1)
	defer n.Add(-1)
	err = op(ctx, c.client, ep)
	switch {
	case err == nil:
		g.warm(ep.InstanceID)
	case errors.Is(err, errdefs.ErrUnavailable), errors.Is(err, errdefs.ErrNotFound):
		dropped := errors.Is(err, errdefs.ErrUnavailable) && g.conns.dropIfBroken(c)
		g.cool(app, ep, err, dropped)
	}
	return err
}

func (g *Gateway) cool(app string, ep Endpoint, err error, dropped bool) {
	if g.cfg.Cooldown <= 0 {
		return
	}
	now := g.now()
	g.cmu.Lock()
	until, was := g.cooling[ep.InstanceID]
	g.cooling[ep.InstanceID] = now.Add(g.cfg.Cooldown)
	g.cmu.Unlock()
	if !was || !now.Before(until) {
		g.log.Warn("instance failed; passing it over", "app", app, "instance", ep.InstanceID, "node", ep.Node,
			"addr", ep.GRPCAddr, "for", g.cfg.Cooldown, "connection_dropped", dropped, "err", err)
	}
}

func (g *Gateway) warm(instanceID string) {
	g.cmu.RLock()
	_, ok := g.cooling[instanceID]
	g.cmu.RUnlock()
	if ok {
		g.cmu.Lock()
		delete(g.cooling, instanceID)
		g.cmu.Unlock()
	}
}
