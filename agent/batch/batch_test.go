package batch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// recorder is a RunFunc that doubles FP32 inputs and records batch sizes.
type recorder struct {
	mu      sync.Mutex
	batches []int64
	delay   time.Duration
	gate    chan struct{} // if set, each run waits for a token
	runs    atomic.Int64
	noRows  bool // output has no batch dimension
	// poison, if set, is a value the model refuses as invalid input.
	poison *float32
}

func (r *recorder) run(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
	r.runs.Add(1)
	if r.gate != nil {
		<-r.gate
	}
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	r.mu.Lock()
	r.batches = append(r.batches, in[0].Shape[0])
	r.mu.Unlock()
	v := in[0].Float32s()
	for i := range v {
		if r.poison != nil && v[i] == *r.poison {
			return nil, errdefs.Invalid("index out of range")
		}
		v[i] *= 2
	}
	shape := in[0].Shape
	if r.noRows {
		shape = []int64{int64(len(v))}
		if in[0].Shape[0] != 1 {
			shape = []int64{int64(len(v)) * 10} // deliberately not split-able
		}
	}
	return []tensor.Tensor{tensor.FromFloat32("y", shape, v)}, nil
}

func input(rows int, val float32) []tensor.Tensor {
	v := make([]float32, rows*3)
	for i := range v {
		v[i] = val
	}
	return []tensor.Tensor{tensor.FromFloat32("x", []int64{int64(rows), 3}, v)}
}

func TestBatchesAndSplits(t *testing.T) {
	r := &recorder{delay: 5 * time.Millisecond}
	s := New(Config{Name: "m", MaxBatchSize: 8, MaxDelay: 20 * time.Millisecond, QueueSize: 64, Concurrency: 1}, r.run)
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Submit(context.Background(), input(1, float32(i)), nil)
			if err != nil {
				errs <- err
				return
			}
			got := res.Outputs[0]
			if len(got.Shape) != 2 || got.Shape[0] != 1 || got.Shape[1] != 3 {
				errs <- errors.New("bad output shape")
				return
			}
			for _, f := range got.Float32s() {
				if f != float32(2*i) {
					errs <- errors.New("request got another request's rows")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := r.runs.Load(); n >= 16 || n < 2 {
		t.Fatalf("16 requests ran in %d executions; want batching (2..15)", n)
	}
	for _, b := range r.batches {
		if b > 8 {
			t.Fatalf("batch of %d rows exceeds max 8", b)
		}
	}
}

// TestBatchFillsPastQueueSize: a batch being gathered does not count
// against QueueSize, so a queue smaller than the batch still lets it fill.
func TestBatchFillsPastQueueSize(t *testing.T) {
	r := &recorder{}
	s := New(Config{Name: "m", MaxBatchSize: 4, MaxDelay: time.Minute, QueueSize: 1, Concurrency: 1}, r.run)
	defer s.Close()
	errs := make(chan error, 4)
	for i := range 4 {
		go func() { _, err := s.Submit(context.Background(), input(1, 1), nil); errs <- err }()
		// One at a time: each is taken into the batch before the next.
		waitFor(t, 30*time.Second, "the request gathered", func() bool { return s.queued.Load() == 0 && s.QueueLen() >= i+1 || r.runs.Load() > 0 })
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := slices.Clone(r.batches); len(got) != 1 || got[0] != 4 {
		t.Fatalf("batches %v, want one of 4 rows", got)
	}
}

func TestQueueFull(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	s := New(Config{Name: "m", QueueSize: 2, Concurrency: 1}, r.run)
	var once sync.Once
	release := func() { once.Do(func() { close(r.gate) }) }
	defer func() { release(); s.Close() }()
	results := make(chan error, 3)
	submit := func() {
		go func() { _, err := s.Submit(context.Background(), input(1, 1), nil); results <- err }()
	}
	// One running first, then two queued: submitted together, all three
	// could reach the queue before the executor takes one, and the third
	// would rightly be refused.
	submit()
	waitFor(t, 30*time.Second, "the first request to start", func() bool { return r.runs.Load() >= 1 })
	submit()
	submit()
	waitFor(t, 30*time.Second, "two requests queued", func() bool { return s.QueueLen() >= 2 })
	// Bounded, so a scheduler that wrongly queues this request fails the
	// test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.Submit(ctx, input(1, 1), nil)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("full queue: got %v, want ErrResourceExhausted", err)
	}
	release() // every run passes the gate from now on
	for range 3 {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("queued requests not answered within 30s of the gate opening")
		}
	}
}

// waitFor polls cond until it holds, failing the test with what was awaited
// if it does not hold within limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeadlineInQueueNeverRuns(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	s := New(Config{Name: "m", QueueSize: 4, Concurrency: 1}, r.run)
	first := make(chan error, 1)
	go func() { _, err := s.Submit(context.Background(), input(1, 1), nil); first <- err }()
	waitFor(t, 30*time.Second, "the first request to start", func() bool { return r.runs.Load() >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.Submit(ctx, input(1, 1), nil)
	if !errors.Is(err, errdefs.ErrDeadline) {
		t.Fatalf("got %v, want ErrDeadline", err)
	}
	close(r.gate)
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("first request not answered within 30s of the gate opening")
	}
	s.Close()
	if n := r.runs.Load(); n != 1 {
		t.Fatalf("expired request was executed: %d runs", n)
	}
}

// TestExpiredRequestsGiveBackTheirPlace: requests that expire in the
// queue while every executor is busy give their places back at once, so
// live requests are not refused behind them, and none of them runs.
func TestExpiredRequestsGiveBackTheirPlace(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	s := New(Config{Name: "m", QueueSize: 2, Concurrency: 1}, r.run)
	first := make(chan error, 1)
	go func() { _, err := s.Submit(context.Background(), input(1, 1), nil); first <- err }()
	waitFor(t, 30*time.Second, "the first request to start", func() bool { return r.runs.Load() >= 1 })
	// Six times the queue's size expire while the first still runs.
	for i := range 12 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := s.Submit(ctx, input(1, 1), nil)
		cancel()
		if !errors.Is(err, errdefs.ErrDeadline) {
			t.Fatalf("expiring request %d: %v, want ErrDeadline (refused with only expired requests waiting?)", i, err)
		}
	}
	// The executor may hold one, taken off the queue, until a slot frees.
	if n := s.QueueLen(); n > 1 {
		t.Errorf("QueueLen %d with only expired requests waiting, want at most the 1 an executor holds", n)
	}
	// A live request is queued, not refused.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := make(chan error, 1)
	go func() { _, err := s.Submit(ctx, input(1, 2), nil); live <- err }()
	waitFor(t, 30*time.Second, "the live request to queue", func() bool {
		s.queue.mu.Lock()
		defer s.queue.mu.Unlock()
		return len(s.queue.jobs) == 1
	})
	close(r.gate)
	for _, c := range []chan error{first, live} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if n := r.runs.Load(); n != 2 {
		t.Fatalf("%d runs, want 2: expired requests were executed", n)
	}
}

func TestIncompatibleNotMixed(t *testing.T) {
	r := &recorder{delay: 2 * time.Millisecond}
	s := New(Config{Name: "m", MaxBatchSize: 8, MaxDelay: 10 * time.Millisecond, QueueSize: 64, Concurrency: 1}, r.run)
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cols := int64(3 + i%2)
			v := make([]float32, cols)
			in := []tensor.Tensor{tensor.FromFloat32("x", []int64{1, cols}, v)}
			res, err := s.Submit(context.Background(), in, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Outputs[0].Shape[1] != cols {
				t.Errorf("got shape %v for a request of %d columns", res.Outputs[0].Shape, cols)
			}
		}()
	}
	wg.Wait()
}

func TestUnsplittableFallsBack(t *testing.T) {
	r := &recorder{noRows: true, delay: 2 * time.Millisecond}
	s := New(Config{Name: "m", MaxBatchSize: 8, MaxDelay: 10 * time.Millisecond, QueueSize: 64, Concurrency: 1}, r.run)
	defer s.Close()
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Submit(context.Background(), input(1, 1), nil)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Outputs[0].Shape[0] != 3 {
				t.Errorf("fallback output shape %v", res.Outputs[0].Shape)
			}
		}()
	}
	wg.Wait()
}

// TestInvalidRowFailsOnlyItsRequest: when the model refuses a batch as
// invalid input, the batch's requests run alone, so one request's bad
// values fail that request only; other errors name the model.
func TestInvalidRowFailsOnlyItsRequest(t *testing.T) {
	poison := float32(-1)
	r := &recorder{poison: &poison, gate: make(chan struct{})}
	s := New(Config{Name: "m", MaxBatchSize: 8, MaxDelay: 50 * time.Millisecond, QueueSize: 64, Concurrency: 1}, r.run)
	defer s.Close()
	// The first request occupies the executor, so the next six queue and
	// are taken as one batch.
	first := make(chan error, 1)
	go func() {
		_, err := s.Submit(context.Background(), input(1, 0), nil)
		first <- err
	}()
	for r.runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := float32(i)
			if i == 3 {
				val = poison
			}
			_, errs[i] = s.Submit(context.Background(), input(1, val), nil)
		}()
	}
	for s.QueueLen() < len(errs) {
		time.Sleep(time.Millisecond)
	}
	close(r.gate) // every run from now on proceeds
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		switch {
		case i == 3 && (!errors.Is(err, errdefs.ErrInvalid) || err.Error() != "model m: index out of range"):
			t.Errorf("poisoned request: %v, want ErrInvalid %q", err, "model m: index out of range")
		case i != 3 && err != nil:
			t.Errorf("request %d failed with the poisoned one: %v", i, err)
		}
	}
	if got := slices.Max(r.batches); got < 2 {
		t.Fatalf("largest batch %d rows: the requests were never batched, so the test proved nothing", got)
	}
}

func TestClosedRefuses(t *testing.T) {
	r := &recorder{}
	s := New(Config{Name: "m", QueueSize: 1, Concurrency: 2}, r.run)
	s.Close()
	s.Close() // idempotent
	if _, err := s.Submit(context.Background(), input(1, 1), nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

func TestBytesSplit(t *testing.T) {
	echo := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
		out := in[0]
		out.Name = "y"
		time.Sleep(2 * time.Millisecond)
		return []tensor.Tensor{out}, nil
	}
	s := New(Config{Name: "m", MaxBatchSize: 4, MaxDelay: 10 * time.Millisecond, QueueSize: 8, Concurrency: 1}, echo)
	defer s.Close()
	var wg sync.WaitGroup
	for i, words := range [][]string{{"a", ""}, {"hello", "wörld"}, {"x", "yz"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := tensor.FromStrings("x", []int64{1, 2}, words)
			res, err := s.Submit(context.Background(), []tensor.Tensor{in}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if string(res.Outputs[0].Data) != string(in.Data) {
				t.Errorf("request %d: got %q want %q", i, res.Outputs[0].Data, in.Data)
			}
		}()
	}
	wg.Wait()
}

func TestConcurrencyBound(t *testing.T) {
	var running, most atomic.Int64
	run := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
		n := running.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(3 * time.Millisecond)
		running.Add(-1)
		return in, nil
	}
	s := New(Config{Name: "m", QueueSize: 64, Concurrency: 2}, run)
	defer s.Close()
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Submit(context.Background(), input(1, 1), nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m != 2 {
		t.Fatalf("at most %d runs at once, want exactly the 2 executors' worth", m)
	}
	if n := s.QueueLen(); n != 0 {
		t.Fatalf("%d requests still counted as waiting after all were answered", n)
	}
}

// A request that finds others waiting queues behind them rather than take
// a slot that frees first: requests run in the order they arrived.
func TestNoOvertaking(t *testing.T) {
	var mu sync.Mutex
	var order []float32
	gate := make(chan struct{})
	var started atomic.Int64
	run := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
		if started.Add(1) == 1 {
			<-gate
		}
		mu.Lock()
		order = append(order, in[0].Float32s()[0])
		mu.Unlock()
		return in, nil
	}
	s := New(Config{Name: "m", QueueSize: 8, Concurrency: 1}, run)
	defer s.Close()
	done := make(chan error, 4)
	submit := func(v float32) {
		go func() { _, err := s.Submit(context.Background(), input(1, v), nil); done <- err }()
	}
	submit(1)
	waitFor(t, 30*time.Second, "the first request to start", func() bool { return started.Load() == 1 })
	for i, v := range []float32{2, 3, 4} {
		submit(v)
		waitFor(t, 30*time.Second, "the request to be queued", func() bool { return s.QueueLen() == i+1 })
	}
	close(gate)
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if want := []float32{1, 2, 3, 4}; !slices.Equal(order, want) {
		t.Fatalf("ran in order %v, want %v", order, want)
	}
}

func TestDeadlineWhileRunningInline(t *testing.T) {
	run := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
		<-ctx.Done()
		return nil, ctx.Err() // a backend that reports the bare context error
	}
	s := New(Config{Name: "m", QueueSize: 1, Concurrency: 1}, run)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.Submit(ctx, input(1, 1), nil)
	if !errors.Is(err, errdefs.ErrDeadline) {
		t.Fatalf("got %v, want ErrDeadline", err)
	}
}
