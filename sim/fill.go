package sim

import (
	"fmt"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

// FillOptions tune Fill.
type FillOptions struct {
	// Clock, when set, times each decision (Fill itself reads no clock).
	Clock func() time.Time
	// KeepGoing skips an application that does not fit and tries the next
	// instead of stopping.
	KeepGoing bool
}

// FillResult is what Fill placed.
type FillResult struct {
	// Placed are the applications placed, in order.
	Placed []cluster.Application
	// Instances are their instances, committed to the State.
	Instances []cluster.Instance
	// Failed names the first application that could not be placed ("" when
	// all were) and Err says why; Explanation is that decision's record.
	Failed      string
	Err         error
	Explanation scheduler.Explanation
	// Skipped counts applications passed over with KeepGoing.
	Skipped int
	// Decisions are the decision times, with FillOptions.Clock.
	Decisions []time.Duration
}

// Fill places apps one at a time on s with policy p, in order, each with
// spec.replicas.min instances (at least one) of spec.memoryBytes, and
// commits every placement with State.Add so the next decision sees it. It
// stops at the first application that cannot be placed (or, with
// KeepGoing, skips it). Instance IDs are "<app>-<k>".
//
// Checkers that look up co-located applications (Candidate.LookupApp)
// find only the applications of the Snapshot the State was prepared from,
// so prepare it with every application apps may contain.
func Fill(s *scheduler.State, apps []cluster.Application, p scheduler.Policy, o FillOptions) FillResult {
	var res FillResult
	for i := range apps {
		a := &apps[i]
		req := scheduler.Request{App: *a, Count: max(1, a.Spec.Replicas.Min)}
		var t0 time.Time
		if o.Clock != nil {
			t0 = o.Clock()
		}
		e, err := s.Place(req, p)
		if o.Clock != nil {
			res.Decisions = append(res.Decisions, o.Clock().Sub(t0))
		}
		if err == nil && len(e.Placements) != req.Count {
			err = fmt.Errorf("place %s: %d of %d instances placed", a.Metadata.Name, len(e.Placements), req.Count)
		}
		if err != nil {
			if res.Failed == "" {
				res.Failed, res.Err, res.Explanation = a.Metadata.Name, err, e
			}
			if o.KeepGoing {
				res.Skipped++
				continue
			}
			return res
		}
		for k, pl := range e.Placements {
			in := pl.Instance
			in.ID = fmt.Sprintf("%s-%d", a.Metadata.Name, k)
			if in.ServedName == "" {
				in.ServedName = a.Metadata.Name
			}
			if err := s.Add(in); err != nil {
				res.Failed, res.Err = a.Metadata.Name, err
				return res
			}
			res.Instances = append(res.Instances, in)
		}
		res.Placed = append(res.Placed, *a)
	}
	return res
}
