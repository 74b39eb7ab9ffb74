// Package store is the control plane's view of its state: a key-value store
// with revisions, atomic multi-key transactions, watches, leases and leader
// election — the primitives etcd offers, behind one small interface.
// Implementations: store/etcd (the real one, an embedded or external etcd
// cluster) and store/memory (in-process, for tests and the simulator). Both
// pass the conformance suite in store/storetest.
package store

import (
	"context"
	"time"
)

// KV is a stored key and value with the revision that last modified it.
type KV struct {
	Key   string
	Value []byte
	// Rev is the store revision of the key's last modification.
	Rev int64
}

// EventType says what happened to a key.
type EventType int

// The event types.
const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change seen by a watch.
type Event struct {
	Type EventType
	KV   KV // for a delete, Value is empty
}

// WatchResponse carries the events of one store revision, or an error
// after which the watch channel closes (for example the start revision
// was compacted: list again and watch from the new revision).
type WatchResponse struct {
	Events []Event
	Err    error
}

// LeaseID identifies a lease; keys attached to it vanish when it expires.
type LeaseID int64

// NoLease attaches a key to no lease.
const NoLease LeaseID = 0

// Op is one operation of an atomic transaction.
type Op struct {
	Key   string
	Value []byte
	// Delete removes Key (Value is ignored).
	Delete bool
	// CreateOnly fails the transaction with errdefs.ErrAlreadyExists if
	// Key exists.
	CreateOnly bool
	// PrevRev > 0 fails the transaction with errdefs.ErrConflict unless
	// Key's last modification is at PrevRev.
	PrevRev int64
	// MustExist fails the transaction with errdefs.ErrNotFound unless Key
	// exists.
	MustExist bool
	Lease     LeaseID
}

// Store is the control plane's state. Keys are slash-separated strings.
// Errors wrap errdefs sentinels: ErrNotFound, ErrAlreadyExists,
// ErrConflict, ErrUnavailable (the backend cannot be reached).
type Store interface {
	// Get reads one key.
	Get(ctx context.Context, key string) (KV, error)
	// List reads every key under prefix, sorted by key, and the store
	// revision it was read at (to start a Watch from rev+1).
	List(ctx context.Context, prefix string) (kvs []KV, rev int64, err error)
	// Put writes a key, returning the new revision.
	Put(ctx context.Context, key string, value []byte, lease LeaseID) (int64, error)
	// Delete removes a key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Txn applies every op or none. The error names the first op whose
	// condition failed.
	Txn(ctx context.Context, ops []Op) (int64, error)
	// Watch reports changes under prefix from revision fromRev (0: from
	// now) until ctx ends, then closes the channel.
	Watch(ctx context.Context, prefix string, fromRev int64) <-chan WatchResponse
	// Grant creates a lease that expires after ttl without a keep-alive.
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, error)
	// KeepAlive renews a lease once; ErrNotFound if it has expired.
	KeepAlive(ctx context.Context, id LeaseID) error
	// Revoke ends a lease now, deleting its keys.
	Revoke(ctx context.Context, id LeaseID) error
	// Campaign blocks until this candidate (id, e.g. the server's address)
	// leads election, or ctx ends.
	Campaign(ctx context.Context, election, id string) (Leadership, error)
	// Leader reports the current leader's id; ErrNotFound if none.
	Leader(ctx context.Context, election string) (string, error)
	// Close releases the store's resources (not the data).
	Close() error
}

// Leadership is held leadership of an election.
type Leadership interface {
	// Lost is closed when leadership ends (session expired, store lost).
	Lost() <-chan struct{}
	// Resign gives leadership up.
	Resign(ctx context.Context) error
	// Txn is Store.Txn applied only while this leadership holds, checked
	// by the store in the same transaction: a leader that was replaced
	// while it computed its writes (paused, partitioned past its
	// session's TTL) gets an error wrapping errdefs.ErrUnavailable and
	// writes nothing, even before Lost tells it.
	Txn(ctx context.Context, ops []Op) (int64, error)
}
