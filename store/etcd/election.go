package etcd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

func (s *Store) electionPrefix(name string) string { return s.key("/election/" + name) }

// leadership is a won election: the session whose lease holds the leader
// key, and the election to resign from.
type leadership struct {
	s    *Store
	name string
	sess *concurrency.Session
	el   *concurrency.Election
	lost chan struct{}

	// key and rev are the leader key and its create revision, kept apart
	// from el, which forgets them when it resigns.
	key string
	rev int64

	mu       sync.Mutex
	resigned bool
}

var _ store.Leadership = (*leadership)(nil)

// Campaign implements store.Store with concurrency.NewSession (TTL
// Config.ElectionTTL) and concurrency.NewElection under
// Prefix+"/election/"+name. It blocks until elected or ctx ends. The
// leadership is lost (Lost closes) when the session ends: its keep-alives
// stop reaching etcd for a TTL, the lease is revoked, or the store closes.
func (s *Store) Campaign(ctx context.Context, name, id string) (store.Leadership, error) {
	what := fmt.Sprintf("campaign %q", name)
	ttl := int64(math.Ceil(s.cfg.ElectionTTL.Seconds()))
	var lease clientv3.LeaseID
	err := s.do(ctx, what, func(ctx context.Context) error {
		resp, err := s.cli.Grant(ctx, ttl)
		if err != nil {
			return err
		}
		lease = resp.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The session lives as long as the store unless resigned or expired.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease),
		concurrency.WithTTL(int(ttl)), concurrency.WithContext(s.ctx))
	if err != nil {
		s.revoke(lease)
		return nil, s.mapErr(ctx, what, err)
	}
	el := concurrency.NewElection(sess, s.electionPrefix(name))

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	stopSess := context.AfterFunc(sess.Ctx(), cancel) // session lost while waiting
	defer stopSess()
	if err := el.Campaign(cctx, id); err != nil {
		sess.Orphan()
		s.revoke(lease)
		select {
		case <-sess.Done():
			if ctx.Err() == nil && !s.isClosed() {
				return nil, s.unavailable(what, errors.New("session lease lost while campaigning"))
			}
		default:
		}
		return nil, s.mapErr(ctx, what, err)
	}
	l := &leadership{s: s, name: name, sess: sess, el: el, lost: make(chan struct{}), key: el.Key(), rev: el.Rev()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Orphan()
		s.revoke(lease)
		return nil, fmt.Errorf("%s: %w", what, errClosed)
	}
	s.leaders[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		<-sess.Done()
		close(l.lost)
		s.mu.Lock()
		delete(s.leaders, l)
		s.mu.Unlock()
	}()
	// The session may have expired in the moment we were elected (etcd
	// deleted our key with the lease): then we never really led.
	if err := s.do(ctx, what, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, el.Key())
		if err == nil && len(resp.Kvs) == 0 {
			return errElectionKeyGone
		}
		return err
	}); err != nil {
		_ = l.Resign(context.Background())
		return nil, err
	}
	return l, nil
}

var errElectionKeyGone = errors.New("leader key vanished: session expired")

// revoke ends a lease, best effort, within a second.
func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, id); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("revoke campaign lease", "lease", int64(id), "err", err)
	}
}

// Leader implements store.Store: the value of the oldest key under the
// election prefix, as concurrency.Election.Leader reads it.
func (s *Store) Leader(ctx context.Context, name string) (string, error) {
	var (
		id    string
		found bool
	)
	err := s.do(ctx, fmt.Sprintf("leader of %q", name), func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.electionPrefix(name)+"/", clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			id, found = string(resp.Kvs[0].Value), true
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if !found {
		return "", fmt.Errorf("election %q: no leader: %w", name, errdefs.ErrNotFound)
	}
	return id, nil
}

// errFenced is the error of a leadership's Txn after the leadership ended.
var errFenced = errdefs.New(errdefs.ErrUnavailable, "no longer the leader: the election's leader key is gone or replaced; nothing was written")

// Txn implements store.Leadership: the transaction also compares the
// leader key's create revision with the one this leadership created.
func (l *leadership) Txn(ctx context.Context, ops []store.Op) (int64, error) {
	return l.s.txn(ctx, ops, l.key, l.rev)
}

// Lost implements store.Leadership.
func (l *leadership) Lost() <-chan struct{} { return l.lost }

// Resign implements store.Leadership: it deletes the leader key, stops the
// session's keep-alives (Lost closes) and revokes its lease. Resigning
// twice is a no-op.
func (l *leadership) Resign(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.resigned {
		return nil
	}
	l.resigned = true
	select {
	case <-l.sess.Done():
		// Already lost (lease expired, or the store closed): the leader
		// key went with the lease, or will when it expires.
		return nil
	default:
	}
	what := fmt.Sprintf("resign %q", l.name)
	err := l.s.do(ctx, what, func(ctx context.Context) error { return l.el.Resign(ctx) })
	l.sess.Orphan() // closes Lost
	rerr := l.s.do(ctx, what, func(ctx context.Context) error {
		_, err := l.s.cli.Revoke(ctx, l.sess.Lease())
		return err
	})
	if errors.Is(rerr, errdefs.ErrNotFound) {
		rerr = nil // already expired
	}
	if err == nil {
		err = rerr
	}
	return err
}
