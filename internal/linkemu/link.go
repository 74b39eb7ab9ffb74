package linkemu

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// Link describes an emulated network link.
type Link struct {
	// Name labels the link; Server.Proxy uses it when given no name.
	Name string
	// RTT is the round-trip time the link adds, in whole milliseconds;
	// half of it delays each direction.
	RTT time.Duration
	// Bandwidth is the rate of each direction in bits per second; 0 means
	// unlimited. toxiproxy applies it in whole KB/s, so it must be at least
	// MinBandwidth and is rounded to the nearest 8000 bit/s.
	Bandwidth int64
}

// MinBandwidth is the smallest non-zero Bandwidth: toxiproxy's bandwidth
// toxic counts in KB/s (1000 bytes), and a rate of 0 would mean unlimited.
const MinBandwidth = 8000

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseLink parses a link such as "name=edge,rtt=10ms,bw=100mbit". Every
// field is optional but at least one must be given; an absent field is
// zero (no added latency, unlimited bandwidth).
//
//	name  letters, digits, '.', '_', '-'
//	rtt   a Go duration in whole milliseconds: 10ms, 1.5s, 0
//	bw    bits per second with an optional unit: 100mbit, 1.5gbit,
//	      512kbit, 2000000 or 2000000bit; 0 means unlimited
func ParseLink(s string) (Link, error) {
	var l Link
	if strings.TrimSpace(s) == "" {
		return l, invalidf("link: empty (want e.g. rtt=10ms,bw=100mbit)")
	}
	seen := map[string]bool{}
	for _, field := range strings.Split(s, ",") {
		key, val, ok := strings.Cut(field, "=")
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		if !ok || key == "" {
			return Link{}, invalidf("link %q: field %q is not key=value", s, strings.TrimSpace(field))
		}
		if seen[key] {
			return Link{}, invalidf("link %q: %s given twice", s, key)
		}
		seen[key] = true
		switch key {
		case "name":
			if !nameRE.MatchString(val) {
				return Link{}, invalidf("link %q: name %q: want letters, digits, '.', '_' or '-'", s, val)
			}
			l.Name = val
		case "rtt":
			d, err := parseRTT(val)
			if err != nil {
				return Link{}, invalidf("link %q: rtt %q: %v", s, val, err)
			}
			l.RTT = d
		case "bw", "bandwidth":
			bw, err := parseBandwidth(val)
			if err != nil {
				return Link{}, invalidf("link %q: bw %q: %v", s, val, err)
			}
			l.Bandwidth = bw
		default:
			return Link{}, invalidf("link %q: unknown field %q (want name, rtt, bw)", s, key)
		}
	}
	return l, nil
}

func parseRTT(v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("not a duration such as 10ms")
	}
	return d, checkRTT(d)
}

func checkRTT(d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("negative")
	case d%time.Millisecond != 0:
		return fmt.Errorf("%v is not whole milliseconds (toxiproxy delays in milliseconds)", d)
	}
	return nil
}

var bwUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest first so "kbit" is not read as "bit".
	{"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"bit", 1},
}

func parseBandwidth(v string) (int64, error) {
	num, mult := strings.ToLower(v), 1.0
	for _, u := range bwUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a number with an optional unit kbit, mbit, gbit or bit, such as 100mbit")
	}
	bits := f * mult
	if bits > math.MaxInt64/2 {
		return 0, fmt.Errorf("too large")
	}
	bw := int64(math.Round(bits))
	if bits != 0 && bw == 0 {
		return 0, fmt.Errorf("rounds to 0 bit/s (use 0 for unlimited)")
	}
	return bw, checkBandwidth(bw)
}

func checkBandwidth(bw int64) error {
	switch {
	case bw < 0:
		return fmt.Errorf("negative")
	case bw > 0 && bw < MinBandwidth:
		return fmt.Errorf("%d bit/s is below %d bit/s, the smallest rate toxiproxy applies (1 KB/s)", bw, MinBandwidth)
	}
	return nil
}

// Validate reports whether toxiproxy can realise l.
func (l Link) Validate() error {
	if l.Name != "" && !nameRE.MatchString(l.Name) {
		return invalidf("link name %q: want letters, digits, '.', '_' or '-'", l.Name)
	}
	if err := checkRTT(l.RTT); err != nil {
		return invalidf("link %s: rtt: %v", l, err)
	}
	if err := checkBandwidth(l.Bandwidth); err != nil {
		return invalidf("link %s: bw: %v", l, err)
	}
	return nil
}

// String formats l the way ParseLink reads it, e.g.
// "name=edge,rtt=10ms,bw=100mbit"; a zero Link is "rtt=0,bw=0".
func (l Link) String() string {
	var parts []string
	if l.Name != "" {
		parts = append(parts, "name="+l.Name)
	}
	rtt := "0"
	if l.RTT != 0 {
		rtt = l.RTT.String()
	}
	parts = append(parts, "rtt="+rtt, "bw="+formatBandwidth(l.Bandwidth))
	return strings.Join(parts, ",")
}

func formatBandwidth(bw int64) string {
	if bw == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bw%u.mult == 0 {
			return strconv.FormatInt(bw/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(bw, 10) + "bit"
}

// toxiRate is l's bandwidth as the bandwidth toxic's rate in KB/s, 0 when
// unlimited.
func (l Link) toxiRate() int64 { return (l.Bandwidth + 4000) / 8000 }

// latencies splits l's RTT into the upstream and downstream delays in
// milliseconds; an odd millisecond goes downstream.
func (l Link) latencies() (up, down int64) {
	ms := l.RTT.Milliseconds()
	return ms / 2, ms - ms/2
}

func invalidf(format string, args ...any) error {
	return errdefs.New(errdefs.ErrInvalid, "linkemu: "+fmt.Sprintf(format, args...))
}
