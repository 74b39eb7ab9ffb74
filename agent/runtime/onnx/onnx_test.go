package onnx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/agent/runtime/runtimetest"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/tensor"
)

// These tests need the ONNX Runtime library and the demo models. They fail,
// never skip, when those are missing: a skipped backend test reads as a
// passing one.
const installHint = "install them with scripts/setup.sh --test (or make setup), or point ACCELPOOL_ORT_LIB at a libonnxruntime.so"

func newBackend(t testing.TB) *Backend {
	t.Helper()
	b, err := New(Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("ONNX Runtime is not available: %v\n%s", err, installHint)
	}
	return b
}

func demoModel(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(cache.ModelRepository(), name, "1", "model.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("demo model %s is missing (%v)\n%s", name, err, installHint)
	}
	return p
}

func writeModel(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t testing.TB, b *Backend, path string) runtime.Session {
	t.Helper()
	s, err := b.Load(context.Background(), path, runtime.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// identity is a model that returns its inputs: one Identity node per
// input, output name = input name + "_out".
func identity(ins ...onnxtest.Tensor) []byte {
	var nodes []onnxtest.Node
	var outs []onnxtest.Tensor
	for _, in := range ins {
		out := in
		out.Name = in.Name + "_out"
		outs = append(outs, out)
		nodes = append(nodes, onnxtest.Node{Op: "Identity", Inputs: []string{in.Name}, Outputs: []string{out.Name}})
	}
	return onnxtest.BuildModel(13, nodes, ins, outs)
}

// PrefixModel (the overhead benchmark's floor) returns the first n
// elements of its source input flattened, repeated when n is larger, and
// accepts inputs it does not read.
func TestPrefixModel(t *testing.T) {
	b := newBackend(t)
	x := make([]float32, 2*3*4)
	for i := range x {
		x[i] = float32(i) + 0.5
	}
	ins := []onnxtest.Tensor{{Name: "unused", ElemType: 1, Shape: []int64{2}}, {Name: "x", ElemType: 1, Shape: []int64{1, 2, 3, 4}}}
	for _, n := range []int64{1, 10, 24, 50} {
		m, err := onnxtest.PrefixModel(ins, 1, "floor", n)
		if err != nil {
			t.Fatal(err)
		}
		s := load(t, b, writeModel(t, m))
		out, err := s.Run(context.Background(), []tensor.Tensor{
			tensor.FromFloat32("unused", []int64{2}, []float32{7, 8}),
			tensor.FromFloat32("x", []int64{1, 2, 3, 4}, x),
		}, nil)
		if err != nil {
			t.Fatalf("n %d: %v", n, err)
		}
		got := out[0].Float32s()
		if out[0].Name != "floor" || fmt.Sprint(out[0].Shape) != fmt.Sprint([]int64{1, n}) || int64(len(got)) != n {
			t.Fatalf("n %d: output %s %v with %d elements", n, out[0].Name, out[0].Shape, len(got))
		}
		for i, v := range got {
			if want := x[i%len(x)]; v != want {
				t.Fatalf("n %d: element %d is %v, want %v", n, i, v, want)
			}
		}
	}
	for _, bad := range []struct {
		ins []onnxtest.Tensor
		src int
		n   int64
	}{
		{ins, 2, 4},
		{[]onnxtest.Tensor{{Name: "x", ElemType: 7, Shape: []int64{4}}}, 0, 4},
		{[]onnxtest.Tensor{{Name: "x", ElemType: 1, Shape: []int64{-1, 4}}}, 0, 4},
		{ins, 1, 0},
	} {
		if _, err := onnxtest.PrefixModel(bad.ins, bad.src, "floor", bad.n); err == nil {
			t.Errorf("PrefixModel(%v, %d, %d) built a model", bad.ins, bad.src, bad.n)
		}
	}
}

func TestConformance(t *testing.T) {
	b := newBackend(t)
	front := demoModel(t, "blazeface-front")
	raw, err := os.ReadFile(front)
	if err != nil {
		t.Fatal(err)
	}
	truncated := writeModel(t, raw[:len(raw)/2])
	unknownOp := writeModel(t, onnxtest.BuildModel(13,
		[]onnxtest.Node{{Op: "NoSuchOperator", Inputs: []string{"x"}, Outputs: []string{"y"}}},
		[]onnxtest.Tensor{{Name: "x", ElemType: 1, Shape: []int64{1}}},
		[]onnxtest.Tensor{{Name: "y", ElemType: 1, Shape: []int64{1}}}))
	empty := writeModel(t, nil)
	corrupt := []string{truncated, unknownOp, empty}

	t.Run("blazeface-front", func(t *testing.T) {
		runtimetest.Run(t, b, runtimetest.Models{Valid: front, Corrupt: corrupt, Options: runtime.Options{IntraOpThreads: 1}})
	})
	t.Run("mixed-types", func(t *testing.T) {
		mixed := writeModel(t, identity(
			onnxtest.Tensor{Name: "s", ElemType: 8, Shape: []int64{-1, 2}},
			onnxtest.Tensor{Name: "h", ElemType: 10, Shape: []int64{3}},
			onnxtest.Tensor{Name: "k", ElemType: 9, Shape: []int64{}},
		))
		runtimetest.Run(t, b, runtimetest.Models{Valid: mixed, Corrupt: corrupt})
	})
}

// TestDataTypes runs every protocol datatype through an Identity model as a
// scalar, an empty tensor and a 2x3 tensor, and expects the same bytes back.
func TestDataTypes(t *testing.T) {
	b := newBackend(t)
	for dt, onnxType := range map[tensor.DataType]int32{
		tensor.FP32: 1, tensor.Uint8: 2, tensor.Int8: 3, tensor.Uint16: 4, tensor.Int16: 5, tensor.Int32: 6,
		tensor.Int64: 7, tensor.Bytes: 8, tensor.Bool: 9, tensor.FP16: 10, tensor.FP64: 11, tensor.Uint32: 12,
		tensor.Uint64: 13, tensor.BF16: 16,
	} {
		t.Run(dt.String(), func(t *testing.T) {
			for _, shape := range [][]int64{{}, {0, 3}, {2, 3}} {
				p := writeModel(t, identity(onnxtest.Tensor{Name: "x", ElemType: onnxType, Shape: []int64{-1, -1}[:len(shape)]}))
				s := load(t, b, p)
				if got := s.Metadata().Inputs[0].DataType; got != dt {
					t.Fatalf("metadata datatype %s, want %s", got, dt)
				}
				in := sample(dt, shape)
				out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
				if err != nil {
					t.Fatalf("shape %v: %v", shape, err)
				}
				o := out[0]
				if o.Name != "x_out" || o.DataType != dt || fmt.Sprint(o.Shape) != fmt.Sprint(shape) || !bytes.Equal(o.Data, in.Data) {
					t.Fatalf("shape %v: got %q %s%v %x, want %s%v %x", shape, o.Name, o.DataType, o.Shape, o.Data, dt, shape, in.Data)
				}
			}
		})
	}
}

// sample makes a tensor whose elements are all different (BYTES: of
// different lengths, with NULs and an empty one).
func sample(dt tensor.DataType, shape []int64) tensor.Tensor {
	n, _ := tensor.NumElements(shape)
	t := tensor.Tensor{Name: "x", DataType: dt, Shape: shape}
	if dt == tensor.Bytes {
		elems := make([][]byte, n)
		for i := range elems {
			elems[i] = bytes.Repeat([]byte{byte(i), 0, 'a'}, i)
		}
		t.Data = tensor.JoinBytes(elems)
		return t
	}
	t.Data = make([]byte, int(n)*dt.Size())
	for i := range t.Data {
		t.Data[i] = byte(i*7 + 1)
	}
	if dt == tensor.Bool {
		for i := range t.Data {
			t.Data[i] = byte(i % 2)
		}
	}
	return t
}

// TestCastToHalf checks that half-precision outputs come back whole (two
// bytes an element), which github.com/yalue/onnxruntime_go gets wrong.
func TestCastToHalf(t *testing.T) {
	b := newBackend(t)
	for _, tc := range []struct {
		to     int64
		dt     tensor.DataType
		decode func(uint16) float32
	}{{10, tensor.FP16, tensor.FP16ToFloat32}, {16, tensor.BF16, tensor.BF16ToFloat32}} {
		p := writeModel(t, onnxtest.BuildModel(13,
			[]onnxtest.Node{{Op: "Cast", Inputs: []string{"x"}, Outputs: []string{"y"}, Ints: map[string]int64{"to": tc.to}}},
			[]onnxtest.Tensor{{Name: "x", ElemType: 1, Shape: []int64{-1}}},
			[]onnxtest.Tensor{{Name: "y", ElemType: int32(tc.to), Shape: []int64{-1}}}))
		s := load(t, b, p)
		vals := []float32{1, -2, 0.5, 1024}
		out, err := s.Run(context.Background(), []tensor.Tensor{tensor.FromFloat32("x", []int64{4}, vals)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out[0].DataType != tc.dt || len(out[0].Data) != 8 {
			t.Fatalf("%s: got %s with %d bytes, want 8", tc.dt, out[0].DataType, len(out[0].Data))
		}
		for i, v := range vals {
			if got := tc.decode(binary.LittleEndian.Uint16(out[0].Data[2*i:])); got != v {
				t.Errorf("%s element %d = %v, want %v", tc.dt, i, got, v)
			}
		}
	}
}

func TestScalarOutput(t *testing.T) {
	b := newBackend(t)
	// Size of a [2,3] tensor is the scalar 6.
	p := writeModel(t, onnxtest.BuildModel(13,
		[]onnxtest.Node{{Op: "Size", Inputs: []string{"x"}, Outputs: []string{"n"}}},
		[]onnxtest.Tensor{{Name: "x", ElemType: 1, Shape: []int64{-1, -1}}},
		[]onnxtest.Tensor{{Name: "n", ElemType: 7, Shape: []int64{}}}))
	s := load(t, b, p)
	out, err := s.Run(context.Background(), []tensor.Tensor{tensor.FromFloat32("x", []int64{2, 3}, make([]float32, 6))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out[0].Shape) != 0 || out[0].DataType != tensor.Int64 || out[0].Float64At(0) != 6 {
		t.Fatalf("got %s%v %v, want the INT64 scalar 6", out[0].DataType, out[0].Shape, out[0].Data)
	}
}

func TestNonTensorModelRefused(t *testing.T) {
	b := newBackend(t)
	p := filepath.Join(onnxtest.NodeCasesDir, "test_identity_sequence", "model.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v\n%s", err, installHint)
	}
	_, err := b.Load(context.Background(), p, runtime.Options{})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), `input "x" is a sequence`) {
		t.Fatalf("Load: %v; want ErrInvalid naming the sequence input", err)
	}
}

func TestErrors(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	if _, err := b.Load(ctx, t.TempDir(), runtime.Options{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Load(directory): %v, want ErrInvalid", err)
	}
	front := demoModel(t, "blazeface-front")
	if _, err := b.Load(ctx, front, runtime.Options{Providers: []string{"rocm"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Load with provider rocm: %v, want ErrInvalid", err)
	}
	s, err := b.Load(ctx, front, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Run(ctx, runtimetest.Inputs(s.Metadata()), nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Run after Close: %v, want ErrUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := Init("/elsewhere/libonnxruntime.so"); err == nil {
		t.Error("Init with a second library succeeded")
	}
}

// TestProviderFallback asks for GPU providers the CPU build lacks: the
// session falls back to the CPU and says why in the log.
func TestProviderFallback(t *testing.T) {
	var logs bytes.Buffer
	b, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("%v\n%s", err, installHint)
	}
	avail, err := availableProviders()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("library providers: %v", avail)
	s, err := b.Load(context.Background(), demoModel(t, "blazeface-front"),
		runtime.Options{Providers: []string{"tensorrt", "cuda", "cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("provider %s; log:\n%s", s.Provider(), logs.String())
	if s.Provider() == "cpu" {
		for _, p := range []string{"provider=tensorrt", "provider=cuda"} {
			if !strings.Contains(logs.String(), "execution provider unavailable") || !strings.Contains(logs.String(), p) {
				t.Errorf("fell back to cpu without a warning for %s", p)
			}
		}
	}
	if _, err := s.Run(context.Background(), runtimetest.Inputs(s.Metadata()), nil); err != nil {
		t.Fatal(err)
	}
}

// slowModel chains n square MatMuls of a [size,size] input.
func slowModel(n int, size int64) []byte {
	var nodes []onnxtest.Node
	prev := "x"
	for i := 0; i < n; i++ {
		out := "m" + strconv.Itoa(i)
		if i == n-1 {
			out = "y"
		}
		nodes = append(nodes, onnxtest.Node{Op: "MatMul", Inputs: []string{prev, prev}, Outputs: []string{out}})
		prev = out
	}
	return onnxtest.BuildModel(13, nodes,
		[]onnxtest.Tensor{{Name: "x", ElemType: 1, Shape: []int64{size, size}}},
		[]onnxtest.Tensor{{Name: "y", ElemType: 1, Shape: []int64{size, size}}})
}

func TestCancelDuringRun(t *testing.T) {
	b := newBackend(t)
	s := load(t, b, writeModel(t, slowModel(400, 512)))
	x := tensor.FromFloat32("x", []int64{512, 512}, make([]float32, 512*512))

	// One node, to know what the whole chain would take.
	start := time.Now()
	one := load(t, b, writeModel(t, slowModel(1, 512)))
	if _, err := one.Run(context.Background(), []tensor.Tensor{x}, nil); err != nil {
		t.Fatal(err)
	}
	whole := 400 * time.Since(start)

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want []error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 30*time.Millisecond)
		}, []error{errdefs.ErrDeadline, context.DeadlineExceeded}},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(30*time.Millisecond, cancel)
			return ctx, cancel
		}, []error{errdefs.ErrCanceled, context.Canceled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			_, err := s.Run(ctx, []tensor.Tensor{x}, nil)
			took := time.Since(start)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Run: %v; want it to wrap %v", err, w)
				}
			}
			t.Logf("stopped after %v (the whole run takes about %v): %v", took, whole, err)
			if took > whole/2 {
				t.Errorf("Run took %v to stop; the whole run takes about %v", took, whole)
			}
		})
	}
	// The session still works after a terminated run.
	small := load(t, b, writeModel(t, slowModel(2, 8)))
	if _, err := small.Run(context.Background(), []tensor.Tensor{tensor.FromFloat32("x", []int64{8, 8}, make([]float32, 64))}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDemoModels(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()

	t.Run("blazeface", func(t *testing.T) {
		for name, size := range map[string]int64{"blazeface-front": 128, "blazeface-back": 256} {
			s := load(t, b, demoModel(t, name))
			img := make([]float32, size*size*3)
			for i := range img {
				img[i] = float32(i%251)/125 - 1
			}
			out, err := s.Run(ctx, []tensor.Tensor{tensor.FromFloat32("input:0", []int64{1, size, size, 3}, img)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := runtimetest.CheckOutputs(s.Metadata().Outputs, out); err != nil {
				t.Fatal(err)
			}
			for _, o := range out {
				for _, v := range o.Float32s() {
					if math.IsNaN(float64(v)) {
						t.Fatalf("%s: output %s has NaN", name, o.Name)
					}
				}
			}
		}
	})

	t.Run("ocr-cls batch", func(t *testing.T) {
		s := load(t, b, demoModel(t, "ocr-cls"))
		const n, h, w = 3, 48, 192
		img := make([]float32, n*3*h*w)
		for i := range img {
			img[i] = float32(i%17)/8 - 1
		}
		out, err := s.Run(ctx, []tensor.Tensor{tensor.FromFloat32("x", []int64{n, 3, h, w}, img)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(out[0].Shape) != "[3 2]" {
			t.Fatalf("shape %v, want [3 2]", out[0].Shape)
		}
		p := out[0].Float32s()
		for i := 0; i < n; i++ {
			if sum := p[2*i] + p[2*i+1]; math.Abs(float64(sum)-1) > 1e-4 {
				t.Errorf("row %d: softmax sums to %v", i, sum)
			}
		}
	})

	t.Run("ocr-det synthetic text", func(t *testing.T) {
		s := load(t, b, demoModel(t, "ocr-det"))
		// White page, a black bar where a line of text would be; inputs
		// normalised the way PaddleOCR does ((x/255 - mean) / std).
		const h, w = 96, 160
		mean, std := [3]float32{0.485, 0.456, 0.406}, [3]float32{0.229, 0.224, 0.225}
		img := make([]float32, 3*h*w)
		for c := 0; c < 3; c++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					v := float32(1)
					if y >= 40 && y < 56 && x >= 20 && x < 140 && (x/6)%2 == 0 {
						v = 0
					}
					img[c*h*w+y*w+x] = (v - mean[c]) / std[c]
				}
			}
		}
		out, err := s.Run(ctx, []tensor.Tensor{tensor.FromFloat32("x", []int64{1, 3, h, w}, img)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(out[0].Shape) != "[1 1 96 160]" {
			t.Fatalf("shape %v, want [1 1 96 160]", out[0].Shape)
		}
		for i, v := range out[0].Float32s() {
			if v < 0 || v > 1 {
				t.Fatalf("probability %d is %v", i, v)
			}
		}
	})

	t.Run("ocr-rec", func(t *testing.T) {
		s := load(t, b, demoModel(t, "ocr-rec"))
		img := make([]float32, 3*48*160)
		out, err := s.Run(ctx, []tensor.Tensor{tensor.FromFloat32("x", []int64{1, 3, 48, 160}, img)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sh := out[0].Shape
		if len(sh) != 3 || sh[0] != 1 || sh[2] != 6625 {
			t.Fatalf("shape %v, want [1 T 6625]", sh)
		}
	})
}

// TestNoLeak runs many times through strings, scalars and floats and checks
// that resident memory settles.
func TestNoLeak(t *testing.T) {
	if testing.Short() {
		t.Log("short mode: 300 runs instead of 3000")
	}
	b := newBackend(t)
	s := load(t, b, writeModel(t, identity(
		onnxtest.Tensor{Name: "s", ElemType: 8, Shape: []int64{-1}},
		onnxtest.Tensor{Name: "f", ElemType: 1, Shape: []int64{-1, 256}},
		onnxtest.Tensor{Name: "k", ElemType: 7, Shape: []int64{}},
	)))
	strs := make([]string, 64)
	for i := range strs {
		strs[i] = strings.Repeat("abc", i)
	}
	in := []tensor.Tensor{
		tensor.FromStrings("s", []int64{64}, strs),
		tensor.FromFloat32("f", []int64{64, 256}, make([]float32, 64*256)),
		{Name: "k", DataType: tensor.Int64, Data: make([]byte, 8)},
	}
	run := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := s.Run(context.Background(), in, nil); err != nil {
				t.Fatal(err)
			}
			// Failing runs must release what they created too.
			if _, err := s.Run(context.Background(), in[:2], nil); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatal(err)
			}
		}
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	run(n / 3)
	before := rss(t)
	run(n)
	after := rss(t)
	t.Logf("resident memory %d KiB before, %d KiB after %d more runs", before/1024, after/1024, n)
	// Each run moves ~70 KiB in and out; a leak of either shows as tens
	// of MiB here.
	if after > before+32<<20 {
		t.Errorf("resident memory grew by %d KiB over %d runs", (after-before)/1024, n)
	}
}

func rss(t *testing.T) int64 {
	goruntime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func TestFindLibrary(t *testing.T) {
	t.Setenv("ACCELPOOL_CACHE", t.TempDir())
	t.Setenv(EnvLibPath, "/nonexistent/env/libonnxruntime.so")
	// The library this test process has loaded answers to its soname, so
	// the system search may stop at libonnxruntime.so.1.
	_, tried, err := FindLibrary("/nonexistent/flag/libonnxruntime.so")
	if len(tried) < 4 {
		t.Fatalf("tried %v; want the flag, the variable, the cache and the system names", tried)
	}
	for i, want := range []string{"/nonexistent/flag/", "/nonexistent/env/", os.Getenv("ACCELPOOL_CACHE"), "libonnxruntime.so.1", "libonnxruntime.so"}[:len(tried)] {
		if !strings.HasPrefix(tried[i], want) {
			t.Errorf("tried[%d] = %q, want it to start with %q", i, tried[i], want)
		}
	}
	if err != nil {
		for _, want := range []string{"scripts/setup.sh", EnvLibPath, "/nonexistent/flag/"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	}
	t.Logf("tried: %q; err: %v", tried, err)

	// A path that exists but is not ONNX Runtime is skipped with a reason.
	junk := filepath.Join(t.TempDir(), "libjunk.so")
	os.WriteFile(junk, []byte("not a library"), 0o644)
	_, tried, _ = FindLibrary(junk)
	if !strings.Contains(tried[0], "dlopen") {
		t.Errorf("tried[0] = %q, want a dlopen failure", tried[0])
	}
}

// TestNodeCases runs every ONNX operator conformance case in process and
// reports the counts; output mismatches and load or run failures are listed
// with their reasons.
func TestNodeCases(t *testing.T) {
	b := newBackend(t)
	cases, err := onnxtest.ListCases(onnxtest.NodeCasesDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, installHint)
	}
	var sum onnxtest.Summary
	for _, c := range cases {
		r, err := onnxtest.RunCase(context.Background(), b, c)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		sum.Add(r)
		known, isKnown := onnxtest.KnownFailures[c.Name]
		switch {
		case r.Status == onnxtest.Passed && isKnown:
			t.Logf("known failure now passes, drop it from onnxtest.KnownFailures: %s", c.Name)
		case r.Status == onnxtest.Passed:
		case r.Status == onnxtest.Unsupported:
			t.Logf("%-16s %s: %s", r.Status, c.Name, firstLine(r.Detail))
		case isKnown:
			t.Logf("%-16s %s (known: %s): %s", r.Status, c.Name, known, firstLine(r.Detail))
		default:
			t.Errorf("%-16s %s: %s", r.Status, c.Name, firstLine(r.Detail))
		}
	}
	t.Logf("node cases: %s", sum)
	fmt.Printf("onnx node conformance: %s (known failures listed: %d)\n", sum, len(onnxtest.KnownFailures))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestRunFailuresOnClientInput: inputs that match the model's declared
// datatypes and ranks but that its graph cannot run (a broadcast between
// mismatched dynamic dimensions, a gather index out of range) are invalid
// input, told without ONNX Runtime's source paths or C++ signatures.
func TestRunFailuresOnClientInput(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	add := load(t, b, writeModel(t, onnxtest.BuildModel(13,
		[]onnxtest.Node{{Op: "Add", Inputs: []string{"a", "b"}, Outputs: []string{"y"}}},
		[]onnxtest.Tensor{{Name: "a", ElemType: 1, Shape: []int64{-1}}, {Name: "b", ElemType: 1, Shape: []int64{-1}}},
		[]onnxtest.Tensor{{Name: "y", ElemType: 1, Shape: []int64{-1}}})))
	gather := load(t, b, writeModel(t, onnxtest.BuildModel(13,
		[]onnxtest.Node{{Op: "Gather", Inputs: []string{"data", "idx"}, Outputs: []string{"y"}}},
		[]onnxtest.Tensor{{Name: "data", ElemType: 1, Shape: []int64{-1}}, {Name: "idx", ElemType: 7, Shape: []int64{-1}}},
		[]onnxtest.Tensor{{Name: "y", ElemType: 1, Shape: []int64{-1}}})))
	idx := func(v ...int64) tensor.Tensor {
		data := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(data[8*i:], uint64(x))
		}
		return tensor.Tensor{Name: "idx", DataType: tensor.Int64, Shape: []int64{int64(len(v))}, Data: data}
	}
	for name, c := range map[string]struct {
		s    runtime.Session
		in   []tensor.Tensor
		want string
	}{
		"broadcast": {add, []tensor.Tensor{tensor.FromFloat32("a", []int64{2}, []float32{1, 2}), tensor.FromFloat32("b", []int64{3}, []float32{1, 2, 3})},
			`the model's Add node "n0" failed on this input: Attempting to broadcast an axis by a dimension other than 1. 2 by 3`},
		"gather index": {gather, []tensor.Tensor{tensor.FromFloat32("data", []int64{3}, []float32{1, 2, 3}), idx(1, 7)},
			`the model's Gather node "n0" failed on this input: indices element out of data bounds, idx=7 must be within the inclusive range [-3,2]`},
	} {
		_, err := c.s.Run(ctx, c.in, nil)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", name, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "onnxruntime_src") || strings.Contains(err.Error(), ".h:") || strings.Contains(err.Error(), ".cc:")) {
			t.Errorf("%s: error names ONNX Runtime's sources: %v", name, err)
		}
	}
	// The same sessions still run good input.
	out, err := add.Run(ctx, []tensor.Tensor{tensor.FromFloat32("a", []int64{2}, []float32{1, 2}), tensor.FromFloat32("b", []int64{1}, []float32{10})}, nil)
	if err != nil || fmt.Sprint(out[0].Float32s()) != "[11 12]" {
		t.Fatalf("good input after failures: %v, %v", out, err)
	}
}

func TestNodeFailureMessages(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"Non-zero status code returned while running Reshape node. Name:'Reshape_token_34' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:84 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) size != 0 && (input_shape_size % size) == 0 was false. The input tensor cannot be reshaped to the requested shape. Input shape:{0,16,6,96}, requested shape:{0,-1,6,96,16}",
			`the model's Reshape node "Reshape_token_34" failed on this input: The input tensor cannot be reshaped to the requested shape. Input shape:{0,16,6,96}, requested shape:{0,-1,6,96,16}`},
		{"Non-zero status code returned while running Conv node. Name:'c1' Status Message: Invalid input shape: {1,1}",
			`the model's Conv node "c1" failed on this input: Invalid input shape: {1,1}`},
		{"Non-zero status code returned while running Foo node. Name:'f' Status Message: /src/foo.cc:12 something odd",
			`the model's Foo node "f" failed on this input: something odd`},
		{"Failed to allocate memory for requested buffer of size 10", ""},
		{"Non-zero status code returned while running Add node.", ""},
	} {
		got, ok := nodeFailure(c.msg)
		if ok != (c.want != "") || got != c.want {
			t.Errorf("nodeFailure(%q) = %q, %v; want %q", c.msg, got, ok, c.want)
		}
	}
}

// TestTelemetryOff: ONNX Runtime 1.30's usage telemetry, on by default in
// the released library, stays off: no /tmp/mat-debug-PID.log (its uploader's
// log, created with the environment) for this process.
func TestTelemetryOff(t *testing.T) {
	newBackend(t)
	if v := os.Getenv(EnvDisableTelemetry); v != "1" {
		t.Fatalf("%s=%q after Init, want 1 (the test environment did not set it)", EnvDisableTelemetry, v)
	}
	log := fmt.Sprintf("/tmp/mat-debug-%d.log", os.Getpid())
	if _, err := os.Stat(log); err == nil {
		t.Fatalf("%s exists: ONNX Runtime's telemetry started", log)
	}
}
