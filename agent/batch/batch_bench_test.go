package batch

import (
	"context"
	"testing"

	"github.com/accelpool/accelpool/tensor"
)

// BenchmarkSubmit times one request at a time through an idle scheduler:
// run on the caller's goroutine (no batching) against handed to an
// executor and back (batching on with no delay, so the executor finds
// nothing to add and runs the request alone). The model does nothing, so
// ns/op is the scheduler's own latency; compare the two in one run.
func BenchmarkSubmit(b *testing.B) {
	run := func(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) { return in, nil }
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"inline", Config{Name: "m", QueueSize: 8, Concurrency: 2}},
		{"handoff", Config{Name: "m", QueueSize: 8, Concurrency: 2, MaxBatchSize: 2}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := New(bc.cfg, run)
			defer s.Close()
			in := input(1, 1)
			ctx := context.Background()
			for b.Loop() {
				if _, err := s.Submit(ctx, in, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
