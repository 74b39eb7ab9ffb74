package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/agent/profile"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/sim"
	"github.com/accelpool/accelpool/tensor"
)

// TargetSimP99Error is the largest relative error of a simulated p99
// against the measured one that the simulator is held to.
const TargetSimP99Error = 0.15

// TargetModelError is the mean relative error issue 5 holds the analytic
// latency models to, on the Ibis data and on this machine's measurements.
const TargetModelError = 0.10

// DefaultValidateModels are co-located in the simulator's validation: a
// long request (PaddleOCR recognition at 48×320, ~25 ms), a middle one
// (BlazeFace back, ~7 ms) and a short one (BlazeFace front, ~1.5 ms).
var DefaultValidateModels = []string{"ocr-rec", "blazeface-back", "blazeface-front"}

// ValidateConfig configures RunValidateSim. Zero values take the defaults
// given on each field.
type ValidateConfig struct {
	// Backend runs the models (required); Repository holds them.
	Backend    runtime.Backend
	Repository string
	// Models are served together on one node (default
	// DefaultValidateModels).
	Models []string
	// Levels are the load levels, each the fraction of this machine's
	// cores the models' own work (rate × profiled service time) takes;
	// every application gets the same rate (default 0.15, 0.25, 0.35:
	// serving adds about as much CPU again on this kind of machine).
	Levels []float64
	// Threads is each request's intra-op threads (default 1) and
	// Concurrency each model's executors (default 2): with more requests
	// running than cores they share the CPU.
	Threads     int
	Concurrency int
	// Tenants is how many copies of each model the node serves in the
	// together phase (default 1, at most MaxValidateTenants), each loaded
	// apart (its own session and executors, as a placement's applications
	// are) and sent an equal share of the model's rate: the load stays
	// the same and only the number of tenants grows. Every copy's
	// latencies are pooled into the model's; the latency models and the
	// simulator predict the same for one tenant at a rate as for several
	// identical ones sharing it, so a difference measured is the tenants'.
	Tenants int
	// Warmup and Duration of each open-loop phase (defaults 3s and 20s): a
	// level runs one phase per model alone, then one with all together.
	Warmup, Duration time.Duration
	// ProfileRuns is the profiler's timed runs per model (default 300).
	ProfileRuns int
	// SimDuration is the virtual time simulated per level (default 600s).
	SimDuration time.Duration
	Seed        uint64
	// WorkDir holds the scratch repository; empty uses a temporary one.
	WorkDir string
	// Record, if set, is a file the measurements are written to as JSON
	// (a ValidateRecord), after each level.
	Record string
	Logger *slog.Logger
	// QuietWait, when positive, is how long to wait before profiling and
	// before each level for the rest of the machine to use less than
	// 10 % of its CPUs (on a shared machine other work slows the models
	// and spoils the comparison); the run goes on after it regardless.
	QuietWait time.Duration
}

func (c ValidateConfig) withDefaults() ValidateConfig {
	if len(c.Models) == 0 {
		c.Models = DefaultValidateModels
	}
	if len(c.Levels) == 0 {
		c.Levels = []float64{0.15, 0.25, 0.35}
	}
	if c.Threads <= 0 {
		c.Threads = 1
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 2
	}
	if c.Tenants <= 0 {
		c.Tenants = 1
	}
	if c.Warmup <= 0 {
		c.Warmup = 3 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.ProfileRuns <= 0 {
		c.ProfileRuns = 300
	}
	if c.SimDuration <= 0 {
		c.SimDuration = 600 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c
}

// MaxValidateTenants bounds ValidateConfig.Tenants: a copy of each model
// is loaded per tenant, and the demo models take 16–44 MiB each.
const MaxValidateTenants = 32

// tenantName is the served name of a model's k-th copy (k from 0; the
// first is the model's own name).
func tenantName(model string, k int) string {
	if k == 0 {
		return model
	}
	return fmt.Sprintf("%s-tenant%d", model, k+1)
}

// ValidateProfile is one model's profile and its latency served alone.
type ValidateProfile struct {
	Model     string  `json:"model"`
	Input     string  `json:"input"`
	ServiceMs float64 `json:"service_ms"`
	CV        float64 `json:"cv"`
	P99Ms     float64 `json:"p99_ms"`
	// Slowdown is the mean latency with one request per core running at
	// once over the latency of one alone (1 when the cores are
	// independent).
	Slowdown float64 `json:"slowdown"`
	// ServedMs is the mean latency of sequential gRPC requests, one at a
	// time (the serving path's own cost on top of ServiceMs), and
	// ServedCPUMs the CPU time this process spent per request meanwhile:
	// the model, the client, the server and the garbage collector.
	ServedMs    float64 `json:"served_ms"`
	ServedCPUMs float64 `json:"served_cpu_ms"`
}

// ValidateApp compares one application at one level.
type ValidateApp struct {
	Model               string
	Rate                float64
	Requests, Failed    int
	MeasuredMeanMs      float64
	MeasuredP99Ms       float64
	SimMeanMs, SimP99Ms float64
	RPCMeanMs, RPCP99Ms float64 // simulated with the serving path's cost added
	// AloneMeanMs and AloneP99Ms are the model served alone at the same
	// rate; EmpMeanMs and EmpP99Ms simulated with that as its demand.
	AloneMeanMs, AloneP99Ms float64
	EmpMeanMs, EmpP99Ms     float64
	// ModelMeanMs and ModelP99Ms are the placement's own analytic latency
	// model (latency.PS, cores ÷ intra-op threads servers) given as
	// each model's demand its latencies served alone at the lightest
	// level's rate: what the latency checker would predict for this node
	// with profiles of the models served. CalModelMeanMs and
	// CalModelP99Ms are the same model with the cores' effective
	// parallelism as its servers and the calibrated demands (sequential
	// requests served alone) instead. DelayModelMeanMs
	// and DelayModelP99Ms are the same model given each model's profile
	// served alone at this rate instead: the ALONE latencies split into
	// work and a delay (Profile.DelayMs) as the empirical simulation
	// splits them.
	ModelMeanMs, ModelP99Ms           float64
	CalModelMeanMs, CalModelP99Ms     float64
	DelayModelMeanMs, DelayModelP99Ms float64
	// LightMeanMs and LightP99Ms are the simulator given the analytic
	// model's inputs (ModelMeanMs): each model's latencies served alone at
	// the lightest level, drawn one per request as work on cores ÷ intra-op
	// threads servers. LightInCI and ModelInCI say whether LightP99Ms and
	// ModelP99Ms lie inside the measured p99's 95 % confidence interval
	// (MeasuredP99LowMs to MeasuredP99HighMs, by order statistics; both 0
	// with too few requests).
	LightMeanMs, LightP99Ms             float64
	ErrP99Light, ErrMeanLight           float64
	MeasuredP99LowMs, MeasuredP99HighMs float64
	LightInCI, ModelInCI                bool
	GeneratorLagP99Ms                   float64
	ErrP99, ErrP99RPC                   float64 // relative: (sim - measured) / measured
	ErrMean, ErrMeanRPC                 float64
	ErrP99Emp, ErrMeanEmp               float64
	ErrP99Model, ErrMeanModel           float64
}

// ValidateLevel is one load level.
type ValidateLevel struct {
	Level float64
	Rate  float64 // per application
	// CPUBusy is this process's CPU time over the level's wall time and
	// cores: the models, the serving path and the load generator.
	CPUBusy float64
	// OthersBusy is the CPU the rest of the machine used meanwhile (from
	// /proc/stat): other work on a shared machine slows the models.
	OthersBusy float64
	Apps       []ValidateApp
}

// ValidateReport is RunValidateSim's outcome.
type ValidateReport struct {
	CPUs int
	// Parallelism is the cores' effective parallelism the calibrated
	// simulation uses.
	Parallelism float64
	Profiles    []ValidateProfile
	Levels      []ValidateLevel
	// MeanAbsErrP99 and MaxAbsErrP99 summarise |ErrP99| over every
	// (application, level); the RPC ones the variant with the serving
	// path's cost.
	MeanAbsErrP99, MaxAbsErrP99       float64
	MeanAbsErrP99RPC, MaxAbsErrP99RPC float64
	// The empirical ones: each model's demand is its latency served alone
	// at the level's rate (the headline).
	MeanAbsErrP99Emp, MaxAbsErrP99Emp float64
	// The analytic model's (ModelP99Ms, ModelMeanMs): issue 5's model
	// error on this machine's own measurements.
	MeanAbsErrP99Model, MaxAbsErrP99Model   float64
	MeanAbsErrMeanModel, MaxAbsErrMeanModel float64
	// The same for the model with the calibrated demands, and given the
	// profiles served alone at each level's rate (with delays).
	MeanAbsErrP99CalModel, MeanAbsErrMeanCalModel     float64
	MeanAbsErrP99DelayModel, MeanAbsErrMeanDelayModel float64
	// The light-load simulation's (LightP99Ms), and in how many of the
	// Pairs (level, model) its p99 and the analytic model's were inside
	// the measured p99's interval.
	MeanAbsErrP99Light, MaxAbsErrP99Light float64
	LightInCI, ModelInCI, Pairs           int
}

// RunValidateSim checks the simulator against real serving on this
// machine: the models are served together by one node (ONNX Runtime,
// Threads intra-op threads, Concurrency executors each, no batching) and
// driven over gRPC on loopback with open-loop Poisson load at each level;
// each model is profiled alone with agent/profile first, and the same
// scenario — same rates, cores, threads and concurrency — is simulated
// from those profiles three ways (naive, calibrated, empirical: see the
// printed legend). Before each level every model is also served alone at
// that level's rate; those latencies are the empirical simulation's
// demand. The measurements go into a ValidateRecord (written to
// cfg.Record after each level, if set), which EvaluateValidation then
// compares with the simulations and the analytic models, printing per
// level and application the measured and predicted mean and p99 and the
// errors. A run that fails part way evaluates the levels it finished
// before returning the error.
func RunValidateSim(ctx context.Context, cfg ValidateConfig, out io.Writer) (ValidateReport, error) {
	cfg = cfg.withDefaults()
	rep := ValidateReport{CPUs: goruntime.NumCPU()}
	if cfg.Backend == nil {
		return rep, fmt.Errorf("validate-sim: no runtime backend")
	}
	if cfg.Tenants > MaxValidateTenants {
		return rep, fmt.Errorf("validate-sim: %d tenants per model: want 1 to %d", cfg.Tenants, MaxValidateTenants)
	}
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "accelpool-validate-sim-")
		if err != nil {
			return rep, err
		}
		defer os.RemoveAll(d)
		work = d
	}
	fmt.Fprintf(out, "accelpool bench placement --mode validate-sim: %s served together by one node on this machine (%d CPUs, GOMAXPROCS %d at start; %s)\n",
		strings.Join(cfg.Models, ", "), rep.CPUs, goruntime.GOMAXPROCS(0), goVersion())
	fmt.Fprintf(out, "ONNX Runtime intra-op threads %d, %d executors per model, no batching; open-loop Poisson load over gRPC on loopback, %v warm-up + %v per level; the simulator runs %v of virtual time per level\n",
		cfg.Threads, cfg.Concurrency, cfg.Warmup, cfg.Duration, cfg.SimDuration)
	if cfg.Tenants > 1 {
		fmt.Fprintf(out, "%d tenants per model when served together: each model loaded %d times, each copy sent 1/%d of its rate; a model's latencies are its copies' pooled\n",
			cfg.Tenants, cfg.Tenants, cfg.Tenants)
	}
	fmt.Fprintln(out)

	quiet := func(what string) error {
		if cfg.QuietWait <= 0 {
			return nil
		}
		waited, others, err := waitQuiet(ctx, cfg.QuietWait, 0.1)
		if err != nil {
			return err
		}
		if waited > 0 {
			fmt.Fprintf(out, "(waited %v for other processes to quiet down before %s; they now use %.0f %% of the CPUs)\n", waited.Round(time.Second), what, 100*others)
		}
		return nil
	}
	if cfg.Record != "" {
		// Found out now rather than after profiling and a level.
		f, err := tempBeside(cfg.Record)
		if err != nil {
			return rep, err
		}
		f.Close()
		os.Remove(f.Name())
	}
	if err := quiet("profiling"); err != nil {
		return rep, err
	}
	// Profile each model alone, as the profiler does for the registry.
	inputs := map[string][]tensor.Tensor{}
	var entries []repoEntry
	var vprofs []ValidateProfile
	for _, m := range cfg.Models {
		path, err := modelFile(cfg.Repository, m)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", m, err)
		}
		in, desc, err := syntheticInputs(ctx, cfg.Backend, path, m, cfg.Threads)
		if err != nil {
			return rep, err
		}
		inputs[m] = in
		shapes := map[string][]int64{}
		for _, t := range in {
			shapes[t.Name] = t.Shape
		}
		p, err := profile.Run(ctx, cfg.Backend, path, m, profile.Options{
			BatchSizes: []int{1}, Concurrency: []int{1, rep.CPUs}, Iterations: cfg.ProfileRuns, Warmup: 10, Shapes: shapes,
			Runtime: runtime.Options{IntraOpThreads: cfg.Threads},
		}, nil)
		if err != nil {
			return rep, fmt.Errorf("profile %s: %w", m, err)
		}
		svc, err := sim.FromModelProfile(p)
		if err != nil {
			return rep, err
		}
		vp := ValidateProfile{Model: m, Input: desc, ServiceMs: svc.MeanMs, CV: svc.CV, P99Ms: p.ServiceP99Ms[1], Slowdown: 1}
		if c1, cn := p.ConcurrentMs[1], p.ConcurrentMs[rep.CPUs]; c1 > 0 && cn > 0 {
			vp.Slowdown = cn / c1
		}
		vprofs = append(vprofs, vp)
		for k := range cfg.Tenants {
			entries = append(entries, repoEntry{name: tenantName(m, k), file: path, config: serveConfig{concurrency: cfg.Concurrency, queue: maxInFlight, intra: cfg.Threads}})
		}
	}

	dir := filepath.Join(work, "repository")
	srv, err := startServedNode(ctx, dir, entries, cfg.Backend, cfg.Logger)
	if err != nil {
		return rep, err
	}
	defer srv.close()
	fmt.Fprintf(out, "serving node up: GOMAXPROCS %d (the cores and a P per executor: agent.GoProcs)\n", goruntime.GOMAXPROCS(0))
	// Served alone: sequential requests, the serving path's cost.
	for i := range vprofs {
		p := &vprofs[i]
		var err error
		p.ServedMs, p.ServedCPUMs, _, err = servedAlone(ctx, servedCall(srv.client, p.Model, inputs[p.Model])(), p.ServiceMs)
		if err != nil {
			return rep, fmt.Errorf("%s served: %w", p.Model, err)
		}
	}
	rec := ValidateRecord{Host: hostDesc(), Taken: time.Now().UTC().Truncate(time.Second), CPUs: rep.CPUs,
		Threads: cfg.Threads, Concurrency: cfg.Concurrency, Tenants: cfg.Tenants, WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds(),
		Seed: cfg.Seed, SimDurationS: cfg.SimDuration.Seconds(), Profiles: vprofs}
	sumWork := 0.0
	for _, p := range vprofs {
		sumWork += p.ServiceMs / 1e3
	}
	// A level that fails leaves the finished ones to evaluate.
	partial := func(err error) (ValidateReport, error) {
		if len(rec.Levels) == 0 {
			return rep, err
		}
		fmt.Fprintf(out, "\nstopped at level %d of %d (%v); the levels measured so far:\n\n", len(rec.Levels)+1, len(cfg.Levels), err)
		r, eerr := EvaluateValidation(rec, EvaluateOptions{SimDuration: cfg.SimDuration, Seed: cfg.Seed}, out)
		return r, errors.Join(err, eerr)
	}
	for li, level := range cfg.Levels {
		rate := level * float64(rep.CPUs) / sumWork
		lv := RecordedLevel{Level: level, Rate: rate}
		if err := quiet(fmt.Sprintf("level %d", li+1)); err != nil {
			return partial(err)
		}
		var targets []loadTarget
		for _, m := range cfg.Models {
			targets = append(targets, loadTarget{served: m, rate: rate, inputs: inputs[m]})
		}
		// Each model alone at this rate first: its latency distribution
		// under these arrivals (idle gaps, the serving path's jitter) is
		// the empirical simulation's demand.
		lv.Apps = make([]RecordedApp, len(targets))
		for i, t := range targets {
			busy := cpuShare()
			res, scale, err := servedAtRate(ctx, srv.client, t, cfg.Warmup, cfg.Duration, cfg.Seed+uint64(li))
			if err != nil {
				return partial(fmt.Errorf("validate-sim: %w", err))
			}
			_, others := busy()
			lv.Apps[i] = RecordedApp{Model: t.served, AloneMs: roundMs(res.latMs), AloneScale: scale, AloneOthersBusy: &others}
		}
		// Together: every tenant of every model at its share of the rate.
		var together []loadTarget
		for _, t := range targets {
			for k := range cfg.Tenants {
				together = append(together, loadTarget{served: tenantName(t.served, k), rate: t.rate / float64(cfg.Tenants), inputs: t.inputs})
			}
		}
		busy := cpuShare()
		measured := openLoop(ctx, srv.client, together, cfg.Warmup, cfg.Duration, 30*time.Second, cfg.Seed+uint64(li))
		if err := ctx.Err(); err != nil {
			return partial(err)
		}
		lv.CPUBusy, lv.OthersBusy = busy()
		for i, m := range measured {
			a := &lv.Apps[i/cfg.Tenants]
			a.TogetherMs = append(a.TogetherMs, roundMs(m.latMs)...)
			a.Sent += m.sent
			a.Failed += m.failed
			a.LagP99Ms = max(a.LagP99Ms, m.lagP99Ms)
		}
		rec.Levels = append(rec.Levels, lv)
		fmt.Fprintf(out, "level %d/%d measured: %.1f req/s per model; CPU busy: this process %.0f %%, other processes %.0f %%\n",
			li+1, len(cfg.Levels), rate, 100*lv.CPUBusy, 100*lv.OthersBusy)
		// Written after every level, so that an interrupted run keeps
		// what it measured.
		if cfg.Record != "" {
			if err := WriteValidateRecord(cfg.Record, rec); err != nil {
				return partial(err)
			}
		}
	}
	if cfg.Record != "" {
		fmt.Fprintf(out, "recorded every measurement in %s (evaluate it again with --replay)\n", cfg.Record)
	}
	fmt.Fprintln(out)
	return EvaluateValidation(rec, EvaluateOptions{SimDuration: cfg.SimDuration, Seed: cfg.Seed}, out)
}

func relErr(sim, measured float64) float64 {
	if measured == 0 || math.IsInf(measured, 0) {
		return math.Inf(1)
	}
	return (sim - measured) / measured
}

func meanMax(v []float64) (mean, mx float64) {
	for _, x := range v {
		mean += x / float64(len(v))
		mx = max(mx, x)
	}
	return mean, mx
}

// machineCPU is the CPU time every process of the machine has used, from
// /proc/stat's first line (user, nice, system, irq, softirq, steal); false
// where there is no /proc/stat.
func machineCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100, true // USER_HZ is 100 on Linux
}

// cpuShare starts measuring the CPU this process and the machine's other
// processes use; the function it returns gives each as a share of all the
// cores since then (others is 0 where the machine's figure is unknown,
// and at most 1: /proc/stat counts in ticks and may count more CPUs than
// this process may use).
func cpuShare() func() (self, others float64) {
	cpu0, _ := processCPU()
	sys0, sysOK := machineCPU()
	t0 := time.Now()
	return func() (self, others float64) {
		cpu1, _ := processCPU()
		sys1, _ := machineCPU()
		wall := float64(time.Since(t0)) * float64(goruntime.NumCPU())
		self = float64(cpu1-cpu0) / wall
		if sysOK {
			others = min(max(float64(sys1-sys0)/wall-self, 0), 1)
		}
		return self, others
	}
}

// waitQuiet samples, one second at a time, the CPU the machine's other
// processes use (of all cores) until it is below limit or max has passed.
// It returns how long it waited and the last figure.
func waitQuiet(ctx context.Context, max time.Duration, limit float64) (time.Duration, float64, error) {
	start := time.Now()
	for {
		m0, ok := machineCPU()
		p0, _ := processCPU()
		t0 := time.Now()
		if !ok {
			return 0, 0, nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), 0, ctx.Err()
		case <-time.After(time.Second):
		}
		m1, _ := machineCPU()
		p1, _ := processCPU()
		others := float64((m1-m0)-(p1-p0)) / float64(time.Since(t0)) / float64(goruntime.NumCPU())
		if others < 0 { // counted in ticks: a quiet second can come out a little below zero
			others = 0
		}
		if others < limit || time.Since(start) >= max {
			return time.Since(start) - time.Second, others, nil
		}
	}
}
