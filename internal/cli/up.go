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

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/cache"
)

const upHelp = `
Starts the whole serving stack in one process: every model of the model
repository is loaded into ONNX Runtime and served over the Open Inference
Protocol (KServe v2 / Triton): REST on --http, gRPC on --grpc, Prometheus
metrics on --metrics. By default it serves the demo models that
scripts/setup.sh installs (PaddleOCR v4 detection, recognition and angle
classifier; MediaPipe BlazeFace front and back) from the cache directory.

Every listener binds loopback by default. Binding another address needs a
token (--token or ACCELPOOL_TOKEN; clients send "Authorization: Bearer
<token>") or an explicit --insecure; TLS is on with --tls-cert/--tls-key.

Stop it with Ctrl-C: in-flight requests finish, then models unload.`

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
	httpAddr := fs.String("http", "127.0.0.1:8000", "Open Inference Protocol REST `address`")
	grpcAddr := fs.String("grpc", "127.0.0.1:8001", "Open Inference Protocol gRPC `address`")
	metricsAddr := fs.String("metrics", "127.0.0.1:8002", "Prometheus /metrics `address`")
	repo := fs.String("model-repository", cache.ModelRepository(), "model repository `dir` (<name>/<version>/model.onnx, optional <name>/config.yaml)")
	dataDir := fs.String("data-dir", defaultDataDir(), "`dir` for accelpool's state")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path` (default: $ACCELPOOL_ORT_LIB, the cache, then the system)")
	providers := fs.String("providers", "cpu", "execution providers by preference, comma-separated (tensorrt,cuda,cpu)")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "bearer `token` required on API calls (default $ACCELPOOL_TOKEN; none on loopback)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file` (PEM) for HTTP and gRPC")
	tlsKey := fs.String("tls-key", "", "TLS key `file` (PEM)")
	insecure := fs.Bool("insecure", false, "allow binding beyond loopback without a token")
	maxBody := fs.Int64("max-body-bytes", 64<<20, "largest request body or gRPC message in `bytes`")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	for _, a := range []string{*httpAddr, *grpcAddr, *metricsAddr} {
		if a != "" && !auth.IsLoopback(a) && *token == "" && !*insecure {
			return fmt.Errorf("%s binds beyond loopback: give --token (or ACCELPOOL_TOKEN), or --insecure to serve it open", a)
		}
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if _, err := os.Stat(*repo); err != nil {
		return fmt.Errorf("model repository %s: %w\n  install the demo models with: scripts/setup.sh (or make setup), or point --model-repository at your own", *repo, err)
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
	if err != nil {
		return err
	}
	var provs []string
	for _, p := range strings.Split(*providers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			provs = append(provs, p)
		}
	}
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:      agent.Config{Repository: *repo, Backend: backend, Logger: log, Version: Version, Providers: provs},
		HTTPAddr:     *httpAddr,
		GRPCAddr:     *grpcAddr,
		MetricsAddr:  *metricsAddr,
		Token:        *token,
		TLSCertFile:  *tlsCert,
		TLSKeyFile:   *tlsKey,
		MaxBodyBytes: *maxBody,
	})
	if err != nil {
		return err
	}
	printBanner(ctx, stdout, node, *token != "", *tlsCert != "")
	select {
	case <-ctx.Done():
	case err = <-node.Err():
	}
	fmt.Fprintln(stdout, "accelpool: shutting down (waiting up to 10s for requests in flight)")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = node.Close(sctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func printBanner(ctx context.Context, w io.Writer, node *agent.Node, withToken, withTLS bool) {
	index, _ := node.Manager.RepositoryIndex(ctx, false)
	scheme := "http"
	if withTLS {
		scheme = "https"
	}
	base := fmt.Sprintf("%s://%s", scheme, node.HTTPAddr())
	fmt.Fprintf(w, "\naccelpool %s is up (ONNX Runtime %s).\n\n", Version, ortVersion())
	fmt.Fprintf(w, "  REST     %s/v2\n  gRPC     %s\n  metrics  %s://%s/metrics\n\n", base, node.GRPCAddr(), "http", node.MetricsAddr())
	fmt.Fprintf(w, "Models:\n")
	example := ""
	for _, e := range index {
		line := fmt.Sprintf("  %-16s v%-3s %s", e.Name, e.Version, e.State)
		if e.Reason != "" {
			line += "  (" + e.Reason + ")"
		}
		fmt.Fprintln(w, line)
		if e.State == agent.StateReady && (example == "" || e.Name == "ocr-cls") {
			example = e.Name
		}
	}
	auth := ""
	if withToken {
		auth = ` -H "Authorization: Bearer $ACCELPOOL_TOKEN"`
	}
	self := selfName()
	fmt.Fprintf(w, "\nTry it:\n")
	fmt.Fprintf(w, "  curl -s%s %s/v2/models/%s\n", auth, base, orDefault(example, "MODEL"))
	if example != "" {
		fmt.Fprintf(w, "  %s infer --model %s --print-request | curl -s%s -X POST %s/v2/models/%s/infer -H 'Content-Type: application/json' --data-binary @-\n",
			self, example, auth, base, example)
		fmt.Fprintf(w, "  %s infer --url %s --model %s path/to/photo.jpg\n", self, base, example)
	}
	fmt.Fprintf(w, "\nStop with Ctrl-C (requests in flight finish first).\n\n")
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
