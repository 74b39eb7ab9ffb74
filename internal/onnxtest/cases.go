package onnxtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/tensor"
)

// NodeCasesDir is where Debian's libonnx-testdata installs ONNX's operator
// conformance cases (`scripts/setup.sh --test` installs it).
const NodeCasesDir = "/usr/share/libonnx-testdata/data/node"

// The tolerances for floating-point outputs. ONNX's own backend test runner
// compares with numpy's assert_allclose at rtol 1e-3 and atol 1e-7; atol is
// looser here to absorb differences in summation order near zero.
const (
	RTol = 1e-3
	ATol = 1e-5
)

// Case is one conformance case: a model and one set of inputs with the
// outputs it must produce.
type Case struct {
	Name  string // the case directory's name, e.g. "test_add"
	Model string // path of model.onnx
	// Inputs and Outputs are the input_N.pb and output_N.pb files of
	// test_data_set_0, in N order.
	Inputs  []string
	Outputs []string
}

var pbIndex = regexp.MustCompile(`^(input|output)_(\d+)\.pb$`)

// ListCases lists the cases in dir: every subdirectory with a model.onnx
// and a test_data_set_0, sorted by name.
func ListCases(dir string) ([]Case, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var cases []Case
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		c := Case{Name: e.Name(), Model: filepath.Join(dir, e.Name(), "model.onnx")}
		if _, err := os.Stat(c.Model); err != nil {
			continue
		}
		data := filepath.Join(dir, e.Name(), "test_data_set_0")
		files, err := os.ReadDir(data)
		if err != nil {
			continue
		}
		idx := map[string]int{}
		for _, f := range files {
			m := pbIndex.FindStringSubmatch(f.Name())
			if m == nil {
				continue
			}
			p := filepath.Join(data, f.Name())
			idx[p], _ = strconv.Atoi(m[2])
			if m[1] == "input" {
				c.Inputs = append(c.Inputs, p)
			} else {
				c.Outputs = append(c.Outputs, p)
			}
		}
		for _, list := range [][]string{c.Inputs, c.Outputs} {
			sort.Slice(list, func(i, j int) bool { return idx[list[i]] < idx[list[j]] })
		}
		cases = append(cases, c)
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].Name < cases[j].Name })
	return cases, nil
}

// CaseData is a case read into memory, its tensors named after the model's
// inputs and outputs.
type CaseData struct {
	IO      ModelIO
	Inputs  []tensor.Tensor
	Outputs []tensor.Tensor
}

// ReadCase reads a case's model declaration and tensors. A case the
// protocol cannot carry (a non-tensor input or output, an element type
// without a protocol datatype) gives an error wrapping ErrUnsupported.
func ReadCase(c Case) (CaseData, error) {
	io, err := ReadModelIO(c.Model)
	if err != nil {
		return CaseData{}, err
	}
	d := CaseData{IO: io}
	if why := io.Unsupported(); why != "" {
		return d, fmt.Errorf("%s: %s: %w", c.Name, why, ErrUnsupported)
	}
	if len(c.Inputs) != len(io.Inputs) || len(c.Outputs) != len(io.Outputs) {
		return d, fmt.Errorf("%s: %d input and %d output files for a model with %d inputs and %d outputs",
			c.Name, len(c.Inputs), len(c.Outputs), len(io.Inputs), len(io.Outputs))
	}
	read := func(paths []string, vis []ValueInfo) ([]tensor.Tensor, error) {
		ts := make([]tensor.Tensor, len(paths))
		for i, p := range paths {
			t, err := ReadTensorProto(p)
			if err != nil {
				return nil, err
			}
			t.Name = vis[i].Name
			if vis[i].DataType == tensor.BF16 && t.DataType == tensor.Uint16 {
				// ONNX's generator saves bfloat16 data as uint16 bit
				// patterns (numpy has no bfloat16); the model says which.
				t.DataType = tensor.BF16
			}
			ts[i] = t
		}
		return ts, nil
	}
	if d.Inputs, err = read(c.Inputs, io.Inputs); err != nil {
		return d, fmt.Errorf("%s: %w", c.Name, err)
	}
	if d.Outputs, err = read(c.Outputs, io.Outputs); err != nil {
		return d, fmt.Errorf("%s: %w", c.Name, err)
	}
	return d, nil
}

// Compare checks got against want: same datatype and shape; integers,
// booleans and bytes exactly; floating-point elements within
// atol + rtol*|want|, a NaN matching a NaN and an infinity one of its sign.
func Compare(got, want tensor.Tensor, rtol, atol float64) error {
	if got.DataType != want.DataType {
		return fmt.Errorf("%s: datatype %s, want %s", want.Name, got.DataType, want.DataType)
	}
	if !equalShape(got.Shape, want.Shape) {
		return fmt.Errorf("%s: shape %v, want %v", want.Name, got.Shape, want.Shape)
	}
	n, err := tensor.NumElements(want.Shape)
	if err != nil {
		return err
	}
	switch want.DataType {
	case tensor.Bytes:
		g, err := tensor.SplitBytes(got.Data, n)
		if err != nil {
			return fmt.Errorf("%s: %w", want.Name, err)
		}
		w, err := tensor.SplitBytes(want.Data, n)
		if err != nil {
			return fmt.Errorf("%s: want: %w", want.Name, err)
		}
		for i := range w {
			if string(g[i]) != string(w[i]) {
				return fmt.Errorf("%s: element %d is %q, want %q", want.Name, i, g[i], w[i])
			}
		}
		return nil
	case tensor.FP16, tensor.BF16, tensor.FP32, tensor.FP64:
	default:
		if len(got.Data) != len(want.Data) {
			return fmt.Errorf("%s: %d bytes, want %d", want.Name, len(got.Data), len(want.Data))
		}
		size := want.DataType.Size()
		for i := 0; i < len(want.Data); i += size {
			if string(got.Data[i:i+size]) != string(want.Data[i:i+size]) {
				return fmt.Errorf("%s: element %d is %v, want %v", want.Name, i/size, got.Float64At(i/size), want.Float64At(i/size))
			}
		}
		return nil
	}
	if int64(len(got.Data)) != n*int64(want.DataType.Size()) {
		return fmt.Errorf("%s: %d bytes, want %d", want.Name, len(got.Data), n*int64(want.DataType.Size()))
	}
	bad, first := 0, -1
	for i := 0; i < int(n); i++ {
		if !near(got.Float64At(i), want.Float64At(i), rtol, atol) {
			if first < 0 {
				first = i
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%s: %d of %d elements differ beyond rtol %g atol %g; first, element %d, is %v, want %v",
			want.Name, bad, n, rtol, atol, first, got.Float64At(first), want.Float64At(first))
	}
	return nil
}

func near(g, w, rtol, atol float64) bool {
	switch {
	case math.IsNaN(w) || math.IsNaN(g):
		return math.IsNaN(w) && math.IsNaN(g)
	case math.IsInf(w, 0) || math.IsInf(g, 0):
		return g == w
	}
	return math.Abs(g-w) <= atol+rtol*math.Abs(w)
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Status is how a case went.
type Status int

// The outcomes of RunCase.
const (
	Passed      Status = iota
	Unsupported        // the protocol cannot carry the case; skipped
	LoadFailed
	RunFailed
	Mismatch
)

func (s Status) String() string {
	switch s {
	case Passed:
		return "passed"
	case Unsupported:
		return "unsupported"
	case LoadFailed:
		return "load-failed"
	case RunFailed:
		return "run-failed"
	case Mismatch:
		return "output-mismatch"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of one case.
type Result struct {
	Case   Case
	Status Status
	Detail string // why, for every status but Passed
}

// RunCase loads c's model into b, runs it on the case's inputs and compares
// the outputs at RTol and ATol. Problems with the case itself (unreadable
// files) are returned as errors; everything else is a Result.
func RunCase(ctx context.Context, b runtime.Backend, c Case) (Result, error) {
	r := Result{Case: c}
	d, err := ReadCase(c)
	switch {
	case errors.Is(err, ErrUnsupported):
		r.Status, r.Detail = Unsupported, err.Error()
		return r, nil
	case err != nil:
		return r, err
	}
	s, err := b.Load(ctx, c.Model, runtime.Options{})
	if err != nil {
		r.Status, r.Detail = LoadFailed, err.Error()
		return r, nil
	}
	defer s.Close()
	got, err := s.Run(ctx, d.Inputs, nil)
	if err != nil {
		r.Status, r.Detail = RunFailed, err.Error()
		return r, nil
	}
	if err := CheckOutputs(got, d.Outputs); err != nil {
		r.Status, r.Detail = Mismatch, err.Error()
		return r, nil
	}
	r.Status = Passed
	return r, nil
}

// CheckOutputs compares outputs, matched by name, with the expected ones.
func CheckOutputs(got, want []tensor.Tensor) error {
	byName := make(map[string]tensor.Tensor, len(got))
	for _, t := range got {
		byName[t.Name] = t
	}
	var errs []string
	for _, w := range want {
		g, ok := byName[w.Name]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: missing", w.Name))
			continue
		}
		if err := Compare(g, w, RTol, ATol); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Summary counts results by status.
type Summary struct {
	Total  int
	Counts map[Status]int
}

// Add counts r.
func (s *Summary) Add(r Result) {
	if s.Counts == nil {
		s.Counts = map[Status]int{}
	}
	s.Total++
	s.Counts[r.Status]++
}

func (s Summary) String() string {
	return fmt.Sprintf("total %d, unsupported %d, load-failed %d, run-failed %d, output-mismatch %d, passed %d",
		s.Total, s.Counts[Unsupported], s.Counts[LoadFailed], s.Counts[RunFailed], s.Counts[Mismatch], s.Counts[Passed])
}
