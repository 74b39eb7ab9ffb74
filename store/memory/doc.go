// Package memory is an in-process store.Store: a map, a revision counter
// and an event log, guarded by one mutex. Server tests and the simulator
// use it where a real etcd would be too slow or too heavy.
//
// It follows etcd's semantics closely enough to pass the same conformance
// suite (store/storetest): every change that modifies something is one new
// revision (a Txn is one revision, a delete of a missing key is none);
// watches can start from a past revision while it is still in the kept
// history (Config.History events); leases expire in real time, driven by
// a goroutine the store owns and Close stops; a Txn may carry at most
// Config.MaxTxnOps ops and no key twice.
//
// Elections are first come, first served: the first candidate leads and the
// others wait in order until the leader resigns, the store closes, or a
// test calls ExpireLeadership to simulate a lost session.
package memory
