package sim

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/gateway"
)

// App is an application as the simulator sees it.
type App struct {
	Name string
	// Model names the profile to use (a model name, without digest).
	Model string
	// Rate is the mean request rate (requests per second); 0 sends none.
	Rate float64
	// ObjectiveMs is the p99 latency objective.
	ObjectiveMs float64
	// Arrivals is the arrival process; nil is Poisson.
	Arrivals Arrivals
}

// AppFrom reads an application's name, model, rate and objective.
func AppFrom(a *cluster.Application) App {
	model, _ := a.Spec.ModelRef()
	return App{Name: a.Metadata.Name, Model: model, Rate: a.Spec.Rate, ObjectiveMs: a.Spec.Objective.P99Ms}
}

// Scenario is what Run simulates.
type Scenario struct {
	// Nodes are the machines; every accelerator of every node is
	// simulated (those with no instance stay idle).
	Nodes []cluster.Node
	// Instances are the application instances placed on the nodes'
	// accelerators (as scheduler placements and cluster state carry them).
	Instances []cluster.Instance
	Apps      []App
	Profiles  Profiles
	// Duration is the virtual time during which requests arrive; Warmup
	// the leading part of it whose requests are not measured.
	Duration time.Duration
	Warmup   time.Duration
	// Seed makes the run reproducible.
	Seed uint64
	// Demand is the service demand distribution (default Gamma).
	Demand Demand
	// Concurrency is how many requests an instance runs at once on a
	// processor-sharing accelerator (the agent's config.yaml
	// concurrency); 0 is unlimited. ConcurrencyByApp overrides it per
	// application.
	Concurrency      int
	ConcurrencyByApp map[string]int
	// JobThreads is the number of CPU cores one request uses (the
	// runtime's intra-op threads); a CPU accelerator of Compute C runs
	// max(1, C/JobThreads) requests at full speed. 0 means every core: a
	// CPU is then shared like a GPU.
	JobThreads int
	// Router picks an instance for each request among its application's;
	// nil is the gateway's LeastOutstanding.
	Router gateway.Policy
}

// Discipline is how an accelerator serves concurrent requests.
type Discipline int

const (
	// ProcessorSharing runs every admitted request at once, sharing the
	// accelerator (CPUs and GPUs).
	ProcessorSharing Discipline = iota
	// FCFS runs one request at a time in arrival order, with a switch
	// cost between models (Edge TPUs).
	FCFS
)

// DisciplineOf is the discipline of an accelerator kind: FCFS for "tpu",
// processor sharing for the rest.
func DisciplineOf(kind string) Discipline {
	if kind == "tpu" {
		return FCFS
	}
	return ProcessorSharing
}

// Parallelism is how many requests accelerator a runs at full speed at
// once under processor sharing with jobThreads cores per request (see
// Scenario.JobThreads): for a CPU of Compute C, max(1, C/jobThreads), or 1
// when jobThreads is 0; 1 for anything else.
func Parallelism(a cluster.Accelerator, jobThreads int) float64 {
	if a.Kind != "cpu" || jobThreads <= 0 || a.Compute <= 0 {
		return 1
	}
	return max(1, a.Compute/float64(jobThreads))
}

// AppResult is what one application measured.
type AppResult struct {
	App       string  `json:"app"`
	Instances int     `json:"instances"`
	Requests  int     `json:"requests"`
	MeanMs    float64 `json:"meanMs"`
	P50Ms     float64 `json:"p50Ms"`
	P99Ms     float64 `json:"p99Ms"`
	// P99LowMs and P99HighMs bound the p99 with 95 % confidence (see
	// QuantileRanks): with a finite sample the measured p99 is itself an
	// estimate.
	P99LowMs    float64 `json:"p99LowMs"`
	P99HighMs   float64 `json:"p99HighMs"`
	ObjectiveMs float64 `json:"objectiveMs"`
	// Violated is true when P99Ms exceeds ObjectiveMs; Significant when
	// even P99LowMs does, so that the violation is not sampling noise.
	Violated    bool `json:"violated"`
	Significant bool `json:"significant"`
}

// QuantileRanks returns the 1-based ranks, among n sorted samples, of the
// nearest-rank p-th percentile (0 < p < 100) and of the bounds of its
// distribution-free 95 % confidence interval: the number of samples below
// the true quantile is binomial(n, p/100), so the order statistics at
// n·q ∓ 1.96·√(n·q·(1−q)) bracket it (normal approximation), clamped to
// [1, n].
func QuantileRanks(n int, p float64) (at, lo, hi int) {
	if n <= 0 {
		return 0, 0, 0
	}
	q := p / 100
	clamp := func(k float64) int { return min(max(int(math.Ceil(k)), 1), n) }
	half := 1.96 * math.Sqrt(float64(n)*q*(1-q))
	return clamp(q * float64(n)), clamp(q*float64(n) - half), clamp(q*float64(n) + half + 1)
}

// Result is a run's outcome.
type Result struct {
	// Apps are in Scenario.Apps order.
	Apps []AppResult `json:"apps"`
	// Violations counts the applications whose p99 exceeded their
	// objective.
	Violations int `json:"violations"`
	// Significant counts those whose p99 exceeded it with 95 %
	// confidence.
	Significant int `json:"significant"`
	// Requests is the number measured (after the warm-up).
	Requests int `json:"requests"`
	// Events is the number of events processed; End the virtual time at
	// which the last request completed.
	Events int           `json:"events"`
	End    time.Duration `json:"end"`
	// Utilisation is, per accelerator ("node/id") that hosts an instance,
	// the fraction of the run it had at least one request in service.
	Utilisation map[string]float64 `json:"utilisation,omitempty"`
}

// App returns the result of the named application.
func (r *Result) App(name string) (AppResult, bool) {
	i := slices.IndexFunc(r.Apps, func(a AppResult) bool { return a.App == name })
	if i < 0 {
		return AppResult{}, false
	}
	return r.Apps[i], true
}

// Run simulates the scenario. A scenario naming an instance on an unknown
// node or accelerator, an instance of an unknown application, an
// application with a rate but no instance, or a (model, kind) without a
// profile is ErrInvalid.
func Run(sc Scenario) (Result, error) {
	e, err := build(sc)
	if err != nil {
		return Result{}, err
	}
	e.run()
	return e.result(), nil
}

// build indexes the scenario into an engine.
func build(sc Scenario) (*engine, error) {
	if sc.Duration <= 0 {
		return nil, errdefs.Invalid(fmt.Sprintf("scenario duration %v must be positive", sc.Duration))
	}
	if sc.Warmup < 0 || sc.Warmup >= sc.Duration {
		return nil, errdefs.Invalid(fmt.Sprintf("warm-up %v must be in [0, duration %v)", sc.Warmup, sc.Duration))
	}
	router := sc.Router
	if router == nil {
		router = &gateway.LeastOutstanding{}
	}
	e := &engine{
		end:    sc.Duration.Seconds(),
		warmup: sc.Warmup.Seconds(),
		router: router,
		rng:    rand.New(rand.NewPCG(sc.Seed, sc.Seed^0x5851f42d4c957f2d)),
	}
	accIndex := map[[2]string]int32{}
	for ni := range sc.Nodes {
		n := &sc.Nodes[ni]
		for _, a := range n.Accelerators {
			k := [2]string{n.Name, a.ID}
			if _, dup := accIndex[k]; dup {
				return nil, errdefs.Invalid(fmt.Sprintf("scenario: accelerator %s/%s appears twice", n.Name, a.ID))
			}
			accIndex[k] = int32(len(e.accs))
			e.accs = append(e.accs, accel{
				name: n.Name + "/" + a.ID, kind: a.Kind, disc: DisciplineOf(a.Kind),
				par: Parallelism(a, sc.JobThreads), lastModel: -1,
			})
		}
	}
	appIndex := map[string]int32{}
	models := map[string]int32{}
	for i := range sc.Apps {
		a := &sc.Apps[i]
		if _, dup := appIndex[a.Name]; dup {
			return nil, errdefs.Invalid(fmt.Sprintf("scenario: application %q appears twice", a.Name))
		}
		if !(a.Rate >= 0) || math.IsInf(a.Rate, 0) {
			return nil, errdefs.Invalid(fmt.Sprintf("scenario: application %q has rate %v", a.Name, a.Rate))
		}
		appIndex[a.Name] = int32(i)
		m, ok := models[a.Model]
		if !ok {
			m = int32(len(models))
			models[a.Model] = m
		}
		conc := sc.Concurrency
		if c, ok := sc.ConcurrencyByApp[a.Name]; ok {
			conc = c
		}
		e.apps = append(e.apps, appState{spec: a, model: m, conc: conc})
	}
	type svcKey struct {
		model int32
		kind  string
	}
	samplers := map[svcKey]int32{}
	for _, in := range sc.Instances {
		ai, ok := accIndex[[2]string{in.Node, in.Accelerator}]
		if !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("scenario: instance %q of %s is on %s/%s, which is not in the cluster", in.ID, in.App, in.Node, in.Accelerator))
		}
		pi, ok := appIndex[in.App]
		if !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("scenario: instance %q belongs to unknown application %q", in.ID, in.App))
		}
		app := &e.apps[pi]
		acc := &e.accs[ai]
		k := svcKey{app.model, acc.kind}
		si, ok := samplers[k]
		if !ok {
			svc, ok := sc.Profiles.Lookup(app.spec.Model, acc.kind)
			if !ok {
				return nil, errdefs.Invalid(fmt.Sprintf("scenario: no profile of model %s on a %s (application %s on %s)", app.spec.Model, acc.kind, in.App, acc.name))
			}
			if err := svc.Validate(); err != nil {
				return nil, fmt.Errorf("scenario: profile of %s on %s: %w", app.spec.Model, acc.kind, err)
			}
			si = int32(len(e.samplers))
			samplers[k] = si
			e.samplers = append(e.samplers, newSampler(svc.MeanMs/1e3, svc.CV, sc.Demand, svc.SamplesMs, svc.SampleDelaysMs))
			e.switchCost = append(e.switchCost, svc.SwitchMs/1e3)
		}
		id := in.ID
		if id == "" {
			id = fmt.Sprintf("%s#%d", in.App, len(app.insts))
		}
		ii := int32(len(e.insts))
		e.insts = append(e.insts, instState{id: id, app: pi, acc: ai, sampler: si, conc: app.conc})
		app.insts = append(app.insts, ii)
		acc.hosts = true
	}
	for i := range e.apps {
		a := &e.apps[i]
		if a.spec.Rate > 0 && len(a.insts) == 0 {
			return nil, errdefs.Invalid(fmt.Sprintf("scenario: application %q has rate %v but no instance", a.spec.Name, a.spec.Rate))
		}
		// Instances in ID order, as the gateway sees them.
		slices.SortFunc(a.insts, func(x, y int32) int { return cmp.Compare(e.insts[x].id, e.insts[y].id) })
		if len(a.insts) > 1 {
			a.byID = make(map[string]int32, len(a.insts))
			for _, ii := range a.insts {
				a.byID[e.insts[ii].id] = ii
				a.endpoints = append(a.endpoints, gateway.Endpoint{InstanceID: e.insts[ii].id, App: a.spec.Name, Ready: true})
			}
			a.outstanding = func(id string) int { return e.insts[a.byID[id]].outstanding }
		}
	}
	return e, nil
}
