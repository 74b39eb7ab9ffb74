package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/etcd"
	"github.com/accelpool/accelpool/store/etcd/etcdtest"
	"github.com/accelpool/accelpool/store/storetest"
)

var prefixes atomic.Int64

// newStore returns a client of endpoints whose keys live under a prefix of
// their own, so the suite's subtests can share one etcd.
func newStore(t testing.TB, endpoints []string) *etcd.Store {
	t.Helper()
	s, err := etcd.New(etcd.Config{
		Endpoints:   endpoints,
		Prefix:      fmt.Sprintf("/test%d", prefixes.Add(1)),
		DialTimeout: 2 * time.Second,
		ElectionTTL: 2 * time.Second,
		Logger:      etcdtest.TestLogger(t),
	})
	if err != nil {
		t.Fatalf("etcd.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		e := etcdtest.StartEmbedded(t, "")
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, e.ClientEndpoints()) })
	})
	t.Run("etcd-3.4-process", func(t *testing.T) {
		eps, _, _ := etcdtest.StartProcess(t, t.TempDir())
		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, eps) })
	})
}

func TestUnavailable(t *testing.T) {
	// A port nothing listens on.
	e := etcdtest.StartEmbedded(t, "")
	dead := e.ClientEndpoints()
	e.Close()

	const dial = time.Second
	s, err := etcd.New(etcd.Config{Endpoints: dead, DialTimeout: dial, Logger: etcdtest.TestLogger(t)})
	if err != nil {
		t.Fatalf("New must not wait for etcd: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	checks := []struct {
		name string
		fn   func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "/k"); return err }},
		{"Put", func() error { _, err := s.Put(ctx, "/k", nil, store.NoLease); return err }},
		{"List", func() error { _, _, err := s.List(ctx, "/"); return err }},
		{"Txn", func() error { _, err := s.Txn(ctx, []store.Op{{Key: "/k", CreateOnly: true}}); return err }},
		{"Grant", func() error { _, err := s.Grant(ctx, time.Second); return err }},
		{"Campaign", func() error { _, err := s.Campaign(ctx, "e", "a"); return err }},
		{"Leader", func() error { _, err := s.Leader(ctx, "e"); return err }},
	}
	for _, c := range checks {
		start := time.Now()
		err := c.fn()
		took := time.Since(start)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("%s with etcd down = %v; want ErrUnavailable", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), dead[0]) {
			t.Errorf("%s error %q does not say which etcd is unreachable", c.name, err)
		}
		if took > dial+time.Second {
			t.Errorf("%s took %v to fail; want within DialTimeout (%v) + 1s", c.name, took, dial)
		}
		t.Logf("%s: %v after %v", c.name, err, took.Round(time.Millisecond))
	}

	// A caller's deadline that ends while etcd is unreachable is
	// ErrUnavailable too (and still a deadline).
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = s.Get(dctx, "/k")
	if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get with a short deadline = %v; want ErrUnavailable wrapping DeadlineExceeded", err)
	}
}

// restartCase checks that one Store client keeps working across an etcd
// restart on the same data and ports: reads fail with ErrUnavailable while
// etcd is down, succeed again within seconds of it coming back, the data
// is still there, and a watch started before the restart goes on.
func restartCase(t *testing.T, endpoints []string, stop, start func()) {
	s := newStore(t, endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rev, err := s.Put(ctx, "/r/before", []byte("1"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	watch := s.Watch(ctx, "/r/", rev+1)

	t0 := time.Now()
	stop()
	t.Logf("etcd stopped in %v", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := s.Get(dctx, "/r/before"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Get while etcd is down = %v; want ErrUnavailable", err)
	} else {
		t.Logf("Get while etcd is down failed after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	}
	dcancel()

	t0 = time.Now()
	start()
	t.Logf("etcd started in %v", time.Since(t0).Round(time.Millisecond))
	began := time.Now()
	var kv store.KV
	for {
		kv, err = s.Get(ctx, "/r/before")
		if err == nil {
			break
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("Get still failing 10s after etcd restarted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first successful Get %v after restart", time.Since(began).Round(time.Millisecond))
	if string(kv.Value) != "1" || kv.Rev != rev {
		t.Fatalf("after restart Get = %+v; want the value written before", kv)
	}
	r2, err := s.Put(ctx, "/r/after", []byte("2"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r, ok := <-watch:
		if !ok || r.Err != nil || len(r.Events) != 1 || r.Events[0].KV.Key != "/r/after" || r.Events[0].KV.Rev != r2 {
			t.Fatalf("watch across restart got %+v (open %v); want the put of /r/after @%d", r, ok, r2)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("watch started before the restart saw nothing of a put after it")
	}
}

func TestRestartEmbedded(t *testing.T) {
	dir := t.TempDir()
	e := etcdtest.StartEmbedded(t, dir)
	restartCase(t, e.ClientEndpoints(), e.Close, func() { e = etcdtest.RestartEmbedded(t, e, dir) })
}

func TestRestartProcess(t *testing.T) {
	dir := t.TempDir()
	eps, stop, restart := etcdtest.StartProcess(t, dir)
	restartCase(t, eps, stop, restart)
}

func TestWatchCompacted(t *testing.T) {
	e := etcdtest.StartEmbedded(t, "")
	s := newStore(t, e.ClientEndpoints())
	ctx := context.Background()
	first, _ := s.Put(ctx, "/k", []byte("0"), store.NoLease)
	last, err := s.Put(ctx, "/k", []byte("1"), store.NoLease)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	select {
	case r, ok := <-s.Watch(ctx, "/", first):
		if !ok || !errors.Is(r.Err, store.ErrCompacted) {
			t.Fatalf("watch from a compacted revision = %+v (open %v); want Err wrapping ErrCompacted", r, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no response from a watch at a compacted revision")
	}
}

// TestCloseHandsOverLeadership: closing a leader's store resigns, so the
// next candidate (another client) leads at once rather than after the
// session TTL.
func TestCloseHandsOverLeadership(t *testing.T) {
	e := etcdtest.StartEmbedded(t, "")
	a := newStore(t, e.ClientEndpoints())
	b, err := etcd.New(etcd.Config{Endpoints: e.ClientEndpoints(), Prefix: a.Prefix(), ElectionTTL: 30 * time.Second, Logger: etcdtest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	la, err := a.Campaign(ctx, "lead", "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { _, err := b.Campaign(ctx, "lead", "b"); got <- err }()
	for {
		if id, err := b.Leader(ctx, "lead"); err == nil && id == "a" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	a.Close()
	<-la.Lost()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b not elected within 10s of a closing")
	}
	t.Logf("b elected %v after a closed", time.Since(start).Round(time.Millisecond))
	if id, err := b.Leader(ctx, "lead"); err != nil || id != "b" {
		t.Fatalf("Leader = %q, %v; want b", id, err)
	}
}

// TestPrefix: keys are namespaced; the raw etcd keys carry the prefix and
// the store never shows it.
func TestPrefix(t *testing.T) {
	e := etcdtest.StartEmbedded(t, "")
	s := newStore(t, e.ClientEndpoints())
	ctx := context.Background()
	if _, err := s.Put(ctx, "/apps/x", []byte("v"), store.NoLease); err != nil {
		t.Fatal(err)
	}
	raw, err := s.Client().Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(raw.Kvs) != 1 || string(raw.Kvs[0].Key) != s.Prefix()+"/apps/x" {
		t.Fatalf("raw keys = %v; want one key under the prefix", raw.Kvs)
	}
	kvs, _, err := s.List(ctx, "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "/apps/x" {
		t.Fatalf("List(\"\") = %v, %v", kvs, err)
	}
}

// TestDataDirInUse: a second member on a directory another holds is an
// error at once naming the holder, not a wait on etcd's database lock;
// once the first closes, the directory can be used again.
func TestDataDirInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	first := etcdtest.StartEmbedded(t, dir)
	start := time.Now()
	_, err := etcd.StartEmbedded(context.Background(), etcd.EmbeddedConfig{Dir: dir, ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0"})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) {
		t.Fatalf("second member on %s: %v; want a conflict naming this process", dir, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("refused after %v, want at once", took)
	}
	first.Close()
	again, err := etcd.StartEmbedded(context.Background(), etcd.EmbeddedConfig{Dir: dir, ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0"})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	again.Close()
}
