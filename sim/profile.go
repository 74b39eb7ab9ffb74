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
}

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
	}
	return nil
}
