package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

func stringsOf(t *testing.T, x tensor.Tensor) []string {
	t.Helper()
	n, err := tensor.NumElements(x.Shape)
	if err != nil {
		t.Fatal(err)
	}
	elems, err := tensor.SplitBytes(x.Data, n)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = string(e)
	}
	return out
}

func TestClassify(t *testing.T) {
	i64 := func(v ...int64) tensor.Tensor {
		d := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(d[8*i:], uint64(x))
		}
		return tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{int64(len(v))}, Data: d}
	}
	nan := float32(math.NaN())
	for _, c := range []struct {
		name    string
		in      tensor.Tensor
		k       int
		batched bool
		shape   string
		want    string
	}{
		{"per row", tensor.FromFloat32("y", []int64{2, 3}, []float32{0.1, 0.7, 0.2, 0.5, 0.25, 0.25}), 2, true,
			"[2 2]", "0.700000:1 0.200000:2 0.500000:0 0.250000:1"},
		{"whole output", tensor.FromFloat32("y", []int64{2, 3}, []float32{0.1, 0.7, 0.2, 0.5, 0.25, 0.9}), 2, false,
			"[2]", "0.900000:5 0.700000:1"},
		{"k beyond the entries", tensor.FromFloat32("y", []int64{1, 2}, []float32{1, 2}), 5, true, "[1 2]", "2.000000:1 1.000000:0"},
		{"NaN last", tensor.FromFloat32("y", []int64{3}, []float32{nan, -1, 3}), 3, false, "[3]", "3.000000:2 -1.000000:1 NaN:0"},
		{"INT64", i64(4, -2, 9), 1, false, "[1]", "9.000000:2"},
	} {
		got, err := classify(c.in, c.k, c.batched)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got.DataType != tensor.Bytes || fmt.Sprint(got.Shape) != c.shape || strings.Join(stringsOf(t, got), " ") != c.want {
			t.Errorf("%s: %s%v %q, want BYTES%s %q", c.name, got.DataType, got.Shape, stringsOf(t, got), c.shape, c.want)
		}
	}
	if _, err := classify(tensor.FromStrings("y", []int64{1}, []string{"a"}), 1, false); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("BYTES output: %v", err)
	}
}

// TestClassificationAndSequenceParameters: Triton's classification
// parameter turns a requested output into its top k through the manager;
// bad values and the sequence parameters (not implemented) are refused
// before the model runs.
func TestClassificationAndSequenceParameters(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{"vec": {model: vec, config: "max_batch_size: 8\n"}})
	m, b, _ := newManager(t, root)
	path := root + "/vec/1/model.onnx"
	req := vecReq("vec", 2) // add_one: rows [1 2 3 4], [5 6 7 8]
	req.Outputs = []oip.RequestedOutput{{Name: "y", Parameters: oip.Parameters{ClassificationParameter: int64(2)}}}
	resp, err := m.Infer(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	y := resp.Outputs[0]
	if got := strings.Join(stringsOf(t, y), " "); fmt.Sprint(y.Shape) != "[2 2]" || got != "4.000000:3 3.000000:2 8.000000:3 7.000000:2" {
		t.Fatalf("classification: %v %q", y.Shape, got)
	}
	runs := b.Stats(path).Runs
	for name, p := range map[string]oip.Parameters{
		"classification 0":        {ClassificationParameter: int64(0)},
		"classification a string": {ClassificationParameter: "3"},
	} {
		req := vecReq("vec", 1)
		req.Outputs = []oip.RequestedOutput{{Name: "y", Parameters: p}}
		if _, err := m.Infer(context.Background(), req); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "classification") {
			t.Errorf("%s: %v, want ErrInvalid naming classification", name, err)
		}
	}
	for name, p := range map[string]oip.Parameters{
		"sequence_id":    {"sequence_id": int64(7)},
		"sequence_start": {"sequence_id": "s1", "sequence_start": true},
	} {
		req := vecReq("vec", 1)
		req.Parameters = p
		if _, err := m.Infer(context.Background(), req); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "sequence batching") {
			t.Errorf("%s: %v, want ErrInvalid about sequence batching", name, err)
		}
	}
	if got := b.Stats(path).Runs; got != runs {
		t.Errorf("refused requests ran the model (%d runs, want %d)", got, runs)
	}
	// A sequence_id of 0 is Triton's "no sequence".
	req = vecReq("vec", 1)
	req.Parameters = oip.Parameters{"sequence_id": int64(0)}
	if _, err := m.Infer(context.Background(), req); err != nil {
		t.Errorf("sequence_id 0: %v", err)
	}
}
