// Package scheduler decides where application instances run. It is pure:
// no I/O, no clocks, no goroutines; it reads a Snapshot of the cluster and
// returns a decision with its Explanation, so the control plane, tests and
// the simulator at 10,000 nodes run the same code.
//
// # Pipeline
//
// A decision follows Nomad's feasibility-then-rank pipeline:
//
//	Snapshot ──Prepare──► State (indexed once: nodes by name, memory
//	                       reserved/free per accelerator, instances per
//	                       accelerator, nodes per application)
//	State.Place(Request, Policy):
//	  every candidate (node, accelerator), in name order
//	    ─► Checkers, in order; the first hard rejection ends it, and is
//	       recorded with its reason and counted per checker
//	       up · kind · tier · site · label · memory · anti-affinity (soft)
//	    ─► Rankers, each a score in [0, 1], summed with the policy's
//	       normalised weights (BinPack or Spread, or your own)
//	  ─► pick the highest score; ties by node name, then accelerator ID;
//	     candidates failing only a SoftChecker are picked only when no
//	     other candidate fits
//	  ─► for Count > 1, record the instance in the decision's overlay,
//	     re-evaluate the chosen node's candidates, pick again
//
// Checkers and rankers receive a *Candidate, which exposes the node, the
// accelerator, its capacity, reserved and free memory, every instance on it
// (including those the same decision placed), the application's instances
// on the node, the specifications of co-located applications
// (Candidate.LookupApp) and the instance being proposed. That is what an
// analytic latency model needs to predict every co-located application's
// p99 with the new instance added: it plugs in as one more Checker (reject
// if any objective would be violated) and Ranker (prefer slack); see
// extend_test.go. A check or score must depend only on its candidate,
// which is what lets a multi-instance decision re-evaluate only the node
// it just placed on. Two optional interfaces refine a checker: SoftChecker
// (a preference, not a rule) and NodeChecker (the result depends on the
// node only, so it runs once per node). Candidate.Memo lets a checker
// build a reason that repeats across nodes once per decision.
//
// # Choices
//
// Anti-affinity is soft (AntiAffinity): a second instance of an
// application goes on a node that already runs one only when no other node
// fits, and the Placement says so (Fallback). Capacity wins over spreading
// because a replica that cannot be placed serves nothing; HardAntiAffinity
// is there for applications that would rather fail.
//
// Free memory is the smaller of capacity minus reservations and the
// agent's report, so an instance placed but not loaded yet and memory used
// outside accelpool both count.
//
// # Cost
//
// Prepare is O(nodes + instances). A decision is O(accelerators) with
// O(1) work per candidate for the built-in checkers and rankers, and never
// walks the cluster's instances; each further instance of the same
// decision costs O(accelerators on one node). Recording every candidate
// (the zero Policy) sorts all eligible candidates and allocates an Outcome
// for each: at 10,000 nodes that is megabytes per decision and puts the
// garbage collector on the latency tail. Policy.Top = N records the N
// best-ranked candidates and N rejections per checker (counts stay
// complete) and orders candidates lazily from a heap; the control plane
// and the simulator use it, `accelpool explain` does not. Per-decision
// buffers are pooled. BenchmarkPlace measures both on clusters from
// package synth.
//
// # Explanations
//
// Every decision returns an Explanation: for each candidate the checker
// that rejected it and why ("memory: needs 512 MiB, 128 MiB free on
// gpu0", "label: zone=eu not matched (node has zone=us)") or its scores
// and rank; rejections counted per checker; the placements. Explanation.
// Format renders it for `accelpool explain APP`. When nothing fits, the
// error wraps errdefs.ErrResourceExhausted and summarises the counts ("no
// accelerator fits app x (12 on 6 nodes): 7 rejected by memory, 3 by
// tier"), and the Explanation is still returned.
//
// State.ChooseRemovals is the scale-down counterpart: which instances to
// remove, with a reason each.
package scheduler
