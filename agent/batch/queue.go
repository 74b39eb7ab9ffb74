package batch

import (
	"slices"
	"sync"
	"time"
)

// jobQueue is the FIFO of jobs waiting for an executor. Unlike a channel
// it lets a caller whose request expired take its job back out at once
// (remove), so an expired request never holds a place that a live one
// is refused for while every executor is busy.
type jobQueue struct {
	mu     sync.Mutex
	jobs   []*job
	closed bool
	// ready holds a token while jobs may be waiting or the queue is
	// closed; a taker that leaves jobs behind puts it back, so every idle
	// executor in turn wakes up.
	ready chan struct{}
}

func newJobQueue(capacity int) *jobQueue {
	return &jobQueue{jobs: make([]*job, 0, capacity), ready: make(chan struct{}, 1)}
}

func (q *jobQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// push adds j at the back; false once the queue is closed.
func (q *jobQueue) push(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.jobs = append(q.jobs, j)
	q.signal()
	return true
}

// remove takes j out if it is still waiting; false: an executor has it.
func (q *jobQueue) remove(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.jobs, j)
	if i < 0 {
		return false
	}
	q.jobs = slices.Delete(q.jobs, i, i+1)
	return true
}

// close lets the jobs still queued be taken, then makes pop report the
// end.
func (q *jobQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.signal()
	q.mu.Unlock()
}

// pop takes the front job, waiting for one; with timeout non-nil it
// gives up when timeout fires, and with wait false it does not wait at
// all. ok is false when it gave up or the queue is closed and empty.
func (q *jobQueue) pop(wait bool, timeout <-chan time.Time) (*job, bool) {
	for {
		q.mu.Lock()
		if len(q.jobs) > 0 {
			j := q.jobs[0]
			q.jobs[0] = nil
			q.jobs = q.jobs[1:]
			if len(q.jobs) > 0 {
				q.signal()
			}
			q.mu.Unlock()
			return j, true
		}
		if q.closed {
			q.signal() // for the other executors
			q.mu.Unlock()
			return nil, false
		}
		q.mu.Unlock()
		if !wait {
			return nil, false
		}
		select {
		case <-q.ready:
		case <-timeout: // nil: never
			return nil, false
		}
	}
}
