package latency

import (
	"math"
	"strconv"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
)

// ProfileSource returns a model's profile on a kind of accelerator
// ("cpu", "gpu", "tpu"); an error wrapping errdefs.ErrNotFound when it
// has none. The control plane plugs in its profile registry; tests and
// the simulator use StaticProfiles.
type ProfileSource interface {
	Profile(model, kind string) (Profile, error)
}

// ProfileKey names a profile: a model on a kind of accelerator.
type ProfileKey struct{ Model, Kind string }

// StaticProfiles is a ProfileSource over a fixed map.
type StaticProfiles map[ProfileKey]Profile

// Profile implements ProfileSource.
func (s StaticProfiles) Profile(model, kind string) (Profile, error) {
	if p, ok := s[ProfileKey{model, kind}]; ok {
		return p, nil
	}
	return Profile{}, errdefs.New(errdefs.ErrNotFound, "no profile for model "+model+" on "+orNone(kind))
}

// ProfileFunc adapts a function to ProfileSource.
type ProfileFunc func(model, kind string) (Profile, error)

// Profile implements ProfileSource.
func (f ProfileFunc) Profile(model, kind string) (Profile, error) { return f(model, kind) }

// ModelForKind is the model of how an accelerator kind shares itself:
// PS for "gpu" and "cpu" (co-located models run concurrently), FCFS for
// "tpu" (one request at a time, a switch cost between models); nil for
// any other kind.
func ModelForKind(kind string) Model {
	switch kind {
	case "gpu", "cpu":
		return PS{}
	case "tpu":
		return FCFS{}
	}
	return nil
}

// RateShare is the request rate (per second) one instance of an
// application receives.
type RateShare func(app *cluster.Application) float64

// EvenShare is the default RateShare: the application's rate split evenly
// over the instances it is deployed with, spec.replicas.min (at least 1),
// as the gateway spreads requests over ready instances. An application
// scaled above its minimum gives each instance less than this, so the
// prediction errs on the safe side; before its minimum is reached each
// instance may carry more, which the reconciler's next decision sees.
func EvenShare(app *cluster.Application) float64 {
	return app.Spec.Rate / float64(max(1, app.Spec.Replicas.Min))
}

// DefaultMaxUtilisation bounds an accelerator's predicted utilisation
// when Checker.MaxUtilisation is 0: beyond it a small error in a profile
// or a rate moves latencies a lot (T grows as 1/(1−ρ)).
const DefaultMaxUtilisation = 0.9

// Tenants gathers what a latency model needs about a candidate: one
// Load per instance on the accelerator, the proposed instance last, and
// each one's application. The load's Name is the application's, Model
// the instance's model name, Rate share(app), Profile src's profile of
// the model on the accelerator's kind. It fails, naming what is missing,
// when an instance's application has no specification in the snapshot or
// a model has no profile on the kind.
func Tenants(c *scheduler.Candidate, src ProfileSource, share RateShare) ([]Load, []*cluster.Application, error) {
	ins := c.Instances()
	loads := make([]Load, 0, len(ins)+1)
	apps := make([]*cluster.Application, 0, len(ins)+1)
	for _, in := range append(ins[:len(ins):len(ins)], c.Proposed()) {
		l, app, err := resolve(c, in, src, share)
		if err != nil {
			return nil, nil, err
		}
		loads = append(loads, l)
		apps = append(apps, app)
	}
	return loads, apps, nil
}

// resolve is one instance's Load and application.
func resolve(c *scheduler.Candidate, in cluster.Instance, src ProfileSource, share RateShare) (Load, *cluster.Application, error) {
	if share == nil {
		share = EvenShare
	}
	app, ok := c.LookupApp(in.App)
	if !ok {
		return Load{}, nil, errdefs.New(errdefs.ErrNotFound, "app "+in.App+" on "+c.Accelerator().ID+" has no specification in the snapshot")
	}
	model := in.ModelName
	if model == "" {
		model, _ = app.Spec.ModelRef()
	}
	p, err := src.Profile(model, c.Accelerator().Kind)
	if err != nil {
		return Load{}, nil, err
	}
	return Load{Name: in.App, Model: model, Rate: share(app), Profile: p}, app, nil
}

// Checker is the "latency" feasibility test: a candidate accelerator may
// take the proposed instance only if, with it, the accelerator's model
// (ModelForKind, or Models) predicts every co-located application's p99
// within its objective (spec.objective.p99Ms) and the utilisation within
// MaxUtilisation. It rejects, with the reason, an accelerator kind with
// no model, an instance whose application or profile is unknown, an
// overloaded accelerator and the application that misses its objective by
// the largest factor:
//
//	app face p99 would be 143ms > 98ms (100ms objective less 2 % headroom; ρ=0.82)
//
// A Checker built by NewChecker (as ModelDrivenPolicy does) keeps each
// accelerator's tenants resolved (applications, rate shares, profiles,
// objectives) between decisions and predicts from them, so a decision
// does not walk every instance of the cluster again; see TenantCache.
// The zero-cache literal Checker{Profiles: src} resolves them for every
// candidate.
type Checker struct {
	// Profiles supplies the profiles; required.
	Profiles ProfileSource
	// MaxUtilisation is the bound on predicted utilisation; 0 means
	// DefaultMaxUtilisation.
	MaxUtilisation float64
	// Models picks the model for an accelerator kind; nil means
	// ModelForKind.
	Models func(kind string) Model
	// Share is the rate per instance; nil means EvenShare.
	Share RateShare
	// Cache, when set, keeps resolved tenants between decisions; it must
	// be used with these Profiles and Share only.
	Cache *TenantCache
	// Servers is how many requests an accelerator runs at full speed at
	// once, for the processor-sharing model (PS.Servers): a CPU of C
	// cores whose requests use t intra-op threads each runs C/t. nil, or
	// a value ≤ 1, shares every accelerator like a GPU. CPUServers makes
	// one.
	Servers func(a *cluster.Accelerator) float64
	// Headroom is the fraction of every objective kept for the models'
	// own error: a prediction passes only within (1 − Headroom) ×
	// objective. 0 keeps none; NewChecker sets DefaultHeadroom. Values
	// outside [0, 0.5] are clamped.
	Headroom float64
}

// CPUServers is a Checker.Servers for agents whose requests each use
// threads intra-op threads: a CPU accelerator of Compute C (cores) runs
// max(1, C/threads) requests at once; anything else, or threads ≤ 0, one.
func CPUServers(threads int) func(a *cluster.Accelerator) float64 {
	return func(a *cluster.Accelerator) float64 {
		if a.Kind != "cpu" || threads <= 0 || a.Compute <= 0 {
			return 1
		}
		return max(1, a.Compute/float64(threads))
	}
}

// DefaultHeadroom is NewChecker's Headroom. The processor-sharing p99 is
// within about ±6 % of a simulation; without a margin, co-locations
// predicted a hair under their objectives (149.9 ms for 150) cross it in
// measurement about half the time.
const DefaultHeadroom = 0.02

// NewChecker is a Checker over src with the defaults, DefaultHeadroom and
// a TenantCache.
func NewChecker(src ProfileSource) Checker {
	return Checker{Profiles: src, Cache: NewTenantCache(), Headroom: DefaultHeadroom}
}

// keep is the fraction of an objective a prediction may use.
func (ch Checker) keep() float64 { return 1 - min(max(ch.Headroom, 0), 0.5) }

// missed is the reason for an application predicted over its objective.
func (ch Checker) missed(app string, p99, obj, rho float64) string {
	if ch.Headroom <= 0 {
		return "app " + app + " p99 would be " + fmtMs(p99) + " > " + fmtMs(obj) + " objective (ρ=" + fmtRho(rho) + ")"
	}
	return "app " + app + " p99 would be " + fmtMs(p99) + " > " + fmtMs(obj*ch.keep()) + " (" + fmtMs(obj) +
		" objective less " + strconv.FormatFloat(100*(1-ch.keep()), 'g', 3, 64) + " % headroom; ρ=" + fmtRho(rho) + ")"
}

// Name is "latency".
func (Checker) Name() string { return "latency" }

// Deferred is true: predicting every co-located application's p99 is the
// costliest check of a decision, so with Policy.Top the scheduler runs it
// on candidates in rank order only until it has the best that pass
// (scheduler.DeferredChecker).
func (Checker) Deferred() bool { return true }

// Check implements scheduler.Checker.
func (ch Checker) Check(c *scheduler.Candidate) (bool, string) { return ch.judge(c, true) }

// Passes implements scheduler.QuietChecker: Check without building the
// reason, for the rejections a decision does not record.
func (ch Checker) Passes(c *scheduler.Candidate) bool {
	ok, _ := ch.judge(c, false)
	return ok
}

// judge is Check; why false leaves the reason out where that saves work.
func (ch Checker) judge(c *scheduler.Candidate, why bool) (bool, string) {
	bound := ch.MaxUtilisation
	if bound <= 0 {
		bound = DefaultMaxUtilisation
	}
	if ok, reason, done := ch.fastPS(c, bound, why); done {
		return ok, reason
	}
	preds, objs, reason := ch.predict(c, bound)
	if reason != "" {
		return false, reason
	}
	rho := preds[len(preds)-1].Utilisation
	if rho > bound {
		return false, overBound(rho, bound, c)
	}
	worst, ratio, keep := -1, 1.0, ch.keep()
	for i, p := range preds {
		if objs[i] <= 0 {
			continue
		}
		if r := p.P99Ms / (objs[i] * keep); r > ratio {
			worst, ratio = i, r
		}
	}
	if worst < 0 {
		return true, ""
	}
	p := preds[worst]
	return false, ch.missed(p.Name, p.P99Ms, objs[worst], rho)
}

// model is the latency model of accelerator a: Models (or ModelForKind)
// for its kind, a processor-sharing one given a's Servers.
func (ch Checker) model(a *cluster.Accelerator) Model {
	models := ch.Models
	if models == nil {
		models = ModelForKind
	}
	m := models(a.Kind)
	if ps, ok := m.(PS); ok && ch.Servers != nil {
		ps.Servers = ch.Servers(a)
		return ps
	}
	return m
}

// fastPS judges a candidate on a processor-sharing accelerator from the
// cached tenants exactly as predict and PS.Predict would (the same sums
// in the same order, the same formula), without building loads or
// predictions: the cache keeps each tenant's psOwn, Σ λ and Σ λ·s, so a
// candidate costs one psP99With per tenant, and with why false it stops
// at the first objective missed. done is false where it does not apply
// (no cache, another model, a bound that lets the accelerator overload):
// the caller predicts in full.
func (ch Checker) fastPS(c *scheduler.Candidate, bound float64, why bool) (ok bool, reason string, done bool) {
	if ch.Cache == nil || ch.Profiles == nil || bound >= 1 {
		return false, "", false
	}
	ps, isPS := ch.model(c.Accelerator()).(PS)
	if !isPS {
		return false, "", false
	}
	set := ch.Cache.get(c, c.Instances(), ch.Profiles, ch.Share)
	if set.reason != "" {
		return false, set.reason, true
	}
	p, err := ch.Cache.proposal(c, ch.Profiles, ch.Share)
	if err != nil {
		return false, err.Error(), true
	}
	l := &p.load
	sh := psShape(set.rho+l.Rate/1000*l.Profile.ServiceTimeMs, set.lam+l.Rate/1000, ps.Servers)
	rho := sh.util
	if rho > bound {
		if !why {
			return false, "", true
		}
		return false, overBound(rho, bound, c), true
	}
	switch {
	case set.bad != "":
		return false, set.bad, true
	case p.bad != "":
		return false, p.bad, true
	}
	worst, ratio, worstP99, keep := -1, 1.0, 0.0, ch.keep()
	n := len(set.loads)
	for i := 0; i <= n; i++ {
		t, own, obj := l, p.own, p.p99
		if i < n {
			t, own, obj = &set.loads[i], set.own[i], set.objs[i]
		}
		if obj <= 0 {
			continue
		}
		q := psP99Delay(own, t.Profile.ServiceTimeMs, t.Profile.ServiceTimeCV, t.Profile.DelayMs, t.Profile.DelayCV, sh.rho, sh.lam, sh.meanS)
		if r := q / (obj * keep); r > ratio {
			if !why {
				return false, "", true
			}
			worst, ratio, worstP99 = i, r, q
		}
	}
	if worst < 0 {
		return true, "", true
	}
	name, obj := l.Name, p.p99
	if worst < n {
		name, obj = set.loads[worst].Name, set.objs[worst]
	}
	return false, ch.missed(name, worstP99, obj, rho), true
}

// overBound is the reason for a utilisation over the bound, built with
// one allocation: most candidates of a busy cluster get it.
func overBound(rho, bound float64, c *scheduler.Candidate) string {
	var buf [96]byte
	b := append(buf[:0], "utilisation would be "...)
	b = appendFixed2(b, rho)
	b = append(b, " > "...)
	b = appendFixed2(b, bound)
	b = append(b, " bound on "...)
	b = append(b, c.Accelerator().ID...)
	return string(b)
}

// predict runs the candidate's model with the proposed instance added,
// returning the predictions and each load's objective. A non-empty
// reason means the candidate is rejected before predicting: it cannot be
// judged, or (bound > 0) the processor-sharing utilisation, known without
// the model, exceeds bound.
func (ch Checker) predict(c *scheduler.Candidate, bound float64) ([]Prediction, []float64, string) {
	if ch.Profiles == nil {
		return nil, nil, "no profile source configured"
	}
	kind := c.Accelerator().Kind
	m := ch.model(c.Accelerator())
	if m == nil {
		return nil, nil, c.Memo("kind", kind, func() string { return "no latency model for accelerator kind " + orNone(kind) })
	}
	var (
		loads []Load
		objs  []float64
	)
	if ch.Cache == nil {
		ls, apps, err := Tenants(c, ch.Profiles, ch.Share)
		if err != nil {
			return nil, nil, err.Error()
		}
		loads = ls
		objs = make([]float64, len(apps))
		for i, a := range apps {
			objs[i] = a.Spec.Objective.P99Ms
		}
	} else {
		set := ch.Cache.get(c, c.Instances(), ch.Profiles, ch.Share)
		if set.reason != "" {
			return nil, nil, set.reason
		}
		l, obj, err := ch.Cache.resolveProposed(c, ch.Profiles, ch.Share)
		if err != nil {
			return nil, nil, err.Error()
		}
		extra, extraObj := []Load{l}, []float64{obj}
		if ps, ok := m.(PS); ok && bound > 0 {
			rho := set.rho
			for _, l := range extra {
				rho += l.Rate / 1000 * l.Profile.ServiceTimeMs
			}
			if rho /= max(1, ps.Servers); rho > bound {
				return nil, nil, overBound(rho, bound, c)
			}
		}
		loads = append(append(make([]Load, 0, len(set.loads)+len(extra)), set.loads...), extra...)
		objs = append(append(make([]float64, 0, len(loads)), set.objs...), extraObj...)
	}
	preds, err := m.Predict(loads)
	if err != nil {
		return nil, nil, err.Error()
	}
	return preds, objs, ""
}

// Slack is the "latency-slack" ranker: it prefers the accelerator that
// keeps the most headroom once the instance is placed, scoring the
// smallest 1 − p99/objective over the accelerator's applications, in
// [0, 1]. It spreads load (the opposite of packing); ModelDrivenPolicy
// packs with scheduler.BinPack and relies on Checker for the objectives,
// and a policy that wants both weighs the two. A candidate the model
// cannot judge scores 0.
type Slack struct {
	Profiles ProfileSource
	Models   func(kind string) Model
	Share    RateShare
	// Cache may be shared with a Checker of the same Profiles and Share.
	Cache *TenantCache
}

// Name is "latency-slack".
func (Slack) Name() string { return "latency-slack" }

// Score implements scheduler.Ranker.
func (s Slack) Score(c *scheduler.Candidate) float64 {
	preds, objs, reason := Checker{Profiles: s.Profiles, Models: s.Models, Share: s.Share, Cache: s.Cache}.predict(c, 0)
	if reason != "" {
		return 0
	}
	best := 1.0
	for i, p := range preds {
		if objs[i] <= 0 {
			continue
		}
		best = math.Min(best, 1-p.P99Ms/objs[i])
	}
	return math.Max(0, best)
}

// ModelDrivenPolicy is the SLO-aware placement: the default checkers
// (liveness, constraints, memory, anti-affinity) and the latency Checker
// over src with the default bound, ranked by LeastWaste (scheduler.BinPack
// that counts memory no application can use as wasted), so that
// applications fill the fewest accelerators and nodes while every
// objective holds.
func ModelDrivenPolicy(src ProfileSource) scheduler.Policy { return CheckerPolicy(NewChecker(src)) }

// CheckerPolicy is ModelDrivenPolicy with a Checker of the caller's
// (NewChecker's, say, with Servers set).
func CheckerPolicy(ch Checker) scheduler.Policy {
	return scheduler.Policy{
		Checkers: append(scheduler.DefaultCheckers(), ch),
		Rankers:  []scheduler.Weighted{{Ranker: LeastWaste{Checker: ch}, Weight: 1}},
	}
}

func fmtMs(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "∞"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
}

func fmtRho(v float64) string { return string(appendFixed2(nil, v)) }

// appendFixed2 appends v with two decimals, as strconv's 'f' format
// would for the values utilisations take, without its cost.
func appendFixed2(b []byte, v float64) []byte {
	if !(v >= 0) || v >= 1e15 {
		return strconv.AppendFloat(b, v, 'f', 2, 64)
	}
	c := uint64(math.Round(v * 100))
	b = strconv.AppendUint(b, c/100, 10)
	return append(b, '.', byte('0'+c/10%10), byte('0'+c%10))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

var (
	_ scheduler.Checker         = Checker{}
	_ scheduler.DeferredChecker = Checker{}
	_ scheduler.QuietChecker    = Checker{}
	_ scheduler.Ranker          = Slack{}
	_ ProfileSource             = StaticProfiles{}
	_ ProfileSource             = ProfileFunc(nil)
	_ Model                     = PS{}
	_ Model                     = FCFS{}
	_ Model                     = Batch{}
)
