// Package etcd is the real store.Store: etcd through go.etcd.io/etcd/client/v3,
// plus an embedded single-member etcd server for `accelpool up` and tests.
//
// New(Config) returns a Store that namespaces every key under Config.Prefix
// and maps etcd's errors onto errdefs sentinels: an absent key is
// ErrNotFound; a Txn whose condition fails is ErrAlreadyExists (CreateOnly),
// ErrConflict (PrevRev) or ErrNotFound (MustExist), naming the first failing
// op's key (the else branch of the same etcd transaction reads the keys, so
// the answer is exact); an expired or unknown lease is ErrNotFound; and an
// etcd that cannot be reached is ErrUnavailable ("etcd at [endpoints]
// unreachable: ...") within Config.DialTimeout, never a hang.
//
// The client survives etcd restarts: gRPC reconnects (with a backoff capped
// at 2 s, reset whenever an operation is waiting), operations succeed again
// as soon as etcd is back, and watches resume from the last delivered
// revision on their own (see Store.Watch). A leadership survives a restart
// shorter than Config.ElectionTTL; a longer one ends it (Lost closes).
//
// Elections use concurrency.Session and concurrency.Election under
// Prefix+"/election/<name>".
//
// StartEmbedded runs etcd in-process with its data in a directory that
// persists across restarts; port 0 in its URLs picks free ports. etcd's own
// logging goes to slog at error level only.
//
// The client (v3.6) speaks the v3 API, which etcd 3.4 servers (Debian's
// etcd-server) also serve; the conformance suite runs against both.
package etcd
