package proxy

import (
	"testing"
	"time"
)

func TestLearnedTransferScales(t *testing.T) {
	var ms remoteStats
	ms.transfer.Add(float64(10 * time.Millisecond))
	ms.inBytes.Add(1000)
	ms.outBytes.Add(1000)
	ms.bwRef.Add(100e6)
	for _, tc := range []struct {
		in   int64
		bw   float64
		want time.Duration
	}{
		{1000, 100e6, 10 * time.Millisecond},
		{3000, 100e6, 20 * time.Millisecond}, // twice the bytes
		{1000, 60e6, 10 * time.Millisecond},  // within probe scatter: ignored
		{1000, 25e6, 40 * time.Millisecond},  // a quarter of the bandwidth
		{1000, 0, 10 * time.Millisecond},     // unknown bandwidth
	} {
		if got := ms.learnedTransfer(tc.in, tc.bw); got != tc.want {
			t.Errorf("in %d bw %g: %v, want %v", tc.in, tc.bw, got, tc.want)
		}
	}
}

func TestOutlierNotLearnedUntilItPersists(t *testing.T) {
	tg := &target{models: map[string]*remoteStats{}, probeNow: make(chan struct{}, 1)}
	server := time.Millisecond
	tg.learn("m", server, 100, 0, 5*time.Millisecond, 0) // seeds: transfer 4ms
	for i := range 2 {
		tg.learn("m", server, 100, 0, 100*time.Millisecond, 5*time.Millisecond)
		if got := tg.models["m"].transfer.Duration(); got != 4*time.Millisecond {
			t.Fatalf("outlier %d learned: transfer %v", i+1, got)
		}
	}
	select {
	case <-tg.probeNow:
	default:
		t.Error("an outlier did not ask for a probe")
	}
	tg.learn("m", server, 100, 0, 100*time.Millisecond, 5*time.Millisecond)
	if got := tg.models["m"].transfer.Duration(); got <= 4*time.Millisecond {
		t.Fatalf("the third slow answer in a row was not learned: transfer %v", got)
	}
}

func TestMinWindow(t *testing.T) {
	var w minWindow
	if w.Value() != 0 {
		t.Fatal("empty window not 0")
	}
	for i, tc := range []struct{ add, want float64 }{{5, 5}, {9, 5}, {7, 5}, {8, 7}, {20, 7}, {30, 8}, {30, 20}} {
		w.Add(tc.add)
		if got := w.Value(); got != tc.want {
			t.Errorf("after sample %d (%v): %v, want %v", i+1, tc.add, got, tc.want)
		}
	}
}

func TestBandwidthSample(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		bps    float64
		want   float64
		wantOK bool
	}{
		{"timed: 256 KiB in 21 ms", maxProbeB, 100e6, 100e6, true},
		{"timed: 16 KiB at 10 Mbit/s (13 ms)", 16 << 10, 10e6, 10e6, true},
		{"largest, 2 ms: at least the bound", maxProbeB, 1e9, fastLinkBps, true},
		{"largest, overshoot of a stall in the round trip", maxProbeB, 8.8e9, fastLinkBps, true},
		{"largest, too quick to time at all", maxProbeB, 0, fastLinkBps, true},
		{"smaller and too short: nothing", defaultProbeBytes, 1e9, 0, false},
		{"smaller and too quick: nothing", defaultProbeBytes, 0, 0, false},
	} {
		got, ok := bandwidthSample(tc.n, tc.bps)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: %g %v, want %g %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
	if fastLinkBps < 400e6 || fastLinkBps > 430e6 {
		t.Errorf("fastLinkBps %g, want about 419 Mbit/s", fastLinkBps)
	}
}

// A fast link probed from a throttled device scatters above and below
// what a probe can resolve; the learned transfer must not be rescaled by
// it, and must be once three probes agree the link slowed down.
func TestLearnedTransferIgnoresProbeScatter(t *testing.T) {
	var l link
	add := func(n int, bps float64) {
		if s, ok := bandwidthSample(n, bps); ok {
			l.up.Add(s)
			l.down.Add(s)
		}
	}
	var ms remoteStats
	ms.transfer.Add(float64(20 * time.Millisecond))
	ms.inBytes.Add(1000)
	ms.outBytes.Add(1000)
	for _, bps := range []float64{900e6, 8.8e9, 700e6} { // 1 Gbit/s link: all too short to time
		add(maxProbeB, bps)
	}
	ms.bwRef.Add(bandwidth(l))
	for i, bps := range []float64{300e6, 150e6, 8.8e9, 1.2e9, 5e9} { // stalls and overshoots
		add(maxProbeB, bps)
		if got := ms.learnedTransfer(1000, bandwidth(l)); got != 20*time.Millisecond {
			t.Fatalf("probe %d (%g bit/s): transfer rescaled to %v", i+1, bps, got)
		}
	}
	for i := range 3 { // the link drops to 50 Mbit/s: rescaled on the third probe that says so
		add(maxProbeB, 50e6)
		got := ms.learnedTransfer(1000, bandwidth(l))
		if i < 2 && got != 20*time.Millisecond {
			t.Fatalf("rescaled to %v after %d slow probes", got, i+1)
		}
		if i == 2 && got < 100*time.Millisecond {
			t.Fatalf("not rescaled after 3 slow probes: %v", got)
		}
	}
}

// TestMinWindowFollowsALastingRise: one slow probe (a stall) leaves the
// round trip alone; two in a row well above it (the link changed) replace
// it; a normal sample after a false rise brings it back.
func TestMinWindowFollowsALastingRise(t *testing.T) {
	ms := func(v float64) float64 { return v * float64(time.Millisecond) }
	var w minWindow
	for _, x := range []float64{1, 1.2, 1.1} {
		w.Add(ms(x))
	}
	w.Add(ms(40)) // a stall
	w.Add(ms(1.3))
	if got := w.Value(); got != ms(1.1) {
		t.Fatalf("after one stall: %v ms", got/ms(1))
	}
	w.Add(ms(780))
	if got := w.Value(); got != ms(1.3) {
		t.Fatalf("after one slow probe: %v ms", got/ms(1))
	}
	w.Add(ms(790))
	if got := w.Value(); got != ms(780) {
		t.Fatalf("after two slow probes in a row: %v ms, want 780", got/ms(1))
	}
	w.Add(ms(785))
	w.Add(ms(1)) // restored
	if got := w.Value(); got != ms(1) {
		t.Fatalf("after the link came back: %v ms", got/ms(1))
	}
	w.Add(ms(15)) // below 2×1 ms + 20 ms: stalls, not a rise
	w.Add(ms(19))
	if got := w.Value(); got != ms(1) {
		t.Fatalf("small rises moved the minimum: %v ms", got/ms(1))
	}
}

// TestOverdueFlight: a request in flight far past its prediction raises
// the target's predictions by its overrun (beyond twice its prediction and
// 5 ms), and stops once it ends.
func TestOverdueFlight(t *testing.T) {
	tg := &target{models: map[string]*remoteStats{}, probeNow: make(chan struct{}, 1)}
	if id := tg.beginFlight(0); id != 0 || len(tg.flights) != 0 {
		t.Fatal("a request without a prediction was tracked")
	}
	id := tg.beginFlight(20 * time.Millisecond)
	start := tg.flights[id].start
	for _, tc := range []struct{ age, want time.Duration }{
		{30 * time.Millisecond, 0},                       // within scatter
		{45 * time.Millisecond, 0},                       // 2×20 + 5 exactly
		{300 * time.Millisecond, 255 * time.Millisecond}, // the link slowed
	} {
		if got := tg.overdue(start.Add(tc.age)); got != tc.want {
			t.Errorf("after %v: overdue %v, want %v", tc.age, got, tc.want)
		}
	}
	tg.flights[id] = flight{start: time.Now().Add(-300 * time.Millisecond), predicted: 20 * time.Millisecond}
	if o := tg.option("m", 100, false); o.Overdue < 255*time.Millisecond {
		t.Errorf("option does not carry the overrun: %v", o.Overdue)
	}
	tg.endFlight(id)
	if got := tg.overdue(start.Add(time.Second)); got != 0 {
		t.Errorf("after the request ended: overdue %v", got)
	}
}

// TestRefreshAfterIdle: an option that has not answered for refreshAfter
// is offered for exploration to one request per period, and the answer
// that follows replaces what was known rather than joining it.
func TestRefreshAfterIdle(t *testing.T) {
	now := time.Unix(1000, 0)
	tg := &target{models: map[string]*remoteStats{}, probeNow: make(chan struct{}, 1),
		refreshAfter: 30 * time.Second, now: func() time.Time { return now }}
	for range serverWindow {
		tg.learn("m", 200*time.Millisecond, 100, 0, 210*time.Millisecond, 0) // a busy far end
	}
	if o := tg.option("m", 100, false); !o.Measured || o.Server != 200*time.Millisecond {
		t.Fatalf("fresh option: %+v", o)
	}
	now = now.Add(29 * time.Second)
	if o := tg.option("m", 100, false); !o.Measured {
		t.Fatal("refreshed before refreshAfter")
	}
	now = now.Add(2 * time.Second)
	if o := tg.option("m", 100, false); o.Measured {
		t.Fatal("not offered for exploration after refreshAfter without an answer")
	}
	if o := tg.option("m", 100, false); !o.Measured {
		t.Fatal("a second request explored in the same period")
	}
	// The refresh's answer: the far end is now fast.
	tg.learn("m", 2*time.Millisecond, 100, 0, 12*time.Millisecond, 0)
	if o := tg.option("m", 100, false); !o.Measured || o.Server != 2*time.Millisecond {
		t.Fatalf("after the refresh the option still predicts from old answers: server %v", o.Server)
	}
	// Answers keep it fresh: no refresh while it is in use.
	for range 5 {
		now = now.Add(20 * time.Second)
		tg.learn("m", 2*time.Millisecond, 100, 0, 12*time.Millisecond, 0)
		if o := tg.option("m", 100, false); !o.Measured {
			t.Fatal("an option in use was refreshed")
		}
	}
	// Without refreshAfter nothing is refreshed.
	tg.refreshAfter = 0
	now = now.Add(time.Hour)
	if o := tg.option("m", 100, false); !o.Measured {
		t.Fatal("refreshed with refreshAfter 0")
	}
}
