// Package profile measures a model on this machine's runtime: load time,
// memory taken once loaded, service time by batch size (mean, p99, and
// its variability) and latency under n concurrent requests. Its output,
// cluster.ModelProfile, feeds the scheduler's latency models.
package profile

import (
	"context"
	"fmt"
	"math"
	"os"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Options say what to measure.
type Options struct {
	// BatchSizes to time (default 1; sizes above 1 only for models whose
	// first input dimension is dynamic).
	BatchSizes []int
	// Concurrency levels to time with batch-1 requests (default 1, 2, 4).
	Concurrency []int
	// Iterations per measurement after Warmup runs (defaults 30 and 3).
	Iterations int
	Warmup     int
	// Shapes fixes input shapes (by input name, batch dimension included
	// as 1); other dynamic dimensions default to DynamicDim (224).
	Shapes     map[string][]int64
	DynamicDim int64
	// AcceleratorKind labels the profile ("cpu" by default).
	AcceleratorKind string
	Runtime         runtime.Options
}

func (o *Options) defaults() {
	if len(o.BatchSizes) == 0 {
		o.BatchSizes = []int{1}
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 2, 4}
	}
	if o.Iterations <= 0 {
		o.Iterations = 30
	}
	if o.Warmup <= 0 {
		o.Warmup = 3
	}
	if o.DynamicDim <= 0 {
		o.DynamicDim = 224
	}
	if o.AcceleratorKind == "" {
		o.AcceleratorKind = "cpu"
	}
}

// rss is the resident set size of this process in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// Inputs builds deterministic inputs for a batch from the model's metadata.
func Inputs(meta runtime.Metadata, batch int, shapes map[string][]int64, dyn int64) ([]tensor.Tensor, error) {
	var out []tensor.Tensor
	for _, in := range meta.Inputs {
		shape := append([]int64(nil), in.Shape...)
		if s, ok := shapes[in.Name]; ok {
			if len(s) != len(shape) {
				return nil, errdefs.Invalid(fmt.Sprintf("shape for input %s has rank %d, the model's has %d", in.Name, len(s), len(shape)))
			}
			shape = append([]int64(nil), s...)
		}
		for i, d := range shape {
			if d < 0 {
				shape[i] = dyn
				if i == 0 {
					shape[i] = 1
				}
			}
		}
		if len(shape) > 0 && batch > 1 {
			if in.Shape[0] != -1 {
				return nil, errdefs.Invalid(fmt.Sprintf("input %s has a fixed first dimension %d: batch %d is impossible", in.Name, in.Shape[0], batch))
			}
			shape[0] = int64(batch)
		}
		n, err := tensor.NumElements(shape)
		if err != nil {
			return nil, err
		}
		if in.DataType == tensor.Bytes {
			s := make([]string, n)
			for i := range s {
				s[i] = "profile"
			}
			out = append(out, tensor.FromStrings(in.Name, shape, s))
			continue
		}
		data := make([]byte, n*int64(in.DataType.Size()))
		if in.DataType == tensor.FP32 {
			t := tensor.FromFloat32(in.Name, shape, gradient(int(n)))
			out = append(out, t)
			continue
		}
		out = append(out, tensor.Tensor{Name: in.Name, DataType: in.DataType, Shape: shape, Data: data})
	}
	return out, nil
}

func gradient(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%255) / 255
	}
	return v
}

func stats(d []time.Duration) (mean, p99, cv float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	ms := make([]float64, len(d))
	sum := 0.0
	for i, x := range d {
		ms[i] = float64(x) / 1e6
		sum += ms[i]
	}
	mean = sum / float64(len(ms))
	var sq float64
	for _, x := range ms {
		sq += (x - mean) * (x - mean)
	}
	sort.Float64s(ms)
	p99 = ms[min(len(ms)-1, int(math.Ceil(0.99*float64(len(ms))))-1)]
	if mean > 0 {
		cv = math.Sqrt(sq/float64(len(ms))) / mean
	}
	return mean, p99, cv
}

// Run profiles the model file at path on b. Progress lines go to progress
// (may be nil).
func Run(ctx context.Context, b runtime.Backend, path, name string, o Options, progress func(string)) (cluster.ModelProfile, error) {
	o.defaults()
	say := func(f string, a ...any) {
		if progress != nil {
			progress(fmt.Sprintf(f, a...))
		}
	}
	p := cluster.ModelProfile{Model: name, AcceleratorKind: o.AcceleratorKind, ServiceMs: map[int]float64{},
		ServiceP99Ms: map[int]float64{}, ConcurrentMs: map[int]float64{}, InputShapes: map[string][]int64{},
		Host: fmt.Sprintf("%s/%s, %d CPUs", goruntime.GOOS, goruntime.GOARCH, goruntime.NumCPU()), Measured: time.Now().UTC()}
	goruntime.GC() // settle the heap so the resident-set delta measures the model
	before := rss()
	start := time.Now()
	sess, err := b.Load(ctx, path, o.Runtime)
	if err != nil {
		return p, err
	}
	defer sess.Close()
	p.LoadMs = float64(time.Since(start)) / 1e6
	meta := sess.Metadata()
	one, err := Inputs(meta, 1, o.Shapes, o.DynamicDim)
	if err != nil {
		return p, err
	}
	for _, t := range one {
		p.InputShapes[t.Name] = t.Shape
	}
	if _, err := sess.Run(ctx, one, nil); err != nil {
		return p, fmt.Errorf("first run: %w", err)
	}
	p.MemoryBytes = max(rss()-before, 0)
	say("loaded in %.1f ms, %.1f MiB resident", p.LoadMs, float64(p.MemoryBytes)/(1<<20))

	time1 := func(inputs []tensor.Tensor) ([]time.Duration, error) {
		for range o.Warmup {
			if _, err := sess.Run(ctx, inputs, nil); err != nil {
				return nil, err
			}
		}
		d := make([]time.Duration, 0, o.Iterations)
		for range o.Iterations {
			t0 := time.Now()
			if _, err := sess.Run(ctx, inputs, nil); err != nil {
				return nil, err
			}
			d = append(d, time.Since(t0))
		}
		return d, ctx.Err()
	}
	for _, bs := range o.BatchSizes {
		inputs, err := Inputs(meta, bs, o.Shapes, o.DynamicDim)
		if err != nil {
			say("batch %d skipped: %v", bs, err)
			continue
		}
		d, err := time1(inputs)
		if err != nil {
			return p, fmt.Errorf("batch %d: %w", bs, err)
		}
		mean, p99, cv := stats(d)
		p.ServiceMs[bs], p.ServiceP99Ms[bs] = mean, p99
		if bs == 1 {
			p.ServiceCV = cv
		}
		say("batch %-3d mean %.2f ms  p99 %.2f ms  cv %.2f", bs, mean, p99, cv)
	}
	for _, n := range o.Concurrency {
		var mu sync.Mutex
		var all []time.Duration
		var wg sync.WaitGroup
		errc := make(chan error, n)
		per := max(o.Iterations/n, 5)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var local []time.Duration
				for range per {
					t0 := time.Now()
					if _, err := sess.Run(ctx, one, nil); err != nil {
						errc <- err
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				all = append(all, local...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return p, fmt.Errorf("concurrency %d: %w", n, err)
		}
		mean, _, _ := stats(all)
		p.ConcurrentMs[n] = mean
		say("%d concurrent: mean %.2f ms (%.2fx alone)", n, mean, mean/max(p.ServiceMs[1], 1e-9))
	}
	return p, nil
}
