package scheduler

import (
	"github.com/accelpool/accelpool/cluster"
)

// Candidate is one (node, accelerator) pair under evaluation, with the
// state a checker or ranker may read: the node, the accelerator, its
// memory, every instance on it and the request. Every figure includes the
// instances this same decision has already placed, so a checker that
// models co-location (a latency model predicting each co-located
// application's p99) sees the existing instances, those placed earlier in
// the decision and, through Proposed, the one under consideration.
//
// A Candidate is valid only during the Check or Score call that receives
// it; the scheduler reuses it. Slices and pointers it returns must not be
// modified.
type Candidate struct {
	s       *State
	d       *decision
	ai      int32
	checker int
}

func (c *Candidate) accel() *accelInfo { return &c.s.accs[c.ai] }
func (c *Candidate) node() *nodeInfo   { return &c.s.nodes[c.s.accs[c.ai].node] }

// Node is the candidate's node.
func (c *Candidate) Node() *cluster.Node { return &c.node().state.Node }

// Up reports whether the node is up.
func (c *Candidate) Up() bool { return c.node().state.Up }

// Accelerator is the candidate accelerator.
func (c *Candidate) Accelerator() *cluster.Accelerator { return c.accel().spec }

// Request is the request being placed, with MemoryBytes and Count
// resolved.
func (c *Candidate) Request() *Request { return &c.d.req }

// App is the application being placed.
func (c *Candidate) App() *cluster.Application { return &c.d.req.App }

// Proposed is the instance the decision would add here: its App, Node,
// Accelerator, model, batching and MemoryBytes are set, its ID is empty.
func (c *Candidate) Proposed() cluster.Instance {
	return c.d.instance(c.Node().Name, c.Accelerator().ID)
}

// Capacity is the accelerator's memory.
func (c *Candidate) Capacity() int64 { return c.accel().spec.MemoryBytes }

// Reserved is the memory the accelerator's instances reserve, including
// those this decision placed.
func (c *Candidate) Reserved() int64 { return c.accel().reserved + c.d.extraAcc(c.ai) }

// Free is the accelerator's free memory (see State), less what this
// decision placed on it. It may be negative on an overcommitted
// accelerator.
func (c *Candidate) Free() int64 { return c.accel().free - c.d.extraAcc(c.ai) }

// NodeCapacity is the memory of all the node's accelerators.
func (c *Candidate) NodeCapacity() int64 { return c.node().capacity }

// NodeFree is the free memory of all the node's accelerators, less what
// this decision placed on the node.
func (c *Candidate) NodeFree() int64 {
	return c.node().free - c.d.extraNode(c.s.accs[c.ai].node)
}

// NumInstances is the number of instances on the accelerator, including
// those this decision placed; cheaper than len(Instances()).
func (c *Candidate) NumInstances() int {
	return len(c.accel().instances) + len(c.d.placedOn(c.ai))
}

// Instances are the instances on the accelerator: those in the snapshot,
// then those this decision placed (with empty IDs).
func (c *Candidate) Instances() []cluster.Instance {
	have := c.accel().instances
	added := c.d.placedOn(c.ai)
	if len(added) == 0 {
		return have
	}
	all := make([]cluster.Instance, 0, len(have)+len(added))
	return append(append(all, have...), added...)
}

// AppInstancesOnNode is the number of instances of the requested
// application on the candidate's node, including those this decision
// placed.
func (c *Candidate) AppInstancesOnNode() int {
	ni := c.s.accs[c.ai].node
	return int(c.d.existing[ni] + c.d.extraApp(ni))
}

// LookupApp returns the specification of a named application: the
// request's own, or one from Snapshot.Apps. A latency model uses it to read
// the rate and objective of every application co-located on the
// accelerator.
func (c *Candidate) LookupApp(name string) (*cluster.Application, bool) {
	if name == c.d.req.App.Metadata.Name {
		return &c.d.req.App, true
	}
	a, ok := c.s.apps[name]
	return a, ok
}

// Memo returns the string build returns for the key (a, b), building it
// once per decision and checker (or ranker). Checkers whose reasons repeat across
// candidates (the same tier, site or label value on many nodes) use it so
// that a decision over ten thousand nodes builds each reason once.
func (c *Candidate) Memo(a, b string, build func() string) string {
	k := memoKey{c.checker, a, b}
	if v, ok := c.d.memo[k]; ok {
		return v
	}
	v := build()
	if c.d.memo == nil {
		c.d.memo = map[memoKey]string{}
	}
	c.d.memo[k] = v
	return v
}

type memoKey struct {
	checker int
	a, b    string
}

// decision is the in-decision state: what this decision has placed so
// far, overlaid on the State without changing it.
type decision struct {
	req  Request
	name string
	// existing counts the app's instances per node index in the State.
	existing map[int32]int32
	// What this decision placed, per accelerator and per node; nil until
	// the first placement.
	acc     map[int32]int64
	nodeMem map[int32]int64
	nodeApp map[int32]int32
	placed  map[int32][]cluster.Instance
	memo    map[memoKey]string
}

func (d *decision) extraAcc(ai int32) int64 {
	if d.acc == nil {
		return 0
	}
	return d.acc[ai]
}

func (d *decision) extraNode(ni int32) int64 {
	if d.nodeMem == nil {
		return 0
	}
	return d.nodeMem[ni]
}

func (d *decision) extraApp(ni int32) int32 {
	if d.nodeApp == nil {
		return 0
	}
	return d.nodeApp[ni]
}

func (d *decision) placedOn(ai int32) []cluster.Instance {
	if d.placed == nil {
		return nil
	}
	return d.placed[ai]
}

func (d *decision) instance(node, accel string) cluster.Instance {
	model, digest := d.req.App.Spec.ModelRef()
	return cluster.Instance{
		App:         d.name,
		Node:        node,
		Accelerator: accel,
		ModelName:   model,
		ModelDigest: digest,
		MemoryBytes: d.req.MemoryBytes,
		Batching:    d.req.App.Spec.Batching,
		Serving:     d.req.App.Spec.Serving,
	}
}

// place records one new instance on accelerator ai of node ni.
func (d *decision) place(ai, ni int32, in cluster.Instance) {
	if d.acc == nil {
		d.acc = map[int32]int64{}
		d.nodeMem = map[int32]int64{}
		d.nodeApp = map[int32]int32{}
		d.placed = map[int32][]cluster.Instance{}
	}
	d.acc[ai] += in.MemoryBytes
	d.nodeMem[ni] += in.MemoryBytes
	d.nodeApp[ni]++
	d.placed[ai] = append(d.placed[ai], in)
}
