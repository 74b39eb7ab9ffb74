package agent

import (
	"os"
	goruntime "runtime"
	"sync"
)

// An executor running a model is a goroutine inside a cgo call to the
// runtime (ONNX Runtime) for the whole inference, and it keeps its P (Go's
// right to run Go code) for that long: sysmon takes it back only when it
// sees work waiting, and network readiness is not such work — it is
// noticed when a P looks for something to do. With GOMAXPROCS equal to the
// cores, as many long inferences as cores leave no P to read the next
// request's bytes: a short request co-located with long ones then waits
// milliseconds before it is even read. Measured on a 2-core machine with
// three models of 2 executors each (`accelpool bench placement --mode
// validate-sim`, docs/benchmarks.md): GOMAXPROCS 2 gave p99s of 26 ms for
// a 1.5 ms model and 77 ms for a 7 ms one at 35 % load; GOMAXPROCS 8
// (cores + executors) 8 ms and 27 ms. So every Manager's executors add to
// GOMAXPROCS, unless the GOMAXPROCS environment variable is set.

// GoProcs is the GOMAXPROCS for a process whose runtime default is base
// (the cores it may use) running executors model executors: a P for each
// executor on top of the cores, at most 4×base or base+8, whichever is
// more (extra Ps cost little, but the garbage collector sizes its workers
// by them).
func GoProcs(base, executors int) int {
	base = max(base, 1)
	return min(base+max(executors, 0), max(4*base, base+8))
}

// procs tracks the executors of every Manager in the process.
var procs struct {
	once    sync.Once
	mu      sync.Mutex
	base    int  // GOMAXPROCS in force when the first executor came
	custom  bool // base was set by the program, not the runtime's default
	userSet bool
	by      map[*Manager]int
}

// setExecutors records m's executors and resizes GOMAXPROCS for all.
// It returns the GOMAXPROCS now in force. When the last executor goes,
// what was in force before the first comes back: a value the program set
// itself, or else the runtime's default with its automatic updates (Go
// then keeps following the process's CPU limit, a cgroup quota that
// changes, say; any call to GOMAXPROCS turns that off).
func setExecutors(m *Manager, n int) int {
	procs.once.Do(func() {
		_, procs.userSet = os.LookupEnv("GOMAXPROCS")
		procs.by = map[*Manager]int{}
	})
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if len(procs.by) == 0 && n > 0 && !procs.userSet {
		// Is the value in force the runtime's default? Asking resets it
		// to the default; it is resized (or put back) just below.
		procs.base = goruntime.GOMAXPROCS(0)
		goruntime.SetDefaultGOMAXPROCS()
		procs.custom = goruntime.GOMAXPROCS(0) != procs.base
	}
	had := len(procs.by) > 0
	if n > 0 {
		procs.by[m] = n
	} else {
		delete(procs.by, m)
	}
	if procs.userSet {
		return goruntime.GOMAXPROCS(0)
	}
	total := 0
	for _, k := range procs.by {
		total += k
	}
	if total == 0 {
		if !had { // nothing of ours to undo
			return goruntime.GOMAXPROCS(0)
		}
		if procs.custom {
			goruntime.GOMAXPROCS(procs.base)
		} else {
			goruntime.SetDefaultGOMAXPROCS()
		}
		return goruntime.GOMAXPROCS(0)
	}
	want := GoProcs(procs.base, total)
	if goruntime.GOMAXPROCS(0) != want {
		goruntime.GOMAXPROCS(want)
	}
	return want
}
