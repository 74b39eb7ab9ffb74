package repository

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte("max_batch_size: 8\nmax_queue_delay_ms: 2.5\nproviders: [cuda, cpu]\n"))
	if err != nil || c.MaxBatchSize != 8 || c.QueueDelay().Microseconds() != 2500 || c.MaxQueueSize != 128 {
		t.Fatalf("%+v %v", c, err)
	}
	for doc, field := range map[string]string{
		"max_batch_sise: 4":        "max_batch_sise",
		"max_batch_size: -1":       "max_batch_size",
		"concurrency: 0":           "concurrency",
		"max_queue_size: 0":        "max_queue_size",
		"providers: [fpga]":        "providers[0]",
		"max_queue_delay_ms: x":    "max_queue_delay_ms",
		"max_queue_delay_ms: .nan": "max_queue_delay_ms",
		"max_queue_delay_ms: .inf": "max_queue_delay_ms",
		"default_timeout_ms: .nan": "default_timeout_ms",
		"default_timeout_ms: .inf": "default_timeout_ms",
		"default_timeout_ms: -1":   "default_timeout_ms",
		"[":                        "config.yaml",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: %v (want ErrInvalid naming %s)", doc, err, field)
		}
	}
}

func TestScan(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("a/1/model.onnx")
	mk("a/10/model.onnx")
	mk("a/2/model.onnx")
	mk("a/config.yaml")
	mk("b/notaversion/model.onnx")
	mk("c/3/other.onnx")
	if err := os.WriteFile(filepath.Join(root, "a", "config.yaml"), []byte("max_batch_size: 999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Name != "a" || ms[0].Latest() != "10" || ms[0].ConfigErr == nil {
		t.Fatalf("scan: %+v", ms)
	}
	if _, err := Scan(filepath.Join(root, "missing")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing repo: %v", err)
	}
	if _, _, err := Read(root, "../x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("traversal: %v", err)
	}
}

// TestScanFollowsLinks: a repository of links to models kept elsewhere, and
// a version directory that is a link, are scanned like real directories;
// a dangling link and a link to a file are skipped.
func TestScanFollowsLinks(t *testing.T) {
	store, root := t.TempDir(), t.TempDir()
	for _, p := range []string{"m/1/model.onnx", "v/model.onnx"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(store, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(store, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"m":      filepath.Join(store, "m"),
		"n/7":    filepath.Join(store, "v"),
		"gone":   filepath.Join(store, "missing"),
		"a-file": filepath.Join(store, "v", "model.onnx"),
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "m" || ms[0].Latest() != "1" || ms[1].Name != "n" || ms[1].Latest() != "7" {
		t.Fatalf("scan of linked models: %+v", ms)
	}
}
