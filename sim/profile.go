package sim

import (
	"fmt"
	"math"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// Service is how long one request of a model takes on one kind of
// accelerator when it runs alone.
type Service struct {
	// MeanMs is the mean service time alone (batch 1).
	MeanMs float64
	// CV is the coefficient of variation of the service time; 0 makes it
	// constant.
	CV float64
	// SwitchMs is, on an FCFS accelerator (TPU), the cost of loading the
	// model when the previous request there was of another model.
	SwitchMs float64
	// SamplesMs, when set, is an empirical distribution: each request's
	// demand is one of these measurements, drawn uniformly with
	// replacement, and MeanMs and CV are not used to draw (set MeanMs to
	// their mean). A profile measured under the scenario's own arrivals
	// carries what no two moments say: the serving path's jitter and the
	// cost of waking idle cores.
	SamplesMs []float64
	// SampleDelaysMs, when set, pairs with SamplesMs (same length): the
	// part of each measurement that occupied no accelerator (the transport,
	// waking an idle core). A request drawing sample i is served
	// SamplesMs[i] on the accelerator, shared like any demand, and answered
	// SampleDelaysMs[i] later.
	SampleDelaysMs []float64
}

// maxSamples bounds an empirical distribution.
const maxSamples = 1 << 20

// ProfileKey names a model on a kind of accelerator ("cpu", "gpu", "tpu").
type ProfileKey struct {
	Model string
	Kind  string
}

// Profiles are the service times of every model on every accelerator kind
// it can run on.
type Profiles map[ProfileKey]Service

// Lookup returns the service of model on kind.
func (p Profiles) Lookup(model, kind string) (Service, bool) {
	s, ok := p[ProfileKey{model, kind}]
	return s, ok
}

// Set records the service of model on kind.
func (p Profiles) Set(model, kind string, s Service) { p[ProfileKey{model, kind}] = s }

// FromModelProfile reads what the profiler measured (agent/profile):
// the batch-1 mean and its CV.
func FromModelProfile(mp cluster.ModelProfile) (Service, error) {
	mean, ok := mp.ServiceMs[1]
	if !ok || !(mean > 0) {
		return Service{}, errdefs.Invalid(fmt.Sprintf("profile of %s on %s has no batch-1 service time", mp.Model, mp.AcceleratorKind))
	}
	return Service{MeanMs: mean, CV: mp.ServiceCV}, nil
}

// Validate checks that the figures are usable.
func (s Service) Validate() error {
	switch {
	case !(s.MeanMs > 0) || math.IsInf(s.MeanMs, 0):
		return errdefs.Invalid(fmt.Sprintf("service mean %v ms must be > 0", s.MeanMs))
	case !(s.CV >= 0) || s.CV > 10:
		return errdefs.Invalid(fmt.Sprintf("service CV %v must be between 0 and 10", s.CV))
	case !(s.SwitchMs >= 0) || math.IsInf(s.SwitchMs, 0):
		return errdefs.Invalid(fmt.Sprintf("switch cost %v ms must be >= 0", s.SwitchMs))
	case len(s.SamplesMs) > maxSamples:
		return errdefs.Invalid(fmt.Sprintf("%d service samples: at most %d", len(s.SamplesMs), maxSamples))
	}
	if s.SampleDelaysMs != nil && len(s.SampleDelaysMs) != len(s.SamplesMs) {
		return errdefs.Invalid(fmt.Sprintf("%d sample delays for %d service samples: they must pair", len(s.SampleDelaysMs), len(s.SamplesMs)))
	}
	for i, x := range s.SampleDelaysMs {
		if !(x >= 0) || math.IsInf(x, 0) {
			return errdefs.Invalid(fmt.Sprintf("sample delay %d is %v ms: each must be >= 0", i, x))
		}
	}
	for i, x := range s.SamplesMs {
		if !(x > 0) || math.IsInf(x, 0) {
			return errdefs.Invalid(fmt.Sprintf("service sample %d is %v ms: each must be > 0", i, x))
		}
	}
	return nil
}
