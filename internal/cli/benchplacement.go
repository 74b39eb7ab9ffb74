package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/bench"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/sim"
)

const benchPlacementHelp = `
Compares placement policies by the applications they host and the latency
violations measured afterwards. Applications from the --workload file are
added one at a time, cycling through its list, until the next cannot be
placed; then the placed set runs and every application whose measured p99
exceeds its objective counts as a violation.

  --mode sim           a simulated heterogeneous cluster of --nodes nodes,
                       measured in the discrete-event simulator (package sim)
  --mode real          this machine, measured by real serving: one node,
                       each application its own ONNX Runtime model, driven
                       at its rate over gRPC
  --mode validate-sim  the simulator against real serving: --models served
                       together at several load levels, each also profiled
                       alone and simulated; prints the p99 errors.
                       --tenants K serves K copies of each model, each at
                       1/K of its rate: the same load over more tenants
                       --record FILE keeps every measurement (JSON, written
                       after each level); --replay FILE evaluates such a
                       file again without serving or ONNX Runtime (the
                       flags that shape a run, --levels, --models,
                       --duration, --intra-op-threads, --tenants, are
                       then the record's)

Policies (--policy all, or a comma-separated list): model-driven (the
analytic latency models), knapsack-first, knapsack-best, knapsack-worst
(memory), knapsack-util (utilisation).

The last line reads:
  placement: model-driven N apps, best knapsack M apps (R.RRx), violations V
where N is the applications the model-driven policy placed and V how many
of them violated; M is the most applications any knapsack variant hosted
within their objective (a placement is not credited with the applications
it breaks). Violations whose p99 confidence interval lies wholly above the
objective are also counted apart ("95 % SURE").`

func runBenchPlacement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench placement", "bench placement --workload FILE [--mode sim|real] [flags] | --mode validate-sim [flags]", benchPlacementHelp, stderr)
	mode := fs.String("mode", bench.PlacementSim, "sim, real or validate-sim")
	workload := fs.String("workload", "", "workload `file` (see bench/workloads)")
	nodes := fs.Int("nodes", 100, "nodes of the simulated cluster (--mode sim)")
	policies := fs.String("policy", "all", "`policies` to compare: all, or a comma-separated list")
	maxApps := fs.Int("max-apps", 0, "applications tried per policy at most (0: what the cluster's memory could hold, plus one)")
	seed := fs.Uint64("seed", 1, "random `seed` of the cluster, arrivals and service times")
	simDuration := fs.Duration("sim-duration", 1800*time.Second, "virtual time simulated (--mode sim); the first 10 % is a warm-up")
	trace := fs.String("trace", "", "CSV `file` whose timestamps drive the arrivals, replayed at each application's rate (--mode sim; default Poisson)")
	traceColumn := fs.String("trace-column", "TIMESTAMP", "timestamp `column` of --trace")
	warmup := fs.Duration("warmup", 3*time.Second, "load warm-up, not measured (--mode real, validate-sim)")
	duration := fs.Duration("duration", 0, "measured load (--mode real: default 15s, and with --served-demand also each model's shortest window alone, stretched to 100 requests; validate-sim: 20s per phase, and a level has one phase per model alone and one with all together)")
	nodeMemory := fs.Int64("node-memory", 0, "MiB of this machine's memory accelpool may use (--mode real; default: the workload's node shape)")
	repo := fs.String("model-repository", cache.ModelRepository(), "model repository `dir`")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path` (default: $ACCELPOOL_ORT_LIB, the cache, then the system)")
	models := fs.String("models", strings.Join(bench.DefaultValidateModels, ","), "models served together (--mode validate-sim)")
	levels := fs.String("levels", "0.15,0.25,0.35", "load levels: the fraction of the cores the models' work takes (--mode validate-sim)")
	concurrency := fs.Int("concurrency", 2, "executors per model (--mode validate-sim)")
	tenants := fs.Int("tenants", 1, fmt.Sprintf("--mode validate-sim: copies of each model served together, each loaded apart and sent an equal share of the model's rate (the same load over more tenants); 1 to %d", bench.MaxValidateTenants))
	threads := fs.Int("intra-op-threads", 1, "ONNX Runtime intra-op threads per request (--mode validate-sim)")
	profileRuns := fs.Int("profile-runs", 300, "profiler runs per model (--mode validate-sim)")
	quietWait := fs.Duration("quiet-wait", 0, "wait up to this long before each phase for other processes to use < 10 % of the CPUs (--mode validate-sim, real)")
	record := fs.String("record", "", "write every measurement of --mode validate-sim to this JSON `file` (after each level)")
	replay := fs.String("replay", "", "--mode validate-sim: evaluate the measurements in this JSON `file` (from --record) instead of serving")
	logLevel := fs.String("log-level", "warn", "serving node log `level`")
	servedDemand := fs.Bool("served-demand", false, "--mode real: serve each model alone on this machine first, open-loop at its applications' lowest rate over gRPC, and place with the mean and CV of those latencies instead of the workload's profiles; the model-driven policy then counts the CPU's cores")
	demandRounds := fs.Int("demand-rounds", bench.DefaultDemandRounds, "--served-demand: windows measured per model alone; the one with the median mean is the demand")
	maxUtil := fs.Float64("max-utilisation", 0, fmt.Sprintf("--served-demand: the model-driven policy's bound on a CPU's predicted utilisation (work per server), e.g. the highest load its latency model was validated at on this machine (validate-sim); 0: %g", latency.DefaultMaxUtilisation))
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	newBackend := func() (*onnx.Backend, error) { return onnx.New(onnx.Config{LibPath: *ortLib, Logger: log}) }

	if (*record != "" || *replay != "" || *tenants != 1) && *mode != "validate-sim" {
		return fmt.Errorf("--record, --replay and --tenants need --mode validate-sim")
	}
	if *mode == "validate-sim" && *replay != "" {
		if *record != "" {
			return fmt.Errorf("--replay evaluates a recording; it cannot also --record")
		}
		rec, err := bench.ReadValidateRecord(*replay)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "accelpool bench placement --mode validate-sim --replay %s: measured on %s at %s (%d intra-op threads, %d executors per model, %d tenants per model, %gs per phase)\n\n",
			*replay, rec.Host, rec.Taken.Format(time.RFC3339), rec.Threads, rec.Concurrency, max(rec.Tenants, 1), rec.DurationS)
		// The record's own seed unless --seed says otherwise, so that a
		// replay simulates what the run did.
		var opt bench.EvaluateOptions
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "seed" {
				opt.Seed = *seed
			}
		})
		_, err = bench.EvaluateValidation(rec, opt, stdout)
		return err
	}
	if *mode == "validate-sim" {
		lv, err := parseFloats(*levels, "--levels")
		if err != nil {
			return err
		}
		if *tenants < 1 || *tenants > bench.MaxValidateTenants {
			return fmt.Errorf("--tenants %d: want 1 to %d", *tenants, bench.MaxValidateTenants)
		}
		b, err := newBackend()
		if err != nil {
			return err
		}
		cfg := bench.ValidateConfig{Backend: b, Repository: *repo, Levels: lv, Threads: *threads, Concurrency: *concurrency, Tenants: *tenants,
			Warmup: *warmup, Duration: *duration, ProfileRuns: *profileRuns, Seed: *seed, Logger: log, QuietWait: *quietWait,
			Record: *record}
		for _, m := range strings.Split(*models, ",") {
			if m = strings.TrimSpace(m); m != "" {
				cfg.Models = append(cfg.Models, m)
			}
		}
		_, err = bench.RunValidateSim(ctx, cfg, stdout)
		return err
	}
	if *mode != bench.PlacementSim && *mode != bench.PlacementReal {
		return fmt.Errorf("--mode %q: want sim, real or validate-sim", *mode)
	}
	if *workload == "" {
		fs.Usage()
		return fmt.Errorf("--workload is required")
	}
	w, err := bench.ReadWorkload(*workload)
	if err != nil {
		return err
	}
	if *servedDemand && *mode != bench.PlacementReal {
		return fmt.Errorf("--served-demand needs --mode real")
	}
	if *demandRounds < 1 || *demandRounds > 99 {
		return fmt.Errorf("--demand-rounds %d: want 1 to 99", *demandRounds)
	}
	if *maxUtil != 0 {
		if !*servedDemand {
			return fmt.Errorf("--max-utilisation needs --served-demand")
		}
		if err := w.SetModelMaxUtilisation(*maxUtil); err != nil {
			return fmt.Errorf("--max-utilisation: %w", err)
		}
	}
	var backend *onnx.Backend
	if *mode == bench.PlacementReal {
		if err := w.CheckRepository(*repo); err != nil {
			return fmt.Errorf("workload %s: %w", *workload, err)
		}
		if backend, err = newBackend(); err != nil {
			return err
		}
	}
	// The policies and the trace are checked before the served demands
	// are measured (minutes of serving).
	if _, err := bench.Policies(*policies, w); err != nil {
		return err
	}
	var arrivals sim.Arrivals
	if *trace != "" {
		f, err := os.Open(*trace)
		if err != nil {
			return err
		}
		ts, err := sim.ReadTimestamps(f, *traceColumn)
		f.Close()
		if err != nil {
			return fmt.Errorf("--trace %s: %w", *trace, err)
		}
		if arrivals, err = sim.NewTrace(ts); err != nil {
			return fmt.Errorf("--trace %s: %w", *trace, err)
		}
	}
	cfg := bench.PlacementConfig{Workload: w, Mode: *mode, Nodes: *nodes, MaxApps: *maxApps, Seed: *seed,
		SimDuration: *simDuration, Repository: *repo, Warmup: *warmup, Duration: *duration, NodeMemory: *nodeMemory << 20, Logger: log,
		QuietWait: *quietWait, Arrivals: arrivals, DemandRounds: *demandRounds}
	if backend != nil {
		cfg.Backend = backend
	}
	if *servedDemand {
		if err := bench.ServedDemand(ctx, w, cfg, stdout); err != nil {
			return err
		}
	}
	// The policies read the workload's profiles, served demands included.
	pols, err := bench.Policies(*policies, w)
	if err != nil {
		return err
	}
	cfg.Policies = pols
	_, err = bench.RunPlacement(ctx, cfg, stdout)
	return err
}

func parseFloats(s, flagName string) ([]float64, error) {
	var out []float64
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(v > 0) || v > 1 {
			return nil, fmt.Errorf("%s %q: want numbers in (0, 1], comma-separated", flagName, s)
		}
		out = append(out, v)
	}
	return out, nil
}
