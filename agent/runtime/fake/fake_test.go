package fake

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/agent/runtime/runtimetest"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

func write(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	valid := write(t, "m.yaml", `
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
  - {name: s, datatype: BYTES, shape: [2]}
outputs:
  - {name: y, datatype: FP32, shape: [-1, 4]}
  - {name: t, datatype: BYTES, shape: [2]}
`)
	runtimetest.Run(t, New(), runtimetest.Models{
		Valid: valid,
		Corrupt: []string{
			write(t, "trunc.yaml", "inputs:\n  - {name: x, datatype: FP3"),
			write(t, "empty.yaml", ""),
			write(t, "typo.yaml", "inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: FP32, shape: [1]}]\nopp: identity\n"),
			write(t, "badtype.yaml", "inputs: [{name: x, datatype: FLOAT, shape: [1]}]\noutputs: [{name: y, datatype: FLOAT, shape: [1]}]\n"),
			write(t, "fail.yaml", "inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: FP32, shape: [1]}]\nfail_load: true\n"),
		},
	})
}

func TestAddOneAndStats(t *testing.T) {
	b := New()
	p := filepath.Join(t.TempDir(), "add.yaml")
	if err := WriteModel(p, Model{
		Inputs:  []IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 2}}, {Name: "h", DataType: "FP16", Shape: []int64{-1}}},
		Outputs: []IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 2}}, {Name: "g", DataType: "FP16", Shape: []int64{-1}}},
		Op:      "add_one",
	}); err != nil {
		t.Fatal(err)
	}
	s, err := b.Load(context.Background(), p, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := tensor.Tensor{Name: "h", DataType: tensor.FP16, Shape: []int64{3}, Data: make([]byte, 6)}
	for _, batch := range []int64{3, 1} {
		x := tensor.FromFloat32("x", []int64{batch, 2}, append([]float32{1.5}, make([]float32, 2*batch-1)...))
		out, err := s.Run(context.Background(), []tensor.Tensor{h, x}, []string{"y", "g"})
		if err != nil {
			t.Fatal(err)
		}
		if got := out[0].Float32s(); got[0] != 2.5 || got[1] != 1 {
			t.Errorf("y = %v, want [2.5 1 ...]", got)
		}
		if got := out[1].Float64At(2); got != 1 {
			t.Errorf("g[2] = %v, want 1", got)
		}
	}
	st := b.Stats(p)
	if st.Loads != 1 || st.Runs != 2 || len(st.BatchSizes) != 2 || st.BatchSizes[0] != 3 || st.BatchSizes[1] != 1 {
		// The batch size is the first dimension of the first declared
		// input, x, whatever order the inputs come in.
		t.Errorf("stats = %+v", st)
	}
	if b.OpenSessions() != 1 {
		t.Errorf("OpenSessions = %d, want 1", b.OpenSessions())
	}
	s.Close()
	if b.OpenSessions() != 0 {
		t.Errorf("OpenSessions after Close = %d, want 0", b.OpenSessions())
	}
}

func TestSleepIsPerRun(t *testing.T) {
	b := New()
	p := write(t, "sleep.yaml", "inputs: [{name: x, datatype: INT64, shape: [-1]}]\noutputs: [{name: y, datatype: INT64, shape: [-1]}]\nop: sleep\nsleep_ms: 30\n")
	s, err := b.Load(context.Background(), p, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := tensor.Tensor{Name: "x", DataType: tensor.Int64, Shape: []int64{64}, Data: make([]byte, 8*64)}
	start := time.Now()
	if _, err := s.Run(context.Background(), []tensor.Tensor{x}, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Run took %v, want at least the 30ms sleep", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := s.Run(ctx, []tensor.Tensor{x}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run past its deadline: %v", err)
	}
	if st := b.Stats(p); st.Runs != 1 || st.BatchSizes[0] != 64 {
		t.Errorf("stats = %+v, want one run of batch 64", st)
	}
}

func TestFailRun(t *testing.T) {
	p := write(t, "f.yaml", "inputs: [{name: x, datatype: BOOL, shape: []}]\noutputs: [{name: y, datatype: BOOL, shape: []}]\nfail_run: true\n")
	s, err := New().Load(context.Background(), p, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Run(context.Background(), []tensor.Tensor{{Name: "x", DataType: tensor.Bool, Data: []byte{1}}}, nil)
	if !errors.Is(err, errdefs.ErrInternal) {
		t.Fatalf("Run: %v, want ErrInternal", err)
	}
}

func TestBadModels(t *testing.T) {
	for name, body := range map[string]string{
		"no outputs":     "inputs: [{name: x, datatype: FP32, shape: [1]}]\n",
		"count mismatch": "inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: FP32, shape: [1]}, {name: z, datatype: FP32, shape: [1]}]\n",
		"type mismatch":  "inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: INT32, shape: [1]}]\n",
		"add_one bytes":  "inputs: [{name: x, datatype: BYTES, shape: [1]}]\noutputs: [{name: y, datatype: BYTES, shape: [1]}]\nop: add_one\n",
		"unknown op":     "inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: FP32, shape: [1]}]\nop: conv\n",
		"repeated name":  "inputs: [{name: x, datatype: FP32, shape: [1]}, {name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: y, datatype: FP32, shape: [1]}, {name: z, datatype: FP32, shape: [1]}]\n",
		"bad dim":        "inputs: [{name: x, datatype: FP32, shape: [-2]}]\noutputs: [{name: y, datatype: FP32, shape: [-2]}]\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New().Load(context.Background(), write(t, "m.yaml", body), runtime.Options{})
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Load: %v, want ErrInvalid", err)
			}
		})
	}
}
