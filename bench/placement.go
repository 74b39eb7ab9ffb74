package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/sim"
	"github.com/accelpool/accelpool/tensor"
)

// Placement benchmark modes.
const (
	// PlacementSim places on a simulated cluster and measures in the
	// simulator.
	PlacementSim = "sim"
	// PlacementReal places on this machine and measures real serving.
	PlacementReal = "real"
)

// PlacementPolicy is a named policy under test.
type PlacementPolicy struct {
	Name string
	// Knapsack marks a baseline: the headline compares the model-driven
	// policy with the best of these.
	Knapsack bool
	Policy   scheduler.Policy
}

// PlacementConfig configures RunPlacement.
type PlacementConfig struct {
	Workload *Workload
	// Mode is PlacementSim or PlacementReal.
	Mode string
	// Nodes is the simulated cluster's size (default 100; --mode real
	// always places on this machine alone).
	Nodes int
	// Policies are run in order; the one named "model-driven" is the
	// subject of the headline.
	Policies []PlacementPolicy
	// MaxApps bounds the applications tried per policy (default: the most
	// that fit in the cluster's memory, plus one).
	MaxApps int
	Seed    uint64

	// Simulator settings: the virtual time simulated (default 1800s, the
	// first 10 % a warm-up) and the arrival process (nil: Poisson).
	SimDuration time.Duration
	Arrivals    sim.Arrivals

	// Real serving settings: the backend and repository the models come
	// from, the load's warm-up and measured window (defaults 3s and 15s)
	// and the memory this machine offers accelpool (default: the
	// workload's first node shape's).
	Backend          runtime.Backend
	Repository       string
	Warmup, Duration time.Duration
	NodeMemory       int64
	WorkDir          string
	Logger           *slog.Logger
	// QuietWait, when positive, waits up to this long before each real
	// load for other processes to use < 10 % of the CPUs.
	QuietWait time.Duration
	// DemandRequests is the fewest requests ServedDemand measures per
	// model (default 100): its window is lengthened to hold them.
	// DemandRounds is how many such windows it measures per model
	// (default DefaultDemandRounds), taking the one with the median mean.
	DemandRequests int
	DemandRounds   int
}

// DefaultDemandRounds is PlacementConfig.DemandRounds when unset.
const DefaultDemandRounds = 3

func (c PlacementConfig) withDefaults() PlacementConfig {
	if c.Nodes <= 0 {
		c.Nodes = 100
	}
	if c.SimDuration <= 0 {
		c.SimDuration = 1800 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = 3 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 15 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.DemandRequests <= 0 {
		c.DemandRequests = 100
	}
	if c.DemandRounds <= 0 {
		c.DemandRounds = DefaultDemandRounds
	}
	return c
}

// PlacementResult is one policy's outcome.
type PlacementResult struct {
	Policy   string
	Knapsack bool
	// Hosted is the number of applications placed before the first that
	// did not fit (Stopped, with Reason); Capped is set when MaxApps were
	// all placed.
	Hosted  int
	Stopped string
	Reason  string
	Capped  bool
	// Nodes used and instances placed.
	NodesUsed int
	// Violations counts the hosted applications whose measured p99
	// exceeded their objective, Significant those whose p99 exceeded it
	// with 95 % confidence; WorstRatio is the largest p99/objective.
	Violations  int
	Significant int
	WorstRatio  float64
	WorstApp    string
	Requests    int
	// CPUBusy and OthersBusy are, in real serving, the CPU this process
	// and the rest of the machine used during the load.
	CPUBusy, OthersBusy float64
	// DecisionP50 and DecisionP99 time the placement decisions.
	DecisionP50, DecisionP99 time.Duration
	Apps                     []sim.AppResult
}

// PlacementReport is RunPlacement's outcome.
type PlacementReport struct {
	Mode    string
	Results []PlacementResult
	// ModelDriven is the "model-driven" policy's result and BestKnapsack
	// the knapsack baseline compared with it: the one hosting the most
	// applications within their objective (BestViolates when it broke
	// some). Ratio is the model-driven applications hosted over the best
	// knapsack's hosted within their objective.
	ModelDriven  *PlacementResult
	BestKnapsack *PlacementResult
	BestViolates bool
	Ratio        float64
	// Ceiling bounds what any placement holding the model's objectives
	// hosts of this sequence on this cluster; nil when not computed.
	Ceiling *Ceiling
}

// Cluster builds n nodes from the workload's node shapes, in proportion
// to their shares (largest remainder), shuffled with seed; accelerator
// IDs are the kind and an index ("gpu0", "cpu0"), ten nodes per site.
func (w *Workload) Cluster(n int, seed uint64) []cluster.Node {
	total := 0.0
	for _, s := range w.Nodes {
		total += s.Share
	}
	counts := make([]int, len(w.Nodes))
	type rem struct {
		i int
		r float64
	}
	var rems []rem
	left := n
	for i, s := range w.Nodes {
		exact := s.Share / total * float64(n)
		counts[i] = int(exact)
		left -= counts[i]
		rems = append(rems, rem{i, exact - float64(counts[i])})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; k < left; k++ {
		counts[rems[k%len(rems)].i]++
	}
	var order []int
	for i, c := range counts {
		for range c {
			order = append(order, i)
		}
	}
	r := rand.New(rand.NewPCG(seed, 0x6e6f646573))
	r.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
	nodes := make([]cluster.Node, n)
	for i, si := range order {
		s := &w.Nodes[si]
		tier := s.Tier
		if tier == "" {
			tier = cluster.TierEdge
		}
		nd := cluster.Node{Name: fmt.Sprintf("%s-%04d", s.Name, i), Tier: tier, Site: fmt.Sprintf("site-%02d", i/10)}
		perKind := map[string]int{}
		for _, a := range s.Accelerators {
			nd.Accelerators = append(nd.Accelerators, cluster.Accelerator{
				ID: fmt.Sprintf("%s%d", a.Kind, perKind[a.Kind]), Kind: a.Kind, Model: s.Name,
				MemoryBytes: a.MemoryMiB << 20, Compute: a.Compute,
			})
			perKind[a.Kind]++
		}
		nodes[i] = nd
	}
	return nodes
}

// localNode is this machine as --mode real places on it: one CPU
// accelerator with this machine's cores and the memory given.
func (w *Workload) localNode(memory int64) (cluster.Node, error) {
	if k := w.Kinds(); len(k) != 1 || k[0] != "cpu" {
		return cluster.Node{}, errdefs.Invalid(fmt.Sprintf("--mode real serves on this machine's CPU, but the workload's profiles are for %s (run it with --mode sim)", strings.Join(k, " and ")))
	}
	if memory <= 0 {
		for _, s := range w.Nodes {
			for _, a := range s.Accelerators {
				if a.Kind == "cpu" && memory <= 0 {
					memory = a.MemoryMiB << 20
				}
			}
		}
	}
	if memory <= 0 {
		return cluster.Node{}, errdefs.Invalid("no node shape has a cpu accelerator to size this machine's memory; give --node-memory")
	}
	return cluster.Node{Name: "local", Tier: cluster.TierEdge, Site: "here",
		Accelerators: []cluster.Accelerator{{ID: "cpu0", Kind: "cpu", Model: "this machine", MemoryBytes: memory, Compute: float64(goruntime.NumCPU())}}}, nil
}

// RunPlacement adds the workload's applications one at a time, cycling
// through them, with each policy until the next cannot be placed, then
// measures the placed set's latencies — in the simulator over a cluster
// of Nodes nodes (PlacementSim) or served for real on this machine
// (PlacementReal) — and prints a table per policy and the headline.
func RunPlacement(ctx context.Context, cfg PlacementConfig, out io.Writer) (PlacementReport, error) {
	cfg = cfg.withDefaults()
	w := cfg.Workload
	rep := PlacementReport{Mode: cfg.Mode}
	if w == nil || len(cfg.Policies) == 0 {
		return rep, errdefs.Invalid("placement: a workload and at least one policy are needed")
	}
	var nodes []cluster.Node
	switch cfg.Mode {
	case PlacementSim:
		nodes = w.Cluster(cfg.Nodes, cfg.Seed)
	case PlacementReal:
		if cfg.Backend == nil {
			return rep, errdefs.Invalid("placement --mode real: no runtime backend")
		}
		if err := w.CheckRepository(cfg.Repository); err != nil {
			return rep, fmt.Errorf("workload %s: %w", w.Name(), err)
		}
		n, err := w.localNode(cfg.NodeMemory)
		if err != nil {
			return rep, err
		}
		nodes = []cluster.Node{n}
	default:
		return rep, errdefs.Invalid(fmt.Sprintf("placement: mode %q is not sim or real", cfg.Mode))
	}
	maxApps := cfg.MaxApps
	if maxApps <= 0 {
		maxApps = capacityBound(w, nodes)
	}
	apps := w.Expand(maxApps)
	describeRun(out, cfg, w, nodes, maxApps)
	if c, ok := PlacementCeiling(w, nodes); ok {
		rep.Ceiling = &c
	}

	for _, pol := range cfg.Policies {
		res, insts, placed, err := fill(nodes, apps, pol)
		if err != nil {
			return rep, err
		}
		switch cfg.Mode {
		case PlacementSim:
			err = measureSim(&res, cfg, w, nodes, insts, placed)
		case PlacementReal:
			err = measureReal(ctx, &res, cfg, w, placed)
		}
		if err != nil {
			return rep, fmt.Errorf("%s: %w", pol.Name, err)
		}
		rep.Results = append(rep.Results, res)
		fmt.Fprintf(out, "%s: %d apps on %d nodes, %d violations (worst p99 %.2fx its objective, %s); %s\n",
			res.Policy, res.Hosted, res.NodesUsed, res.Violations, res.WorstRatio, orDash(res.WorstApp), stopNote(res))
		if cfg.Mode == PlacementReal {
			fmt.Fprintf(out, "  served for real: %d requests; CPU busy: this process %.0f %%, other processes %.0f %%\n", res.Requests, 100*res.CPUBusy, 100*res.OthersBusy)
			for _, l := range violatedApps(res.Apps) {
				fmt.Fprintf(out, "  violated: %s\n", l)
			}
		}
	}
	rep.summarise()
	rep.print(out)
	return rep, nil
}

// capacityBound is how many applications could fit in the cluster's
// memory of the workload's kinds, plus one: no policy can place more.
func capacityBound(w *Workload, nodes []cluster.Node) int {
	kinds := w.Kinds()
	var mem int64
	for _, n := range nodes {
		for _, a := range n.Accelerators {
			if slices.Contains(kinds, a.Kind) {
				mem += a.MemoryBytes
			}
		}
	}
	minApp := math.Inf(1)
	for _, a := range w.Expand(len(w.Apps)) {
		minApp = min(minApp, float64(a.Spec.MemoryBytes))
	}
	return min(int(float64(mem)/minApp)+1, 1_000_000)
}

func describeRun(out io.Writer, cfg PlacementConfig, w *Workload, nodes []cluster.Node, maxApps int) {
	fmt.Fprintf(out, "accelpool bench placement: workload %s (%d applications cycled; %s), mode %s\n", w.Name(), len(w.Apps), w.Source, cfg.Mode)
	shapes := map[string]int{}
	var accs int
	for _, n := range nodes {
		shapes[n.Accelerators[0].Model]++
		accs += len(n.Accelerators)
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(shapes)) {
		parts = append(parts, fmt.Sprintf("%d %s", shapes[s], s))
	}
	fmt.Fprintf(out, "cluster: %d nodes (%s), %d accelerators; applications tried per policy: at most %d\n", len(nodes), strings.Join(parts, ", "), accs, maxApps)
	switch cfg.Mode {
	case PlacementSim:
		arr := "Poisson"
		if cfg.Arrivals != nil {
			arr = "trace replay"
		}
		fmt.Fprintf(out, "measured in the simulator: %v virtual (first %v warm-up), %s arrivals, gamma service times, seed %d\n",
			cfg.SimDuration, cfg.SimDuration/10, arr, cfg.Seed)
	case PlacementReal:
		fmt.Fprintf(out, "measured by real serving on this machine (%d CPUs): one node, each application its own served model (ONNX Runtime, intra-op threads %d, %d executors), open-loop Poisson load over gRPC on loopback, %v warm-up + %v\n",
			goruntime.NumCPU(), w.Threads, servedConcurrency(w), cfg.Warmup, cfg.Duration)
	}
	fmt.Fprintln(out)
}

func servedConcurrency(w *Workload) int {
	if w.Concurrency > 0 {
		return w.Concurrency
	}
	return 8
}

// fill places apps with one policy on a fresh cluster.
func fill(nodes []cluster.Node, apps []cluster.Application, pol PlacementPolicy) (PlacementResult, []cluster.Instance, []cluster.Application, error) {
	res := PlacementResult{Policy: pol.Name, Knapsack: pol.Knapsack}
	snap := scheduler.Snapshot{Apps: apps}
	for _, n := range nodes {
		snap.Nodes = append(snap.Nodes, scheduler.NodeState{Node: n, Up: true})
	}
	s, err := scheduler.Prepare(snap)
	if err != nil {
		return res, nil, nil, err
	}
	p := pol.Policy
	if p.Top == 0 {
		p.Top = 10
	}
	fr := sim.Fill(s, apps, p, sim.FillOptions{Clock: time.Now})
	if errors.Is(fr.Err, errdefs.ErrInvalid) {
		return res, nil, nil, fmt.Errorf("placing %s: %w", fr.Failed, fr.Err)
	}
	res.Hosted = len(fr.Placed)
	res.Stopped = fr.Failed
	if fr.Err != nil {
		res.Reason = fr.Err.Error()
		// One rejection in full, to say why in the checker's words.
		for _, o := range fr.Explanation.Candidates {
			if o.Checker != "" && o.Checker != "kind" {
				res.Reason += fmt.Sprintf(" (e.g. %s/%s: %s: %s)", o.Node, o.Accelerator, o.Checker, o.Reason)
				break
			}
		}
	}
	res.Capped = fr.Failed == ""
	used := map[string]bool{}
	for _, in := range fr.Instances {
		used[in.Node] = true
	}
	res.NodesUsed = len(used)
	d := slices.Clone(fr.Decisions)
	slices.Sort(d)
	if len(d) > 0 {
		res.DecisionP50 = d[(len(d)-1)/2]
		res.DecisionP99 = d[min(len(d)-1, int(math.Ceil(0.99*float64(len(d))))-1)]
	}
	return res, fr.Instances, fr.Placed, nil
}

func measureSim(res *PlacementResult, cfg PlacementConfig, w *Workload, nodes []cluster.Node, insts []cluster.Instance, placed []cluster.Application) error {
	sc := sim.Scenario{Nodes: nodes, Instances: insts, Profiles: w.Profiles(),
		Duration: cfg.SimDuration, Warmup: cfg.SimDuration / 10, Seed: cfg.Seed,
		Concurrency: w.Concurrency, JobThreads: w.Threads}
	for i := range placed {
		a := sim.AppFrom(&placed[i])
		a.Arrivals = cfg.Arrivals
		sc.Apps = append(sc.Apps, a)
	}
	out, err := sim.Run(sc)
	if err != nil {
		return err
	}
	res.record(out.Apps)
	return nil
}

// violatedApps describes the applications whose measured p99 exceeded
// their objective, the worst (by p99 over objective) first, one line each.
func violatedApps(apps []sim.AppResult) []string {
	var v []sim.AppResult
	for _, a := range apps {
		if a.Violated {
			v = append(v, a)
		}
	}
	slices.SortStableFunc(v, func(a, b sim.AppResult) int {
		ra, rb := a.P99Ms/a.ObjectiveMs, b.P99Ms/b.ObjectiveMs
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	lines := make([]string, len(v))
	for i, a := range v {
		sure := ""
		if a.Significant {
			sure = ", 95 % sure"
		}
		lines[i] = fmt.Sprintf("%s p99 %.1f ms (95 %% CI %.1f–%.1f) over its %g ms objective (%.2fx), %d requests%s",
			a.App, a.P99Ms, a.P99LowMs, a.P99HighMs, a.ObjectiveMs, a.P99Ms/a.ObjectiveMs, a.Requests, sure)
	}
	return lines
}

// record counts violations and the worst p99/objective.
func (res *PlacementResult) record(apps []sim.AppResult) {
	res.Apps = apps
	for _, a := range apps {
		res.Requests += a.Requests
		if a.Violated {
			res.Violations++
		}
		if a.Significant {
			res.Significant++
		}
		if r := a.P99Ms / a.ObjectiveMs; r > res.WorstRatio || res.WorstApp == "" {
			res.WorstRatio, res.WorstApp = r, a.App
		}
	}
}

// realQueue is each served application's queue in real serving: an
// overloaded placement refuses what does not fit (counted as failed, so
// its p99 is infinite) rather than holding unbounded requests.
const realQueue = 64

// measureReal serves the placed applications on this machine, each as its
// own model, and drives each at its rate.
func measureReal(ctx context.Context, res *PlacementResult, cfg PlacementConfig, w *Workload, placed []cluster.Application) error {
	if len(placed) == 0 {
		return nil
	}
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "accelpool-placement-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	inputs := map[string][]tensor.Tensor{}
	var entries []repoEntry
	for _, a := range placed {
		model, _ := a.Spec.ModelRef()
		path, err := modelFile(cfg.Repository, model)
		if err != nil {
			return err
		}
		if _, ok := inputs[model]; !ok {
			in, _, err := syntheticInputs(ctx, cfg.Backend, path, model, w.Threads)
			if err != nil {
				return err
			}
			inputs[model] = in
		}
		entries = append(entries, repoEntry{name: a.Metadata.Name, file: path,
			config: serveConfig{concurrency: servedConcurrency(w), queue: realQueue, intra: w.Threads}})
	}
	dir := filepath.Join(work, res.Policy)
	srv, err := startServedNode(ctx, dir, entries, cfg.Backend, cfg.Logger)
	if err != nil {
		return err
	}
	defer srv.close()
	var targets []loadTarget
	for _, a := range placed {
		model, _ := a.Spec.ModelRef()
		call := servedCall(srv.client, a.Metadata.Name, inputs[model])()
		if err := call(ctx); err != nil {
			return fmt.Errorf("%s: %w", a.Metadata.Name, err)
		}
		targets = append(targets, loadTarget{served: a.Metadata.Name, rate: a.Spec.Rate, inputs: inputs[model]})
	}
	if cfg.QuietWait > 0 {
		if _, _, err := waitQuiet(ctx, cfg.QuietWait, 0.1); err != nil {
			return err
		}
	}
	busy := cpuShare()
	measured := openLoop(ctx, srv.client, targets, cfg.Warmup, cfg.Duration, 30*time.Second, cfg.Seed)
	res.CPUBusy, res.OthersBusy = busy()
	if err := ctx.Err(); err != nil {
		return err
	}
	var apps []sim.AppResult
	for i, m := range measured {
		a := placed[i]
		ar := sim.AppResult{App: a.Metadata.Name, Instances: 1, Requests: m.sent, MeanMs: m.meanMs, P50Ms: m.p50Ms, P99Ms: m.p99Ms,
			ObjectiveMs: a.Spec.Objective.P99Ms}
		ar.P99LowMs, ar.P99HighMs = m.p99LowMs, m.p99HighMs
		ar.Violated = m.sent > 0 && ar.P99Ms > ar.ObjectiveMs
		ar.Significant = m.sent > 0 && ar.P99LowMs > ar.ObjectiveMs
		apps = append(apps, ar)
	}
	res.record(apps)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stopNote(r PlacementResult) string {
	if r.Capped {
		return "every application tried was placed"
	}
	return "stopped at " + r.Stopped + ": " + shorten(r.Reason, 260)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// WithinSLO is the number of hosted applications whose objective held.
func (r *PlacementResult) WithinSLO() int { return r.Hosted - r.Violations }

// summarise picks the model-driven result and the best knapsack: the
// variant with the most applications hosted within their objective (a
// placement is not credited with the applications it breaks), fewer
// violations breaking a tie.
func (rep *PlacementReport) summarise() {
	for i := range rep.Results {
		r := &rep.Results[i]
		if r.Policy == "model-driven" {
			rep.ModelDriven = r
		}
		if !r.Knapsack {
			continue
		}
		b := rep.BestKnapsack
		if b == nil || r.WithinSLO() > b.WithinSLO() || (r.WithinSLO() == b.WithinSLO() && r.Violations < b.Violations) {
			rep.BestKnapsack = r
		}
	}
	if b := rep.BestKnapsack; b != nil {
		rep.BestViolates = b.Violations > 0
		if rep.ModelDriven != nil && b.WithinSLO() > 0 {
			rep.Ratio = float64(rep.ModelDriven.Hosted) / float64(b.WithinSLO())
		}
	}
}

func (rep *PlacementReport) print(out io.Writer) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "POLICY\tAPPS HOSTED\tNODES USED\tVIOLATIONS (measured)\t(95 %% SURE)\tWITHIN SLO\tWORST p99/OBJECTIVE\tREQUESTS\tDECISION p50\tp99\n")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.2f\t%d\t%v\t%v\n", r.Policy, r.Hosted, r.NodesUsed, r.Violations, r.Significant, r.WithinSLO(),
			r.WorstRatio, r.Requests, r.DecisionP50.Round(time.Microsecond), r.DecisionP99.Round(time.Microsecond))
	}
	tw.Flush()
	fmt.Fprintln(out, "A violation is a measured p99 above the objective; 95 % SURE counts those whose p99's 95 % confidence interval lies wholly above it.")
	fmt.Fprintln(out)
	md := rep.ModelDriven
	b := rep.BestKnapsack
	if b != nil {
		fmt.Fprintf(out, "best knapsack: %s, %d applications hosted, %d of them within their objective (a placement is credited only with those)\n",
			b.Policy, b.Hosted, b.WithinSLO())
	}
	if c := rep.Ceiling; c != nil {
		fmt.Fprintf(out, "ceiling: no placement keeping every predicted p99 within its objective less %.0f %% hosts more than %d applications of this sequence on this cluster (copies alone per accelerator %v)",
			100*latency.DefaultHeadroom, c.N, c.MaxCopies)
		if b != nil && b.WithinSLO() > 0 {
			fmt.Fprintf(out, ": at most %.2fx the best knapsack", float64(c.N)/float64(b.WithinSLO()))
		}
		fmt.Fprintln(out)
	}
	if md == nil || b == nil {
		fmt.Fprintln(out, "placement: no model-driven policy or no knapsack baseline in this run")
		return
	}
	fmt.Fprintf(out, "placement: model-driven %d apps, best knapsack %d apps (%.2fx), violations %d\n", md.Hosted, b.WithinSLO(), rep.Ratio, md.Violations)
}
