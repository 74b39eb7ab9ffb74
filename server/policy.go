package server

import (
	"fmt"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
	"github.com/accelpool/accelpool/scheduler/latency"
)

// profiles is a latency.ProfileSource over the registry's profiles in a
// view (what agents measured, by model and accelerator kind).
func profiles(v view) latency.ProfileSource {
	return latency.ProfileFunc(func(model, kind string) (latency.Profile, error) {
		p, ok := v.Profiles[model+"/"+kind]
		if !ok || !(p.ServiceMs[1] > 0) {
			return latency.Profile{}, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no profile of model %s on %s", model, kind))
		}
		return latency.Profile{ServiceTimeMs: p.ServiceMs[1], ServiceTimeCV: p.ServiceCV, MemoryBytes: p.MemoryBytes,
			BatchServiceMs: p.ServiceMs}, nil
	})
}

// hasProfile reports whether the model has been profiled on any kind.
func hasProfile(v view, model string) bool {
	for _, p := range v.Profiles {
		if p.Model == model {
			return true
		}
	}
	return false
}

// policyFor chooses how an application is placed: with the analytic
// latency models when its model has a measured profile (every application
// on a candidate accelerator keeps its p99 objective and utilisation stays
// under the bound), by memory bin-packing until then — the first instance
// of a new model runs and its agent profiles it.
func policyFor(v view, a cluster.Application, top int) (scheduler.Policy, string) {
	model, _ := a.Spec.ModelRef()
	if hasProfile(v, model) {
		p := latency.ModelDrivenPolicy(profiles(v))
		p.Top = top
		return p, "model-driven"
	}
	p := scheduler.BinPackPolicy()
	p.Top = top
	return p, "bin-pack by memory (no profile of " + model + " yet)"
}
