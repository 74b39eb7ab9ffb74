package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Models are the files a backend is tested with.
type Models struct {
	// Valid is a model the backend loads and runs. The suite feeds it
	// inputs made from its metadata (dynamic dimensions 1, numbers zero,
	// BYTES elements "x"), so it should be deterministic on them.
	Valid string
	// Corrupt lists files Load must refuse with errdefs.ErrInvalid, on top
	// of the file of random bytes the suite writes itself.
	Corrupt []string
	// Options are passed to every Load.
	Options runtime.Options
}

// Run tests b against the runtime.Backend contract.
func Run(t *testing.T, b runtime.Backend, m Models) {
	t.Helper()
	ctx := context.Background()
	if b.Name() == "" {
		t.Error("Name() is empty")
	}

	s, err := b.Load(ctx, m.Valid, m.Options)
	if err != nil {
		t.Fatalf("Load(%s): %v", m.Valid, err)
	}
	defer s.Close()
	meta := s.Metadata()

	t.Run("Metadata", func(t *testing.T) {
		if s.Provider() == "" {
			t.Error("Provider() is empty")
		}
		if len(meta.Inputs) == 0 || len(meta.Outputs) == 0 {
			t.Fatalf("metadata has %d inputs and %d outputs; want some of each", len(meta.Inputs), len(meta.Outputs))
		}
		for _, group := range [][]runtime.IOSpec{meta.Inputs, meta.Outputs} {
			seen := map[string]bool{}
			for _, sp := range group {
				if sp.Name == "" || seen[sp.Name] {
					t.Errorf("name %q is empty or repeated", sp.Name)
				}
				seen[sp.Name] = true
				if !sp.DataType.Valid() {
					t.Errorf("%q: invalid datatype %v", sp.Name, sp.DataType)
				}
				for _, d := range sp.Shape {
					if d < -1 {
						t.Errorf("%q: dimension %d in %v", sp.Name, d, sp.Shape)
					}
				}
			}
		}
	})

	inputs := Inputs(meta)
	ref, err := s.Run(ctx, inputs, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	t.Run("Run", func(t *testing.T) {
		if err := CheckOutputs(meta.Outputs, ref); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RunSomeOutputs", func(t *testing.T) {
		last := meta.Outputs[len(meta.Outputs)-1].Name
		out, err := s.Run(ctx, inputs, []string{last})
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || out[0].Name != last {
			t.Fatalf("asked for %q, got %d outputs", last, len(out))
		}
		if err := sameTensor(out[0], ref[len(ref)-1]); err != nil {
			t.Fatal(err)
		}
	})

	invalid := []struct {
		name    string
		inputs  func() []tensor.Tensor
		outputs []string
	}{
		{"UnknownInput", func() []tensor.Tensor {
			in := cloneAll(inputs)
			in[0].Name += "-nope"
			return in
		}, nil},
		{"MissingInput", func() []tensor.Tensor { return cloneAll(inputs)[1:] }, nil},
		{"RepeatedInput", func() []tensor.Tensor { return append(cloneAll(inputs), inputs[0].Clone()) }, nil},
		{"WrongDatatype", func() []tensor.Tensor {
			in := cloneAll(inputs)
			in[0] = zeroTensor(in[0].Name, otherDataType(in[0].DataType), in[0].Shape)
			return in
		}, nil},
		{"WrongRank", func() []tensor.Tensor {
			in := cloneAll(inputs)
			in[0] = zeroTensor(in[0].Name, in[0].DataType, append([]int64{1}, in[0].Shape...))
			return in
		}, nil},
		{"ShortData", func() []tensor.Tensor {
			in := cloneAll(inputs)
			in[0].Data = append(in[0].Data, 0)
			return in
		}, nil},
		{"UnknownOutput", func() []tensor.Tensor { return cloneAll(inputs) }, []string{"no-such-output"}},
	}
	if i, d := fixedDim(meta.Inputs); i >= 0 {
		invalid = append(invalid, struct {
			name    string
			inputs  func() []tensor.Tensor
			outputs []string
		}{"WrongFixedDim", func() []tensor.Tensor {
			in := cloneAll(inputs)
			shape := append([]int64{}, in[i].Shape...)
			shape[d]++
			in[i] = zeroTensor(in[i].Name, in[i].DataType, shape)
			return in
		}, nil})
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(ctx, tc.inputs(), tc.outputs)
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Run: got %v, want an error wrapping errdefs.ErrInvalid", err)
			}
			t.Logf("error: %v", err)
		})
	}

	t.Run("CanceledContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := s.Run(cctx, inputs, nil)
		if !errors.Is(err, context.Canceled) && !errors.Is(err, errdefs.ErrCanceled) {
			t.Fatalf("Run: got %v, want a cancellation", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		const workers, runs = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < runs; r++ {
					out, err := s.Run(ctx, cloneAll(inputs), nil)
					if err == nil && len(out) != len(ref) {
						err = fmt.Errorf("%d outputs, want %d", len(out), len(ref))
					}
					for i := 0; err == nil && i < len(out); i++ {
						err = sameTensor(out[i], ref[i])
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("CorruptFile", func(t *testing.T) {
		junk := filepath.Join(t.TempDir(), "junk.model")
		buf := make([]byte, 4096)
		rand.New(rand.NewSource(1)).Read(buf)
		if err := os.WriteFile(junk, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range append([]string{junk}, m.Corrupt...) {
			s, err := b.Load(ctx, p, m.Options)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Load(%s): got %v, want an error wrapping errdefs.ErrInvalid", p, err)
			}
		}
	})

	t.Run("MissingFile", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "no-such.model")
		s, err := b.Load(ctx, p, m.Options)
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Load(%s): got %v, want an error wrapping errdefs.ErrNotFound", p, err)
		}
	})

	t.Run("Close", func(t *testing.T) {
		s2, err := b.Load(ctx, m.Valid, m.Options)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s2.Run(ctx, inputs, nil); err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})
}

// Inputs makes inputs for a model from its metadata: dynamic dimensions 1,
// numeric elements zero, BYTES elements "x".
func Inputs(meta runtime.Metadata) []tensor.Tensor {
	in := make([]tensor.Tensor, len(meta.Inputs))
	for i, sp := range meta.Inputs {
		shape := make([]int64, len(sp.Shape))
		for j, d := range sp.Shape {
			shape[j] = d
			if d < 0 {
				shape[j] = 1
			}
		}
		in[i] = zeroTensor(sp.Name, sp.DataType, shape)
	}
	return in
}

func zeroTensor(name string, dt tensor.DataType, shape []int64) tensor.Tensor {
	n, _ := tensor.NumElements(shape)
	t := tensor.Tensor{Name: name, DataType: dt, Shape: shape}
	if dt == tensor.Bytes {
		elems := make([][]byte, n)
		for i := range elems {
			elems[i] = []byte("x")
		}
		t.Data = tensor.JoinBytes(elems)
	} else {
		t.Data = make([]byte, int(n)*dt.Size())
	}
	return t
}

func otherDataType(dt tensor.DataType) tensor.DataType {
	if dt == tensor.FP32 {
		return tensor.Int32
	}
	return tensor.FP32
}

// fixedDim finds an input with a fixed, positive dimension.
func fixedDim(specs []runtime.IOSpec) (input, dim int) {
	for i, sp := range specs {
		for j, d := range sp.Shape {
			if d > 0 {
				return i, j
			}
		}
	}
	return -1, -1
}

func cloneAll(ts []tensor.Tensor) []tensor.Tensor {
	out := make([]tensor.Tensor, len(ts))
	for i, t := range ts {
		out[i] = t.Clone()
	}
	return out
}

// CheckOutputs checks that outputs match their declaration: names in
// order, datatypes, ranks, fixed dimensions and data lengths.
func CheckOutputs(specs []runtime.IOSpec, outputs []tensor.Tensor) error {
	if len(outputs) != len(specs) {
		return fmt.Errorf("%d outputs, metadata declares %d", len(outputs), len(specs))
	}
	for i, sp := range specs {
		o := outputs[i]
		if o.Name != sp.Name {
			return fmt.Errorf("output %d is %q, want %q", i, o.Name, sp.Name)
		}
		if o.DataType != sp.DataType {
			return fmt.Errorf("output %q: datatype %s, metadata says %s", o.Name, o.DataType, sp.DataType)
		}
		if len(o.Shape) != len(sp.Shape) {
			return fmt.Errorf("output %q: shape %v, metadata says %v", o.Name, o.Shape, sp.Shape)
		}
		for j, d := range sp.Shape {
			if d >= 0 && o.Shape[j] != d {
				return fmt.Errorf("output %q: shape %v, metadata says %v", o.Name, o.Shape, sp.Shape)
			}
		}
		if err := o.Validate(); err != nil {
			return fmt.Errorf("output %q: %w", o.Name, err)
		}
	}
	return nil
}

func sameTensor(got, want tensor.Tensor) error {
	if got.Name != want.Name || got.DataType != want.DataType || fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) {
		return fmt.Errorf("got %q %s%v, want %q %s%v", got.Name, got.DataType, got.Shape, want.Name, want.DataType, want.Shape)
	}
	if string(got.Data) != string(want.Data) {
		return fmt.Errorf("output %q: data differs from the first run", got.Name)
	}
	return nil
}
