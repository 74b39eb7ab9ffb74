package proxy

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/offload"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/proxy/linkprobe"
)

// target is a remote endpoint with its connection, its link and what is
// known about each model there.
type target struct {
	spec   Target
	conn   *grpc.ClientConn
	client *grpcsvc.Client
	stop   context.CancelFunc
	done   chan struct{}
	// probeNow asks the probe loop for a probe at once.
	probeNow chan struct{}

	inflight atomic.Int64

	mu     sync.Mutex
	link   link
	models map[string]*remoteStats
}

// link is what the probes found.
type link struct {
	rtt      minWindow    // nanoseconds
	up, down offload.Mean // bits per second
	failed   bool         // the last probe failed
	lastErr  string
	probed   time.Time
}

// remoteStats is what is known about one model on one target.
type remoteStats struct {
	// server is a median: the far end's time jitters with its load, and a
	// mean follows every slow answer.
	server   offload.Recent // reported server time, ns
	transfer offload.Mean   // measured latency less rtt and server time, ns
	inBytes  offload.Mean
	outBytes offload.Mean
	bwRef    offload.Mean // the probed bandwidth when transfer was learned
	outliers int          // answers in a row much slower than predicted
}

// servedName is the name t serves model under; renamed is false when it
// serves every model under the name asked for.
// rttWindow is how many recent probes the round trip is the minimum of.
const rttWindow = 3

// minWindow is the minimum of the last rttWindow samples. Delays on the
// path (a throttled device's own stalls, queues) only ever add to a round
// trip, so the recent minimum is the steadiest estimate of the path; a
// lasting change shows after rttWindow probes.
type minWindow struct {
	v [rttWindow]float64
	n int
}

// Add records x.
func (w *minWindow) Add(x float64) { w.v[w.n%rttWindow] = x; w.n++ }

// N is the samples recorded.
func (w *minWindow) N() int { return w.n }

// Value is the minimum of the recent samples (0 before any).
func (w *minWindow) Value() float64 {
	if w.n == 0 {
		return 0
	}
	m := w.v[0]
	for _, x := range w.v[1:min(w.n, rttWindow)] {
		m = min(m, x)
	}
	return m
}

// Duration is Value in nanoseconds.
func (w *minWindow) Duration() time.Duration { return time.Duration(w.Value()) }

func (t *target) servedName(model string) (name string, renamed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.spec.serves(model)
	return s, t.spec.Models != nil
}

func (t *target) option(model string, in int64) offload.Option {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := offload.Option{Name: t.spec.Name, Tier: t.spec.Tier, Site: t.spec.Site, InFlight: int(t.inflight.Load()),
		RTT: t.link.rtt.Duration(), UpBps: t.link.up.Value(), DownBps: t.link.down.Value(), LinkUnavailable: t.link.failed}
	if ms := t.models[model]; ms != nil && ms.transfer.N() > 0 {
		o.Measured = true
		o.Server = ms.server.Duration()
		o.OutBytes = int64(ms.outBytes.Value())
		o.Learned = ms.learnedTransfer(in, bandwidth(t.link))
	}
	return o
}

// bandwidth is the probed bandwidth of the narrower direction (0: unknown).
func bandwidth(l link) float64 {
	if l.up.N() == 0 || l.down.N() == 0 {
		return 0
	}
	return min(l.up.Value(), l.down.Value())
}

// learnedTransfer scales the learned transfer time to a request of in
// bytes, and to the link when the probes say its bandwidth has changed
// more than twofold since (smaller changes are within what probes from a
// slow device scatter).
func (ms *remoteStats) learnedTransfer(in int64, bw float64) time.Duration {
	d := ms.transfer.Value()
	if typical := ms.inBytes.Value() + ms.outBytes.Value(); typical > 0 {
		d *= (float64(in) + ms.outBytes.Value()) / typical
	}
	if ref := ms.bwRef.Value(); ref > 0 && bw > 0 && (bw < ref/2 || bw > ref*2) {
		d *= ref / bw
	}
	return time.Duration(max(d, 1))
}

// learn folds an answer into the model's means: server is the time the
// target reported, in and out the request's and answer's WireBytes, took
// the measured latency. An answer much slower
// than predicted (more than twice, and 5 ms) is most likely caught in a
// change of the link between two probes: it triggers a probe now and is
// not learned from, unless it is the third in a row (then the change is
// real and the means must follow it).
func (t *target) learn(model string, server time.Duration, in, out int64, took, predicted time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := t.models[model]
	if ms == nil {
		ms = &remoteStats{}
		t.models[model] = ms
	}
	if predicted > 0 && took > 2*predicted+5*time.Millisecond && ms.outliers < 2 {
		ms.outliers++
		select {
		case t.probeNow <- struct{}{}:
		default:
		}
		return
	}
	ms.outliers = 0
	ms.server.Add(float64(server))
	ms.outBytes.Add(float64(out))
	ms.inBytes.Add(float64(in))
	ms.transfer.Add(float64(max(took-server-t.link.rtt.Duration(), 0)))
	if bw := bandwidth(t.link); bw > 0 {
		ms.bwRef.Add(bw)
	}
}

func (t *target) close() {
	t.stop()
	<-t.done
	t.conn.Close()
}

// setTargets makes the proxy's targets fixed ∪ discovered: new ones are
// connected and probed, vanished ones closed, changed ones updated.
func (p *Proxy) setTargets(fixed, discovered []Target) error {
	want := map[string]Target{}
	for _, t := range fixed {
		want[t.Name] = t
	}
	for _, t := range discovered {
		if _, clash := want[t.Name]; !clash && t.Name != LocalName && t.Addr != "" {
			want[t.Name] = t
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return nil
	}
	for name, t := range p.targets {
		if w, ok := want[name]; !ok || w.Addr != t.spec.Addr {
			t.close()
			delete(p.targets, name)
		}
	}
	for name, spec := range want {
		if t, ok := p.targets[name]; ok {
			t.mu.Lock()
			t.spec.Models, t.spec.Tier, t.spec.Site = maps.Clone(spec.Models), spec.Tier, spec.Site
			t.mu.Unlock()
			continue
		}
		dial := append(grpcsvc.DefaultDialOptions(), grpc.WithReadBufferSize(relayBufferSize), grpc.WithWriteBufferSize(relayBufferSize))
		conn, err := grpc.NewClient(spec.Addr, append(dial, p.cfg.DialOptions...)...)
		if err != nil {
			return fmt.Errorf("target %s (%s): %w", spec.Name, spec.Addr, err)
		}
		ctx, cancel := context.WithCancel(p.ctx)
		t := &target{spec: spec, conn: conn, client: grpcsvc.NewClient(conn), stop: cancel, done: make(chan struct{}), probeNow: make(chan struct{}, 1), models: map[string]*remoteStats{}}
		t.spec.Models = maps.Clone(spec.Models)
		t.link.up.Weight, t.link.down.Weight = 0.3, 0.3
		p.targets[name] = t
		go p.probeLoop(ctx, t)
		p.log.Info("target added", "target", name, "addr", spec.Addr, "tier", spec.Tier, "site", spec.Site)
	}
	return nil
}

// probeLoop measures t's link until ctx ends: the round trip every
// ProbeInterval, bandwidth too every BandwidthEvery probes (and on the
// first), with transfers sized to take probeWindow at the last estimate.
// A bandwidth probe due while requests are in the proxy waits until none
// is.
func (p *Proxy) probeLoop(ctx context.Context, t *target) {
	defer close(t.done)
	tick := time.NewTicker(p.cfg.ProbeInterval)
	defer tick.Stop()
	owed := false
	for i := 0; ; i++ {
		n := 0
		if i%p.cfg.BandwidthEvery == 0 || owed {
			owed = p.busy.Load() > 0
			if !owed {
				n = t.probeBytes()
			}
		}
		pctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
		r, err := linkprobe.Measure(pctx, t.conn, n)
		cancel()
		if ctx.Err() != nil {
			return
		}
		t.mu.Lock()
		was := t.link.failed
		t.link.probed = time.Now()
		if err != nil {
			t.link.failed, t.link.lastErr = true, err.Error()
		} else {
			t.link.failed, t.link.lastErr = false, ""
			t.link.rtt.Add(float64(r.RTT))
			if r.UpBps > 0 {
				t.link.up.Add(r.UpBps)
			}
			if r.DownBps > 0 {
				t.link.down.Add(r.DownBps)
			}
		}
		now := t.link
		t.mu.Unlock()
		p.metrics.link(t.spec.Name, now)
		if err != nil && !was {
			p.log.Warn("link probe failed", "target", t.spec.Name, "err", err)
		} else if err == nil && was {
			p.log.Info("link back", "target", t.spec.Name, "rtt", r.RTT)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.probeNow:
		}
	}
}

func (t *target) probeBytes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	bw := min(t.link.up.Value(), t.link.down.Value())
	if bw <= 0 {
		return defaultProbeBytes
	}
	n := int(bw / 8 * probeWindow.Seconds())
	return min(max(n, minProbeBytes), maxProbeB)
}

func (p *Proxy) discover() {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	ts, err := p.cfg.Discover(ctx)
	if err != nil {
		p.log.Warn("discovery failed; keeping the targets known", "err", err)
		return
	}
	if err := p.setTargets(p.cfg.Targets, ts); err != nil {
		p.log.Warn("discovered target refused", "err", err)
	}
}

func (p *Proxy) discoverLoop() {
	defer p.wg.Done()
	tick := time.NewTicker(p.cfg.DiscoverInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
			p.discover()
		}
	}
}
