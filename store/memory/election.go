package memory

import (
	"context"
	"fmt"
	"slices"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

// election is one named election: the leader and the candidates waiting,
// first come first served.
type election struct {
	leader *leadership
	queue  []*leadership
}

// leadership is one candidate; it implements store.Leadership once elected.
type leadership struct {
	s       *Store
	name    string
	id      string
	elected chan struct{}
	lost    chan struct{}
	ended   bool
}

var _ store.Leadership = (*leadership)(nil)

// Campaign implements store.Store: the first candidate leads at once, the
// others wait in order until the leader resigns, its leadership is expired
// (ExpireLeadership), or ctx ends.
func (s *Store) Campaign(ctx context.Context, name, id string) (store.Leadership, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	e := s.elections[name]
	if e == nil {
		e = &election{}
		s.elections[name] = e
	}
	c := &leadership{s: s, name: name, id: id, elected: make(chan struct{}), lost: make(chan struct{})}
	if e.leader == nil {
		e.leader = c
		close(c.elected)
		s.mu.Unlock()
		return c, nil
	}
	e.queue = append(e.queue, c)
	s.mu.Unlock()

	select {
	case <-c.elected:
		return c, nil
	case <-ctx.Done():
		s.mu.Lock()
		c.resignLocked() // elected meanwhile or still queued: give it up either way
		s.mu.Unlock()
		return nil, fmt.Errorf("campaign %q: %w", name, ctx.Err())
	case <-s.done:
		return nil, fmt.Errorf("campaign %q: %w", name, errClosed)
	}
}

// Leader implements store.Store.
func (s *Store) Leader(ctx context.Context, name string) (string, error) {
	if err := s.begin(ctx); err != nil {
		return "", err
	}
	defer s.mu.Unlock()
	if e := s.elections[name]; e != nil && e.leader != nil {
		return e.leader.id, nil
	}
	return "", fmt.Errorf("election %q: no leader: %w", name, errdefs.ErrNotFound)
}

// ExpireLeadership ends the current leadership of the election as if its
// session had expired: its Lost channel closes and the next candidate
// leads. It reports whether there was a leader. For tests of failover.
func (s *Store) ExpireLeadership(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.elections[name]
	if e == nil || e.leader == nil {
		return false
	}
	e.leader.resignLocked()
	return true
}

// Txn implements store.Leadership: the transaction applies only while l
// leads its election.
func (l *leadership) Txn(ctx context.Context, ops []store.Op) (int64, error) {
	if err := l.s.validate(ops); err != nil {
		return 0, err
	}
	if err := l.s.begin(ctx); err != nil {
		return 0, err
	}
	defer l.s.mu.Unlock()
	if e := l.s.elections[l.name]; l.ended || e == nil || e.leader != l {
		return 0, errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("txn: no longer the leader of %q; nothing was written", l.name))
	}
	return l.s.txnLocked(ops)
}

// Candidates counts the election's leader and the candidates queued behind
// it. For tests that must know a campaign is waiting.
func (s *Store) Candidates(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.elections[name]
	if e == nil {
		return 0
	}
	n := len(e.queue)
	if e.leader != nil {
		n++
	}
	return n
}

// Lost implements store.Leadership.
func (l *leadership) Lost() <-chan struct{} { return l.lost }

// Resign implements store.Leadership; resigning twice is a no-op.
func (l *leadership) Resign(ctx context.Context) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.resignLocked()
	return nil
}

// resignLocked ends the candidacy: if leading, Lost closes and the next
// candidate is elected; if queued, it leaves the queue. Lock held.
func (l *leadership) resignLocked() {
	if l.ended {
		return
	}
	e := l.s.elections[l.name]
	if e.leader == l {
		l.end()
		e.leader = nil
		if len(e.queue) > 0 {
			e.leader = e.queue[0]
			e.queue = e.queue[1:]
			close(e.leader.elected)
		}
		return
	}
	l.ended = true
	if i := slices.Index(e.queue, l); i >= 0 {
		e.queue = slices.Delete(e.queue, i, i+1)
	}
}

func (l *leadership) end() {
	if !l.ended {
		l.ended = true
		close(l.lost)
	}
}
