package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/cache"
)

// The Go benchmarks compare one model (ACCELPOOL_BENCH_MODEL, default
// blazeface-back) called in process with the same model served on
// loopback, at concurrency 1. Every iteration makes one call of each,
// alternating which goes first, so both see the same machine state; they
// report the time of each, the added time and the ratio of served to
// in-process throughput. They skip without ONNX Runtime or the demo models
// (scripts/setup.sh installs both).
//
//	go test ./bench -run '^$' -bench InProcessVs -benchtime 200x

func BenchmarkInProcessVsGRPC(b *testing.B) { benchInProcessVs(b, GRPC) }

func BenchmarkInProcessVsREST(b *testing.B) { benchInProcessVs(b, REST) }

func benchInProcessVs(b *testing.B, mode Mode) {
	model := os.Getenv("ACCELPOOL_BENCH_MODEL")
	if model == "" {
		model = "blazeface-back"
	}
	if _, _, err := onnx.FindLibrary(""); err != nil {
		b.Skipf("no ONNX Runtime library (run scripts/setup.sh): %v", err)
	}
	path, err := modelFile(cache.ModelRepository(), model)
	if err != nil {
		b.Skipf("model %s: %v", model, err)
	}
	backend, err := onnx.New(onnx.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := &runner{cfg: OverheadConfig{Backend: backend}.withDefaults(), out: io.Discard}
	sess, err := backend.Load(ctx, path, r.sessionOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	inputs, _, err := buildInputs(model, sess.Metadata(), r.cfg.Image, r.cfg.ImageName)
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(b.TempDir(), "repo")
	if err := writeRepository(dir, []repoEntry{{name: model, file: path, config: serveConfig{concurrency: 1, queue: 16}}}); err != nil {
		b.Fatal(err)
	}
	srv, err := r.serve(ctx, dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.close()
	inproc := sessionCall(sess, inputs)()
	served := servedCall(srv.svc(mode), model, inputs)()
	for _, c := range []callFunc{inproc, served} {
		if err := warm(ctx, c); err != nil {
			b.Fatal(err)
		}
	}

	var tIn, tServed time.Duration
	timed := func(c callFunc, total *time.Duration) {
		t := time.Now()
		if err := c(ctx); err != nil {
			b.Fatal(err)
		}
		*total += time.Since(t)
	}
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			timed(inproc, &tIn)
			timed(served, &tServed)
		} else {
			timed(served, &tServed)
			timed(inproc, &tIn)
		}
		i++
	}
	n := float64(i)
	b.ReportMetric(float64(tIn.Nanoseconds())/n, "inproc-ns/req")
	b.ReportMetric(float64(tServed.Nanoseconds())/n, string(mode)+"-ns/req")
	b.ReportMetric(float64((tServed-tIn).Microseconds())/n, "added-us/req")
	b.ReportMetric(ratio(float64(tIn), float64(tServed)), "ratio")
}
