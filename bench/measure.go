package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// callFunc issues one request and waits for its answer.
type callFunc func(ctx context.Context) error

// seqResult is one round of sequential requests at concurrency 1.
type seqResult struct {
	P50, P99   time.Duration
	Mean       time.Duration
	Throughput float64 // requests per second
	Requests   int
	// Compute is the mean time the model's runs took per request, as the
	// serving node measured them (its compute histogram); in process it
	// is Mean. 0 if unknown.
	Compute   time.Duration
	CPUPerReq time.Duration // process CPU time per request; 0 if unknown
	// ClientCPUPerReq is the load generator's CPU time per request when it
	// runs in a process of its own (CPUPerReq is then the server's); 0
	// otherwise.
	ClientCPUPerReq time.Duration
}

// minSequential is the fewest requests a duration-bounded sequential round
// makes, so that a slow model still yields a percentile.
const minSequential = 5

// measureSequential calls call back to back, one at a time: n requests when
// n > 0, otherwise for d (and at least minSequential requests).
func measureSequential(ctx context.Context, call callFunc, d time.Duration, n int) (seqResult, error) {
	lat := make([]time.Duration, 0, 256)
	cpu0, cpuOK := processCPU()
	start := time.Now()
	for {
		if n > 0 && len(lat) >= n {
			break
		}
		if n <= 0 && len(lat) >= minSequential && time.Since(start) >= d {
			break
		}
		if err := ctx.Err(); err != nil {
			return seqResult{}, err
		}
		t := time.Now()
		if err := call(ctx); err != nil {
			return seqResult{}, err
		}
		lat = append(lat, time.Since(t))
	}
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	r := seqResult{Requests: len(lat), Throughput: float64(len(lat)) / elapsed.Seconds()}
	if cpuOK {
		r.CPUPerReq = (cpu1 - cpu0) / time.Duration(len(lat))
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	r.Mean = sum / time.Duration(len(lat))
	r.P99 = percentile(lat, 99)
	r.P50 = percentile(lat, 50)
	return r, nil
}

// satResult is one saturation window.
type satResult struct {
	Throughput float64 // requests per second inside the window
	Requests   float64 // requests credited to the window (see credit)
	CPUPerReq  time.Duration
	// ClientCPUPerReq is as in seqResult.
	ClientCPUPerReq time.Duration
}

// window brackets the measured part of a saturation run: start is called
// when counting begins and end when it stops (either may be nil).
type window struct {
	start, end func()
}

// span is one request's lifetime.
type span struct{ start, end time.Time }

// credit is the work done inside [t0, t1] by requests with these lifetimes:
// each request counts for the fraction of its lifetime inside the window.
// Unlike counting completions it has no ±1 edge error, which matters for a
// slow model that completes only a few dozen requests in a window; in a
// steady state its expectation is the throughput times the window.
func credit(spans []span, t0, t1 time.Time) float64 {
	var c float64
	for _, s := range spans {
		life := s.end.Sub(s.start)
		if life <= 0 || !s.end.After(t0) || !s.start.Before(t1) {
			continue
		}
		lo, hi := s.start, s.end
		if lo.Before(t0) {
			lo = t0
		}
		if hi.After(t1) {
			hi = t1
		}
		c += float64(hi.Sub(lo)) / float64(life)
	}
	return c
}

// measureSaturation runs workers goroutines, each calling its own callFunc
// from newCall back to back. After ramp (to reach a steady state: queues
// filled, connections open) it measures the throughput during d. Workers
// then finish the request they are in and stop; an error from any of them
// stops all and is returned.
func measureSaturation(ctx context.Context, newCall func() callFunc, workers int, ramp, d time.Duration, w window) (satResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		stop    atomic.Bool
		errOnce sync.Once
		werr    error
		wg      sync.WaitGroup
	)
	spans := make([][]span, workers)
	for i := range workers {
		call := newCall()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				t := time.Now()
				if err := call(ctx); err != nil {
					if ctx.Err() == nil {
						errOnce.Do(func() { werr = err })
					}
					stop.Store(true)
					cancel()
					return
				}
				spans[i] = append(spans[i], span{t, time.Now()})
			}
		}()
	}
	sleep := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	sleep(ramp)
	if w.start != nil {
		w.start()
	}
	t0 := time.Now()
	cpu0, cpuOK := processCPU()
	sleep(d)
	t1 := time.Now()
	cpu1, _ := processCPU()
	if w.end != nil {
		w.end()
	}
	stop.Store(true)
	wg.Wait()
	if werr != nil {
		return satResult{}, werr
	}
	if err := ctx.Err(); err != nil {
		return satResult{}, err
	}
	var r satResult
	for _, s := range spans {
		r.Requests += credit(s, t0, t1)
	}
	if r.Requests == 0 {
		return r, fmt.Errorf("no request made progress in %v with %d workers: lengthen --duration", d, workers)
	}
	r.Throughput = r.Requests / t1.Sub(t0).Seconds()
	if cpuOK {
		r.CPUPerReq = time.Duration(float64(cpu1-cpu0) / r.Requests)
	}
	return r, nil
}

// rampFor is the warm-up before a saturation window: a fifth of it, kept
// between 200 ms and 1 s.
func rampFor(d time.Duration) time.Duration {
	return min(max(d/5, 200*time.Millisecond), time.Second)
}
