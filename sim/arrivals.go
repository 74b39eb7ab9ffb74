package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// Arrivals is an arrival process. Stream returns a generator of the gaps
// between consecutive requests, in seconds, for an application of the
// given rate (requests per second); the simulator calls it once per
// application and run, with that application's random source, so an
// Arrivals value may be shared and reused.
type Arrivals interface {
	Stream(rate float64, r *rand.Rand) func() float64
}

// Poisson arrivals: exponential gaps of mean 1/rate.
type Poisson struct{}

// Stream implements Arrivals.
func (Poisson) Stream(rate float64, r *rand.Rand) func() float64 {
	return func() float64 { return r.ExpFloat64() / rate }
}

// Trace replays recorded inter-arrival gaps, scaled so that their mean is
// 1/rate: the burstiness of the recording at the application's rate. It
// wraps around at the end.
type Trace struct {
	// Gaps are the recorded gaps (any unit; only their ratios matter).
	Gaps []float64
	// Start is the gap the replay starts at; negative picks it at random
	// (from the application's random source), so applications sharing a
	// trace do not arrive in lockstep.
	Start int
	mean  float64
}

// NewTrace makes a Trace from sorted timestamps in seconds (as
// ReadTimestamps returns them), starting each application at a random
// point. At least two timestamps and a positive span are needed.
func NewTrace(ts []float64) (*Trace, error) {
	if len(ts) < 2 {
		return nil, errdefs.Invalid(fmt.Sprintf("trace has %d timestamps, need at least 2", len(ts)))
	}
	gaps := make([]float64, len(ts)-1)
	for i := range gaps {
		gaps[i] = ts[i+1] - ts[i]
		if gaps[i] < 0 {
			return nil, errdefs.Invalid(fmt.Sprintf("trace timestamps are not sorted at %d", i+1))
		}
	}
	span := ts[len(ts)-1] - ts[0]
	if !(span > 0) {
		return nil, errdefs.Invalid("trace spans no time")
	}
	return &Trace{Gaps: gaps, Start: -1, mean: span / float64(len(gaps))}, nil
}

// Stream implements Arrivals.
func (t *Trace) Stream(rate float64, r *rand.Rand) func() float64 {
	mean := t.mean
	if mean == 0 {
		for _, g := range t.Gaps {
			mean += g
		}
		mean /= float64(len(t.Gaps))
	}
	scale := 1 / (mean * rate)
	i := t.Start
	if i < 0 {
		i = r.IntN(len(t.Gaps))
	}
	i %= len(t.Gaps)
	return func() float64 {
		g := t.Gaps[i] * scale
		if i++; i == len(t.Gaps) {
			i = 0
		}
		return g
	}
}

// Burstiness is the squared coefficient of variation of the trace's gaps
// (1 for Poisson arrivals).
func (t *Trace) Burstiness() float64 {
	var s, s2 float64
	for _, g := range t.Gaps {
		s += g
		s2 += g * g
	}
	n := float64(len(t.Gaps))
	m := s / n
	return (s2/n - m*m) / (m * m)
}

// timestampLayouts are the formats ReadTimestamps accepts besides plain
// seconds; the first is the Azure public dataset's.
var timestampLayouts = []string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano}

// ReadTimestamps reads a CSV file with a header row and returns the named
// column as seconds since its earliest value, sorted. A value is either a
// number of seconds or a date and time such as the Azure LLM inference
// trace's "2023-11-16 18:15:46.6805900".
func ReadTimestamps(r io.Reader, column string) ([]float64, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("trace: reading the header: %v", err))
	}
	col := slices.IndexFunc(head, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), column) })
	if col < 0 {
		return nil, errdefs.Invalid(fmt.Sprintf("trace: no column %q in header %q", column, strings.Join(head, ",")))
	}
	var ts []float64
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("trace: line %d: %v", line, err))
		}
		if col >= len(rec) {
			return nil, errdefs.Invalid(fmt.Sprintf("trace: line %d has no column %s", line, column))
		}
		v, err := parseTimestamp(strings.TrimSpace(rec[col]))
		if err != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("trace: line %d: %v", line, err))
		}
		ts = append(ts, v)
	}
	if len(ts) == 0 {
		return nil, errdefs.Invalid("trace: no rows")
	}
	slices.Sort(ts)
	t0 := ts[0]
	for i := range ts {
		ts[i] -= t0
	}
	return ts, nil
}

func parseTimestamp(s string) (float64, error) {
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("timestamp %q is not finite", s)
		}
		return v, nil
	}
	for _, l := range timestampLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return float64(t.UnixNano()) / 1e9, nil
		}
	}
	return 0, fmt.Errorf("timestamp %q is neither seconds nor a date and time", s)
}
