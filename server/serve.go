package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/gateway"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/oip/shm"
	"github.com/accelpool/accelpool/proxy/linkprobe"
)

// ServeConfig configures a running replica: the control plane plus its
// listeners.
type ServeConfig struct {
	Config
	// ListenAddr serves the admin API (/api/v1), the gateway's Open
	// Inference Protocol REST (/v2), /metrics, /healthz and /readyz.
	ListenAddr string
	// GRPCAddr serves the gateway's inference.GRPCInferenceService.
	GRPCAddr    string
	TLSCertFile string
	TLSKeyFile  string
	// MaxBodyBytes bounds gateway request bodies and gRPC messages, the
	// gateway's to and from the agents included.
	MaxBodyBytes int64
	// OpenInference serves the gateway's /v2 and gRPC without the token
	// (the admin API always needs it). Only sensible on loopback.
	OpenInference bool
	// Version answers the gateway's server metadata (GET /v2).
	Version string
	// GatewayDialOptions reach the agents (e.g. TLS credentials); the
	// cluster token is added.
	GatewayDialOptions []grpc.DialOption
	// AllowClientSHM accepts tensors in clients' system shared memory at
	// the gateway's front doors (see agent.NodeConfig.AllowClientSHM); the
	// gateway forwards their bytes to the agents.
	AllowClientSHM bool
}

// Replica is a running control-plane replica with its listeners.
type Replica struct {
	Server  *Server
	Gateway *gateway.Gateway

	httpLn, grpcLn net.Listener
	httpSrv        *http.Server
	grpcSrv        *grpc.Server
	shm            *shm.Registry // client shared memory regions, when allowed
	cancel         context.CancelFunc
	errc           chan error
	wg             sync.WaitGroup
	closeOnce      sync.Once
}

// Start binds the listeners and starts the replica. An empty AdvertiseURL
// becomes http(s)://<bound listen address>.
func Start(ctx context.Context, cfg ServeConfig) (r *Replica, err error) {
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("tls: give both the certificate and the key file, or neither")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	r = &Replica{errc: make(chan error, 2)}
	started := r // the named result is nil once an error is returned
	defer func() {
		if err != nil {
			started.Close(context.Background())
		}
	}()
	if r.httpLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.ListenAddr, err)
	}
	if cfg.GRPCAddr != "" {
		if r.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			return nil, fmt.Errorf("grpc listen %s: %w", cfg.GRPCAddr, err)
		}
	}
	if cfg.AdvertiseURL == "" {
		scheme := "http"
		if cfg.TLSCertFile != "" {
			scheme = "https"
		}
		cfg.AdvertiseURL = scheme + "://" + r.httpLn.Addr().String()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Registry == nil {
		cfg.Registry = reg
	}
	srv, err := New(cfg.Config)
	if err != nil {
		return nil, err
	}
	r.Server = srv
	dial := append([]grpc.DialOption{}, cfg.GatewayDialOptions...)
	if cfg.MaxBodyBytes > 0 {
		// What the front doors accept, the hop to the agents carries.
		n := int(min(cfg.MaxBodyBytes, math.MaxInt32))
		dial = append(dial, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(n), grpc.MaxCallRecvMsgSize(n)))
	}
	if cfg.Token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(auth.Credentials{Token: cfg.Token}))
	}
	r.Gateway = gateway.New(gateway.Config{Resolver: srv.Resolver(), DialOptions: dial, Logger: cfg.Logger, Registry: cfg.Registry, Version: cfg.Version})

	mux := http.NewServeMux()
	api := srv.APIHandler()
	mux.Handle("/api/", api)
	mux.Handle("/healthz", api)
	mux.Handle("/readyz", api)
	mux.Handle("/metrics", auth.Metrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), cfg.ListenAddr, cfg.Token))
	inferToken := cfg.Token
	if cfg.OpenInference {
		inferToken = ""
	}
	var front oip.Service = r.Gateway
	if cfg.AllowClientSHM {
		r.shm = shm.NewRegistry("", 0)
		front = shm.Wrap(r.Gateway, r.shm, cfg.MaxBodyBytes)
	}
	oipREST := rest.NewHandler(front, rest.Options{MaxBodyBytes: cfg.MaxBodyBytes, Logger: cfg.Logger})
	mux.Handle("/v2/", auth.HTTP(oipREST, inferToken, "/v2/health/"))
	mux.Handle("/v2", auth.HTTP(oipREST, inferToken))
	r.httpSrv = &http.Server{Handler: rest.CleanPaths(mux), ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() { defer r.wg.Done(); _ = srv.Run(runCtx) }()

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var err error
		if cfg.TLSCertFile != "" {
			r.httpSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			err = r.httpSrv.ServeTLS(r.httpLn, cfg.TLSCertFile, cfg.TLSKeyFile)
		} else {
			err = r.httpSrv.Serve(r.httpLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.errc <- fmt.Errorf("http: %w", err)
		}
	}()
	if r.grpcLn != nil {
		gs := grpcsvc.New(front, grpcsvc.Options{Logger: cfg.Logger, MaxRecvMsgSize: int(cfg.MaxBodyBytes), MaxSendMsgSize: int(cfg.MaxBodyBytes),
			TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile})
		if r.grpcSrv, err = gs.NewGRPCServer(grpc.ChainUnaryInterceptor(auth.GRPCUnary(inferToken)), grpc.ChainStreamInterceptor(auth.GRPCStream(inferToken))); err != nil {
			return nil, err
		}
		linkprobe.Register(r.grpcSrv)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.grpcSrv.Serve(r.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				r.errc <- fmt.Errorf("grpc: %w", err)
			}
		}()
	}
	// Wait until the mirror of the cluster is loaded, so the first answers
	// are not empty.
	for !srv.Synced() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	srv.log.Info("control plane serving", "api", r.URL(), "grpc", r.GRPCAddr())
	return r, nil
}

// URL is the replica's admin API base URL.
func (r *Replica) URL() string { return r.Server.cfg.AdvertiseURL }

// HTTPAddr is the bound HTTP address.
func (r *Replica) HTTPAddr() string { return r.httpLn.Addr().String() }

// GRPCAddr is the bound gRPC address ("" when off).
func (r *Replica) GRPCAddr() string {
	if r.grpcLn == nil {
		return ""
	}
	return r.grpcLn.Addr().String()
}

// Err delivers a listener failure.
func (r *Replica) Err() <-chan error { return r.errc }

// Close stops serving (waiting for requests in flight until ctx ends),
// resigns leadership and stops the replica's goroutines.
func (r *Replica) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		if r.httpSrv != nil {
			_ = r.httpSrv.Shutdown(ctx)
		}
		if r.grpcSrv != nil {
			done := make(chan struct{})
			go func() { r.grpcSrv.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				r.grpcSrv.Stop()
			}
		}
		for _, ln := range []net.Listener{r.httpLn, r.grpcLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if r.cancel != nil {
			r.cancel()
		}
		if r.Gateway != nil {
			_ = r.Gateway.Close()
		}
		r.wg.Wait()
		if r.shm != nil {
			_ = r.shm.Close()
		}
	})
	return nil
}
