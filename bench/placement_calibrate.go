package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/tensor"
)

// ServedDemand replaces the workload's profiles by what each model costs
// served on this machine at a light load, for --mode real: every model is
// served alone by a node on loopback (as the placed applications will be)
// and driven open-loop over gRPC from this process, Poisson at the lowest
// rate any application gives it, and its demand becomes the mean and
// coefficient of variation of those latencies: the transport, the
// hand-offs and an idle core's wake-up included, what a request costs
// served, not ONNX Runtime's time alone, which is what `accelpool
// profile` measures. Each model is measured in PlacementConfig.DemandRounds
// windows and the one with the median mean is kept: on a shared machine
// one window in a few is disturbed (docs/benchmarks.md). This is the
// demand whose model error the validation measured (validate-sim's
// ANALYTIC column). With served
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
	fmt.Fprintf(out, "served demand: each model served alone on this machine, open-loop Poisson over gRPC from this process at its applications' lowest rate, %v warm-up, then at least %v and %d requests (at most %v), %d rounds; the round with the median mean (marked *) is the demand:\n",
		cfg.Warmup, cfg.Duration, cfg.DemandRequests, maxDemandWindow, cfg.DemandRounds)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MODEL\tPROFILE ms (cv)\tRATE req/s\tROUND MEANS ms\tREQUESTS\tSERVED MEAN ms (cv)\tSERVED p99 ms\tOTHERS BUSY\n")
	for i := range w.Models {
		m := &w.Models[i]
		rate := rates[m.Name]
		if rate == 0 {
			continue
		}
		if err := warm(ctx, servedCall(srv.client, m.Name, inputs[m.Name])()); err != nil {
			return fmt.Errorf("%s served: %w", m.Name, err)
		}
		measure := max(cfg.Duration, min(maxDemandWindow, time.Duration(float64(cfg.DemandRequests)/rate*float64(time.Second))))
		t := loadTarget{served: m.Name, rate: rate, inputs: inputs[m.Name]}
		rounds := make([]demandRound, cfg.DemandRounds)
		for r := range rounds {
			if cfg.QuietWait > 0 {
				if _, _, err := waitQuiet(ctx, cfg.QuietWait, 0.1); err != nil {
					return err
				}
			}
			busy := cpuShare()
			// Seeds apart from the placed load's (cfg.Seed) and from each other.
			res, _, err := servedAtRate(ctx, srv.client, t, cfg.Warmup, measure, cfg.Seed+1000+uint64(i)*64+uint64(r))
			_, others := busy()
			if err != nil {
				return fmt.Errorf("served demand: %w", err)
			}
			rounds[r] = demandRound{res: res, others: others}
			rounds[r].mean, rounds[r].cv = meanCV(res.latMs)
		}
		k := medianRound(rounds)
		c := rounds[k]
		fmt.Fprintf(tw, "%s\t%.3f (%.2f)\t%.2f\t%s\t%d\t%.3f (%.2f)\t%.3f\t%s\n", m.Name, m.ServiceMs, m.CV, rate, roundMeans(rounds, k),
			len(c.res.latMs), c.mean, c.cv, c.res.p99Ms, roundOthers(rounds))
		m.ServiceMs, m.CV = c.mean, c.cv
	}
	tw.Flush()
	fmt.Fprintln(out)
	w.countCores = true
	return nil
}

// demandRound is one window of a model served alone.
type demandRound struct {
	res      loadResult
	mean, cv float64
	others   float64 // the share of all cores other processes used
}

// medianRound is the index of the round whose mean is the median (the
// lower middle of an even count): one window disturbed by something else
// on the machine, slower or, rarely, faster, does not become the demand,
// and the demand keeps a real window's mean, CV and tail together.
func medianRound(rounds []demandRound) int {
	order := make([]int, len(rounds))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rounds[a].mean, rounds[b].mean) })
	return order[(len(order)-1)/2]
}

func roundMeans(rounds []demandRound, chosen int) string {
	var b strings.Builder
	for i, r := range rounds {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.3f", r.mean)
		if i == chosen {
			b.WriteString("*")
		}
	}
	return b.String()
}

func roundOthers(rounds []demandRound) string {
	most := 0.0
	for _, r := range rounds {
		most = max(most, r.others)
	}
	return fmt.Sprintf("≤ %.0f %%", 100*most)
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
