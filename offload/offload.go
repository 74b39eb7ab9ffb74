package offload

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Tier order for tie-breaking: nearer first.
var tierRank = map[string]int{"device": 0, "edge": 1, "cloud": 2}

// TieMargin is the relative difference under which two predictions count as
// tied; TieFloor the absolute one (whichever is larger).
const (
	TieMargin = 0.05
	TieFloor  = 100 * time.Microsecond
)

// Option is one place a request can run, with what is known about it for
// the request's model.
type Option struct {
	// Name identifies the option ("local", or the remote target's name).
	Name string
	// Local is true for the device itself.
	Local bool
	// Compressed is true for a remote option whose request and answer
	// cross the link compressed (a target may be offered both ways).
	Compressed bool
	// Tier (device, edge, cloud) and Site describe where it is.
	Tier, Site string
	// InFlight is the requests this device has in flight to the option.
	InFlight int

	// Measured is false while the model has never run here (from this
	// device); the option is then explored.
	Measured bool

	// Local options: Service is the mean local latency of one request
	// (preprocessing and compute), Waiting the requests ahead of a new one.
	Service time.Duration
	Waiting int

	// Remote options: the link, as last probed. A zero bandwidth is
	// unknown and counts as infinite (transfer time zero).
	RTT            time.Duration
	UpBps, DownBps float64
	Server         time.Duration // time the far end reports, recent mean
	Residual       time.Duration // recent mean of what the terms missed
	// Learned, when non-zero, replaces the transfer computed from the
	// bandwidths: the time on the wire past the round trip that recent
	// requests of the model actually took (on a slow device this includes
	// its own cost of moving the bytes, which probes misjudge).
	Learned         time.Duration
	OutBytes        int64 // expected response size
	LinkUnavailable bool  // the last probe failed: last resort only
	// Overdue is how far a request now in flight to the option has run
	// past its own prediction: the path has become slower by at least
	// that much (a link's round trip rose between two probes), and every
	// new prediction for it is raised by as much until the request ends.
	Overdue time.Duration
}

// Predicted is an option with its prediction for one request.
type Predicted struct {
	Option
	// Latency is the predicted end-to-end latency; zero when the option
	// has not been measured (Explore is then true).
	Latency time.Duration
	Explore bool
	// MeetsDeadline is true when there is no deadline or Latency fits it.
	MeetsDeadline bool
	// Transfer is the predicted time on the wire (remote options).
	Transfer time.Duration
}

// Predict is the latency o is expected to give a request of inBytes input
// bytes; ok is false when o has not been measured for the model.
func Predict(o Option, inBytes int64) (d, transfer time.Duration, ok bool) {
	if !o.Measured {
		return 0, 0, false
	}
	if o.Local {
		return time.Duration(o.Waiting+1)*o.Service + o.Residual, 0, true
	}
	transfer = WireTime(inBytes, o.UpBps) + WireTime(o.OutBytes, o.DownBps)
	if o.Learned > 0 {
		transfer = o.Learned
	}
	d = o.RTT + transfer + o.Server + o.Residual
	// The residual may be negative (on a slow device probes overstate the
	// transfer time) but cannot make an answer come before a round trip.
	return max(d, o.RTT) + o.Overdue, transfer, true
}

// WireTime is the time n bytes take at bps bits per second (0 when the
// bandwidth is unknown).
func WireTime(n int64, bps float64) time.Duration {
	if bps <= 0 || n <= 0 {
		return 0
	}
	return time.Duration(float64(n) * 8 / bps * float64(time.Second))
}

// Rank orders opts for a request of inBytes input bytes with remaining
// time until its deadline (0: none). Unmeasured options come first (they
// must be tried to be known), then options whose link is reachable, by
// predicted latency with ties broken by load, tier and name; the first of
// those that meets the deadline is moved to the front of them.
func Rank(opts []Option, inBytes int64, remaining time.Duration) []Predicted {
	out := make([]Predicted, 0, len(opts))
	for _, o := range opts {
		d, tr, ok := Predict(o, inBytes)
		p := Predicted{Option: o, Latency: d, Explore: !ok, Transfer: tr}
		p.MeetsDeadline = remaining <= 0 || (ok && d <= remaining)
		out = append(out, p)
	}
	slices.SortStableFunc(out, compare)
	// Lead with the fastest measured option that meets the deadline, unless
	// an unmeasured one is to be explored.
	if len(out) > 0 && !out[0].Explore {
		if i := slices.IndexFunc(out, func(p Predicted) bool { return p.MeetsDeadline && !p.LinkUnavailable }); i > 0 {
			lead := out[i]
			copy(out[1:i+1], out[:i])
			out[0] = lead
		}
	}
	return out
}

func compare(a, b Predicted) int {
	if a.LinkUnavailable != b.LinkUnavailable {
		if a.LinkUnavailable {
			return 1
		}
		return -1
	}
	if a.Explore != b.Explore {
		if a.Explore {
			return -1
		}
		return 1
	}
	if !tied(a.Latency, b.Latency) {
		return cmp.Compare(a.Latency, b.Latency)
	}
	if c := cmp.Compare(a.InFlight, b.InFlight); c != 0 {
		return c
	}
	if c := cmp.Compare(rankOf(a.Tier, a.Local), rankOf(b.Tier, b.Local)); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	// The same target both ways: uncompressed first (no coding work).
	if a.Compressed != b.Compressed {
		if b.Compressed {
			return -1
		}
		return 1
	}
	return 0
}

func tied(a, b time.Duration) bool {
	diff := a - b
	if diff < 0 {
		diff = -diff
	}
	return diff <= max(TieFloor, time.Duration(TieMargin*float64(max(a, b))))
}

func rankOf(tier string, local bool) int {
	if local {
		return -1
	}
	if r, ok := tierRank[tier]; ok {
		return r
	}
	return len(tierRank)
}

// String is a one-line account of the prediction, for logs and explain.
func (p Predicted) String() string {
	switch {
	case p.Explore:
		return fmt.Sprintf("%s: not measured yet (explore)", p.Name)
	case p.Local:
		return fmt.Sprintf("%s: %v = (%d waiting + 1) × %v service", p.Name, round(p.Latency), p.Waiting, round(p.Service))
	default:
		name := p.Name
		if p.Compressed {
			name += " (compressed)"
		}
		s := fmt.Sprintf("%s: %v = rtt %v + transfer %v + server %v + residual %v", name, round(p.Latency), round(p.RTT), round(p.Transfer), round(p.Server), round(p.Residual))
		if p.LinkUnavailable {
			s += " (link down at last probe)"
		}
		return s
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond || d <= -100*time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(10 * time.Microsecond)
	}
}

// Mean is an exponentially weighted moving mean whose first sample is taken
// as is. The zero value uses weight DefaultWeight. Not safe for concurrent
// use.
type Mean struct {
	Weight float64 // weight of a new sample in (0, 1]
	v      float64
	n      int
}

// DefaultWeight is the weight of a new sample in a zero Mean.
const DefaultWeight = 0.2

// Add folds x in.
func (m *Mean) Add(x float64) {
	w := m.Weight
	if w <= 0 || w > 1 {
		w = DefaultWeight
	}
	if m.n == 0 {
		m.v = x
	} else {
		m.v += w * (x - m.v)
	}
	m.n++
}

// Value is the current mean (0 before any sample); N the samples seen.
func (m *Mean) Value() float64 { return m.v }

// N is the number of samples folded in.
func (m *Mean) N() int { return m.n }

// Duration is Value as a duration of nanoseconds.
func (m *Mean) Duration() time.Duration { return time.Duration(m.v) }

// RecentWindow is how many samples a Recent keeps by default, and
// MaxRecentWindow the most it can keep.
const (
	RecentWindow    = 5
	MaxRecentWindow = 15
)

// Recent is the median of the last Window samples: an estimate that one
// slow answer (a stall, a neighbour's burst on a shared machine) does not
// move, and that follows a lasting change after half a window. A longer
// window follows changes later but scatters less: the median of 5 samples
// of a quantity that varies by ±20 % is itself off by about a tenth. The
// zero value is empty, with the default window. Not safe for concurrent
// use.
type Recent struct {
	// Window is the samples kept: RecentWindow when 0, at most
	// MaxRecentWindow. Set it before the first Add.
	Window int
	v      [MaxRecentWindow]float64
	n      int
}

func (r *Recent) size() int {
	switch {
	case r.Window <= 0:
		return RecentWindow
	case r.Window > MaxRecentWindow:
		return MaxRecentWindow
	}
	return r.Window
}

// Add records x.
func (r *Recent) Add(x float64) { r.v[r.n%r.size()] = x; r.n++ }

// N is the number of samples recorded.
func (r *Recent) N() int { return r.n }

// Value is the median of the recent samples (the mean of the middle two
// when there is an even number of them); 0 before any.
func (r *Recent) Value() float64 {
	k := min(r.n, r.size())
	if k == 0 {
		return 0
	}
	s := r.v
	w := s[:k]
	slices.Sort(w)
	if k%2 == 1 {
		return w[k/2]
	}
	return (w[k/2-1] + w[k/2]) / 2
}

// Duration is Value as a duration of nanoseconds.
func (r *Recent) Duration() time.Duration { return time.Duration(r.Value()) }
