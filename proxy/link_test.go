package proxy

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accelpool/accelpool/internal/linkemu"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// toxiproxy starts a toxiproxy server; in CI its absence is a failure.
func toxiproxy(t *testing.T) *linkemu.Server {
	t.Helper()
	bin, err := linkemu.Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("toxiproxy is required in CI: %v", err)
		}
		t.Skipf("emulated links need toxiproxy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := linkemu.Start(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// load sends requests back to back from workers until stop, recording
// where each ran; any failure is recorded too.
type load struct {
	mu      sync.Mutex
	events  []event
	failed  []error
	stopped atomic.Bool
	wg      sync.WaitGroup
}

type event struct {
	at     time.Time
	target string
}

func startLoad(t *testing.T, p *Proxy, workers int, timeout time.Duration) *load {
	l := &load{}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !l.stopped.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				r, err := p.Infer(ctx, request("m"))
				cancel()
				l.mu.Lock()
				if err != nil {
					l.failed = append(l.failed, err)
				} else {
					l.events = append(l.events, event{time.Now(), targetOf(r)})
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) stop() { l.stopped.Store(true); l.wg.Wait() }

// switchAfter is how long after since requests settled on want: the time
// of the first of n consecutive answers from want.
func (l *load) switchAfter(since time.Time, want string, n int) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	run := 0
	var first time.Time
	for _, e := range l.events {
		if e.at.Before(since) {
			continue
		}
		if e.target != want {
			run = 0
			continue
		}
		if run == 0 {
			first = e.at
		}
		run++
		if run == n {
			return first.Sub(since), true
		}
	}
	return 0, false
}

func waitSwitch(t *testing.T, l *load, since time.Time, want string) time.Duration {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if d, ok := l.switchAfter(since, want, 5); ok {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("requests did not move to %s within 10s", want)
	return 0
}

// TestLinkDegradeAndRestore runs load through a proxy whose remote sits
// behind an emulated link; the link's latency goes up and back down. The
// proxy must move to local and back, failing no request.
func TestLinkDegradeAndRestore(t *testing.T) {
	tp := toxiproxy(t)
	remote := startAgent(t, map[string]int{"m": 2})
	fast := linkemu.Link{Name: "edge", RTT: 2 * time.Millisecond}
	link, err := tp.Proxy("edge", remote.GRPCAddr(), fast)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, Config{
		Local:         localManager(t, map[string]int{"m": 25}),
		Targets:       []Target{{Name: "edge", Addr: link.Addr(), Tier: "edge"}},
		ProbeInterval: 50 * time.Millisecond,
	})
	waitProbed(t, p)
	l := startLoad(t, p, 2, 2*time.Second)
	defer l.stop()
	toRemote := waitSwitch(t, l, time.Now(), "edge")

	degraded := time.Now()
	if err := link.Set(linkemu.Link{Name: "edge", RTT: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	toLocal := waitSwitch(t, l, degraded, LocalName)

	restored := time.Now()
	if err := link.Set(fast); err != nil {
		t.Fatal(err)
	}
	back := waitSwitch(t, l, restored, "edge")
	l.stop()

	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failed) > 0 {
		t.Fatalf("%d requests failed during the switches, first: %v", len(l.failed), l.failed[0])
	}
	t.Logf("settled on edge after %v; link rtt 2ms→200ms: on local after %v; restored: back on edge after %v; %d requests, none failed",
		toRemote.Round(time.Millisecond), toLocal.Round(time.Millisecond), back.Round(time.Millisecond), len(l.events))
}

// TestLinkCutMidRequest cuts the link while requests are in flight: they
// fall back to local within their deadline.
func TestLinkCutMidRequest(t *testing.T) {
	tp := toxiproxy(t)
	remote := startAgent(t, map[string]int{"m": 100})
	link, err := tp.Proxy("edge", remote.GRPCAddr(), linkemu.Link{Name: "edge", RTT: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, Config{
		Local:         localManager(t, map[string]int{"m": 300}),
		Targets:       []Target{{Name: "edge", Addr: link.Addr(), Tier: "edge"}},
		ProbeInterval: 50 * time.Millisecond,
	})
	waitProbed(t, p)
	for range 3 { // explore both, then settle on the remote
		if _, err := infer(t, p, "m", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		target string
		err    error
		took   time.Duration
	}
	res := make(chan result, 2)
	for range 2 {
		go func() {
			start := time.Now()
			r, err := infer(t, p, "m", 2*time.Second)
			rr := result{err: err, took: time.Since(start)}
			if err == nil {
				rr.target = targetOf(r)
			}
			res <- rr
		}()
	}
	time.Sleep(30 * time.Millisecond) // the requests are at the remote
	if err := link.Cut(); err != nil {
		t.Fatal(err)
	}
	defer link.Restore()
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Fatalf("request failed after the cut (%v): %v", r.took, r.err)
		}
		if r.target != LocalName {
			t.Fatalf("answered by %q", r.target)
		}
		if r.took > 2*time.Second {
			t.Fatalf("took %v, past its deadline", r.took)
		}
	}
}

// TestOverlappedBandwidthProbeDiscarded: a bandwidth probe that a request
// overlaps shares the link (and a slow device's CPU) with it; its reading
// must not be taken as the link's bandwidth. Requests here come every few
// ms, each probe's transfers take tens of ms on a 20 Mbit/s link, so every
// probe started in a gap is overlapped: none may be recorded while the
// load runs, and probes must record again once it stops.
func TestOverlappedBandwidthProbeDiscarded(t *testing.T) {
	tp := toxiproxy(t)
	remote := startAgent(t, map[string]int{"m": 1})
	link, err := tp.Proxy("edge", remote.GRPCAddr(), linkemu.Link{Name: "edge", RTT: 2 * time.Millisecond, Bandwidth: 20e6})
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, Config{
		Targets:        []Target{{Name: "edge", Addr: link.Addr(), Tier: "edge"}},
		ProbeInterval:  10 * time.Millisecond,
		BandwidthEvery: 1,
	})
	waitProbed(t, p)
	samples := func() (recorded, overlapped int) {
		ts := p.Status().Targets[0]
		return ts.BandwidthSamples, ts.Overlapped
	}
	before, _ := samples()

	var stop atomic.Bool
	done := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			if _, err := infer(t, p, "m", 2*time.Second); err != nil {
				t.Errorf("request failed: %v", err)
			}
			n++
			time.Sleep(3 * time.Millisecond)
		}
		done <- n
	}()
	time.Sleep(1500 * time.Millisecond)
	during, overlapped := samples()
	stop.Store(true)
	n := <-done
	if during != before {
		t.Errorf("%d bandwidth samples recorded while %d requests overlapped the probes; want none", during-before, n)
	}
	if overlapped == 0 {
		t.Errorf("no probe counted as overlapped during %d requests 3 ms apart", n)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if after, _ := samples(); after > during {
			t.Logf("%d requests: %d probes discarded as overlapped, 0 recorded; recorded again once idle", n, overlapped)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no bandwidth sample recorded within 3s of the load stopping")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCompressesWhereItIsFaster: over a slow link, answers that are mostly
// zeros go compressed once both ways have been tried; dense ones, which do
// not shrink, go as they are, compression never offered.
func TestCompressesWhereItIsFaster(t *testing.T) {
	tp := toxiproxy(t)
	remote := startAgentRepo(t, repoShaped(t, map[string]int{"sparse": 1, "dense": 1}, []int64{1, -1}))
	link, err := tp.Proxy("edge", remote.GRPCAddr(), linkemu.Link{Name: "edge", RTT: 2 * time.Millisecond, Bandwidth: 16e6})
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, Config{Targets: []Target{{Name: "edge", Addr: link.Addr(), Tier: "edge"}}})
	waitProbed(t, p)
	const n = 64 << 10 // floats: 256 KiB each way, 0.13 s at 16 Mbit/s
	sparse, dense := make([]float32, n), make([]float32, n)
	for i := range n {
		dense[i] = float32(i%977) + 0.5
		if i%64 == 0 {
			sparse[i] = 1
		}
	}
	run := func(model string, x []float32) (compressed bool, took time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		r, err := p.Infer(ctx, &oip.InferRequest{ModelName: model, Inputs: []oip.InferInput{{Tensor: tensor.FromFloat32("x", []int64{1, n}, x)}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Outputs[0].Float32s(); len(got) != n || !slices.Equal(got, x) {
			t.Fatalf("%s: the answer differs from the echoed input", model)
		}
		return r.Parameters[ParamCompressed] == true, time.Since(start)
	}
	for _, c := range []struct {
		model string
		x     []float32
		want  bool
	}{{"sparse", sparse, true}, {"dense", dense, false}} {
		var tried [2]time.Duration
		for range 2 { // exploration: plain, then compressed if it shrinks
			comp, took := run(c.model, c.x)
			tried[b2i(comp)] = took
		}
		if tried[0] == 0 || (tried[1] == 0) == c.want {
			t.Fatalf("%s: exploration tried plain in %v, compressed in %v", c.model, tried[0], tried[1])
		}
		for i := range 4 {
			if comp, took := run(c.model, c.x); comp != c.want {
				t.Fatalf("%s request %d: compressed %v in %v (exploration: plain %v, compressed %v), want compressed %v",
					c.model, i, comp, took, tried[0], tried[1], c.want)
			}
		}
		t.Logf("%s: plain %v, compressed %v; chose compressed=%v", c.model, tried[0].Round(time.Millisecond), tried[1].Round(time.Millisecond), c.want)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
