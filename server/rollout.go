package server

import (
	"fmt"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

// Rolling an application to a changed spec.
//
// An instance carries what its agent serves (the model's digest, batching,
// the serving config, the memory reserved), and it was placed where the
// application's constraints allowed. When the application is deployed again
// with --replace, or its model is pushed again under the same name, an
// instance that no longer matches is outdated. The reconciler replaces
// outdated instances make-before-break:
//
//   - the application keeps as many instances as it runs (at least
//     spec.replicas.min, at most spec.replicas.max): it places up-to-date
//     instances until that many exist;
//   - it removes an outdated instance that is Ready only while enough
//     others stay Ready (up-to-date or outdated) to keep that many
//     serving; outdated instances that serve nothing (pending, pulling,
//     failed) go at once;
//   - when the cluster has no room for a new instance beside the old ones,
//     no replacement is still loading and another instance keeps serving,
//     it removes one Ready outdated instance in the same pass if, and only
//     if, that makes room: the application runs one instance short until
//     its replacement is Ready. An application of one instance is
//     replaced in place with a gap; with no other instance serving, a
//     larger one waits for room rather than stop serving;
//   - scaling down to spec.replicas.max removes up-to-date instances
//     that are not Ready first.
//
// An up-to-date instance that fails to load stays failed beside the
// outdated ones, which keep serving: a bad update does not take an
// application down.

// target is what every instance of an application must serve now.
type target struct {
	app           cluster.Application
	model, digest string
	memory        int64
	// memoryKnown is false when memory is only a guess: no
	// spec.memoryBytes and a pinned digest that is not the model's latest
	// push, whose size the registry's record does not give. Instances are
	// then not judged by their reservation.
	memoryKnown bool
}

func targetOf(v view, a cluster.Application) (target, error) {
	model, digest, err := modelDigest(v, a)
	if err != nil {
		return target{}, err
	}
	known := a.Spec.MemoryBytes > 0 || v.Models[model].Digest == digest
	return target{app: a, model: model, digest: digest, memory: instanceMemory(v, a), memoryKnown: known}, nil
}

// outdated says why an instance no longer serves its application as the
// application's spec now asks; "" when it does.
func (t target) outdated(v view, in cluster.Instance) string {
	s := &t.app.Spec
	switch {
	case in.ModelName != t.model || in.ModelDigest != t.digest:
		return fmt.Sprintf("serves %s@%s; the application now asks for %s@%s", in.ModelName, shortDigest(in.ModelDigest), t.model, shortDigest(t.digest))
	case in.Batching != s.Batching:
		return "spec.batching changed"
	case !repository.SameConfig(in.Serving, s.Serving):
		return "spec.serving changed"
	case in.MemoryBytes != t.memory && t.memoryKnown:
		return fmt.Sprintf("reserves %s; the application now asks for %s", scheduler.FormatBytes(in.MemoryBytes), scheduler.FormatBytes(t.memory))
	}
	n, ok := v.Nodes[in.Node]
	if !ok {
		return "node " + in.Node + " is no longer registered"
	}
	for i := range n.Accelerators {
		if n.Accelerators[i].ID == in.Accelerator {
			if ok, why := scheduler.Allows(&t.app, &n, &n.Accelerators[i]); !ok {
				return why
			}
			return ""
		}
	}
	return "node " + in.Node + " no longer has accelerator " + in.Accelerator
}

// shortDigest abbreviates "sha256:<64 hex>" to its first 12 hex digits.
func shortDigest(d string) string {
	const prefix = "sha256:"
	if len(d) > len(prefix)+12 && d[:len(prefix)] == prefix {
		return d[len(prefix) : len(prefix)+12]
	}
	return d
}

// rollout splits an application's live instances into up-to-date and
// outdated ones.
func rollout(v view, t target, live []cluster.Instance) (current, old []cluster.Instance, why map[string]string) {
	why = map[string]string{}
	for _, in := range live {
		if r := t.outdated(v, in); r != "" {
			old = append(old, in)
			why[in.ID] = r
			continue
		}
		current = append(current, in)
	}
	return current, old, why
}

// retireOutdated picks the outdated instances to remove now: every one
// that is not Ready, and Ready ones beyond what keeps want instances Ready
// together with the up-to-date Ready ones. The oldest Ready ones stay
// longest (they are listed in ID order; which stay does not matter for
// serving).
func retireOutdated(v view, want int, current, old []cluster.Instance) []cluster.Instance {
	keep := max(want-countReady(v, current), 0)
	var out []cluster.Instance
	for _, in := range old {
		if v.instanceState(in).State == cluster.InstanceReady && keep > 0 {
			keep--
			continue
		}
		out = append(out, in)
	}
	return out
}

// allReady reports whether every instance in list is Ready.
func allReady(v view, list []cluster.Instance) bool { return countReady(v, list) == len(list) }

// countReady counts the Ready instances in list.
func countReady(v view, list []cluster.Instance) int {
	n := 0
	for _, in := range list {
		if v.instanceState(in).State == cluster.InstanceReady {
			n++
		}
	}
	return n
}
