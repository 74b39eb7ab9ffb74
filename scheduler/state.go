package scheduler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// Snapshot is the cluster as a placement sees it: every node with its
// accelerators, liveness and the instances already placed there.
type Snapshot struct {
	Nodes []NodeState
	// Apps are the specifications of the applications whose instances
	// appear in Nodes (optional). Checkers and rankers that model
	// co-location, such as latency models that need every co-located
	// application's rate and objective, look them up with
	// Candidate.LookupApp.
	Apps []cluster.Application
}

// NodeState is one node in a Snapshot.
type NodeState struct {
	Node cluster.Node
	Up   bool
	// Instances are those already placed on the node, with the
	// accelerator and memory each reserved.
	Instances []cluster.Instance
	// FreeMemory is the free memory per accelerator ID as the agent last
	// reported it (optional). See State for how it combines with the
	// reservations.
	FreeMemory map[string]int64
}

// Request asks for Count new instances of App.
type Request struct {
	App cluster.Application
	// MemoryBytes is the accelerator memory each instance reserves;
	// 0 means App.Spec.MemoryBytes. The control plane fills it from the
	// model's profile or cluster.DefaultMemory of its size.
	MemoryBytes int64
	// Count is how many new instances to place; 0 means 1.
	Count int
}

// State is a Snapshot indexed for placement: nodes sorted by name,
// accelerators by ID within a node, the memory reserved and free on every
// accelerator, the instances on each accelerator, and per application the
// nodes that run it. Prepare builds it once, in O(nodes + instances); a
// decision is then O(accelerators) with O(1) work per candidate for the
// built-in checkers and rankers.
//
// Free memory on an accelerator is the smaller of its capacity minus the
// reservations of the instances placed on it and the free memory its agent
// reported: reservations cover instances the agent has not loaded yet, the
// report covers memory used outside accelpool.
//
// Place only reads a State, so any number of decisions may run on one
// State concurrently. Add and Remove update it in place for a caller (the
// simulator, the server between snapshots) that commits placements; they
// must not run concurrently with Place.
type State struct {
	nodes     []nodeInfo
	accs      []accelInfo
	nodeIndex map[string]int32
	// appNodes counts, per application, its instances per node index.
	appNodes map[string]map[int32]int32
	apps     map[string]*cluster.Application
	// unplaced counts instances naming an accelerator their node lacks.
	unplaced int
}

type nodeInfo struct {
	state *NodeState
	// accelerators are accs[first:end].
	first, end int32
	capacity   int64
	free       int64
}

type accelInfo struct {
	node      int32
	spec      *cluster.Accelerator
	instances []cluster.Instance
	reserved  int64
	free      int64
}

// Prepare indexes a snapshot. The State refers to the snapshot's nodes,
// instances and maps; the caller must not change them while the State is
// in use. Duplicate node names or accelerator IDs are ErrInvalid.
func Prepare(snap Snapshot) (*State, error) {
	s := &State{
		nodes:     make([]nodeInfo, 0, len(snap.Nodes)),
		nodeIndex: make(map[string]int32, len(snap.Nodes)),
		appNodes:  make(map[string]map[int32]int32),
		apps:      make(map[string]*cluster.Application, len(snap.Apps)),
	}
	for i := range snap.Apps {
		s.apps[snap.Apps[i].Metadata.Name] = &snap.Apps[i]
	}
	order := make([]int32, len(snap.Nodes))
	nAccs := 0
	for i := range snap.Nodes {
		order[i] = int32(i)
		nAccs += len(snap.Nodes[i].Node.Accelerators)
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Compare(snap.Nodes[a].Node.Name, snap.Nodes[b].Node.Name)
	})
	s.accs = make([]accelInfo, 0, nAccs)
	for _, oi := range order {
		ns := &snap.Nodes[oi]
		name := ns.Node.Name
		if _, dup := s.nodeIndex[name]; dup {
			return nil, errdefs.Invalid(fmt.Sprintf("snapshot: node %q appears twice", name))
		}
		ni := int32(len(s.nodes))
		s.nodeIndex[name] = ni
		first := int32(len(s.accs))
		for ai := range ns.Node.Accelerators {
			a := &ns.Node.Accelerators[ai]
			s.accs = append(s.accs, accelInfo{node: ni, spec: a})
		}
		accs := s.accs[first:]
		slices.SortFunc(accs, func(a, b accelInfo) int { return cmp.Compare(a.spec.ID, b.spec.ID) })
		for i := 1; i < len(accs); i++ {
			if accs[i].spec.ID == accs[i-1].spec.ID {
				return nil, errdefs.Invalid(fmt.Sprintf("snapshot: node %q has accelerator %q twice", name, accs[i].spec.ID))
			}
		}
		s.nodes = append(s.nodes, nodeInfo{state: ns, first: first, end: int32(len(s.accs))})
		s.indexInstances(ni)
	}
	return s, nil
}

// indexInstances buckets node ni's instances by accelerator and computes
// reserved and free memory.
func (s *State) indexInstances(ni int32) {
	n := &s.nodes[ni]
	accs := s.accs[n.first:n.end]
	insts := n.state.Instances
	counts := make([]int, len(accs))
	where := make([]int, len(insts))
	for i := range insts {
		in := &insts[i]
		if m := s.appNodes[in.App]; m != nil {
			m[ni]++
		} else {
			s.appNodes[in.App] = map[int32]int32{ni: 1}
		}
		where[i] = -1
		for j := range accs {
			if accs[j].spec.ID == in.Accelerator {
				where[i] = j
				counts[j]++
				accs[j].reserved += in.MemoryBytes
				break
			}
		}
		if where[i] < 0 {
			s.unplaced++
		}
	}
	// One backing array for the node; each accelerator's slice is capped
	// so that Add never appends into a neighbour's instances.
	backing := make([]cluster.Instance, 0, len(insts))
	for j := range accs {
		start := len(backing)
		for i := range insts {
			if where[i] == j {
				backing = append(backing, insts[i])
			}
		}
		accs[j].instances = backing[start:len(backing):len(backing)]
	}
	for j := range accs {
		a := &accs[j]
		a.free = a.spec.MemoryBytes - a.reserved
		if rep, ok := n.state.FreeMemory[a.spec.ID]; ok && rep < a.free {
			a.free = rep
		}
		n.capacity += a.spec.MemoryBytes
		n.free += a.free
	}
}

// Nodes is the number of nodes in the state.
func (s *State) Nodes() int { return len(s.nodes) }

// Accelerators is the number of accelerators (candidates) in the state.
func (s *State) Accelerators() int { return len(s.accs) }

// Unplaced is the number of instances that name an accelerator their node
// does not have; they count for anti-affinity but reserve no memory.
func (s *State) Unplaced() int { return s.unplaced }

// lookup finds an accelerator by node name and ID.
func (s *State) lookup(node, accel string) (int32, bool) {
	ni, ok := s.nodeIndex[node]
	if !ok {
		return 0, false
	}
	n := &s.nodes[ni]
	for i := n.first; i < n.end; i++ {
		if s.accs[i].spec.ID == accel {
			return i, true
		}
	}
	return 0, false
}

// Add records a placed instance (after the caller committed a Placement),
// so the next decision sees its memory and anti-affinity. The instance's
// node and accelerator must be in the state (ErrNotFound otherwise). It
// must not run concurrently with Place.
func (s *State) Add(in cluster.Instance) error {
	ai, ok := s.lookup(in.Node, in.Accelerator)
	if !ok {
		return fmt.Errorf("add instance %q: accelerator %s/%s: %w", in.ID, in.Node, in.Accelerator, errdefs.ErrNotFound)
	}
	a := &s.accs[ai]
	a.instances = append(a.instances[:len(a.instances):len(a.instances)], in)
	a.reserved += in.MemoryBytes
	a.free -= in.MemoryBytes
	s.nodes[a.node].free -= in.MemoryBytes
	if m := s.appNodes[in.App]; m != nil {
		m[a.node]++
	} else {
		s.appNodes[in.App] = map[int32]int32{a.node: 1}
	}
	return nil
}

// Remove forgets the instance with the given ID on the given node and
// accelerator, returning its memory. ErrNotFound if it is not there. It
// must not run concurrently with Place.
func (s *State) Remove(node, accel, id string) error {
	ai, ok := s.lookup(node, accel)
	if !ok {
		return fmt.Errorf("remove instance %q: accelerator %s/%s: %w", id, node, accel, errdefs.ErrNotFound)
	}
	a := &s.accs[ai]
	k := slices.IndexFunc(a.instances, func(in cluster.Instance) bool { return in.ID == id })
	if k < 0 {
		return fmt.Errorf("remove instance %q on %s/%s: %w", id, node, accel, errdefs.ErrNotFound)
	}
	in := a.instances[k]
	rest := make([]cluster.Instance, 0, len(a.instances)-1)
	rest = append(append(rest, a.instances[:k]...), a.instances[k+1:]...)
	a.instances = rest[:len(rest):len(rest)]
	a.reserved -= in.MemoryBytes
	old := a.free
	a.free = min(a.free+in.MemoryBytes, a.spec.MemoryBytes-a.reserved)
	s.nodes[a.node].free += a.free - old
	if m := s.appNodes[in.App]; m != nil {
		if m[a.node]--; m[a.node] <= 0 {
			delete(m, a.node)
		}
		if len(m) == 0 {
			delete(s.appNodes, in.App)
		}
	}
	return nil
}
