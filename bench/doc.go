// Package bench holds accelpool's experiment drivers: programs that measure
// the serving stack against a baseline taken in the same run and print
// ratios, never timed assertions.
//
// RunOverhead measures what serving costs on top of calling ONNX Runtime
// directly. For each model it loads one in-process session and starts a
// real serving node (agent.StartNode) on loopback, then interleaves, round
// by round, the in-process session and each transport (gRPC with raw
// contents, REST with the binary tensor extension): sequential requests at
// concurrency 1 (p50, p99, throughput) and a saturation window (K
// goroutines on the session against K executors fed by many concurrent
// clients). Every figure is the median over rounds. A last phase compares
// dynamic batching with unbatched serving on a model whose first dimension
// is dynamic.
//
// The package only orchestrates: the runtime backend is injected (the CLI
// passes ONNX Runtime), so bench itself holds no cgo.
package bench
