package baseline

import (
	"strconv"

	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
)

// Named is a policy and the name reports give it.
type Named struct {
	Name   string
	Policy scheduler.Policy
}

// FirstFit is knapsack by memory, first fit: the default checkers (memory
// among them) and the FirstFit ranker, so an instance goes to the first
// accelerator, in node-name then accelerator-ID order, with the memory
// free.
func FirstFit() scheduler.Policy { return memory(FirstFitRanker{}) }

// BestFit is knapsack by memory, best fit: the accelerator with the least
// memory left once the instance is placed.
func BestFit() scheduler.Policy { return memory(BestFitRanker{}) }

// WorstFit is knapsack by memory, worst fit: the accelerator with the
// most memory left once the instance is placed.
func WorstFit() scheduler.Policy { return memory(WorstFitRanker{}) }

func memory(r scheduler.Ranker) scheduler.Policy {
	return scheduler.Policy{
		Checkers: scheduler.DefaultCheckers(),
		Rankers:  []scheduler.Weighted{{Ranker: r, Weight: 1}},
	}
}

// Utilisation is knapsack by utilisation alone, first fit: the default
// checkers (an instance still needs its memory) and the Utilisation
// checker with bound 1 over src, no latency model.
func Utilisation(src latency.ProfileSource) scheduler.Policy {
	return scheduler.Policy{
		Checkers: append(scheduler.DefaultCheckers(), UtilisationChecker{Profiles: src}),
		Rankers:  []scheduler.Weighted{{Ranker: FirstFitRanker{}, Weight: 1}},
	}
}

// Knapsacks are the baselines in the order reports list them.
func Knapsacks(src latency.ProfileSource) []Named {
	return []Named{
		{"memory-first-fit", FirstFit()},
		{"memory-best-fit", BestFit()},
		{"memory-worst-fit", WorstFit()},
		{"utilisation-first-fit", Utilisation(src)},
	}
}

// FirstFitRanker scores every candidate the same, so the scheduler's
// tie-break decides: the first node by name, then the first accelerator
// by ID. That is first fit over a fixed order of bins.
type FirstFitRanker struct{}

// Name is "first-fit".
func (FirstFitRanker) Name() string { return "first-fit" }

// Score implements scheduler.Ranker.
func (FirstFitRanker) Score(*scheduler.Candidate) float64 { return 1 }

// BestFitRanker prefers the accelerator with the least free memory after
// the placement: 1/(1 + MiB left), so that any two amounts a MiB apart
// rank apart.
type BestFitRanker struct{}

// Name is "best-fit".
func (BestFitRanker) Name() string { return "best-fit" }

// Score implements scheduler.Ranker.
func (BestFitRanker) Score(c *scheduler.Candidate) float64 { return 1 / (1 + leftMiB(c)) }

// WorstFitRanker prefers the accelerator with the most free memory after
// the placement: 1 − BestFitRanker's score.
type WorstFitRanker struct{}

// Name is "worst-fit".
func (WorstFitRanker) Name() string { return "worst-fit" }

// Score implements scheduler.Ranker.
func (WorstFitRanker) Score(c *scheduler.Candidate) float64 { return 1 - 1/(1+leftMiB(c)) }

func leftMiB(c *scheduler.Candidate) float64 {
	return max(0, float64(c.Free()-c.Request().MemoryBytes)/(1<<20))
}

// DefaultMaxUtilisation is UtilisationChecker's bound when Max is 0.
const DefaultMaxUtilisation = 1.0

// UtilisationChecker ("utilisation") admits an instance while the
// accelerator's utilisation, Σ λ_i·s_i over its instances and the
// proposed one (λ_i the instance's rate share, s_i its model's service
// time alone), stays at most Max. It knows no queueing: at ρ near 1 the
// latencies it admits are unbounded, which is the point of comparing it.
type UtilisationChecker struct {
	Profiles latency.ProfileSource
	// Max is the bound; 0 means DefaultMaxUtilisation.
	Max float64
	// Share is the rate per instance; nil means latency.EvenShare.
	Share latency.RateShare
}

// Name is "utilisation".
func (UtilisationChecker) Name() string { return "utilisation" }

// Check implements scheduler.Checker.
func (u UtilisationChecker) Check(c *scheduler.Candidate) (bool, string) {
	if u.Profiles == nil {
		return false, "no profile source configured"
	}
	loads, _, err := latency.Tenants(c, u.Profiles, u.Share)
	if err != nil {
		return false, err.Error()
	}
	rho := 0.0
	for _, l := range loads {
		rho += l.Rate / 1000 * l.Profile.ServiceTimeMs
	}
	bound := u.Max
	if bound <= 0 {
		bound = DefaultMaxUtilisation
	}
	if rho > bound {
		return false, "utilisation would be " + strconv.FormatFloat(rho, 'f', 2, 64) + " > " +
			strconv.FormatFloat(bound, 'f', 2, 64) + " on " + c.Accelerator().ID
	}
	return true, ""
}

var (
	_ scheduler.Ranker  = FirstFitRanker{}
	_ scheduler.Ranker  = BestFitRanker{}
	_ scheduler.Ranker  = WorstFitRanker{}
	_ scheduler.Checker = UtilisationChecker{}
)
