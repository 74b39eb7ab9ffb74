// Package storetest is the conformance suite for store.Store: every
// implementation (store/memory, store/etcd against an embedded etcd and
// against an etcd 3.4 process) runs Run and must pass it, so code written
// against the memory store behaves the same on etcd.
//
// It checks the error mapping (missing key → errdefs.ErrNotFound; failed
// Txn conditions → ErrAlreadyExists / ErrConflict / ErrNotFound naming the
// key; use after Close → ErrUnavailable), revision ordering, transactions
// being all-or-nothing, watches from past revisions and from now, lease
// expiry, keep-alive and revocation, and leader election hand-over.
package storetest
