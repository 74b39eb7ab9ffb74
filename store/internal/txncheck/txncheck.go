package txncheck

import (
	"fmt"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

// Validate rejects what etcd would reject before looking at any key: an
// empty key, and two ops on the same key.
func Validate(ops []store.Op) error {
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		if op.Key == "" {
			return errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("txn: op %d: empty key", i))
		}
		if _, dup := seen[op.Key]; dup {
			return errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("txn: key %q appears in more than one op", op.Key))
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}

// Conditional reports whether op carries a condition.
func Conditional(op store.Op) bool {
	return op.CreateOnly || op.PrevRev > 0 || op.MustExist
}

// Check returns the error for op given the current state of its key
// (exists, and if so the revision of its last modification), or nil when
// every condition of op holds. The error names the key and wraps
// errdefs.ErrAlreadyExists (CreateOnly), errdefs.ErrConflict (PrevRev) or
// errdefs.ErrNotFound (MustExist), checked in that order.
func Check(op store.Op, exists bool, modRev int64) error {
	if op.CreateOnly && exists {
		return fmt.Errorf("txn: key %q: %w", op.Key, errdefs.ErrAlreadyExists)
	}
	if op.PrevRev > 0 && (!exists || modRev != op.PrevRev) {
		if !exists {
			return fmt.Errorf("txn: key %q does not exist, expected revision %d: %w", op.Key, op.PrevRev, errdefs.ErrConflict)
		}
		return fmt.Errorf("txn: key %q is at revision %d, expected %d: %w", op.Key, modRev, op.PrevRev, errdefs.ErrConflict)
	}
	if op.MustExist && !exists {
		return fmt.Errorf("txn: key %q: %w", op.Key, errdefs.ErrNotFound)
	}
	return nil
}
