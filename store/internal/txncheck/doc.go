// Package txncheck holds the transaction rules both store implementations
// share, so that the memory store and the etcd store reject the same
// transactions with the same errors: validation of the op list and the
// error for the first op whose condition does not hold.
package txncheck
