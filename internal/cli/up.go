package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/member"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/server"
)

const upHelp = `
Runs the whole system on this machine in one process: an embedded etcd,
a control-plane replica with its gateway, and a local agent. Every model of
the model repository is pushed as an artifact and deployed as an
application of the same name (unless it exists already), so the demo models
that scripts/setup.sh installs — PaddleOCR v4 detection (ocr-det),
recognition (ocr-rec) and angle classifier (ocr-cls); MediaPipe BlazeFace
front and back — answer on the Open Inference Protocol at once:
REST on --http, gRPC on --grpc, through the gateway.

The admin API (/api/v1 on --http) needs the cluster token kept in
<data-dir>/token; the CLI on this machine finds it there. Inference is open
on loopback. Binding another address needs --token or an explicit
--insecure; TLS is on with --tls-cert/--tls-key.

Other agents may join this control plane: accelpool agent --join
http://<this host>:8000 --token <token>. Stop with Ctrl-C.`

func defaultDataDir() string {
	if d := os.Getenv("ACCELPOOL_DATA_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "accelpool")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "accelpool")
	}
	return filepath.Join(os.TempDir(), "accelpool-data")
}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("up", "up [flags]", upHelp, stderr)
	httpAddr := fs.String("http", "127.0.0.1:8000", "admin API + Open Inference Protocol REST `address`")
	grpcAddr := fs.String("grpc", "127.0.0.1:8001", "Open Inference Protocol gRPC `address`")
	metricsAddr := fs.String("metrics", "127.0.0.1:8002", "the local agent's Prometheus /metrics `address` (the control plane's are on --http)")
	repo := fs.String("model-repository", cache.ModelRepository(), "models to deploy at start: `dir` of <name>/<version>/model.onnx")
	dataDir := fs.String("data-dir", defaultDataDir(), "`dir` for accelpool's state (etcd, token, artifact cache)")
	etcdListen := fs.String("etcd-listen", "127.0.0.1:2379", "embedded etcd client `address`")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path` (default: $ACCELPOOL_ORT_LIB, the cache, then the system)")
	providers := fs.String("providers", "cpu", "execution providers by preference, comma-separated (tensorrt,cuda,cpu)")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "cluster `token` (default $ACCELPOOL_TOKEN, else generated in <data-dir>/token)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file` (PEM) for the listeners")
	tlsKey := fs.String("tls-key", "", "TLS key `file` (PEM)")
	insecure := fs.Bool("insecure", false, "allow binding beyond loopback without an explicit token")
	allowSHM := fs.Bool("allow-client-shm", false, "accept tensors in clients' system shared memory (Triton's extension, for clients on this machine; the inputs one request reads from it are bounded in all by --max-body-bytes, as a body is)")
	maxBody := fs.Int64("max-body-bytes", 64<<20, "largest request body or gRPC message in `bytes`")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	tuneGC()
	provs, err := parseProviders(*providers)
	if err != nil {
		return err
	}
	if err := checkMaxBody(*maxBody); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	loopback := auth.IsLoopback(*httpAddr) && auth.IsLoopback(*grpcAddr)
	for _, a := range []string{*httpAddr, *grpcAddr, *metricsAddr} {
		if a != "" && !auth.IsLoopback(a) && *token == "" && !*insecure {
			return fmt.Errorf("%s binds beyond loopback: give --token (or ACCELPOOL_TOKEN), or --insecure to use the generated one", a)
		}
	}
	if err := checkEtcdListen(*etcdListen); err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	found, err := repository.Scan(*repo)
	if err != nil {
		return fmt.Errorf("model repository %s: %w\n  install the demo models with: scripts/setup.sh (or make setup), or point --model-repository at your own", *repo, err)
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
	if err != nil {
		return err
	}
	tok, _, err := serverToken(*token, *dataDir)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "starting etcd, the control plane and a local agent in %s ...\n", *dataDir)
	st, closeStore, err := openStore(ctx, "", *etcdListen, *dataDir, log)
	if err != nil {
		return err
	}
	defer closeStore()
	rep, err := server.Start(ctx, server.ServeConfig{
		Config:     server.Config{Store: st, Token: tok, DataDir: *dataDir, Logger: log},
		ListenAddr: *httpAddr, GRPCAddr: *grpcAddr, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey,
		MaxBodyBytes: *maxBody, OpenInference: loopback, AllowClientSHM: *allowSHM, Version: Version,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rep.Close(sctx)
	}()

	agentDir := filepath.Join(*dataDir, "agent")
	id, err := agentID(agentDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(member.RepositoryDir(agentDir), 0o755); err != nil {
		return err
	}
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:  agent.Config{Repository: member.RepositoryDir(agentDir), Backend: backend, Logger: log, Version: Version, Providers: provs},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", MetricsAddr: *metricsAddr, Token: tok, MaxBodyBytes: *maxBody,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Close(sctx)
	}()
	acc, _ := parseAccelerators("")
	n := cluster.Node{Name: "local", Tier: cluster.TierEdge, Site: "local", Accelerators: acc, AgentID: id,
		HTTPAddr: node.HTTPAddr(), GRPCAddr: node.GRPCAddr()}
	memberErr := make(chan error, 1)
	mctx, stopMember := context.WithCancel(ctx)
	defer stopMember()
	go func() {
		memberErr <- member.Run(mctx, member.Config{Servers: []string{rep.URL()}, Token: tok, Node: n, DataDir: agentDir, Manager: node.Manager, Logger: log, AutoProfile: true})
	}()

	cl := client.New([]string{rep.URL()}, tok, nil)
	apps, err := deployRepository(ctx, cl, found, stdout)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "accelpool: interrupted while deploying the models; shutting down")
			return nil
		}
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = cl.WaitReady(wctx, apps...)
	cancel()
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "warning: not every application is ready yet (%v); see `accelpool get apps`\n", err)
	}
	if ctx.Err() == nil { // interrupted while waiting: no banner to call what is stopping
		printBanner(ctx, stdout, cl, rep, *tlsCert != "", loopback, *dataDir)
	}

	select {
	case <-ctx.Done():
	case err = <-rep.Err():
	case err = <-node.Err():
	case err = <-memberErr:
	}
	fmt.Fprintln(stdout, "accelpool: shutting down (requests in flight finish first)")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// deployRepository pushes every model of a repository and deploys an
// application of the same name for each, served as the model's
// config.yaml says, leaving existing applications alone. A model whose
// config.yaml is invalid is skipped with the reason; the others deploy.
func deployRepository(ctx context.Context, cl *client.Client, found []repository.Model, stdout io.Writer) ([]string, error) {
	var names []string
	taken := map[string]string{}
	for _, m := range found {
		if m.ConfigErr != nil {
			fmt.Fprintf(stdout, "  skipping %s: %v\n", m.Name, m.ConfigErr)
			continue
		}
		name := appName(m.Name)
		if other, ok := taken[name]; ok || !cluster.ValidName(name) {
			why := "no valid application name can be made from it (1-63 lowercase letters, digits or '-')"
			if ok {
				why = fmt.Sprintf("its application name %s is taken by model %s", name, other)
			}
			fmt.Fprintf(stdout, "  skipping %s: %s\n", m.Name, why)
			continue
		}
		taken[name] = m.Name
		if name != m.Name {
			fmt.Fprintf(stdout, "  %s is served as application %s (application names are DNS labels)\n", m.Name, name)
		}
		data, err := os.ReadFile(m.Path(m.Latest()))
		if err != nil {
			return nil, err
		}
		var art cluster.ModelArtifact
		err = whileUnavailable(ctx, stdout, func() (err error) {
			art, err = cl.PushModel(ctx, name, data)
			return err
		})
		if errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrTooLarge) {
			// A corrupt or unsupported model: the others still deploy.
			fmt.Fprintf(stdout, "  skipping %s: %v\n", m.Name, err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("push %s: %w", m.Name, err)
		}
		app, err := repositoryApp(name, m.Config)
		if err != nil {
			return nil, fmt.Errorf("deploy %s: %w", m.Name, err)
		}
		err = whileUnavailable(ctx, stdout, func() error {
			_, err := cl.Deploy(ctx, app, client.DeployOptions{})
			return err
		})
		switch {
		case errors.Is(err, errdefs.ErrAlreadyExists):
			fmt.Fprintf(stdout, "  %-16s %s (application exists, kept)\n", name, art.Digest[:19])
		case err != nil:
			return nil, fmt.Errorf("deploy %s: %w", m.Name, err)
		default:
			fmt.Fprintf(stdout, "  %-16s %s deployed\n", name, art.Digest[:19])
		}
		names = append(names, name)
	}
	return names, nil
}

// appName turns a model repository name (letters of either case, digits,
// '_', '.', '-') into an application name: lowercase, with '_' and '.'
// as '-'.
func appName(model string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '_' || r == '.':
			return '-'
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, model)
}

// repositoryApp is the application `up` deploys for a repository model:
// one instance, a lenient objective, and the model's config.yaml as its
// batching and serving settings.
func repositoryApp(name string, c repository.Config) ([]byte, error) {
	serving := c
	serving.MaxBatchSize, serving.MaxQueueDelayMS = 0, 0
	app := cluster.Application{
		APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{
			Model:     name,
			Objective: cluster.Objective{P99Ms: 1000},
			Replicas:  cluster.Replicas{Min: 1, Max: 1},
			Batching:  cluster.Batching{MaxBatchSize: c.MaxBatchSize, MaxQueueDelayMs: c.MaxQueueDelayMS},
			Serving:   &serving,
		},
	}
	if err := app.Validate(); err != nil {
		return nil, err
	}
	return yaml.Marshal(app)
}

// upLeaderWait bounds how long `accelpool up` waits for its control
// plane to lead: after a crash the previous run's election lease has to
// expire first (a few seconds).
const upLeaderWait = time.Minute

// whileUnavailable runs fn until it returns anything but ErrUnavailable
// (the control plane not leading yet), for up to upLeaderWait, saying once
// that it waits.
func whileUnavailable(ctx context.Context, stdout io.Writer, fn func() error) error {
	deadline := time.Now().Add(upLeaderWait)
	said := false
	for {
		err := fn()
		if !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		if !said {
			fmt.Fprintf(stdout, "  waiting for the control plane to lead (%v) — after a crash the previous run's lease expires first\n", err)
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func printBanner(ctx context.Context, w io.Writer, cl *client.Client, rep *server.Replica, withTLS, open bool, dataDir string) {
	scheme := "http"
	if withTLS {
		scheme = "https"
	}
	base := fmt.Sprintf("%s://%s", scheme, rep.HTTPAddr())
	fmt.Fprintf(w, "\naccelpool %s is up (ONNX Runtime %s).\n\n", Version, ortVersion())
	fmt.Fprintf(w, "  inference  REST %s/v2   gRPC %s\n  admin      %s/api/v1  (token in the data dir; the CLI finds it)\n  metrics    %s/metrics\n\n", base, rep.GRPCAddr(), base, base)
	apps, _ := cl.Apps(ctx)
	fmt.Fprintf(w, "Applications:\n")
	example := ""
	for _, a := range apps {
		state := fmt.Sprintf("%d/%d ready", a.Status.Ready, a.Status.Desired)
		fmt.Fprintf(w, "  %-16s %s\n", a.Metadata.Name, state)
		if a.Status.Ready > 0 && (example == "" || a.Metadata.Name == "ocr-cls") {
			example = a.Metadata.Name
		}
	}
	fmt.Fprintf(w, "\nTry it:\n")
	writeTryIt(w, tryIt{self: selfName(), base: base, example: example, open: open, dataDir: dataDir})
	fmt.Fprintf(w, "\nStop with Ctrl-C (requests in flight finish first).\n\n")
}

// tryIt is what the banner's example commands depend on.
type tryIt struct {
	self, base, example string
	open                bool   // inference needs no token
	dataDir             string // where the token is
}

// writeTryIt writes example commands that work as printed: the CLI's
// --url and --server are given when up listens elsewhere than their
// defaults, and the data dir when the CLI would not find the token in its
// default one.
func writeTryIt(w io.Writer, t tryIt) {
	authHdr, url, server, env := "", "", "", ""
	if !t.open {
		authHdr = ` -H "Authorization: Bearer $ACCELPOOL_TOKEN"`
	}
	if t.base != defaultServerURL {
		url, server = " --url "+t.base, " --server "+t.base
	}
	if filepath.Clean(t.dataDir) != filepath.Clean(defaultDataDir()) {
		env = "ACCELPOOL_DATA_DIR=" + shellQuote(t.dataDir) + " "
	}
	fmt.Fprintf(w, "  curl -s%s %s/v2/models/%s\n", authHdr, t.base, orDefault(t.example, "MODEL"))
	if t.example != "" {
		fmt.Fprintf(w, "  %s infer%s --model %s --print-request | curl -s%s -X POST %s/v2/models/%s/infer -H 'Content-Type: application/json' --data-binary @-\n",
			t.self, url, t.example, authHdr, t.base, t.example)
		fmt.Fprintf(w, "  %s infer%s --model %s path/to/photo.jpg\n", t.self, url, t.example)
	}
	fmt.Fprintf(w, "  %s%s get apps%s\n  %s%s explain%s %s\n", env, t.self, server, env, t.self, server, orDefault(t.example, "APP"))
}

// defaultServerURL is where the CLI's --url and --server point by default.
const defaultServerURL = "http://127.0.0.1:8000"

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selfName is how the user can call this binary again: its name when it is
// on PATH, else the path it was started with.
func selfName() string {
	name := filepath.Base(os.Args[0])
	if p, err := exec.LookPath(name); err == nil {
		if exe, err2 := os.Executable(); err2 == nil {
			if a, _ := filepath.EvalSymlinks(p); a != "" {
				if b, _ := filepath.EvalSymlinks(exe); a == b {
					return name
				}
			}
		}
	}
	if strings.Contains(os.Args[0], "go-build") {
		return "go run ./cmd/accelpool"
	}
	return os.Args[0]
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ortVersion() string {
	_, v, _, ok := onnx.LibraryInfo()
	if !ok {
		return "not loaded"
	}
	return v
}
