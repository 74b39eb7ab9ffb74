package batch

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/accelpool/accelpool/tensor"
)

// An idle scheduler runs an unbatched request on the caller's goroutine;
// one that batches hands it to an executor. The caller is locked to its
// OS thread, so the thread the run sees tells which.
func TestIdleRunsOnCaller(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		inline bool
	}{
		{"no batching", Config{Name: "m", QueueSize: 4, Concurrency: 2}, true},
		{"batching", Config{Name: "m", QueueSize: 4, Concurrency: 2, MaxBatchSize: 8, MaxDelay: time.Millisecond}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := make(chan int, 1)
			run := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
				ran <- syscall.Gettid()
				return in, nil
			}
			s := New(tc.cfg, run)
			defer s.Close()
			caller := make(chan int, 1)
			errc := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				caller <- syscall.Gettid()
				_, err := s.Submit(context.Background(), input(1, 1), nil)
				errc <- err
			}()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if got := <-ran == <-caller; got != tc.inline {
				t.Fatalf("ran on the caller's thread: %v, want %v", got, tc.inline)
			}
		})
	}
}
