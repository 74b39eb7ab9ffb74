package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/cache"
)

const serveHelp = `
Serves a plain model repository on this machine without a control plane:
every <name>/<version>/model.onnx is loaded into ONNX Runtime and served
over the Open Inference Protocol (REST on --http, gRPC on --grpc, metrics on
--metrics), with the model repository API (accelpool models/load/unload).
This is what an agent does under the hood for the instances it is assigned.`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "serve [flags]", serveHelp, stderr)
	httpAddr := fs.String("http", "127.0.0.1:8000", "REST `address`")
	grpcAddr := fs.String("grpc", "127.0.0.1:8001", "gRPC `address`")
	metricsAddr := fs.String("metrics", "127.0.0.1:8002", "Prometheus /metrics `address`")
	repo := fs.String("model-repository", cache.ModelRepository(), "model repository `dir`")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path`")
	providers := fs.String("providers", "cpu", "execution providers by preference (tensorrt,cuda,cpu)")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "bearer `token` required on API calls")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file`")
	tlsKey := fs.String("tls-key", "", "TLS key `file`")
	insecure := fs.Bool("insecure", false, "allow binding beyond loopback without a token")
	allowSHM := fs.Bool("allow-client-shm", false, "accept tensors in clients' system shared memory (Triton's extension, for clients on this machine; the inputs one request reads from it are bounded in all by --max-body-bytes, as a body is)")
	maxBody := fs.Int64("max-body-bytes", 64<<20, "largest request body or gRPC message in `bytes`")
	logLevel := fs.String("log-level", "info", "log `level`")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	tuneGC()
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	provs, err := parseProviders(*providers)
	if err != nil {
		return err
	}
	if err := checkMaxBody(*maxBody); err != nil {
		return err
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
	if _, err := os.Stat(*repo); err != nil {
		return fmt.Errorf("model repository %s: %w\n  install the demo models with: scripts/setup.sh, or point --model-repository at your own", *repo, err)
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
	if err != nil {
		return err
	}
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:  agent.Config{Repository: *repo, Backend: backend, Logger: log, Version: Version, Providers: provs},
		HTTPAddr: *httpAddr, GRPCAddr: *grpcAddr, MetricsAddr: *metricsAddr, Token: *token,
		TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, MaxBodyBytes: *maxBody, AllowClientSHM: *allowSHM,
	})
	if err != nil {
		return err
	}
	index, _ := node.Manager.RepositoryIndex(ctx, false)
	fmt.Fprintf(stdout, "serving %d models: REST http://%s/v2  gRPC %s  metrics http://%s/metrics\n", len(index), node.HTTPAddr(), node.GRPCAddr(), node.MetricsAddr())
	for _, e := range index {
		fmt.Fprintf(stdout, "  %-16s v%-3s %s %s\n", e.Name, e.Version, e.State, e.Reason)
	}
	select {
	case <-ctx.Done():
	case err = <-node.Err():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = node.Close(sctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
