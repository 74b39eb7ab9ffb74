package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/oip/shm"
	"github.com/accelpool/accelpool/proxy/linkprobe"
)

// NodeConfig configures a serving node: a Manager behind the Open
// Inference Protocol's HTTP and gRPC front doors and a metrics listener.
type NodeConfig struct {
	Manager Config
	// Listen addresses; "127.0.0.1:0" picks a free port. Empty disables.
	HTTPAddr    string
	GRPCAddr    string
	MetricsAddr string
	// Token, when set, is required as a bearer token on every inference,
	// metadata and repository call (health stays open).
	Token string
	// TLSCertFile and TLSKeyFile serve HTTP and gRPC over TLS.
	TLSCertFile string
	TLSKeyFile  string
	// MaxBodyBytes bounds REST bodies and gRPC messages (default 64 MiB).
	MaxBodyBytes int64
	// SkipLoad starts with no models loaded (load them through the API).
	SkipLoad bool
	// AllowClientSHM accepts tensors in clients' system shared memory
	// (Triton's extension): for clients on this machine, which skip
	// sending the bytes. Off by default, as in Triton: a registered region
	// is any shared memory object this process may open.
	AllowClientSHM bool
}

// Node is a running serving node. Start it with StartNode; stop it with
// Close. Err delivers a listener failure after start.
type Node struct {
	Manager *Manager
	log     *slog.Logger

	httpLn, grpcLn, metricsLn net.Listener
	httpSrv, metricsSrv       *http.Server
	grpcSrv                   *grpc.Server

	shm       *shm.Registry // client shared memory regions, when allowed
	errc      chan error
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// StartNode binds the listeners, loads the repository's models and starts
// serving. It returns once everything is ready; a model that fails to load
// is reported UNAVAILABLE and does not stop the node.
func StartNode(ctx context.Context, cfg NodeConfig) (n *Node, err error) {
	log := cfg.Manager.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("tls: give both the certificate and the key file, or neither")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Manager.Registry == nil {
		cfg.Manager.Registry = reg
	}
	mgr, err := NewManager(cfg.Manager)
	if err != nil {
		return nil, err
	}
	n = &Node{Manager: mgr, log: log.With("component", "node"), errc: make(chan error, 3)}
	started := n // the named result is nil once an error is returned
	defer func() {
		if err != nil {
			started.Close(context.Background())
		}
	}()

	listen := func(addr, what string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener on %s: %w", what, addr, err)
		}
		return ln, nil
	}
	if n.httpLn, err = listen(cfg.HTTPAddr, "http"); err != nil {
		return nil, err
	}
	if n.grpcLn, err = listen(cfg.GRPCAddr, "grpc"); err != nil {
		return nil, err
	}
	if n.metricsLn, err = listen(cfg.MetricsAddr, "metrics"); err != nil {
		return nil, err
	}

	if !cfg.SkipLoad {
		if err := mgr.LoadAll(ctx); err != nil {
			return nil, err
		}
	}

	var front oip.Service = mgr
	if cfg.AllowClientSHM {
		n.shm = shm.NewRegistry("", 0)
		front = shm.Wrap(mgr, n.shm, cfg.MaxBodyBytes)
	}
	if n.httpLn != nil {
		h := rest.NewHandler(front, rest.Options{MaxBodyBytes: cfg.MaxBodyBytes, Logger: log})
		n.httpSrv = &http.Server{Handler: auth.HTTP(h, cfg.Token, "/v2/health/"), ReadHeaderTimeout: 10 * time.Second}
		n.serveHTTP(n.httpSrv, n.httpLn, cfg, "http")
	}
	if n.grpcLn != nil {
		gs := grpcsvc.New(front, grpcsvc.Options{Logger: log, MaxRecvMsgSize: int(cfg.MaxBodyBytes), MaxSendMsgSize: int(cfg.MaxBodyBytes),
			TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile})
		if n.grpcSrv, err = gs.NewGRPCServer(grpc.ChainUnaryInterceptor(auth.GRPCUnary(cfg.Token)),
			grpc.ChainStreamInterceptor(auth.GRPCStream(cfg.Token))); err != nil {
			return nil, err
		}
		linkprobe.Register(n.grpcSrv)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.grpcSrv.Serve(n.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				n.errc <- fmt.Errorf("grpc: %w", err)
			}
		}()
	}
	if n.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
		n.metricsSrv = &http.Server{Handler: auth.Metrics(mux, n.metricsLn.Addr().String(), cfg.Token, "/healthz"), ReadHeaderTimeout: 10 * time.Second}
		n.serveHTTP(n.metricsSrv, n.metricsLn, NodeConfig{}, "metrics")
	}
	n.log.Info("serving", "http", addrOf(n.httpLn), "grpc", addrOf(n.grpcLn), "metrics", addrOf(n.metricsLn),
		"tls", cfg.TLSCertFile != "", "auth", cfg.Token != "")
	return n, nil
}

func (n *Node) serveHTTP(srv *http.Server, ln net.Listener, cfg NodeConfig, what string) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var err error
		if cfg.TLSCertFile != "" {
			srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			err = srv.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.errc <- fmt.Errorf("%s: %w", what, err)
		}
	}()
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// HTTPAddr, GRPCAddr and MetricsAddr are the bound addresses ("" if off).
func (n *Node) HTTPAddr() string    { return addrOf(n.httpLn) }
func (n *Node) GRPCAddr() string    { return addrOf(n.grpcLn) }
func (n *Node) MetricsAddr() string { return addrOf(n.metricsLn) }

// Err delivers a listener's failure while serving.
func (n *Node) Err() <-chan error { return n.errc }

// Close stops accepting connections, waits (until ctx ends) for requests
// in flight, then unloads every model.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, s := range []*http.Server{n.httpSrv, n.metricsSrv} {
			if s != nil {
				wg.Add(1)
				go func() { defer wg.Done(); _ = s.Shutdown(ctx) }()
			}
		}
		if n.grpcSrv != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := make(chan struct{})
				go func() { n.grpcSrv.GracefulStop(); close(done) }()
				select {
				case <-done:
				case <-ctx.Done():
					n.grpcSrv.Stop()
				}
			}()
		}
		wg.Wait()
		for _, ln := range []net.Listener{n.httpLn, n.grpcLn, n.metricsLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		n.wg.Wait()
		if n.shm != nil {
			_ = n.shm.Close()
		}
		_ = n.Manager.Close()
	})
	return nil
}
