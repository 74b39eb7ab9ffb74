package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/tensor"
)

// ServedDemand replaces the workload's profiles by what each model costs
// served on this machine at a light load, for --mode real: every model is
// served alone by a node on loopback (as the placed applications will be)
// and driven open-loop over gRPC from this process, Poisson at the lowest
// rate any application gives it, and its demand becomes the mean and
// coefficient of variation of those latencies (the transport, the
// hand-offs and an idle core's wake-up included: what a request costs
// served, not ONNX Runtime's time alone, which is what `accelpool
// profile` measures). This is the demand whose model error the
// validation measured (validate-sim's ANALYTIC column). With served
// demands the model-driven policy also counts the CPU's cores
// (latency.CPUServers with the workload's threads) instead of one
// processor-sharing server per CPU. The knapsack by utilisation reads the
// same demands.
func ServedDemand(ctx context.Context, w *Workload, cfg PlacementConfig, out io.Writer) error {
	if cfg.Backend == nil {
		return fmt.Errorf("served demand: no runtime backend")
	}
	cfg = cfg.withDefaults()
	rates := lightRates(w)
	work, err := os.MkdirTemp(cfg.WorkDir, "accelpool-demand-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	inputs := map[string][]tensor.Tensor{}
	var entries []repoEntry
	for _, m := range w.Models {
		if rates[m.Name] == 0 {
			continue // no application uses it
		}
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
	fmt.Fprintf(out, "served demand: each model served alone on this machine, open-loop Poisson over gRPC from this process at its applications' lowest rate, %v warm-up, then at least %v and %d requests (at most %v):\n",
		cfg.Warmup, cfg.Duration, cfg.DemandRequests, maxDemandWindow)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MODEL\tPROFILE ms (cv)\tRATE req/s\tREQUESTS\tSERVED MEAN ms (cv)\tSERVED p99 ms\tOTHERS BUSY\n")
	for i := range w.Models {
		m := &w.Models[i]
		rate := rates[m.Name]
		if rate == 0 {
			continue
		}
		if cfg.QuietWait > 0 {
			if _, _, err := waitQuiet(ctx, cfg.QuietWait, 0.1); err != nil {
				return err
			}
		}
		if err := warm(ctx, servedCall(srv.client, m.Name, inputs[m.Name])()); err != nil {
			return fmt.Errorf("%s served: %w", m.Name, err)
		}
		measure := max(cfg.Duration, min(maxDemandWindow, time.Duration(float64(cfg.DemandRequests)/rate*float64(time.Second))))
		t := loadTarget{served: m.Name, rate: rate, inputs: inputs[m.Name]}
		busy := cpuShare()
		// Seeds apart from the placed load's (cfg.Seed).
		res, _, err := servedAtRate(ctx, srv.client, t, cfg.Warmup, measure, cfg.Seed+1000+uint64(i))
		_, others := busy()
		if err != nil {
			return fmt.Errorf("served demand: %w", err)
		}
		mean, cv := meanCV(res.latMs)
		fmt.Fprintf(tw, "%s\t%.3f (%.2f)\t%.2f\t%d\t%.3f (%.2f)\t%.3f\t%.0f %%\n", m.Name, m.ServiceMs, m.CV, rate, len(res.latMs), mean, cv, res.p99Ms, 100*others)
		m.ServiceMs, m.CV = mean, cv
	}
	tw.Flush()
	fmt.Fprintln(out)
	w.countCores = true
	return nil
}

// maxDemandWindow bounds how long ServedDemand measures one model, however
// low its rate: a window then holds fewer than DemandRequests requests.
const maxDemandWindow = 5 * time.Minute

// lightRates is, per model, the lowest positive rate an application of w
// gives it (0 for a model no application sends requests to).
func lightRates(w *Workload) map[string]float64 {
	rates := map[string]float64{}
	for _, a := range w.Apps {
		if !(a.Rate > 0) {
			continue
		}
		if r, ok := rates[a.Model]; !ok || a.Rate < r {
			rates[a.Model] = a.Rate
		}
	}
	return rates
}
