package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/accelpool/accelpool/tensor"
)

// ServedDemand replaces the workload's service times by what each model
// costs served on this machine, for --mode real: every model is served
// alone by a node on loopback (as the placed applications will be) and
// driven with sequential requests over gRPC from this process; its demand
// is the larger of a request's latency and the CPU time this process
// spent per request (ONNX Runtime, the gRPC server and client, Go's
// garbage collector: everything the placed applications' load will also
// spend on these cores). The profiles from `accelpool profile` are ONNX
// Runtime's time alone. With served demands the model-driven policy also
// counts the CPU's cores (latency.CPUServers with the workload's threads)
// instead of one processor-sharing server per CPU. The knapsack by
// utilisation reads the same demands.
func ServedDemand(ctx context.Context, w *Workload, cfg PlacementConfig, out io.Writer) error {
	if cfg.Backend == nil {
		return fmt.Errorf("served demand: no runtime backend")
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "accelpool-demand-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	inputs := map[string][]tensor.Tensor{}
	var entries []repoEntry
	for _, m := range w.Models {
		path, err := modelFile(cfg.Repository, m.Name)
		if err != nil {
			return fmt.Errorf("model %s: %w", m.Name, err)
		}
		in, _, err := syntheticInputs(ctx, cfg.Backend, path, m.Name, w.Threads)
		if err != nil {
			return err
		}
		inputs[m.Name] = in
		entries = append(entries, repoEntry{name: m.Name, file: path,
			config: serveConfig{concurrency: servedConcurrency(w), queue: realQueue, intra: w.Threads}})
	}
	dir := filepath.Join(work, "repository")
	srv, err := startServedNode(ctx, dir, entries, cfg.Backend, cfg.Logger)
	if err != nil {
		return err
	}
	defer srv.close()
	if cfg.QuietWait > 0 {
		if _, _, err := waitQuiet(ctx, cfg.QuietWait, 0.1); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "served demand (each model served alone on this machine, sequential gRPC requests from this process):")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MODEL\tPROFILE ms\tSERVED LATENCY ms\tCPU ms/REQUEST\tDEMAND USED ms\n")
	for i := range w.Models {
		m := &w.Models[i]
		latency, cpuMs, cpuOK, err := servedAlone(ctx, servedCall(srv.client, m.Name, inputs[m.Name])(), m.ServiceMs)
		if err != nil {
			return fmt.Errorf("%s served: %w", m.Name, err)
		}
		demand := latency
		if cpuOK {
			demand = max(demand, cpuMs)
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%.3f\n", m.Name, m.ServiceMs, latency, cpuMs, demand)
		m.ServiceMs = demand
	}
	tw.Flush()
	fmt.Fprintln(out)
	w.countCores = true
	return nil
}
