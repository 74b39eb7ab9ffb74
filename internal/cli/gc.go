package cli

import (
	"os"
	"runtime/debug"
)

// servingGCPercent is the garbage collector's target (GOGC) for the
// commands that serve tensors: up, serve, agent and bench overhead. A
// serving node's Go heap is small (models live in ONNX Runtime's memory)
// while every request allocates its outputs, so with Go's default of 100
// it collects every few requests, and on a virtual machine, where pages
// the runtime gives back fault again when reused, that costs more than
// the memory saved. 400 lets the heap grow to five times what is live.
const servingGCPercent = 400

// tuneGC sets servingGCPercent unless GOGC is set in the environment,
// which keeps its say.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(servingGCPercent)
	}
}
