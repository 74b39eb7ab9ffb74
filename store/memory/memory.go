package memory

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/internal/txncheck"
)

// Defaults for Config.
const (
	// DefaultHistory is how many events the store keeps for watches that
	// start at a past revision.
	DefaultHistory = 100_000
	// DefaultMaxTxnOps matches etcd's default --max-txn-ops.
	DefaultMaxTxnOps = 128
)

// Config tunes a memory store. The zero value is ready to use.
type Config struct {
	// History is how many past events are kept for Watch from a past
	// revision (at least this many, at most twice as many). A watch that
	// starts before the kept history gets an Err wrapping
	// store.ErrCompacted. 0 means DefaultHistory.
	History int
	// MaxTxnOps is the most ops one Txn may carry (errdefs.ErrInvalid
	// beyond). 0 means DefaultMaxTxnOps, like etcd.
	MaxTxnOps int
}

var _ store.Store = (*Store)(nil)

var errClosed = errdefs.New(errdefs.ErrUnavailable, "memory store closed")

// Store is an in-process store.Store. Create it with New; it is safe for
// concurrent use and must be closed to stop its lease-expiry goroutine.
type Store struct {
	cfg Config

	mu        sync.Mutex
	rev       int64
	data      map[string]*entry
	events    []record // ordered by rev
	compacted int64    // events at revisions <= compacted are gone
	changed   chan struct{}
	leases    map[store.LeaseID]*lease
	lastLease store.LeaseID
	elections map[string]*election
	closed    bool

	kick chan struct{} // wakes the expiry goroutine; buffered 1
	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

type entry struct {
	value       []byte
	create, mod int64
	lease       store.LeaseID
}

type record struct {
	rev int64
	ev  store.Event
}

type lease struct {
	ttl      time.Duration
	deadline time.Time
	keys     map[string]struct{}
}

// New returns an empty store with the default Config.
func New() *Store { return NewWithConfig(Config{}) }

// NewWithConfig returns an empty store.
func NewWithConfig(cfg Config) *Store {
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	s := &Store{
		cfg:       cfg,
		data:      make(map[string]*entry),
		changed:   make(chan struct{}),
		leases:    make(map[store.LeaseID]*lease),
		elections: make(map[string]*election),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	s.wg.Add(1)
	go s.expireLoop()
	return s
}

// Rev is the store's current revision.
func (s *Store) Rev() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// begin checks ctx and the closed flag and takes the lock; the caller
// unlocks.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := s.begin(ctx); err != nil {
		return store.KV{}, err
	}
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if !ok {
		return store.KV{}, fmt.Errorf("key %q: %w", key, errdefs.ErrNotFound)
	}
	return store.KV{Key: key, Value: clone(e.value), Rev: e.mod}, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := s.begin(ctx); err != nil {
		return nil, 0, err
	}
	defer s.mu.Unlock()
	var kvs []store.KV
	for k, e := range s.data {
		if strings.HasPrefix(k, prefix) {
			kvs = append(kvs, store.KV{Key: k, Value: clone(e.value), Rev: e.mod})
		}
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	return kvs, s.rev, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, l store.LeaseID) (int64, error) {
	return s.Txn(ctx, []store.Op{{Key: key, Value: value, Lease: l}})
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.Txn(ctx, []store.Op{{Key: key, Delete: true}})
	return err
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, ops []store.Op) (int64, error) {
	if err := s.validate(ops); err != nil {
		return 0, err
	}
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	return s.txnLocked(ops)
}

// validate checks a transaction's size and ops.
func (s *Store) validate(ops []store.Op) error {
	if len(ops) > s.cfg.MaxTxnOps {
		return errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("txn: %d ops, at most %d allowed", len(ops), s.cfg.MaxTxnOps))
	}
	return txncheck.Validate(ops)
}

// txnLocked applies a validated transaction. Lock held.
func (s *Store) txnLocked(ops []store.Op) (int64, error) {
	for _, op := range ops {
		e, exists := s.data[op.Key]
		var mod int64
		if exists {
			mod = e.mod
		}
		if err := txncheck.Check(op, exists, mod); err != nil {
			return 0, err
		}
		if !op.Delete && op.Lease != store.NoLease {
			if _, ok := s.leases[op.Lease]; !ok {
				return 0, fmt.Errorf("put %q: lease %x: %w", op.Key, int64(op.Lease), errdefs.ErrNotFound)
			}
		}
	}
	next := s.rev + 1
	var evs []store.Event
	for _, op := range ops {
		if op.Delete {
			if s.remove(op.Key) {
				evs = append(evs, store.Event{Type: store.EventDelete, KV: store.KV{Key: op.Key, Rev: next}})
			}
			continue
		}
		v := clone(op.Value)
		old, ok := s.data[op.Key]
		create := next
		if ok {
			create = old.create
			s.detach(op.Key, old.lease)
		}
		s.data[op.Key] = &entry{value: v, create: create, mod: next, lease: op.Lease}
		if op.Lease != store.NoLease {
			s.leases[op.Lease].keys[op.Key] = struct{}{}
		}
		evs = append(evs, store.Event{Type: store.EventPut, KV: store.KV{Key: op.Key, Value: clone(v), Rev: next}})
	}
	s.commit(evs)
	return s.rev, nil
}

// remove deletes key; it reports whether the key existed. Lock held.
func (s *Store) remove(key string) bool {
	e, ok := s.data[key]
	if !ok {
		return false
	}
	s.detach(key, e.lease)
	delete(s.data, key)
	return true
}

func (s *Store) detach(key string, id store.LeaseID) {
	if l, ok := s.leases[id]; ok {
		delete(l.keys, key)
	}
}

// commit records evs as one new revision (none if evs is empty) and wakes
// the watchers. Lock held.
func (s *Store) commit(evs []store.Event) {
	if len(evs) == 0 {
		return
	}
	s.rev++
	for _, ev := range evs {
		s.events = append(s.events, record{rev: s.rev, ev: ev})
	}
	if len(s.events) >= 2*s.cfg.History {
		// Drop down to History events, never splitting a revision.
		cut := len(s.events) - s.cfg.History
		for cut < len(s.events) && s.events[cut].rev == s.events[cut-1].rev {
			cut++
		}
		s.compacted = s.events[cut-1].rev
		s.events = append([]record(nil), s.events[cut:]...)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Watch implements store.Store. Events are read from the store's history,
// so a slow receiver never blocks writers; if it falls behind the kept
// history it gets an Err wrapping store.ErrCompacted. When the store is
// closed the channel closes (after an Err wrapping errdefs.ErrUnavailable
// if the receiver is ready for it).
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) <-chan store.WatchResponse {
	out := make(chan store.WatchResponse)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(out)
		return out
	}
	next := fromRev
	if next <= 0 {
		next = s.rev + 1
	}
	s.wg.Add(1)
	go s.watch(ctx, prefix, fromRev, next, out)
	return out
}

func (s *Store) watch(ctx context.Context, prefix string, fromRev, next int64, out chan<- store.WatchResponse) {
	defer s.wg.Done()
	defer close(out)
	for {
		s.mu.Lock()
		if next <= s.compacted {
			compacted := s.compacted
			s.mu.Unlock()
			err := fmt.Errorf("watch %q from revision %d: history kept from revision %d: %w",
				prefix, fromRev, compacted+1, store.ErrCompacted)
			select {
			case out <- store.WatchResponse{Err: err}:
			case <-ctx.Done():
			case <-s.done:
			}
			return
		}
		resps := s.collect(prefix, next)
		if s.rev >= next {
			next = s.rev + 1
		}
		changed := s.changed
		s.mu.Unlock()

		for _, r := range resps {
			select {
			case out <- r:
			case <-ctx.Done():
				return
			case <-s.done:
				s.closedErr(out)
				return
			}
		}
		if len(resps) > 0 {
			continue // check for more before sleeping
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-s.done:
			s.closedErr(out)
			return
		}
	}
}

func (s *Store) closedErr(out chan<- store.WatchResponse) {
	select {
	case out <- store.WatchResponse{Err: errClosed}:
	default:
	}
}

// collect groups the kept events at revisions >= from under prefix by
// revision. Lock held.
func (s *Store) collect(prefix string, from int64) []store.WatchResponse {
	i := sort.Search(len(s.events), func(i int) bool { return s.events[i].rev >= from })
	var resps []store.WatchResponse
	var cur int64
	for _, r := range s.events[i:] {
		if !strings.HasPrefix(r.ev.KV.Key, prefix) {
			continue
		}
		if r.rev != cur || len(resps) == 0 {
			resps = append(resps, store.WatchResponse{})
			cur = r.rev
		}
		ev := r.ev
		ev.KV.Value = clone(ev.KV.Value)
		resps[len(resps)-1].Events = append(resps[len(resps)-1].Events, ev)
	}
	return resps
}

// Grant implements store.Store.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	if ttl <= 0 {
		return 0, errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("grant: ttl %v must be positive", ttl))
	}
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	s.lastLease++
	id := s.lastLease
	s.leases[id] = &lease{ttl: ttl, deadline: time.Now().Add(ttl), keys: make(map[string]struct{})}
	s.wake()
	return id, nil
}

// KeepAlive implements store.Store.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	l, ok := s.leases[id]
	if !ok || !time.Now().Before(l.deadline) {
		return fmt.Errorf("keepalive: lease %x: %w", int64(id), errdefs.ErrNotFound)
	}
	l.deadline = time.Now().Add(l.ttl)
	s.wake()
	return nil
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.leases[id]; !ok {
		return fmt.Errorf("revoke: lease %x: %w", int64(id), errdefs.ErrNotFound)
	}
	s.endLease(id)
	return nil
}

// endLease deletes a lease and its keys in one revision. Lock held.
func (s *Store) endLease(id store.LeaseID) {
	l := s.leases[id]
	delete(s.leases, id)
	keys := make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var evs []store.Event
	for _, k := range keys {
		delete(s.data, k)
		evs = append(evs, store.Event{Type: store.EventDelete, KV: store.KV{Key: k, Rev: s.rev + 1}})
	}
	s.commit(evs)
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// expireLoop ends leases whose deadline has passed; it sleeps until the
// earliest deadline or until a lease changes.
func (s *Store) expireLoop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		var earliest time.Time
		for id, l := range s.leases {
			if !now.Before(l.deadline) {
				s.endLease(id)
			} else if earliest.IsZero() || l.deadline.Before(earliest) {
				earliest = l.deadline
			}
		}
		s.mu.Unlock()
		wait := time.Hour
		if !earliest.IsZero() {
			wait = time.Until(earliest)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-s.kick:
		case <-s.done:
			return
		}
	}
}

// Close implements store.Store: it ends every leadership (Lost closes),
// fails waiting campaigns and closes watch channels, and stops the expiry
// goroutine. The data is dropped with the store. Closing twice is a no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, e := range s.elections {
		if e.leader != nil {
			e.leader.end()
			e.leader = nil
		}
		e.queue = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
