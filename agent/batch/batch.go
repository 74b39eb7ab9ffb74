// Package batch is the per-model request scheduler: a bounded queue, a pool
// of executors, and dynamic batching. Compatible requests (same inputs, same
// datatypes, same shapes apart from the first dimension) are stacked along
// the first dimension up to a maximum batch size or until the oldest has
// waited the maximum queue delay, executed once, and split back. A request
// whose deadline passes while it waits is dropped, never executed.
//
// A request that would not be batched and finds nothing waiting and an
// executor free runs at once on the caller's goroutine: no hand-off to an
// executor and back, which costs a wake-up of another thread each way.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// RunFunc executes a model once.
type RunFunc func(ctx context.Context, inputs []tensor.Tensor, outputs []string) ([]tensor.Tensor, error)

// Config shapes a Scheduler.
type Config struct {
	// Name is used in error messages (the model name).
	Name string
	// MaxBatchSize is the most rows one execution may hold; ≤ 1 disables
	// batching.
	MaxBatchSize int
	// MaxDelay is how long the first request of a batch waits for more.
	MaxDelay time.Duration
	// QueueSize bounds the requests waiting to run (≥ 1); a batch an
	// executor is gathering does not count, so batches fill whatever the
	// queue's size.
	QueueSize int
	// Concurrency is the number of executors (≥ 1).
	Concurrency int
	// OnBatch, if set, is called after every execution with the rows and
	// requests it held and how long it took.
	OnBatch func(rows, requests int, compute time.Duration)
}

// Result is what a request gets back.
type Result struct {
	Outputs []tensor.Tensor
	// QueueTime is from Submit to the start of the execution that ran it;
	// ComputeTime is that execution's duration; BatchSize its row count.
	QueueTime   time.Duration
	ComputeTime time.Duration
	BatchSize   int
}

type job struct {
	ctx      context.Context
	inputs   []tensor.Tensor
	outputs  []string
	rows     int64 // first dimension, or -1 when the job cannot be batched
	enqueued time.Time
	done     chan jobResult // buffered: the executor never blocks on it
	// queued: the job counts against QueueSize (until it runs, joins a
	// batch being gathered, or is dropped). Set before the job is sent
	// on the queue; then only the executor holding it touches it.
	queued bool
}

type jobResult struct {
	res Result
	err error
}

// Scheduler queues and executes requests for one model.
type Scheduler struct {
	cfg   Config
	run   RunFunc
	queue *jobQueue
	// slots holds a token per execution in progress (at most
	// Concurrency), whether an executor's or a caller's own.
	slots chan struct{}
	// waiting counts the requests accepted and neither executed nor
	// dropped yet: those in the queue and those an executor has taken
	// and holds (gathering a batch, or until a slot frees). While any
	// wait, no request runs inline.
	waiting atomic.Int64
	// queued counts the jobs marked queued: what QueueSize bounds.
	queued atomic.Int64

	mu     sync.RWMutex // guards closed against concurrent Submit
	closed bool

	wg sync.WaitGroup

	batchable atomic.Bool // turns false if an output cannot be split by rows
}

// New starts a scheduler with cfg.Concurrency executors.
func New(cfg Config, run RunFunc) *Scheduler {
	if cfg.QueueSize < 1 {
		cfg.QueueSize = 1
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	s := &Scheduler{cfg: cfg, run: run, queue: newJobQueue(min(cfg.QueueSize, 1024)), slots: make(chan struct{}, cfg.Concurrency)}
	s.batchable.Store(cfg.MaxBatchSize > 1)
	s.wg.Add(cfg.Concurrency)
	for range cfg.Concurrency {
		go s.executor()
	}
	return s
}

// QueueLen is the number of requests waiting.
func (s *Scheduler) QueueLen() int { return int(s.waiting.Load()) }

// Submit queues a request and waits for its result. A full queue is refused
// at once with errdefs.ErrResourceExhausted; a closed scheduler with
// errdefs.ErrUnavailable; a request whose ctx ends first returns an error
// wrapping errdefs.ErrDeadline (or ErrCanceled).
func (s *Scheduler) Submit(ctx context.Context, inputs []tensor.Tensor, outputs []string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, ctxErr(s.cfg.Name, err, 0)
	}
	j := &job{ctx: ctx, inputs: inputs, outputs: outputs, rows: rowsOf(inputs), enqueued: time.Now()}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return Result{}, closedError(s.cfg.Name)
	}
	if s.inline(j) {
		s.wg.Add(1) // Close waits for this run as for the executors
		s.mu.RUnlock()
		defer func() {
			<-s.slots
			s.wg.Done()
		}()
		r := s.runOne(j)
		if r.err != nil && ctx.Err() != nil {
			// The run was stopped because the request's context ended.
			return Result{}, ctxErr(s.cfg.Name, ctx.Err(), 0)
		}
		return r.res, r.err
	}
	if s.queued.Add(1) > int64(s.cfg.QueueSize) {
		s.queued.Add(-1)
		s.mu.RUnlock()
		return Result{}, errdefs.New(errdefs.ErrResourceExhausted, fmt.Sprintf("model %s: queue full (%d requests waiting)", s.cfg.Name, s.cfg.QueueSize))
	}
	j.queued = true
	j.done = make(chan jobResult, 1)
	s.waiting.Add(1)
	s.queue.push(j) // the queue closes only under s.mu, which is held
	s.mu.RUnlock()
	select {
	case r := <-j.done:
		return r.res, r.err
	case <-ctx.Done():
		if s.queue.remove(j) {
			// Still in the queue: its place goes back now, not when an
			// executor reaches it, which a long execution may delay
			// while live requests are refused.
			s.waiting.Add(-1)
			s.queued.Add(-1)
		}
		// Otherwise an executor holds it: it drops the job if it has
		// not started, and a result goes to the buffered channel.
		return Result{}, ctxErr(s.cfg.Name, ctx.Err(), time.Since(j.enqueued))
	}
}

// ErrClosed is matched (errors.Is) by the error of a Submit to a closed
// scheduler, as is errdefs.ErrUnavailable.
var ErrClosed = errors.New("scheduler closed")

// closedError is Submit's error once the scheduler is closed: its model
// is unloading or being replaced.
type closedError string

func (e closedError) Error() string { return "model " + string(e) + " is unloading" }

func (e closedError) Is(target error) bool {
	return target == ErrClosed || target == errdefs.ErrUnavailable
}

// Close stops accepting requests, lets the queued ones run, and waits for
// the executors to finish.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.queue.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// ctxErr is the error of a request whose context ended after waiting
// waited in the queue, or, with waited 0, while it ran or before it was
// queued.
func ctxErr(name string, err error, waited time.Duration) error {
	when := ""
	if waited > 0 {
		when = fmt.Sprintf(" after %v in queue", waited.Round(time.Microsecond))
	}
	if errors.Is(err, context.Canceled) {
		return errdefs.New(errdefs.ErrCanceled, fmt.Sprintf("model %s: request canceled%s", name, when))
	}
	return errdefs.New(errdefs.ErrDeadline, fmt.Sprintf("model %s: deadline exceeded%s", name, when))
}

// rowsOf is the shared first dimension of all inputs, or -1.
func rowsOf(inputs []tensor.Tensor) int64 {
	if len(inputs) == 0 {
		return -1
	}
	var rows int64 = -1
	for _, t := range inputs {
		if len(t.Shape) == 0 {
			return -1
		}
		if rows == -1 {
			rows = t.Shape[0]
		} else if t.Shape[0] != rows {
			return -1
		}
	}
	if rows < 1 {
		return -1
	}
	return rows
}

// compatible reports whether b can join a batch led by a.
func compatible(a, b *job) bool {
	if a.rows < 1 || b.rows < 1 || len(a.inputs) != len(b.inputs) {
		return false
	}
	for i := range a.inputs {
		x, y := &a.inputs[i], &b.inputs[i]
		if x.Name != y.Name || x.DataType != y.DataType || len(x.Shape) != len(y.Shape) {
			return false
		}
		for d := 1; d < len(x.Shape); d++ {
			if x.Shape[d] != y.Shape[d] {
				return false
			}
		}
	}
	return true
}

// inline reports whether j may run on its caller's goroutine now: it
// would not be batched, nothing is waiting (so it overtakes no one), and
// an execution slot was free; it then holds that slot.
func (s *Scheduler) inline(j *job) bool {
	if s.waiting.Load() != 0 || (j.rows >= 1 && j.rows < int64(s.cfg.MaxBatchSize) && s.canBatch()) {
		return false
	}
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *Scheduler) canBatch() bool { return s.batchable.Load() }

func (s *Scheduler) executor() {
	defer s.wg.Done()
	var carry *job
	for {
		first := carry
		carry = nil
		if first == nil {
			j, ok := s.queue.pop(true, nil)
			if !ok {
				return
			}
			first = j
		}
		if s.expired(first) {
			continue
		}
		batch := []*job{first}
		if s.canBatch() && first.rows >= 1 && first.rows < int64(s.cfg.MaxBatchSize) {
			s.unqueue(first) // a batch being gathered leaves the queue's room to fill it
			batch, carry = s.collect(batch)
		}
		s.slots <- struct{}{} // wait for a run on a caller's goroutine to end
		// Jobs that expired while the slot was busy are answered, not run.
		live := batch[:0]
		for _, j := range batch {
			if !s.expired(j) {
				live = append(live, j)
				s.waiting.Add(-1)
				s.unqueue(j)
			}
		}
		if len(live) > 0 {
			s.execute(live)
		}
		<-s.slots
	}
}

// unqueue stops j counting against QueueSize.
func (s *Scheduler) unqueue(j *job) {
	if j.queued {
		j.queued = false
		s.queued.Add(-1)
	}
}

// expired answers a waiting job whose context ended while it waited; it
// then no longer counts as waiting.
func (s *Scheduler) expired(j *job) bool {
	if err := j.ctx.Err(); err != nil {
		s.waiting.Add(-1)
		s.unqueue(j)
		j.done <- jobResult{err: ctxErr(s.cfg.Name, err, time.Since(j.enqueued))}
		return true
	}
	return false
}

// collect adds compatible queued jobs to batch until it is full or the
// delay runs out. A job that does not fit is returned as the next leader.
func (s *Scheduler) collect(batch []*job) ([]*job, *job) {
	rows := batch[0].rows
	max := int64(s.cfg.MaxBatchSize)
	var timer *time.Timer
	var timeout <-chan time.Time
	if s.cfg.MaxDelay > 0 {
		timer = time.NewTimer(s.cfg.MaxDelay)
		defer timer.Stop()
		timeout = timer.C
	}
	for rows < max {
		// Without a delay, only what is already queued joins.
		j, ok := s.queue.pop(timeout != nil, timeout)
		if !ok {
			return batch, nil
		}
		s.unqueue(j) // gathered into the batch (or carried as the next first)
		if s.expired(j) {
			continue
		}
		if !compatible(batch[0], j) || rows+j.rows > max {
			return batch, j
		}
		batch = append(batch, j)
		rows += j.rows
	}
	return batch, nil
}

func (s *Scheduler) execute(batch []*job) {
	if len(batch) == 1 {
		batch[0].done <- s.runOne(batch[0])
		return
	}
	start := time.Now()
	inputs, total := stack(batch)
	ctx, cancel := batchContext(batch)
	outs, err := s.run(ctx, inputs, unionOutputs(batch))
	cancel()
	d := time.Since(start)
	s.observe(int(total), len(batch), d)
	if errors.Is(err, errdefs.ErrInvalid) {
		// The model refused the stacked inputs: one request's values
		// (an index out of range, say) fail the whole batch. Run each
		// alone, so that only the request at fault is told so.
		for _, j := range batch {
			s.execute([]*job{j})
		}
		return
	}
	if err != nil {
		err = fmt.Errorf("model %s: %w", s.cfg.Name, err)
		for _, j := range batch {
			j.done <- jobResult{err: err}
		}
		return
	}
	parts, serr := split(outs, batch, total)
	if serr != nil {
		// The model's outputs do not follow its batch dimension: stop
		// batching it and run these requests one by one.
		s.batchable.Store(false)
		for _, j := range batch {
			s.execute([]*job{j})
		}
		return
	}
	for i, j := range batch {
		j.done <- jobResult{res: Result{Outputs: filter(parts[i], j.outputs), QueueTime: start.Sub(j.enqueued), ComputeTime: d, BatchSize: int(total)}}
	}
}

// runOne executes one job alone.
func (s *Scheduler) runOne(j *job) jobResult {
	start := time.Now()
	outs, err := s.run(j.ctx, j.inputs, j.outputs)
	d := time.Since(start)
	if err != nil {
		err = fmt.Errorf("model %s: %w", s.cfg.Name, err)
	}
	rows := int(max(j.rows, 1))
	s.observe(rows, 1, d)
	return jobResult{res: Result{Outputs: outs, QueueTime: start.Sub(j.enqueued), ComputeTime: d, BatchSize: rows}, err: err}
}

func (s *Scheduler) observe(rows, requests int, d time.Duration) {
	if s.cfg.OnBatch != nil {
		s.cfg.OnBatch(rows, requests, d)
	}
}

// batchContext lives until the latest deadline among the jobs (none if any
// job has none); it is never cancelled by one client leaving.
func batchContext(batch []*job) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, j := range batch {
		dl, ok := j.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

func stack(batch []*job) ([]tensor.Tensor, int64) {
	var total int64
	for _, j := range batch {
		total += j.rows
	}
	first := batch[0].inputs
	out := make([]tensor.Tensor, len(first))
	for i := range first {
		size := 0
		for _, j := range batch {
			size += len(j.inputs[i].Data)
		}
		data := make([]byte, 0, size)
		for _, j := range batch {
			data = append(data, j.inputs[i].Data...)
		}
		shape := append([]int64{total}, first[i].Shape[1:]...)
		out[i] = tensor.Tensor{Name: first[i].Name, DataType: first[i].DataType, Shape: shape, Data: data}
	}
	return out, total
}

func unionOutputs(batch []*job) []string {
	seen := map[string]bool{}
	var names []string
	for _, j := range batch {
		if j.outputs == nil {
			return nil
		}
		for _, n := range j.outputs {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	return names
}

// split cuts every output along its first dimension into one part per job.
func split(outs []tensor.Tensor, batch []*job, total int64) ([][]tensor.Tensor, error) {
	parts := make([][]tensor.Tensor, len(batch))
	for _, o := range outs {
		if len(o.Shape) == 0 || o.Shape[0] != total {
			return nil, fmt.Errorf("output %s has shape %v, not %d rows", o.Name, o.Shape, total)
		}
		n, err := tensor.NumElements(o.Shape)
		if err != nil {
			return nil, err
		}
		perRow := n / total
		var elems [][]byte
		if o.DataType == tensor.Bytes {
			if elems, err = tensor.SplitBytes(o.Data, n); err != nil {
				return nil, err
			}
		}
		var off int64
		for i, j := range batch {
			shape := append([]int64{j.rows}, o.Shape[1:]...)
			var data []byte
			if o.DataType == tensor.Bytes {
				data = tensor.JoinBytes(elems[off*perRow : (off+j.rows)*perRow])
			} else {
				es := int64(o.DataType.Size())
				data = o.Data[off*perRow*es : (off+j.rows)*perRow*es : (off+j.rows)*perRow*es]
			}
			parts[i] = append(parts[i], tensor.Tensor{Name: o.Name, DataType: o.DataType, Shape: shape, Data: data})
			off += j.rows
		}
	}
	return parts, nil
}

func filter(outs []tensor.Tensor, names []string) []tensor.Tensor {
	if names == nil {
		return outs
	}
	res := make([]tensor.Tensor, 0, len(names))
	for _, n := range names {
		for _, o := range outs {
			if o.Name == n {
				res = append(res, o)
				break
			}
		}
	}
	return res
}
