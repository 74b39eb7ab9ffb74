package etcdtest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/accelpool/accelpool/store/etcd"
)

// StartEmbedded starts an in-process etcd with its data in dir (a fresh
// temporary directory when dir is "") on free loopback ports, and closes it
// when the test ends. Restart it on the same data and ports with
// RestartEmbedded.
func StartEmbedded(t testing.TB, dir string) *etcd.Embedded {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	return startEmbedded(t, etcd.EmbeddedConfig{
		Dir:       dir,
		ClientURL: "http://127.0.0.1:0",
		PeerURL:   "http://127.0.0.1:0",
	})
}

// RestartEmbedded closes e (if still running) and starts a new member on
// the same data directory and ports.
func RestartEmbedded(t testing.TB, e *etcd.Embedded, dir string) *etcd.Embedded {
	t.Helper()
	e.Close()
	return startEmbedded(t, etcd.EmbeddedConfig{Dir: dir, ClientURL: e.ClientURL(), PeerURL: e.PeerURL()})
}

func startEmbedded(t testing.TB, cfg etcd.EmbeddedConfig) *etcd.Embedded {
	t.Helper()
	cfg.UnsafeNoFsync = true
	cfg.Logger = TestLogger(t)
	e, err := etcd.StartEmbedded(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestLogger is a slog.Logger that writes through t.Log until the test
// ends (and drops what comes later, rather than panicking).
func TestLogger(t testing.TB) *slog.Logger {
	w := &tbWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
