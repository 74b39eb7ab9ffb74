package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
)

const testdataDir = "/usr/share/libonnx-testdata/data/node"

var (
	backendOnce sync.Once
	backend     *onnx.Backend
	backendErr  error
)

// requireORT returns the ONNX Runtime backend or fails the test loudly.
func requireORT(t testing.TB) *onnx.Backend {
	t.Helper()
	backendOnce.Do(func() {
		backend, backendErr = onnx.New(onnx.Config{Logger: quietLogger()})
	})
	if backendErr != nil {
		t.Fatalf("ONNX Runtime is required for this test and could not be loaded: %v\n"+
			"install it with `scripts/setup.sh` (or `make setup`), or set ACCELPOOL_ORT_LIB", backendErr)
	}
	return backend
}

// requireDemoModels returns the demo model repository or fails loudly.
func requireDemoModels(t testing.TB) string {
	t.Helper()
	repo := cache.ModelRepository()
	for _, m := range []string{"ocr-det", "ocr-rec", "ocr-cls", "blazeface-front", "blazeface-back"} {
		if _, err := os.Stat(filepath.Join(repo, m, "1", "model.onnx")); err != nil {
			t.Fatalf("demo model %s is missing (%v): install the demo models with `scripts/setup.sh`", m, err)
		}
	}
	return repo
}

// requireTestdata fails loudly when ONNX's backend test data is missing.
func requireTestdata(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(testdataDir); err != nil {
		t.Fatalf("ONNX backend test data is missing (%v): install it with `scripts/setup.sh --test` "+
			"(apt-get install libonnx-testdata)", err)
	}
}

func quietLogger() *slog.Logger {
	if os.Getenv("ACCELPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// stack is a running node and one client per transport.
type stack struct {
	node    *agent.Node
	clients map[string]oip.Service // "rest-json", "rest-binary", "grpc"
}

// startStack serves repo on loopback and connects the three clients.
func startStack(t testing.TB, repo string, cfg agent.NodeConfig) *stack {
	t.Helper()
	b := requireORT(t)
	cfg.Manager.Repository = repo
	cfg.Manager.Backend = b
	if cfg.Manager.Logger == nil {
		cfg.Manager.Logger = quietLogger()
	}
	cfg.HTTPAddr, cfg.GRPCAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	node, err := agent.StartNode(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Close(ctx)
	})
	gc, err := grpcsvc.Dial(node.GRPCAddr(), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(128<<20), grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gc.Close() })
	base := "http://" + node.HTTPAddr()
	return &stack{node: node, clients: map[string]oip.Service{
		"rest-json":   rest.NewClient(base, rest.ClientOptions{}),
		"rest-binary": rest.NewClient(base, rest.ClientOptions{Binary: true}),
		"grpc":        gc,
	}}
}

var transports = []string{"rest-json", "rest-binary", "grpc"}
