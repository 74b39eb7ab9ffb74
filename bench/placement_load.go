package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/sim"
	"github.com/accelpool/accelpool/tensor"
)

// servedNode is one serving node on loopback and a gRPC client to it.
type servedNode struct {
	node   *agent.Node
	client *grpcsvc.Client
}

// startServedNode writes entries as a repository at dir, serves it on
// loopback gRPC and checks that every model loaded.
func startServedNode(ctx context.Context, dir string, entries []repoEntry, b runtime.Backend, log *slog.Logger) (*servedNode, error) {
	if err := writeRepository(dir, entries); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:  agent.Config{Repository: dir, Backend: b, Logger: log, Registry: prometheus.NewRegistry(), ServerName: "accelpool-bench-placement"},
		GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		return nil, err
	}
	s := &servedNode{node: node}
	idx, err := node.Manager.RepositoryIndex(ctx, false)
	if err != nil {
		s.close()
		return nil, err
	}
	for _, e := range idx {
		if e.State != agent.StateReady {
			s.close()
			return nil, fmt.Errorf("served model %s is %s: %s", e.Name, e.State, e.Reason)
		}
	}
	if s.client, err = grpcsvc.Dial(node.GRPCAddr()); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *servedNode) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.node.Close(ctx)
}

// loadTarget is one served model driven at a rate.
type loadTarget struct {
	served string
	rate   float64
	inputs []tensor.Tensor
}

// loadResult is what the open-loop generator measured for one target.
type loadResult struct {
	served string
	// sent and failed count requests sent in the measured window; failed
	// ones (refused, timed out) count as infinitely slow.
	sent, failed int
	meanMs       float64
	p50Ms, p99Ms float64
	// p99LowMs and p99HighMs bound the p99 with 95 % confidence.
	p99LowMs, p99HighMs float64
	// lagP99Ms is the 99th percentile of how late the generator sent a
	// request after its scheduled time (a sign of a saturated client).
	lagP99Ms float64
	// latMs is every successful request's latency, in the order answered.
	latMs []float64
}

// maxInFlight bounds the requests one target has outstanding; beyond it
// the generator counts a request as failed instead of sending it, so an
// overloaded placement cannot exhaust this process.
const maxInFlight = 4096

// openLoop drives every target with Poisson arrivals at its rate for
// warmup+measure, measuring the latency (from send to answer, through
// svc) of the requests scheduled after the warm-up. Each target has its
// own random stream from seed. It waits for every request sent, up to
// drain after the end.
func openLoop(ctx context.Context, svc oip.Service, targets []loadTarget, warmup, measure, drain time.Duration, seed uint64) []loadResult {
	start := time.Now().Add(50 * time.Millisecond)
	from, end := start.Add(warmup), start.Add(warmup+measure)
	reqCtx, cancel := context.WithDeadline(ctx, end.Add(drain))
	defer cancel()
	out := make([]loadResult, len(targets))
	var all sync.WaitGroup
	for i := range targets {
		all.Add(1)
		go func() {
			defer all.Done()
			t := &targets[i]
			res := &out[i]
			res.served = t.served
			if t.rate <= 0 {
				return
			}
			r := rand.New(rand.NewPCG(seed, uint64(i)+1))
			var mu sync.Mutex
			var lat, lag []float64
			var inflight sync.WaitGroup
			var n int
			var count sync.Mutex
			next := start
			for {
				next = next.Add(time.Duration(r.ExpFloat64() / t.rate * float64(time.Second)))
				if !next.Before(end) || ctx.Err() != nil {
					break
				}
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				measured := !next.Before(from)
				count.Lock()
				busy := n >= maxInFlight
				if !busy {
					n++
				}
				count.Unlock()
				if busy {
					if measured {
						mu.Lock()
						res.sent++
						res.failed++
						mu.Unlock()
					}
					continue
				}
				inflight.Add(1)
				go func(sched time.Time) {
					defer inflight.Done()
					req := &oip.InferRequest{ModelName: t.served, Inputs: make([]oip.InferInput, len(t.inputs))}
					for k, in := range t.inputs {
						req.Inputs[k] = oip.InferInput{Tensor: in}
					}
					sent := time.Now()
					_, err := svc.Infer(reqCtx, req)
					d := time.Since(sent)
					count.Lock()
					n--
					count.Unlock()
					if !measured {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					res.sent++
					lag = append(lag, float64(sent.Sub(sched))/1e6)
					if err != nil {
						res.failed++
						return
					}
					lat = append(lat, float64(d)/1e6)
				}(next)
			}
			inflight.Wait()
			mu.Lock()
			defer mu.Unlock()
			res.summarise(lat, lag)
		}()
	}
	all.Wait()
	return out
}

// summarise fills the statistics; failed requests rank above every
// latency (a p99 with more than 1 % failures is +Inf).
func (r *loadResult) summarise(lat, lag []float64) {
	r.latMs = lat
	if len(lat) > 0 {
		sum := 0.0
		for _, x := range lat {
			sum += x
		}
		r.meanMs = sum / float64(len(lat))
	}
	all := slices.Clone(lat)
	for range r.failed {
		all = append(all, math.Inf(1))
	}
	slices.Sort(all)
	r.p50Ms = rankOf(all, 50)
	r.p99Ms = rankOf(all, 99)
	if _, lo, hi := sim.QuantileRanks(len(all), 99); lo > 0 {
		r.p99LowMs, r.p99HighMs = all[lo-1], all[hi-1]
	}
	slices.Sort(lag)
	r.lagP99Ms = rankOf(lag, 99)
}

// rankOf is the nearest-rank percentile p of sorted v, 0 when empty.
func rankOf(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	k := int(math.Ceil(p / 100 * float64(len(v))))
	return v[min(max(k, 1), len(v))-1]
}

// syntheticInputs loads a model once to read its inputs and builds them
// from the synthetic image; desc says what they are.
func syntheticInputs(ctx context.Context, b runtime.Backend, path, model string, threads int) ([]tensor.Tensor, string, error) {
	sess, err := b.Load(ctx, path, runtime.Options{IntraOpThreads: threads})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", model, err)
	}
	defer sess.Close()
	return buildInputs(model, sess.Metadata(), SyntheticImage(), "synthetic image")
}

// servedAlone warms call up, then times sequential calls — enough for
// about 1.5 s of a model of serviceMs, 50 to 300 — and returns a call's
// latency and this process's CPU time per call (ms; cpuOK false where
// the platform cannot say).
func servedAlone(ctx context.Context, call callFunc, serviceMs float64) (latencyMs, cpuMs float64, cpuOK bool, err error) {
	if err := warm(ctx, call); err != nil {
		return 0, 0, false, err
	}
	n := max(50, min(300, int(1500/max(serviceMs, 0.1))))
	cpu0, cpuOK := processCPU()
	start := time.Now()
	for range n {
		if err := call(ctx); err != nil {
			return 0, 0, false, err
		}
	}
	latencyMs = float64(time.Since(start)) / 1e6 / float64(n)
	cpu1, _ := processCPU()
	if cpuOK {
		cpuMs = float64(cpu1-cpu0) / 1e6 / float64(n)
	}
	return latencyMs, cpuMs, cpuOK, nil
}

// servedAtRate serves one target alone, open-loop at its rate. scale is
// how much more CPU this process spent per request than the mean latency
// (client, server and collector count too), at least 1: splitAlone
// stretches the latencies by it. A failed request is an error: the
// profile would leave it out.
func servedAtRate(ctx context.Context, svc oip.Service, t loadTarget, warmup, measure time.Duration, seed uint64) (res loadResult, scale float64, err error) {
	cpuA, cpuOK := processCPU()
	res = openLoop(ctx, svc, []loadTarget{t}, warmup, measure, 30*time.Second, seed)[0]
	if err := ctx.Err(); err != nil {
		return res, 0, err
	}
	cpuB, _ := processCPU()
	if len(res.latMs) == 0 || res.failed > 0 {
		return res, 0, fmt.Errorf("%s alone at %.1f req/s: %d of %d requests failed", t.served, t.rate, res.failed, res.sent)
	}
	scale = 1.0
	if cpuOK && res.meanMs > 0 {
		// The CPU covers the warm-up's requests too: about
		// sent·(warm-up+measure)/measure in all.
		all := float64(res.sent) * float64(warmup+measure) / float64(measure)
		scale = max(1, float64(cpuB-cpuA)/1e6/all/res.meanMs)
	}
	return res, scale, nil
}

// splitAlone splits each latency of a model served alone, stretched by
// scale, into what the cores did — at most cpuMs, the CPU one request
// costs served (servedAlone) — and the rest (waiting for the transport,
// for an idle core to wake), which co-located work does not stretch.
func splitAlone(latMs []float64, scale, cpuMs float64) (work, delay []float64) {
	work, delay = make([]float64, len(latMs)), make([]float64, len(latMs))
	for k, x := range latMs {
		x *= scale
		work[k] = min(x, cpuMs)
		delay[k] = x - work[k]
	}
	return work, delay
}
