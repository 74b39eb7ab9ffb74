package proxy

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/internal/zrun"
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
	// flights are the requests in flight to the target that came with a
	// prediction: when each started and what was predicted.
	flights    map[uint64]flight
	nextFlight uint64
	// noCompress is set once the target refused a compressed request
	// (compressionRefused): it has no zero-run decompressor, and is
	// offered plain only for as long as it is known.
	noCompress bool

	// refreshAfter is Config.RefreshAfter; now, when set, replaces
	// time.Now for it (tests).
	refreshAfter time.Duration
	now          func() time.Time
}

func (t *target) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

type flight struct {
	start     time.Time
	predicted time.Duration
}

// beginFlight records a request sent now with its predicted latency (none
// when predicted is 0) and returns what endFlight takes.
func (t *target) beginFlight(predicted time.Duration) uint64 {
	if predicted <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flights == nil {
		t.flights = map[uint64]flight{}
	}
	t.nextFlight++
	t.flights[t.nextFlight] = flight{start: time.Now(), predicted: predicted}
	return t.nextFlight
}

func (t *target) endFlight(id uint64) {
	if id == 0 {
		return
	}
	t.mu.Lock()
	delete(t.flights, id)
	t.mu.Unlock()
}

// overdue is how far the request in flight longest past its prediction
// has overrun it, beyond the scatter an answer may have (as learn's
// outliers: twice the prediction and 5 ms); 0 if none has. t.mu held.
func (t *target) overdue(now time.Time) time.Duration {
	var d time.Duration
	for _, f := range t.flights {
		d = max(d, now.Sub(f.start)-2*f.predicted-overdueSlack)
	}
	return d
}

// overdueSlack is the least overrun of a request in flight that counts.
const overdueSlack = 5 * time.Millisecond

// link is what the probes found.
type link struct {
	rtt minWindow // nanoseconds
	// up and down are bits per second, the median of the last
	// offload.RecentWindow bandwidth samples (see bandwidthSample): one
	// stalled or overshooting probe does not move them, a change of the
	// link shows once three probes agree.
	up, down offload.Recent
	// short is true when the last bandwidth probe was too short to time
	// and smaller than the largest: the next one is the largest.
	short bool
	// overlapped counts bandwidth probes discarded because a request
	// overlapped them.
	overlapped int
	failed     bool // the last probe failed
	lastErr    string
	probed     time.Time
}

// minProbeTransfer is the shortest bandwidth-probe transfer (its echo's
// time less the round trip) taken at face value. A device with a fraction
// of a core stalls for milliseconds at a time (at a tenth of a core, up
// to 9 ms of each 10 ms CFS period), and the round trip it subtracts is
// itself measured through those stalls, so a shorter transfer can read as
// anything from a third to ten times the link's bandwidth.
const minProbeTransfer = 5 * time.Millisecond

// fastLinkBps is what a largest probe too short to time records: the
// bandwidth at which maxProbeB takes minProbeTransfer (419 Mbit/s). It
// says "at least this"; every such probe records the same value, so
// scatter below what a probe can resolve does not read as a change of the
// link.
const fastLinkBps = float64(maxProbeB) * 8 * float64(time.Second) / float64(minProbeTransfer)

// bandwidthSample is what a probe that moved n bytes in one direction at
// bps (0: too quick to time at all) adds to that direction's estimate: bps
// when the transfer took at least minProbeTransfer; fastLinkBps when it
// was shorter and n is the largest probe; nothing (ok false) when it was
// shorter and smaller (the next probe is then the largest).
func bandwidthSample(n int, bps float64) (sample float64, ok bool) {
	if bps > 0 && float64(n)*8/bps >= minProbeTransfer.Seconds() {
		return bps, true
	}
	if n >= maxProbeB {
		return fastLinkBps, true
	}
	return 0, false
}

// remoteStats is what is known about one model on one target.
type remoteStats struct {
	// server is a median: the far end's time jitters with its load, and a
	// mean follows every slow answer.
	server   offload.Recent // reported server time, ns; serverWindow samples
	transfer offload.Mean   // measured latency less rtt and server time, ns
	inBytes  offload.Mean
	outBytes offload.Mean
	bwRef    offload.Mean // the probed bandwidth when transfer was learned
	outliers int          // answers in a row much slower than predicted
	// shrink is the zero-run compressed size of a plain answer over its
	// size, sampled every shrinkEvery answers (see learnAnswer); 0 before
	// any sample.
	shrink  float64
	answers int
	// overhead is the device's own time around the attempts that
	// answered first (overhead.go), ns, median of recent.
	overhead offload.Recent
	// last is when the option last answered or was handed out to be
	// refreshed; refreshing is set from that hand-out until the next
	// answer, which then restarts the estimates (see refreshDue).
	last       time.Time
	refreshing bool
}

func newRemoteStats() *remoteStats {
	return &remoteStats{server: offload.Recent{Window: serverWindow}}
}

// refreshDue reports, at now, whether the option should be explored again
// to refresh it: it has not answered for refreshAfter (> 0). The first
// caller to see it due is told so, and the next refreshAfter counts from
// then, so one request per period explores, not every request at once.
func (ms *remoteStats) refreshDue(now time.Time, refreshAfter time.Duration) bool {
	if refreshAfter <= 0 || ms.last.IsZero() || now.Sub(ms.last) < refreshAfter {
		return false
	}
	ms.last, ms.refreshing = now, true
	return true
}

// serverWindow is how many answers the far end's time is the median of:
// it varies by tens of percent from one request to the next on a shared
// machine, and the median of more samples is a steadier prediction, while
// a lasting change (a neighbour's load) still shows within five answers.
const serverWindow = 9

// rttWindow is how many recent probes the round trip is the minimum of.
const rttWindow = 3

// minWindow is the minimum of the last rttWindow samples. Delays on the
// path (a throttled device's own stalls, queues) only ever add to a round
// trip, so the recent minimum is the steadiest estimate of the path; a
// lasting fall shows at once. A lasting rise shows after two samples in a
// row above twice the minimum and shiftSlack: the window then restarts
// from them (a stall seldom spans two probes, and a false restart is
// undone by the next normal sample).
type minWindow struct {
	v    [rttWindow]float64
	n    int
	high int // samples in a row above the rise threshold
}

// shiftSlack is the least rise of a round trip (ns) that can restart a
// minWindow: more than a throttled device stalls a probe (a tenth of a
// core waits up to 9 ms of every 10 ms period, sometimes two periods).
const shiftSlack = float64(20 * time.Millisecond)

// Add records x.
func (w *minWindow) Add(x float64) {
	if w.n > 0 && x > 2*w.Value()+shiftSlack {
		w.high++
	} else {
		w.high = 0
	}
	if w.high >= 2 {
		prev := w.v[(w.n-1)%rttWindow]
		w.v[0], w.v[1], w.n, w.high = prev, x, 2, 0
		return
	}
	w.v[w.n%rttWindow] = x
	w.n++
}

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

// servedName is the name t serves model under; renamed is false when it
// serves every model under the name asked for.
func (t *target) servedName(model string) (name string, renamed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.spec.serves(model)
	return s, t.spec.Models != nil
}

// statsKey is what a target's per-model statistics are kept under: the
// model, and whether its requests cross the link compressed (the two ways
// have their own transfer times).
func statsKey(model string, compressed bool) string {
	if compressed {
		return model + CompressedSuffix
	}
	return model
}

// Compression is offered for a model on a target only when its answers
// shrink below worthShrink of their size: a dense answer (probabilities,
// embeddings) gains nothing and costs a slow device a copy. A plain answer
// is measured for it every shrinkEvery answers (the first included).
const (
	worthShrink = 0.8
	shrinkEvery = 64
)

// setShrink records a sampled compressibility of model's plain answers.
func (t *target) setShrink(model string, ratio float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ms := t.models[model]; ms != nil {
		ms.shrink = ratio
	}
}

// refuseCompression records that t refused a compressed request; it
// reports whether that was news.
func (t *target) refuseCompression() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.noCompress
	t.noCompress = true
	return !was
}

// takesCompression reports whether t may be sent compressed requests: it
// has not refused one.
func (t *target) takesCompression() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.noCompress
}

// compressible reports whether model's answers from t are known to shrink
// enough to be worth compressing.
func (t *target) compressible(model string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := t.models[model]
	return ms != nil && ms.shrink > 0 && ms.shrink < worthShrink
}

// shrinkOf is the zero-run compressed size of the bytes in bufs over
// their size (1 for nothing).
func shrinkOf(bufs ...[]byte) float64 {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	if n == 0 {
		return 1
	}
	return float64(zrun.Size(bufs...)) / float64(n)
}

// CompressedSuffix marks the statistics of a model's compressed requests
// to a target: TargetStatus.Models holds them under the model's name and
// this suffix, beside the plain ones under the name alone.
const CompressedSuffix = "+zrun"

// option is t as an option for a request of in bytes for model, sent
// compressed or not.
func (t *target) option(model string, in int64, compressed bool) offload.Option {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := offload.Option{Name: t.spec.Name, Compressed: compressed, Tier: t.spec.Tier, Site: t.spec.Site, InFlight: int(t.inflight.Load()),
		RTT: t.link.rtt.Duration(), UpBps: t.link.up.Value(), DownBps: t.link.down.Value(), LinkUnavailable: t.link.failed,
		Overdue: t.overdue(time.Now())}
	if ms := t.models[statsKey(model, compressed)]; ms != nil && ms.transfer.N() > 0 && !ms.refreshDue(t.clock(), t.refreshAfter) {
		o.Measured = true
		o.Server = ms.server.Duration()
		o.OutBytes = int64(ms.outBytes.Value())
		o.Learned = ms.learnedTransfer(in, bandwidth(t.link))
		o.Residual = ms.overhead.Duration()
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
// slow device scatter). bw is a median of recent probes, so a change must
// be seen by three of the last five before it rescales anything.
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
//
// sample is true when this answer is one to measure for compressibility
// (setShrink): the first, then every shrinkEvery'th.
func (t *target) learn(model string, server time.Duration, in, out int64, took, predicted time.Duration) (sample bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := t.models[model]
	if ms == nil {
		ms = newRemoteStats()
		t.models[model] = ms
	}
	sample = ms.answers%shrinkEvery == 0
	if predicted > 0 && took > 2*predicted+5*time.Millisecond && ms.outliers < 2 {
		ms.outliers++
		select {
		case t.probeNow <- struct{}{}:
		default:
		}
		return sample
	}
	ms.outliers = 0
	ms.answers++
	ms.last = t.clock()
	if ms.refreshing {
		// What was known is as old as the refresh period: start over
		// from this answer, keeping only the counts and the sampled
		// compressibility (a property of the model's answers).
		fresh := newRemoteStats()
		fresh.answers, fresh.shrink, fresh.last = ms.answers, ms.shrink, ms.last
		*ms = *fresh
	}
	ms.server.Add(float64(server))
	ms.outBytes.Add(float64(out))
	ms.inBytes.Add(float64(in))
	ms.transfer.Add(float64(max(took-server-t.link.rtt.Duration(), 0)))
	if bw := bandwidth(t.link); bw > 0 {
		ms.bwRef.Add(bw)
	}
	return sample
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
		if t.Addr == "" {
			continue
		}
		// A node may be called what the device calls itself (`accelpool
		// up` names its agent "local") or like a fixed target: it is then
		// known by its name and address.
		if _, clash := want[t.Name]; clash || t.Name == LocalName {
			t.Name += "@" + t.Addr
		}
		if _, clash := want[t.Name]; !clash {
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
		t := &target{spec: spec, conn: conn, client: grpcsvc.NewClient(conn), stop: cancel, done: make(chan struct{}), probeNow: make(chan struct{}, 1), models: map[string]*remoteStats{},
			refreshAfter: p.cfg.RefreshAfter}
		t.spec.Models = maps.Clone(spec.Models)
		p.targets[name] = t
		go p.probeLoop(ctx, t)
		p.log.Info("target added", "target", name, "addr", spec.Addr, "tier", spec.Tier, "site", spec.Site)
	}
	return nil
}

// bandwidthSchedule says at which of a link's probes (ticks, counted from
// 0) its bandwidth is measured too: the first, then one each `every`
// ticks (Config.BandwidthEvery). A bandwidth probe discarded because a
// request overlapped it is owed, and tried again after 1, 2, 4, ... ticks
// (at most every) as discards follow each other: under steady traffic,
// retrying at every tick would send a probe's worth of bytes each
// ProbeInterval only to throw it away. A probe kept (or failed) resets
// that. A due probe waits while requests are in the proxy.
type bandwidthSchedule struct {
	every    int
	next     int // the tick at which the next bandwidth probe is due
	discards int // bandwidth probes discarded in a row
}

// due reports whether a bandwidth probe is to be sent at tick i; busy
// is true when requests are in the proxy.
func (s *bandwidthSchedule) due(i int, busy bool) bool { return i >= s.next && !busy }

// sent records a bandwidth probe sent at tick i, discarded or not.
func (s *bandwidthSchedule) sent(i int, discarded bool) {
	if !discarded {
		s.discards = 0
		s.next = i + s.every
		return
	}
	s.discards++
	s.next = i + probeBackoff(s.discards, s.every)
}

// probeBackoff is how many ticks after its discards'th discard in a row
// (from 1) an owed bandwidth probe is tried again: 1, 2, 4, ... ticks,
// at most every.
func probeBackoff(discards, every int) int {
	d := 1
	for k := 1; k < discards && d < every; k++ {
		d *= 2
	}
	return max(min(d, every), 1)
}

// probeLoop measures t's link until ctx ends: the round trip every
// ProbeInterval, bandwidth too as bandwidthSchedule says (every
// BandwidthEvery probes, from the first), with transfers sized to take
// probeWindow at the last estimate.
func (p *Proxy) probeLoop(ctx context.Context, t *target) {
	defer close(t.done)
	tick := time.NewTicker(p.cfg.ProbeInterval)
	defer tick.Stop()
	bw := bandwidthSchedule{every: p.cfg.BandwidthEvery}
	for i := 0; ; i++ {
		n := 0
		if bw.due(i, p.busy.Load() > 0) {
			n = t.probeBytes()
		}
		arrived := p.arrived.Load()
		pctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
		r, err := linkprobe.Measure(pctx, t.conn, n)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if n > 0 {
			// A request that overlapped the transfers shared the link and,
			// on a slow device, its CPU with them (a local inference stalls
			// them for hundreds of ms). Such a reading once made the proxy
			// predict a link several times slower than it was and keep
			// requests on the device, whose work then spoiled the next
			// probes too.
			overlapped := err == nil && (p.busy.Load() > 0 || p.arrived.Load() != arrived)
			bw.sent(i, overlapped)
			if overlapped {
				n = 0
				t.mu.Lock()
				t.link.overlapped++
				t.mu.Unlock()
			}
		}
		t.mu.Lock()
		was := t.link.failed
		t.link.probed = time.Now()
		if err != nil {
			t.link.failed, t.link.lastErr = true, err.Error()
		} else {
			t.link.failed, t.link.lastErr = false, ""
			t.link.rtt.Add(float64(r.RTT))
			if n > 0 {
				up, okUp := bandwidthSample(n, r.UpBps)
				down, okDown := bandwidthSample(n, r.DownBps)
				if okUp {
					t.link.up.Add(up)
				}
				if okDown {
					t.link.down.Add(down)
				}
				t.link.short = !okUp || !okDown
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

// probeBytes is the size of the next bandwidth probe: sized to take
// probeWindow at the estimate, the largest after one too short to time.
func (t *target) probeBytes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.link.short {
		return maxProbeB
	}
	bw := bandwidth(t.link)
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
