package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/tlsutil"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/proxy"
)

const proxyHelp = `
Runs the device proxy: an Open Inference Protocol server on this device
(REST on --http, gRPC on --grpc, both on loopback by default) that an
application points at instead of a local inference server. Each request
runs where it is predicted to finish soonest: on this device (models in
--models, run with ONNX Runtime), or on a remote agent or gateway — those
the control plane at --join reports holding ready instances, and those
given with --target. Links are probed continuously (round trip every
--probe-interval, bandwidth every 5th probe); a failed attempt falls back
to the next option within the request's deadline (its timeout parameter or
gRPC deadline, else --timeout). A remote option that has not answered for
--refresh-after is explored again by one request: its load may have changed.

Each response carries parameters accelpool_target (where it ran) and
accelpool_predicted_us (and accelpool_compressed when it crossed the link
compressed: answers that are mostly zeros, like detection maps, shrink
several times; see --compress). GET /proxy/status on the REST address shows the
links and estimates; /metrics the predicted and measured latencies.

Targets: --target name=NAME,addr=HOST:PORT[,tier=edge][,site=SITE]
(repeatable): a gRPC endpoint serving models under the names asked for.

Examples:
  accelpool proxy --join http://10.0.0.5:7070 --models ./device-models
  accelpool proxy --target name=edge,addr=10.0.0.7:8001,tier=edge`

// targetList is the repeatable --target flag.
type targetList []proxy.Target

func (l *targetList) String() string { return fmt.Sprint(len(*l)) }

func (l *targetList) Set(s string) error {
	t, err := parseTarget(s)
	if err != nil {
		return err
	}
	*l = append(*l, t)
	return nil
}

func parseTarget(s string) (proxy.Target, error) {
	var t proxy.Target
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return t, fmt.Errorf("--target %q: %q is not key=value (keys: name, addr, tier, site)", s, kv)
		}
		switch k {
		case "name":
			t.Name = v
		case "addr":
			if _, _, err := net.SplitHostPort(v); err != nil {
				return t, fmt.Errorf("--target %q: addr %q is not host:port", s, v)
			}
			t.Addr = v
		case "tier":
			if v != "device" && v != "edge" && v != "cloud" {
				return t, fmt.Errorf("--target %q: tier %q is not device, edge or cloud", s, v)
			}
			t.Tier = v
		case "site":
			t.Site = v
		default:
			return t, fmt.Errorf("--target %q: unknown key %q (keys: name, addr, tier, site)", s, k)
		}
	}
	if t.Name == "" || t.Addr == "" {
		return t, fmt.Errorf("--target %q: name and addr are required", s)
	}
	return t, nil
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("proxy", "proxy [--join URL] [--target ...] [--models DIR] [flags]", proxyHelp, stderr)
	join := fs.String("join", envOr("ACCELPOOL_SERVER", ""), "control plane `URLs`, comma-separated, to discover instances from")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "cluster `token` for the control plane and the agents (default $ACCELPOOL_TOKEN)")
	var targets targetList
	fs.Var(&targets, "target", "a fixed remote `target` name=NAME,addr=HOST:PORT[,tier=T][,site=S] (repeatable)")
	models := fs.String("models", "", "model repository `dir` of models this device can run itself (none by default)")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path` (for --models)")
	httpAddr := fs.String("http", "127.0.0.1:8000", "REST `address` applications call")
	grpcAddr := fs.String("grpc", "127.0.0.1:8001", "gRPC `address` applications call")
	listenToken := fs.String("listen-token", "", "bearer `token` applications must send (required beyond loopback)")
	mode := fs.String("mode", proxy.ModeAuto, "`mode`: auto (fastest predicted), local (device only) or remote (targets only)")
	compress := fs.String("compress", proxy.CompressAuto, "zero-run compression of requests and answers on the links to targets: `when` auto (learned per target and model: each way tried once, then the faster predicted), always or never")
	probe := fs.Duration("probe-interval", proxy.DefaultProbeInterval, "how often each link's round trip is probed")
	refresh := fs.Duration("refresh-after", proxy.DefaultRefreshAfter, "explore a remote option again after it has not answered for this `long` (its load may have changed; 0: never)")
	timeout := fs.Duration("timeout", proxy.DefaultTimeout, "deadline of requests that bring none")
	tlsCA := fs.String("tls-ca", "", "CA `file` (PEM) to trust for TLS targets and control plane")
	maxBody := fs.Int64("max-body-bytes", 64<<20, "largest request body or gRPC message in `bytes`")
	logLevel := fs.String("log-level", "info", "log `level`")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `file` (written on exit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer stop()
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	for _, a := range []string{*httpAddr, *grpcAddr} {
		if a != "" && !auth.IsLoopback(a) && *listenToken == "" {
			return fmt.Errorf("%s binds beyond loopback: give --listen-token, which applications must then send", a)
		}
	}
	if *join == "" && len(targets) == 0 && *models == "" {
		fs.Usage()
		return errors.New("nothing to run requests on: give --join, --target or --models")
	}
	if err := checkMaxBody(*maxBody); err != nil {
		return err
	}
	if *probe < 10*time.Millisecond {
		return fmt.Errorf("--probe-interval %v: at least 10ms", *probe)
	}
	switch {
	case *refresh < 0:
		return fmt.Errorf("--refresh-after %v: must not be negative (0 turns refreshing off)", *refresh)
	case *refresh == 0:
		*refresh = -1 // proxy.Config: negative is never
	case *refresh < time.Second:
		return fmt.Errorf("--refresh-after %v: at least 1s (each refresh sends one request to a slower option)", *refresh)
	}
	cfg := proxy.Config{Targets: targets, Mode: *mode, Compress: *compress, ProbeInterval: *probe, RefreshAfter: *refresh, Timeout: *timeout, Logger: log, Version: Version}
	tcfg, err := tlsutil.ClientConfig(*tlsCA)
	if err != nil {
		return err
	}
	if tcfg != nil {
		cfg.DialOptions = append(cfg.DialOptions, tlsutil.DialOptions(tcfg)...)
	}
	if tok := clientToken(*token); tok != "" {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithPerRPCCredentials(auth.Credentials{Token: tok, Secure: tcfg != nil}))
	}
	if *join != "" {
		var hc *http.Client
		if tcfg != nil {
			hc = tlsutil.HTTPClient(tcfg, 0)
		}
		cfg.Discover = proxy.ControlPlane(client.New(strings.Split(*join, ","), clientToken(*token), hc))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Registry = reg
	if *models != "" {
		if _, err := os.Stat(*models); err != nil {
			return fmt.Errorf("--models: %w", err)
		}
		backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
		if err != nil {
			return err
		}
		// KeepGOMAXPROCS: see agent.Config; a device runs few requests at
		// once and pays for every spinning P out of its quota.
		mgr, err := agent.NewManager(agent.Config{Repository: *models, Backend: backend, Logger: log, Version: Version, Registry: reg, KeepGOMAXPROCS: true})
		if err != nil {
			return err
		}
		defer mgr.Close()
		if err := mgr.LoadAll(ctx); err != nil {
			return err
		}
		cfg.Local = mgr
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	defer p.Close()

	errc := make(chan error, 2)
	mux := http.NewServeMux()
	oipREST := auth.HTTP(p.TimeREST(rest.NewHandler(p, rest.Options{MaxBodyBytes: *maxBody, Logger: log})), *listenToken, "/v2/health/")
	mux.Handle("/v2/", oipREST)
	mux.Handle("/v2", oipREST)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/proxy/status", auth.HTTP(p.StatusHandler(), *listenToken))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	hln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", *httpAddr, err)
	}
	hs := &http.Server{Handler: rest.CleanPaths(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	defer hs.Close()
	gln, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc %s: %w", *grpcAddr, err)
	}
	gs, err := proxy.NewGRPCServer(p, grpcsvc.Options{Logger: log, MaxRecvMsgSize: int(*maxBody), MaxSendMsgSize: int(*maxBody)},
		grpc.ChainUnaryInterceptor(auth.GRPCUnary(*listenToken)), grpc.ChainStreamInterceptor(auth.GRPCStream(*listenToken)))
	if err != nil {
		return err
	}
	go func() {
		if err := gs.Serve(gln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	defer gs.Stop()

	st := p.Status()
	fmt.Fprintf(stdout, "accelpool proxy (%s mode): REST http://%s/v2  gRPC %s  status http://%s/proxy/status\n", *mode, hln.Addr(), gln.Addr(), hln.Addr())
	if cfg.Local != nil {
		idx, _ := cfg.Local.RepositoryIndex(ctx, false)
		for _, e := range idx {
			fmt.Fprintf(stdout, "  local   %-16s %s %s\n", e.Name, e.State, e.Reason)
		}
	}
	for _, t := range st.Targets {
		fmt.Fprintf(stdout, "  target  %-16s %s (%s)\n", t.Name, t.Addr, t.Tier)
	}
	if *join != "" {
		fmt.Fprintf(stdout, "  discovering instances from %s every %v\n", *join, proxy.DefaultDiscoverInterval)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// startCPUProfile profiles the process into path until stop is called. The
// rate is 1 kHz: a device at a tenth of a core gives a hundred samples a
// second at the default rate, too few for a run of a minute.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	runtime.SetCPUProfileRate(1000)
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
