package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/accelpool/accelpool/store"
)

// Watch implements store.Store over a clientv3 watch (WithPrefix, and
// WithRev when fromRev > 0).
//
// Across an etcd restart or a dropped connection the watch resumes by
// itself: clientv3 re-creates the stream from the revision after the last
// one delivered, so no event is lost or repeated and the caller sees only a
// pause. The channel ends with an Err only when etcd cancels the watch:
// the start revision was compacted (Err wraps store.ErrCompacted; list
// again and watch from the list's revision + 1) or another server-side
// cancellation (Err wraps errdefs.ErrUnavailable; relist likewise). When
// ctx ends the channel closes without an Err; when the store closes, it
// closes after an Err wrapping errdefs.ErrUnavailable if the receiver is
// ready for it.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) <-chan store.WatchResponse {
	out := make(chan store.WatchResponse)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(out)
		return out
	}
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if fromRev > 0 {
		opts = append(opts, clientv3.WithRev(fromRev))
	}
	wch := s.cli.Watch(wctx, s.key(prefix), opts...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		s.watchLoop(ctx, prefix, fromRev, wch, out)
	}()
	return out
}

func (s *Store) watchLoop(ctx context.Context, prefix string, fromRev int64, wch clientv3.WatchChan, out chan<- store.WatchResponse) {
	what := fmt.Sprintf("watch %q from revision %d", prefix, fromRev)
	for {
		var (
			wr clientv3.WatchResponse
			ok bool
		)
		select {
		case wr, ok = <-wch:
		case <-ctx.Done():
			return
		}
		if !ok {
			// clientv3 closes the channel when wctx ends: the caller's ctx
			// or the store's.
			if ctx.Err() == nil {
				s.final(ctx, out, store.WatchResponse{Err: fmt.Errorf("%s: %w", what, errClosed)})
			}
			return
		}
		if err := wr.Err(); err != nil || wr.Canceled {
			if wr.CompactRevision > 0 {
				err = fmt.Errorf("%s: etcd history starts at revision %d: %w", what, wr.CompactRevision, store.ErrCompacted)
			} else {
				if err == nil {
					err = fmt.Errorf("watch cancelled by etcd")
				}
				err = s.unavailable(what, err)
			}
			s.final(ctx, out, store.WatchResponse{Err: err})
			return
		}
		// A clientv3 response may batch several revisions; ours carries one.
		var cur store.WatchResponse
		var curRev int64
		for _, e := range wr.Events {
			rev := e.Kv.ModRevision
			if len(cur.Events) > 0 && rev != curRev {
				if !s.send(ctx, out, cur) {
					return
				}
				cur = store.WatchResponse{}
			}
			curRev = rev
			kv := store.KV{Key: s.unkey(e.Kv.Key), Rev: rev}
			typ := store.EventDelete
			if e.Type == clientv3.EventTypePut {
				typ = store.EventPut
				kv.Value = e.Kv.Value
			}
			cur.Events = append(cur.Events, store.Event{Type: typ, KV: kv})
		}
		if len(cur.Events) > 0 && !s.send(ctx, out, cur) {
			return
		}
	}
}

// send delivers r unless ctx or the store ends first.
func (s *Store) send(ctx context.Context, out chan<- store.WatchResponse, r store.WatchResponse) bool {
	select {
	case out <- r:
		return true
	case <-ctx.Done():
		return false
	case <-s.ctx.Done():
		s.final(ctx, out, store.WatchResponse{Err: errClosed})
		return false
	}
}

// final delivers a last response; once the store is closed it only tries,
// so that Close never waits on a receiver that has gone away.
func (s *Store) final(ctx context.Context, out chan<- store.WatchResponse, r store.WatchResponse) {
	if s.ctx.Err() != nil {
		select {
		case out <- r:
		default:
		}
		return
	}
	select {
	case out <- r:
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
}
