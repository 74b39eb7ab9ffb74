package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

// LeaseTTL is the TTL the suite grants. etcd rounds it up to its minimum
// (2 s with default timings); the memory store honours it exactly.
const LeaseTTL = time.Second

// Run runs the conformance suite. newStore returns a store with no keys
// (at least none under "/t/") and no elections; it is called once per
// subtest, possibly from parallel subtests, and the suite closes every
// store it gets (Close must be idempotent).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	tests := []struct {
		name     string
		parallel bool
		fn       func(t *testing.T, s store.Store)
	}{
		{"GetMissing", false, testGetMissing},
		{"PutGet", false, testPutGet},
		{"List", false, testList},
		{"Delete", false, testDelete},
		{"TxnApplies", false, testTxnApplies},
		{"TxnAllOrNothing", false, testTxnAllOrNothing},
		{"TxnConditions", false, testTxnConditions},
		{"TxnInvalid", false, testTxnInvalid},
		{"TxnConcurrentPrevRev", false, testTxnConcurrent},
		{"WatchFromPast", false, testWatchFromPast},
		{"WatchFromNow", false, testWatchFromNow},
		{"WatchAfterList", false, testWatchAfterList},
		{"WatchCancel", false, testWatchCancel},
		{"LeaseExpiry", true, testLeaseExpiry},
		{"LeaseKeepAlive", true, testLeaseKeepAlive},
		{"LeaseRevoke", false, testLeaseRevoke},
		{"LeaseUnknown", false, testLeaseUnknown},
		{"Election", false, testElection},
		{"ElectionCancel", false, testElectionCancel},
		{"Closed", false, testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.parallel {
				t.Parallel()
			}
			tc.fn(t, open(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, s store.Store, key, val string) int64 {
	t.Helper()
	rev, err := s.Put(ctxT(t), key, []byte(val), store.NoLease)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func wantMissing(t *testing.T, s store.Store, key string) {
	t.Helper()
	if kv, err := s.Get(ctxT(t), key); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, kv.Value, err)
	}
}

// wantErr checks that err wraps kind and names key.
func wantErr(t *testing.T, what string, err, kind error, key string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: err = %v; want %v", what, err, kind)
	}
	if key != "" && !strings.Contains(err.Error(), key) {
		t.Fatalf("%s: error %q does not name key %q", what, err, key)
	}
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func recv(t *testing.T, ch <-chan store.WatchResponse) store.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		if r.Err != nil {
			t.Fatalf("watch error: %v", r.Err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response within 10s")
	}
	return store.WatchResponse{}
}

// noEvent checks that nothing arrives on ch for a short while.
func noEvent(t *testing.T, ch <-chan store.WatchResponse) {
	t.Helper()
	select {
	case r, ok := <-ch:
		t.Fatalf("unexpected watch response %+v (open %v)", r, ok)
	case <-time.After(300 * time.Millisecond):
	}
}

type ev struct {
	typ store.EventType
	key string
	val string
	rev int64
}

func (e ev) String() string {
	t := "put"
	if e.typ == store.EventDelete {
		t = "delete"
	}
	return fmt.Sprintf("%s %s=%q @%d", t, e.key, e.val, e.rev)
}

func events(r store.WatchResponse) []ev {
	var out []ev
	for _, e := range r.Events {
		out = append(out, ev{e.Type, e.KV.Key, string(e.KV.Value), e.KV.Rev})
	}
	return out
}

func wantEvents(t *testing.T, r store.WatchResponse, want ...ev) {
	t.Helper()
	got := events(r)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watch events = %v; want %v", got, want)
	}
}

func testGetMissing(t *testing.T, s store.Store) {
	_, err := s.Get(ctxT(t), "/t/missing")
	wantErr(t, "Get missing", err, errdefs.ErrNotFound, "/t/missing")
}

func testPutGet(t *testing.T, s store.Store) {
	r1 := put(t, s, "/t/a", "1")
	if r1 <= 0 {
		t.Fatalf("Put revision %d; want > 0", r1)
	}
	kv := mustGet(t, s, "/t/a")
	if kv.Key != "/t/a" || string(kv.Value) != "1" || kv.Rev != r1 {
		t.Fatalf("Get = %+v; want /t/a=1 @%d", kv, r1)
	}
	r2 := put(t, s, "/t/a", "2")
	r3 := put(t, s, "/t/b", "")
	if !(r2 > r1 && r3 > r2) {
		t.Fatalf("revisions %d, %d, %d do not increase", r1, r2, r3)
	}
	if kv := mustGet(t, s, "/t/a"); string(kv.Value) != "2" || kv.Rev != r2 {
		t.Fatalf("Get after overwrite = %+v; want 2 @%d", kv, r2)
	}
	if kv := mustGet(t, s, "/t/b"); len(kv.Value) != 0 || kv.Rev != r3 {
		t.Fatalf("Get empty value = %+v; want empty @%d", kv, r3)
	}
	// The store keeps its own copy of values.
	buf := []byte("x")
	put(t, s, "/t/c", string(buf))
	got := mustGet(t, s, "/t/c")
	got.Value[0] = 'y'
	if kv := mustGet(t, s, "/t/c"); string(kv.Value) != "x" {
		t.Fatalf("value changed through a returned slice: %q", kv.Value)
	}
}

func testList(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	kvs, rev0, err := s.List(ctx, "/t/l/")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("List empty = %v, %v", kvs, err)
	}
	for _, k := range []string{"/t/l/c", "/t/l/a", "/t/l/b/x", "/t/lx", "/t/m"} {
		put(t, s, k, k)
	}
	last := put(t, s, "/t/l/b", "b")
	kvs, rev, err := s.List(ctx, "/t/l/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
		if kv.Key != "/t/l/b" && string(kv.Value) != kv.Key {
			t.Errorf("List value of %s = %q", kv.Key, kv.Value)
		}
		if kv.Rev <= rev0 || kv.Rev > rev {
			t.Errorf("List rev of %s = %d; want in (%d, %d]", kv.Key, kv.Rev, rev0, rev)
		}
	}
	if want := "/t/l/a /t/l/b /t/l/b/x /t/l/c"; strings.Join(keys, " ") != want {
		t.Fatalf("List keys = %v; want %s", keys, want)
	}
	if rev < last {
		t.Fatalf("List revision %d < last write %d", rev, last)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put(t, s, "/t/d", "1")
	if err := s.Delete(ctx, "/t/d"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, s, "/t/d")
	if err := s.Delete(ctx, "/t/d"); err != nil {
		t.Fatalf("Delete missing key: %v", err)
	}
	// A deleted key that comes back starts afresh: CreateOnly succeeds.
	if _, err := s.Txn(ctx, []store.Op{{Key: "/t/d", Value: []byte("2"), CreateOnly: true}}); err != nil {
		t.Fatalf("CreateOnly after delete: %v", err)
	}
}

func testTxnApplies(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ra := put(t, s, "/t/x/a", "a0")
	put(t, s, "/t/x/del", "gone soon")
	rev, err := s.Txn(ctx, []store.Op{
		{Key: "/t/x/a", Value: []byte("a1"), PrevRev: ra, MustExist: true},
		{Key: "/t/x/b", Value: []byte("b1"), CreateOnly: true},
		{Key: "/t/x/del", Delete: true, MustExist: true},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	if rev <= ra {
		t.Fatalf("Txn revision %d <= %d", rev, ra)
	}
	for k, v := range map[string]string{"/t/x/a": "a1", "/t/x/b": "b1"} {
		if kv := mustGet(t, s, k); string(kv.Value) != v || kv.Rev != rev {
			t.Fatalf("after Txn %s = %q @%d; want %q @%d", k, kv.Value, kv.Rev, v, rev)
		}
	}
	wantMissing(t, s, "/t/x/del")
}

func testTxnAllOrNothing(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put(t, s, "/t/y/exists", "old")
	before := put(t, s, "/t/y/other", "old")
	_, err := s.Txn(ctx, []store.Op{
		{Key: "/t/y/new", Value: []byte("n")},
		{Key: "/t/y/other", Delete: true},
		{Key: "/t/y/exists", Value: []byte("new"), CreateOnly: true},
	})
	wantErr(t, "Txn CreateOnly on existing key", err, errdefs.ErrAlreadyExists, "/t/y/exists")
	wantMissing(t, s, "/t/y/new")
	if kv := mustGet(t, s, "/t/y/other"); kv.Rev != before {
		t.Fatalf("failed Txn deleted or changed /t/y/other: %+v", kv)
	}
	if kv := mustGet(t, s, "/t/y/exists"); string(kv.Value) != "old" {
		t.Fatalf("failed Txn changed /t/y/exists: %+v", kv)
	}
	// Nothing was written, so the next write is the next revision.
	if r := put(t, s, "/t/y/probe", "p"); r != before+1 {
		t.Fatalf("after a failed Txn the next revision is %d; want %d (the failed Txn must not take one)", r, before+1)
	}
}

func testTxnConditions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	r0 := put(t, s, "/t/z/k", "v0")
	r := put(t, s, "/t/z/k", "v")
	cases := []struct {
		name string
		ops  []store.Op
		kind error
		key  string
	}{
		{"CreateOnly", []store.Op{{Key: "/t/z/k", Value: []byte("x"), CreateOnly: true}}, errdefs.ErrAlreadyExists, "/t/z/k"},
		{"PrevRevStale", []store.Op{{Key: "/t/z/k", Value: []byte("x"), PrevRev: r0}}, errdefs.ErrConflict, "/t/z/k"},
		{"PrevRevMissing", []store.Op{{Key: "/t/z/none", Value: []byte("x"), PrevRev: r}}, errdefs.ErrConflict, "/t/z/none"},
		{"MustExist", []store.Op{{Key: "/t/z/none", Delete: true, MustExist: true}}, errdefs.ErrNotFound, "/t/z/none"},
		{"MustExistPut", []store.Op{{Key: "/t/z/none", Value: []byte("x"), MustExist: true}}, errdefs.ErrNotFound, "/t/z/none"},
		// The first failing op is the one named.
		{"FirstFailingNamed", []store.Op{
			{Key: "/t/z/ok", Value: []byte("x"), CreateOnly: true},
			{Key: "/t/z/none", Value: []byte("x"), MustExist: true},
			{Key: "/t/z/k", Value: []byte("x"), CreateOnly: true},
		}, errdefs.ErrNotFound, "/t/z/none"},
	}
	for _, c := range cases {
		_, err := s.Txn(ctx, c.ops)
		wantErr(t, c.name, err, c.kind, c.key)
	}
	wantMissing(t, s, "/t/z/none")
	wantMissing(t, s, "/t/z/ok")
	if kv := mustGet(t, s, "/t/z/k"); string(kv.Value) != "v" || kv.Rev != r {
		t.Fatalf("failed Txns changed /t/z/k: %+v", kv)
	}
	// An empty Txn succeeds and changes nothing.
	if _, err := s.Txn(ctx, nil); err != nil {
		t.Fatalf("empty Txn: %v", err)
	}
}

func testTxnInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.Txn(ctx, []store.Op{{Key: "/t/dup", Value: []byte("1")}, {Key: "/t/dup", Delete: true}})
	wantErr(t, "Txn with a key twice", err, errdefs.ErrInvalid, "/t/dup")
	wantMissing(t, s, "/t/dup")
}

func testTxnConcurrent(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	rev := put(t, s, "/t/race", "0")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Txn(ctx, []store.Op{{Key: "/t/race", Value: fmt.Appendf(nil, "%d", i+1), PrevRev: rev}})
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case errors.Is(err, errdefs.ErrConflict):
		default:
			t.Errorf("txn %d: %v; want nil or ErrConflict", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d txns won; want exactly 1 (errors %v)", winners, errs)
	}
}

func testWatchFromPast(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	r1 := put(t, s, "/t/w/a", "1")
	put(t, s, "/t/other", "x") // outside the watched prefix
	r3, err := s.Txn(ctx, []store.Op{{Key: "/t/w/a", Value: []byte("2")}, {Key: "/t/w/b", Value: []byte("3")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "/t/w/a"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "/t/w/", r1)
	wantEvents(t, recv(t, ch), ev{store.EventPut, "/t/w/a", "1", r1})
	wantEvents(t, recv(t, ch), ev{store.EventPut, "/t/w/a", "2", r3}, ev{store.EventPut, "/t/w/b", "3", r3})
	del := recv(t, ch)
	if len(del.Events) != 1 || del.Events[0].Type != store.EventDelete || del.Events[0].KV.Key != "/t/w/a" || del.Events[0].KV.Rev <= r3 {
		t.Fatalf("want a delete of /t/w/a after rev %d; got %v", r3, events(del))
	}
	// And then live events.
	r5 := put(t, s, "/t/w/c", "4")
	wantEvents(t, recv(t, ch), ev{store.EventPut, "/t/w/c", "4", r5})
}

func testWatchFromNow(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put(t, s, "/t/n/old", "old")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "/t/n/", 0)
	noEvent(t, ch)
	put(t, s, "/t/elsewhere", "x")
	r := put(t, s, "/t/n/new", "new")
	wantEvents(t, recv(t, ch), ev{store.EventPut, "/t/n/new", "new", r})
}

func testWatchAfterList(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put(t, s, "/t/al/1", "1")
	_, rev, err := s.List(ctx, "/t/al/")
	if err != nil {
		t.Fatal(err)
	}
	r2 := put(t, s, "/t/al/2", "2")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "/t/al/", rev+1)
	wantEvents(t, recv(t, ch), ev{store.EventPut, "/t/al/2", "2", r2})
}

func testWatchCancel(t *testing.T, s store.Store) {
	wctx, cancel := context.WithCancel(ctxT(t))
	ch := s.Watch(wctx, "/t/c/", 0)
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return
			}
			if len(r.Events) > 0 {
				t.Fatalf("events after cancel: %v", events(r))
			}
		case <-deadline:
			t.Fatal("watch channel still open 5s after ctx was cancelled")
		}
	}
}

func testLeaseExpiry(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.Put(ctx, "/t/le/a", []byte("a"), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, []store.Op{{Key: "/t/le/b", Value: []byte("b"), Lease: id}}); err != nil {
		t.Fatal(err)
	}
	put(t, s, "/t/le/keep", "k")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "/t/le/", r1)
	recv(t, ch) // put a
	recv(t, ch) // put b
	recv(t, ch) // put keep
	start := time.Now()
	eventually(t, 10*time.Second, "leased keys still there", func() bool {
		_, ea := s.Get(ctx, "/t/le/a")
		_, eb := s.Get(ctx, "/t/le/b")
		return errors.Is(ea, errdefs.ErrNotFound) && errors.Is(eb, errdefs.ErrNotFound)
	})
	t.Logf("lease expired %v after the last put", time.Since(start).Round(10*time.Millisecond))
	mustGet(t, s, "/t/le/keep")
	var deleted []string
	for len(deleted) < 2 {
		for _, e := range recv(t, ch).Events {
			if e.Type != store.EventDelete {
				t.Fatalf("want deletes after expiry; got %v", e)
			}
			deleted = append(deleted, e.KV.Key)
		}
	}
	if strings.Join(deleted, " ") != "/t/le/a /t/le/b" {
		t.Fatalf("expiry deleted %v; want /t/le/a /t/le/b", deleted)
	}
	wantErr(t, "KeepAlive of an expired lease", s.KeepAlive(ctx, id), errdefs.ErrNotFound, "")
	wantErr(t, "Revoke of an expired lease", s.Revoke(ctx, id), errdefs.ErrNotFound, "")
}

func testLeaseKeepAlive(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "/t/ka", []byte("v"), id); err != nil {
		t.Fatal(err)
	}
	// Keep it alive for well past its TTL (and past etcd's 2 s minimum).
	until := time.Now().Add(2*LeaseTTL + 500*time.Millisecond)
	for time.Now().Before(until) {
		if err := s.KeepAlive(ctx, id); err != nil {
			t.Fatalf("KeepAlive: %v", err)
		}
		time.Sleep(LeaseTTL / 4)
	}
	mustGet(t, s, "/t/ka")
	// Then let it lapse.
	eventually(t, 10*time.Second, "kept-alive key did not expire once keep-alives stopped", func() bool {
		_, err := s.Get(ctx, "/t/ka")
		return errors.Is(err, errdefs.ErrNotFound)
	})
	wantErr(t, "KeepAlive after expiry", s.KeepAlive(ctx, id), errdefs.ErrNotFound, "")
}

func testLeaseRevoke(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	id, err := s.Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/t/rv/a", "/t/rv/b"} {
		if _, err := s.Put(ctx, k, []byte("v"), id); err != nil {
			t.Fatal(err)
		}
	}
	put(t, s, "/t/rv/keep", "k")
	// Overwriting a key without the lease detaches it.
	if _, err := s.Put(ctx, "/t/rv/detached", []byte("v"), id); err != nil {
		t.Fatal(err)
	}
	put(t, s, "/t/rv/detached", "mine now")
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	wantMissing(t, s, "/t/rv/a")
	wantMissing(t, s, "/t/rv/b")
	mustGet(t, s, "/t/rv/keep")
	mustGet(t, s, "/t/rv/detached")
	wantErr(t, "Revoke twice", s.Revoke(ctx, id), errdefs.ErrNotFound, "")
	wantErr(t, "KeepAlive after Revoke", s.KeepAlive(ctx, id), errdefs.ErrNotFound, "")
}

func testLeaseUnknown(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const bogus = store.LeaseID(0x7a11ce)
	_, err := s.Put(ctx, "/t/lu", []byte("v"), bogus)
	wantErr(t, "Put with an unknown lease", err, errdefs.ErrNotFound, "")
	wantMissing(t, s, "/t/lu")
	wantErr(t, "KeepAlive unknown", s.KeepAlive(ctx, bogus), errdefs.ErrNotFound, "")
	wantErr(t, "Revoke unknown", s.Revoke(ctx, bogus), errdefs.ErrNotFound, "")
	if _, err := s.Grant(ctx, 0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Grant(0) = %v; want ErrInvalid", err)
	}
}

func testElection(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	if _, err := s.Leader(ctx, "e1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Leader with no candidates = %v; want ErrNotFound", err)
	}
	a, err := s.Campaign(ctx, "e1", "a")
	if err != nil {
		t.Fatalf("Campaign a: %v", err)
	}
	if id, err := s.Leader(ctx, "e1"); err != nil || id != "a" {
		t.Fatalf("Leader = %q, %v; want a", id, err)
	}
	// Elections are independent.
	other, err := s.Campaign(ctx, "e2", "z")
	if err != nil {
		t.Fatalf("Campaign in another election: %v", err)
	}
	type result struct {
		l   store.Leadership
		err error
	}
	bc := make(chan result, 1)
	go func() {
		l, err := s.Campaign(ctx, "e1", "b")
		bc <- result{l, err}
	}()
	select {
	case r := <-bc:
		t.Fatalf("second campaign returned (%v) while a leads", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	select {
	case <-a.Lost():
		t.Fatal("a lost leadership without resigning")
	default:
	}
	if _, err := a.Txn(ctx, []store.Op{{Key: "/fenced/a", Value: []byte("1")}}); err != nil {
		t.Fatalf("the leader's fenced Txn: %v", err)
	}
	if _, err := a.Txn(ctx, []store.Op{{Key: "/fenced/x", Value: []byte("1"), MustExist: true}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the leader's fenced Txn with a failing condition = %v; want ErrNotFound", err)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	select {
	case <-a.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after Resign")
	}
	var b store.Leadership
	select {
	case r := <-bc:
		if r.err != nil {
			t.Fatalf("Campaign b: %v", r.err)
		}
		b = r.l
	case <-time.After(10 * time.Second):
		t.Fatal("second campaigner not elected within 10s of the leader resigning")
	}
	if id, err := s.Leader(ctx, "e1"); err != nil || id != "b" {
		t.Fatalf("Leader after handover = %q, %v; want b", id, err)
	}
	// The former leader's writes are fenced off; the new leader's land.
	if _, err := a.Txn(ctx, []store.Op{{Key: "/fenced/a", Delete: true}}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a former leader's fenced Txn = %v; want ErrUnavailable", err)
	}
	if kv, err := s.Get(ctx, "/fenced/a"); err != nil || string(kv.Value) != "1" {
		t.Fatalf("a former leader's fenced delete took effect: %q, %v", kv.Value, err)
	}
	if _, err := b.Txn(ctx, []store.Op{{Key: "/fenced/a", Delete: true}}); err != nil {
		t.Fatalf("the new leader's fenced Txn: %v", err)
	}
	if id, err := s.Leader(ctx, "e2"); err != nil || id != "z" {
		t.Fatalf("Leader of e2 = %q, %v; want z", id, err)
	}
	if err := b.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Resign(ctx); err != nil {
		t.Fatalf("Resign twice: %v", err)
	}
	if _, err := s.Leader(ctx, "e1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Leader after everyone resigned = %v; want ErrNotFound", err)
	}
	if err := other.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}

func testElectionCancel(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	a, err := s.Campaign(ctx, "ec", "a")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if l, err := s.Campaign(cctx, "ec", "b"); err == nil {
		_ = l.Resign(ctx)
		t.Fatal("Campaign returned leadership while another candidate leads")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Campaign with expiring ctx = %v; want context.DeadlineExceeded", err)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	// The abandoned candidate must not have taken over.
	if id, err := s.Leader(ctx, "ec"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Leader after the only leader resigned = %q, %v; want ErrNotFound", id, err)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put(t, s, "/t/closed", "v")
	l, err := s.Campaign(ctx, "closing", "a")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "/t/", 0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close twice: %v", err)
	}
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after Close")
	}
	if _, err := s.Get(ctx, "/t/closed"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Get after Close = %v; want ErrUnavailable", err)
	}
	if _, err := s.Put(ctx, "/t/closed", []byte("x"), store.NoLease); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Put after Close = %v; want ErrUnavailable", err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return
			}
			if len(r.Events) > 0 {
				t.Fatalf("events after Close: %v", events(r))
			}
		case <-deadline:
			t.Fatal("watch channel still open 5s after Close")
		}
	}
}
