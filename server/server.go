// Package server is accelpool's control plane: the registry of nodes,
// model artifacts and applications (kept in a store.Store — etcd), the
// leader-elected reconciler that places application instances on nodes
// with the pure scheduler, the admin API (/api/v1/...), the agent protocol
// and the gateway that routes Open Inference Protocol requests addressed
// to applications. Several replicas may run against one store: they elect
// a leader; only the leader reconciles and writes desired state; the
// others serve reads and forward writes to it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

// Config configures a control-plane replica.
type Config struct {
	Store store.Store
	// AdvertiseURL is how other replicas reach this one's admin API
	// ("http://10.0.0.5:7000"); it is the replica's identity in the
	// leader election and where followers forward writes.
	AdvertiseURL string
	// Token guards the admin API, the agent protocol and the gateway.
	Token string
	// DataDir holds temporary upload spools.
	DataDir  string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// LeaseTTL is how long a node stays up without a heartbeat (default
	// 3s); agents heartbeat every LeaseTTL/3.
	LeaseTTL time.Duration
	// ReconcileInterval bounds how long the leader waits between passes
	// when nothing changes (default 2s).
	ReconcileInterval time.Duration
	// MaxModelBytes bounds a pushed artifact (default 2 GiB).
	MaxModelBytes int64
	// ForwardClient carries forwarded writes to the leader (TLS config).
	ForwardClient *http.Client
	// AnyModelFormat accepts pushed files that are not ONNX (tests with
	// the fake runtime backend).
	AnyModelFormat bool
}

// Server is one control-plane replica.
type Server struct {
	cfg   Config
	store store.Store
	log   *slog.Logger
	state *state

	leader   atomic.Bool
	leaderMu sync.Mutex
	leaderID string // the current leader's AdvertiseURL, as last seen

	reconcileNow chan struct{}
	metrics      *serverMetrics

	failMu    sync.Mutex
	failures  map[string]string // app → why its last placement fell short
	explained map[string]string // app → last explanation written
}

// New builds a replica; Run starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: no store")
	}
	if cfg.AdvertiseURL == "" {
		return nil, errors.New("server: no advertise URL")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 3 * time.Second
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = 2 * time.Second
	}
	if cfg.MaxModelBytes <= 0 {
		cfg.MaxModelBytes = 2 << 30
	}
	if cfg.DataDir == "" {
		cfg.DataDir = os.TempDir()
	}
	if cfg.ForwardClient == nil {
		cfg.ForwardClient = &http.Client{Timeout: 5 * time.Minute}
	}
	log := cfg.Logger.With("component", "server", "replica", cfg.AdvertiseURL)
	s := &Server{cfg: cfg, store: cfg.Store, log: log, state: newState(cfg.Store, log),
		reconcileNow: make(chan struct{}, 1), metrics: newServerMetrics(cfg.Registry), failures: map[string]string{}, explained: map[string]string{}}
	return s, nil
}

// IsLeader reports whether this replica leads.
func (s *Server) IsLeader() bool { return s.leader.Load() }

// Synced reports whether the replica's mirror of the cluster is loaded.
func (s *Server) Synced() bool { return s.state.isSynced() }

// Run mirrors the cluster state, campaigns for leadership and, while
// leading, reconciles. It returns when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.state.run(ctx) }()
	go func() { defer wg.Done(); s.campaign(ctx) }()
	wg.Wait()
	return nil
}

// campaign loops: win the election, reconcile until leadership is lost,
// campaign again.
func (s *Server) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		lead, err := s.store.Campaign(ctx, electionName, s.cfg.AdvertiseURL)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("campaign failed; retrying", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		s.leader.Store(true)
		s.metrics.leader.Set(1)
		s.log.Info("leading the control plane")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lead.Lost():
				cancel()
			case <-lctx.Done():
			}
		}()
		s.reconcileLoop(lctx, lead)
		cancel()
		s.leader.Store(false)
		s.metrics.leader.Set(0)
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = lead.Resign(rctx)
		rcancel()
		if ctx.Err() == nil {
			s.log.Warn("lost leadership; campaigning again")
		}
	}
}

// reconcileLoop runs passes while leading: on every state change (after a
// short debounce), on demand, and every ReconcileInterval.
func (s *Server) reconcileLoop(ctx context.Context, lead store.Leadership) {
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		if s.state.isSynced() {
			start := time.Now()
			if err := s.reconcile(ctx, lead); err != nil && ctx.Err() == nil {
				s.log.Warn("reconcile pass failed", "err", err)
			}
			s.metrics.reconcileSeconds.Observe(time.Since(start).Seconds())
		}
		changed := s.state.changes()
		select {
		case <-ctx.Done():
			return
		case <-changed:
			sleep(ctx, 50*time.Millisecond) // let a burst of changes settle
		case <-s.reconcileNow:
		case <-tick.C:
		}
	}
}

// kick asks for a reconcile pass soon.
func (s *Server) kick() {
	select {
	case s.reconcileNow <- struct{}{}:
	default:
	}
}

// leaderURL is the current leader's advertise URL.
func (s *Server) leaderURL(ctx context.Context) (string, error) {
	id, err := s.store.Leader(ctx, electionName)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", errdefs.New(errdefs.ErrUnavailable, "no control-plane leader is elected yet; retry shortly")
		}
		return "", err
	}
	s.leaderMu.Lock()
	s.leaderID = id
	s.leaderMu.Unlock()
	return id, nil
}

// forwardToLeader proxies a write to the leader. It reports false when
// this replica is the leader and should handle the request itself.
func (s *Server) forwardToLeader(w http.ResponseWriter, r *http.Request) (bool, error) {
	if s.IsLeader() || r.Header.Get(headerForwarded) != "" {
		return false, nil
	}
	id, err := s.leaderURL(r.Context())
	if err != nil {
		return true, err
	}
	if id == s.cfg.AdvertiseURL {
		// Elected but not yet acting: let the client retry.
		return true, errdefs.New(errdefs.ErrUnavailable, "leadership is changing; retry shortly")
	}
	target, err := url.Parse(id)
	if err != nil {
		return true, fmt.Errorf("leader address %q: %w", id, err)
	}
	var ferr error
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(headerForwarded, s.cfg.AdvertiseURL)
		},
		Transport: s.cfg.ForwardClient.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			ferr = errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("forwarding to leader %s: %v", id, err))
			writeError(w, ferr)
		},
	}
	s.metrics.forwarded.Inc()
	proxy.ServeHTTP(w, r)
	return true, nil
}

const headerForwarded = "X-Accelpool-Forwarded-By"
