package profile

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/accelpool/accelpool/agent/runtime/fake"
)

func TestProfileFakeModel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.yaml")
	if err := fake.WriteModel(path, fake.Model{Op: "sleep", SleepMS: 2,
		Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 8}}},
		Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 8}}}}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	p, err := Run(context.Background(), fake.New(), path, "m", Options{BatchSizes: []int{1, 4}, Concurrency: []int{1, 2}, Iterations: 10, Warmup: 1},
		func(s string) { lines = append(lines, s) })
	if err != nil {
		t.Fatal(err)
	}
	// The fake model sleeps 2 ms per run whatever the batch.
	if p.ServiceMs[1] < 2 || p.ServiceMs[4] < 2 || p.ServiceMs[1] > 50 {
		t.Fatalf("service times %v", p.ServiceMs)
	}
	if len(p.ConcurrentMs) != 2 || p.InputShapes["x"][0] != 1 || p.InputShapes["x"][1] != 8 {
		t.Fatalf("profile %+v", p)
	}
	if len(lines) < 4 {
		t.Fatalf("progress lines: %v", lines)
	}
}

func TestFixedBatchRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	_ = fake.WriteModel(path, fake.Model{Inputs: []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{1, 8}}},
		Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{1, 8}}}})
	p, err := Run(context.Background(), fake.New(), path, "m", Options{BatchSizes: []int{1, 8}, Concurrency: []int{1}, Iterations: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.ServiceMs[8]; ok {
		t.Fatal("batch 8 measured on a fixed-batch model")
	}
}
