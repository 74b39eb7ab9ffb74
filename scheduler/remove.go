package scheduler

import (
	"cmp"
	"strconv"

	"github.com/accelpool/accelpool/cluster"
)

// Removal is an instance chosen for removal and why.
type Removal struct {
	Instance cluster.Instance `json:"instance"`
	Reason   string           `json:"reason"`
}

// ChooseRemovals picks which of an application's instances to remove to
// bring it down to target, one at a time, by these rules:
//
//  1. instances that cannot serve: on a node missing from the state, on a
//     node that is down, or on an accelerator the node does not have;
//  2. then instances sharing a node with another instance of the same
//     application (placed when anti-affinity had to be relaxed), so the
//     survivors stay spread across nodes;
//  3. then the instance on the most loaded accelerator (highest share of
//     its memory reserved, counting the removals already chosen): it
//     relieves the most contended accelerator, and the survivors keep the
//     quietest ones, where co-located interference is least;
//  4. ties go to the newest instance (latest Created), then the greatest
//     ID, so the choice is deterministic and long-warm instances stay.
//
// instances are the application's instances (as the control plane
// records them); they need not be in the state. A target at or above
// len(instances) removes nothing. ChooseRemovals does not change s.
func (s *State) ChooseRemovals(instances []cluster.Instance, target int) []Removal {
	target = max(target, 0)
	if len(instances) <= target {
		return nil
	}
	type cand struct {
		in      cluster.Instance
		ai      int32 // -1: not on a known accelerator
		dead    string
		removed bool
	}
	cs := make([]cand, len(instances))
	perNode := map[string]int{}
	for i, in := range instances {
		c := cand{in: in, ai: -1}
		ni, ok := s.nodeIndex[in.Node]
		switch {
		case !ok:
			c.dead = "node " + in.Node + " is not in the cluster"
		case !s.nodes[ni].state.Up:
			c.dead = "node " + in.Node + " is down"
		default:
			if ai, ok := s.lookup(in.Node, in.Accelerator); ok {
				c.ai = ai
			} else {
				c.dead = "node " + in.Node + " has no accelerator " + in.Accelerator
			}
		}
		cs[i] = c
		perNode[in.Node]++
	}
	freed := map[int32]int64{} // memory released by removals chosen so far
	load := func(ai int32) float64 {
		a := &s.accs[ai]
		return utilisation(a.spec.MemoryBytes, a.free+freed[ai])
	}
	// newer orders tie-breaks: latest Created first, then greatest ID.
	newer := func(a, b *cand) bool {
		if !a.in.Created.Equal(b.in.Created) {
			return a.in.Created.After(b.in.Created)
		}
		return cmp.Compare(a.in.ID, b.in.ID) > 0
	}
	var out []Removal
	for len(instances)-len(out) > target {
		best := -1
		bestClass := 0
		bestLoad := 0.0
		for i := range cs {
			c := &cs[i]
			if c.removed {
				continue
			}
			// class: 3 cannot serve, 2 shares a node, 1 other.
			class, l := 1, 0.0
			switch {
			case c.dead != "":
				class = 3
			case perNode[c.in.Node] > 1:
				class = 2
			}
			if c.ai >= 0 {
				l = load(c.ai)
			}
			if best < 0 || class > bestClass ||
				(class == bestClass && (l > bestLoad || (l == bestLoad && newer(c, &cs[best])))) {
				best, bestClass, bestLoad = i, class, l
			}
		}
		c := &cs[best]
		c.removed = true
		var why string
		switch bestClass {
		case 3:
			why = c.dead
		case 2:
			why = "node " + c.in.Node + " runs " + strconv.Itoa(perNode[c.in.Node]) + " instances of " + c.in.App
		default:
			why = "accelerator " + c.in.Node + "/" + c.in.Accelerator + " is the most loaded, " +
				strconv.Itoa(int(bestLoad*100+0.5)) + "% of its memory reserved"
		}
		perNode[c.in.Node]--
		if c.ai >= 0 {
			freed[c.ai] += c.in.MemoryBytes
		}
		out = append(out, Removal{Instance: c.in, Reason: why})
	}
	return out
}
