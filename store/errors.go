package store

import "github.com/accelpool/accelpool/errdefs"

// ErrCompacted is wrapped by the WatchResponse.Err of a watch whose start
// revision is older than the history the store still keeps (etcd compacted
// it, or the memory store dropped it). The caller lists again and watches
// from the list's revision + 1. It also matches errdefs.ErrConflict, so a
// transport that sees it answers "try again" rather than "internal error".
var ErrCompacted = errdefs.New(errdefs.ErrConflict, "revision compacted")
