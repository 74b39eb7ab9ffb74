//go:build linux

package etcd_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/etcd"
)

// captureFDs redirects file descriptors 1 and 2 (what `accelpool up`
// prints to) into a pipe until the returned function is called, which
// restores them and returns what was written.
func captureFDs(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := [2]int{}
	for i, fd := range []int{1, 2} {
		if saved[i], err = syscall.Dup(fd); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Dup3(int(w.Fd()), fd, 0); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	return func() string {
		for i, fd := range []int{1, 2} {
			_ = syscall.Dup3(saved[i], fd, 0)
			_ = syscall.Close(saved[i])
		}
		w.Close()
		out := <-done
		r.Close()
		return string(bytes.TrimSpace(out))
	}
}

// TestEmbeddedQuiet: starting, using and stopping an embedded etcd with
// the default logger prints nothing.
func TestEmbeddedQuiet(t *testing.T) {
	restore := captureFDs(t)
	out := func() string {
		ctx := context.Background()
		e, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{Dir: t.TempDir(), ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0", UnsafeNoFsync: true})
		if err != nil {
			restore()
			t.Fatal(err)
		}
		s, err := etcd.New(etcd.Config{Endpoints: e.ClientEndpoints()})
		if err == nil {
			_, err = s.Put(ctx, "/k", []byte("v"), store.NoLease)
			s.Close()
		}
		e.Close()
		if err != nil {
			restore()
			t.Fatal(err)
		}
		return restore()
	}()
	if out != "" {
		t.Fatalf("embedded etcd printed:\n%s", out)
	}
}
