package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/memory"
	"github.com/accelpool/accelpool/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
}

func TestWatchCompacted(t *testing.T) {
	s := memory.NewWithConfig(memory.Config{History: 4})
	defer s.Close()
	ctx := context.Background()
	first, _ := s.Put(ctx, "/k", []byte("0"), store.NoLease)
	for i := 1; i < 20; i++ {
		if _, err := s.Put(ctx, "/k", fmt.Appendf(nil, "%d", i), store.NoLease); err != nil {
			t.Fatal(err)
		}
	}
	r, ok := <-s.Watch(ctx, "/", first)
	if !ok || !errors.Is(r.Err, store.ErrCompacted) || !errors.Is(r.Err, errdefs.ErrConflict) {
		t.Fatalf("watch from a dropped revision = %+v, open %v; want Err wrapping ErrCompacted", r, ok)
	}
	// The recent history is still there.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r = <-s.Watch(wctx, "/", s.Rev()-2)
	if r.Err != nil || len(r.Events) != 1 || string(r.Events[0].KV.Value) != "17" {
		t.Fatalf("watch from a kept revision = %+v", r)
	}
}

func TestTxnMaxOps(t *testing.T) {
	s := memory.NewWithConfig(memory.Config{MaxTxnOps: 2})
	defer s.Close()
	ops := []store.Op{{Key: "/a"}, {Key: "/b"}, {Key: "/c"}}
	if _, err := s.Txn(context.Background(), ops); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Txn with too many ops = %v; want ErrInvalid", err)
	}
}

func TestClosedWatch(t *testing.T) {
	s := memory.New()
	s.Close()
	if _, ok := <-s.Watch(context.Background(), "/", 0); ok {
		t.Fatal("watch on a closed store delivered a response")
	}
}
