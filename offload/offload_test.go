package offload

import (
	"math"
	"testing"
	"time"
)

const ms = time.Millisecond

func names(ps []Predicted) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

func TestPredict(t *testing.T) {
	local := Option{Name: "local", Local: true, Measured: true, Service: 40 * ms, Waiting: 2}
	if d, _, ok := Predict(local, 0); !ok || d != 120*ms {
		t.Errorf("local with 2 waiting: %v %v, want 120ms", d, ok)
	}
	// 1 MB up at 100 Mbit/s = 80 ms; 10 kB down at 100 Mbit/s = 0.8 ms.
	remote := Option{Name: "edge", Measured: true, RTT: 10 * ms, UpBps: 100e6, DownBps: 100e6, Server: 5 * ms, Residual: 1 * ms, OutBytes: 10_000}
	d, tr, ok := Predict(remote, 1_000_000)
	if !ok || tr != 80800*time.Microsecond || d != 10*ms+tr+6*ms {
		t.Errorf("remote: %v (transfer %v), want 96.8ms (80.8ms)", d, tr)
	}
	// A residual cannot make the answer come before a round trip.
	remote.Residual = -time.Second
	if d, _, _ := Predict(remote, 1_000_000); d != 10*ms {
		t.Errorf("negative residual: %v, want the rtt 10ms", d)
	}
	// Unknown bandwidth: no transfer term.
	remote.Residual, remote.UpBps, remote.DownBps = 0, 0, 0
	if d, tr, _ := Predict(remote, 1_000_000); tr != 0 || d != 15*ms {
		t.Errorf("unknown bandwidth: %v (transfer %v), want 15ms", d, tr)
	}
	// A learned transfer time replaces the bandwidth arithmetic.
	remote.Learned = 7 * ms
	if d, tr, _ := Predict(remote, 1_000_000); tr != 7*ms || d != 22*ms {
		t.Errorf("learned transfer: %v (transfer %v), want 22ms (7ms)", d, tr)
	}
	if _, _, ok := Predict(Option{Name: "new"}, 1); ok {
		t.Error("unmeasured option predicted")
	}
}

func TestRank(t *testing.T) {
	local := Option{Name: "local", Local: true, Tier: "device", Measured: true, Service: 200 * ms}
	edge := Option{Name: "edge", Tier: "edge", Measured: true, RTT: 10 * ms, UpBps: 100e6, DownBps: 100e6, Server: 20 * ms}
	cloud := Option{Name: "cloud", Tier: "cloud", Measured: true, RTT: 60 * ms, UpBps: 1e9, DownBps: 1e9, Server: 10 * ms}
	for _, tc := range []struct {
		name      string
		opts      []Option
		in        int64
		remaining time.Duration
		want      []string
		meets     bool // the leader meets the deadline
	}{
		{"edge fastest", []Option{local, cloud, edge}, 100_000, 0, []string{"edge", "cloud", "local"}, true},
		// 4.9 MB raw tensor: edge transfer 392 ms, cloud 39 ms.
		{"big input favours the fat pipe", []Option{local, cloud, edge}, 4_900_000, 0, []string{"cloud", "local", "edge"}, true},
		{"slow links: local", []Option{local, withRTT(edge, 300*ms), withRTT(cloud, 400*ms)}, 1000, 0, []string{"local", "edge", "cloud"}, true},
		{"unmeasured explored first", []Option{local, edge, {Name: "new", Tier: "edge"}}, 1000, 0, []string{"new", "edge", "local"}, true},
		{"none meets the deadline: fastest leads", []Option{local, edge}, 1000, 5 * ms, []string{"edge", "local"}, false},
		{"link down goes last", []Option{local, down(edge)}, 1000, 0, []string{"local", "edge"}, true},
		{"tie broken by load", []Option{busy(edge, 3), renamed(edge, "edge2")}, 1000, 0, []string{"edge2", "edge"}, true},
		{"tie broken by tier", []Option{renamed(withTier(edge, "cloud"), "a"), renamed(edge, "b")}, 1000, 0, []string{"b", "a"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Rank(tc.opts, tc.in, tc.remaining)
			if g := names(got); !equal(g, tc.want) {
				for _, p := range got {
					t.Log(p)
				}
				t.Fatalf("rank %v, want %v", g, tc.want)
			}
			if got[0].MeetsDeadline != tc.meets {
				t.Errorf("leader meets deadline = %v, want %v", got[0].MeetsDeadline, tc.meets)
			}
		})
	}
}

func TestRankDeadlineLeaderAmongTies(t *testing.T) {
	// a and b are tied (within 5%); a has less load and so ranks first, but
	// only b meets the deadline: b must lead.
	a := Option{Name: "a", Tier: "edge", Measured: true, RTT: 10 * ms, Server: 92 * ms}
	b := Option{Name: "b", Tier: "edge", Measured: true, RTT: 10 * ms, Server: 88 * ms, InFlight: 5}
	got := Rank([]Option{a, b}, 0, 99*ms)
	if names(got)[0] != "b" || !got[0].MeetsDeadline {
		t.Fatalf("got %v, want b leading", names(got))
	}
}

func TestMean(t *testing.T) {
	var m Mean
	m.Add(10)
	if m.Value() != 10 || m.N() != 1 {
		t.Fatalf("first sample: %v", m.Value())
	}
	for range 100 {
		m.Add(20)
	}
	if math.Abs(m.Value()-20) > 1e-6 {
		t.Fatalf("converged to %v, want 20", m.Value())
	}
	h := Mean{Weight: 1}
	h.Add(1)
	h.Add(5)
	if h.Value() != 5 {
		t.Fatalf("weight 1 keeps the last sample, got %v", h.Value())
	}
}

func TestString(t *testing.T) {
	p := Rank([]Option{{Name: "edge", Measured: true, RTT: 10 * ms, Server: 5 * ms}}, 0, 0)[0]
	if s := p.String(); s != "edge: 15ms = rtt 10ms + transfer 0s + server 5ms + residual 0s" {
		t.Errorf("String() = %q", s)
	}
}

func withRTT(o Option, d time.Duration) Option { o.RTT = d; return o }
func withTier(o Option, tier string) Option    { o.Tier = tier; return o }
func renamed(o Option, name string) Option     { o.Name = name; return o }
func busy(o Option, n int) Option              { o.InFlight = n; return o }
func down(o Option) Option                     { o.LinkUnavailable = true; return o }
func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRecent(t *testing.T) {
	var r Recent
	if r.Value() != 0 || r.N() != 0 {
		t.Fatal("empty Recent not 0")
	}
	for i, tc := range []struct{ add, want float64 }{
		{10, 10}, {30, 20}, {20, 20}, {100, 25}, // one outlier moves it little
		{20, 20}, {20, 20}, {50, 20}, {50, 50}, {50, 50}, // a lasting change shows after half a window
	} {
		r.Add(tc.add)
		if got := r.Value(); got != tc.want {
			t.Errorf("after sample %d (%v): %v, want %v", i+1, tc.add, got, tc.want)
		}
	}
}

func TestPredictAddsOverdue(t *testing.T) {
	o := Option{Name: "edge", Measured: true, RTT: 2 * time.Millisecond, Server: 10 * time.Millisecond}
	base, _, _ := Predict(o, 0)
	o.Overdue = 300 * time.Millisecond
	if got, _, _ := Predict(o, 0); got != base+300*time.Millisecond {
		t.Fatalf("with 300ms overdue: %v, want %v", got, base+300*time.Millisecond)
	}
}

func TestRecentWindow(t *testing.T) {
	r := Recent{Window: 9}
	for i := range 9 {
		r.Add(float64(i)) // 0..8
	}
	if got := r.Value(); got != 4 {
		t.Fatalf("median of 0..8: %v", got)
	}
	for range 4 {
		r.Add(100) // window 4..8, 100 ×4: the median is still the old level
	}
	if got := r.Value(); got != 8 {
		t.Fatalf("after 4 of 9 new samples: %v, want 8", got)
	}
	r.Add(100)
	if got := r.Value(); got != 100 {
		t.Fatalf("after 5 of 9 new samples: %v, want 100", got)
	}
	big := Recent{Window: 1000}
	for i := range 20 {
		big.Add(float64(i))
	}
	if got := big.Value(); got != 12 { // capped at 15 samples: 5..19
		t.Fatalf("window capped at %d: median %v, want 12", MaxRecentWindow, got)
	}
}
