package onnxtest

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/accelpool/accelpool/tensor"
)

// tp builds a TensorProto field by field.
type tp []byte

func (b tp) varint(num protowire.Number, v uint64) tp {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (b tp) bytes(num protowire.Number, v []byte) tp {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func packedVarints(vs ...uint64) []byte {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	return p
}

func TestDecodeTensorProto(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	neg := int64(-3)
	for _, tc := range []struct {
		name  string
		in    tp
		dt    tensor.DataType
		shape []int64
		data  []byte
	}{
		{"raw float, packed dims", tp{}.bytes(1, packedVarints(2, 1)).varint(2, 1).bytes(8, []byte("x")).bytes(9, f32(1, 2)),
			tensor.FP32, []int64{2, 1}, f32(1, 2)},
		{"float_data packed, unpacked dims", tp{}.varint(1, 2).varint(2, 1).bytes(4, f32(3, 4)),
			tensor.FP32, []int64{2}, f32(3, 4)},
		{"float_data unpacked", func() tp {
			b := tp{}.varint(1, 1).varint(2, 1)
			b = protowire.AppendTag(b, 4, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, math.Float32bits(5))
		}(), tensor.FP32, []int64{1}, f32(5)},
		{"scalar int64", tp{}.varint(2, 7).bytes(7, packedVarints(uint64(neg))),
			tensor.Int64, []int64{}, binary.LittleEndian.AppendUint64(nil, uint64(neg))},
		{"int8 in int32_data", tp{}.varint(1, 2).varint(2, 3).bytes(5, packedVarints(uint64(neg), 5)),
			tensor.Int8, []int64{2}, []byte{0xfd, 5}},
		{"fp16 bits in int32_data", tp{}.varint(1, 1).varint(2, 10).bytes(5, packedVarints(0x3c00)),
			tensor.FP16, []int64{1}, []byte{0x00, 0x3c}},
		{"bool", tp{}.varint(1, 2).varint(2, 9).bytes(5, packedVarints(1, 0)),
			tensor.Bool, []int64{2}, []byte{1, 0}},
		{"uint32 in uint64_data", tp{}.varint(1, 1).varint(2, 12).bytes(11, packedVarints(0xffffffff)),
			tensor.Uint32, []int64{1}, []byte{0xff, 0xff, 0xff, 0xff}},
		{"double", tp{}.varint(1, 1).varint(2, 11).bytes(10, binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.5))),
			tensor.FP64, []int64{1}, binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.5))},
		{"strings", tp{}.varint(1, 2).varint(2, 8).bytes(6, []byte("ab")).bytes(6, []byte{}),
			tensor.Bytes, []int64{2}, tensor.JoinBytes([][]byte{[]byte("ab"), {}})},
		{"empty", tp{}.varint(1, 0).varint(1, 3).varint(2, 1), tensor.FP32, []int64{0, 3}, []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTensorProto(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.DataType != tc.dt || !equalShape(got.Shape, tc.shape) || string(got.Data) != string(tc.data) {
				t.Fatalf("got %s%v %x, want %s%v %x", got.DataType, got.Shape, got.Data, tc.dt, tc.shape, tc.data)
			}
		})
	}
}

func TestDecodeTensorProtoErrors(t *testing.T) {
	for name, in := range map[string]tp{
		"complex64":      tp{}.varint(1, 1).varint(2, 14),
		"float8":         tp{}.varint(1, 1).varint(2, 17),
		"external data":  tp{}.varint(1, 1).varint(2, 1).varint(14, 1),
		"count mismatch": tp{}.varint(1, 3).varint(2, 1).bytes(4, make([]byte, 8)),
		"truncated":      tp{}.varint(1, 3).varint(2, 1).bytes(9, make([]byte, 12))[:5],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeTensorProto(in)
			if err == nil {
				t.Fatal("no error")
			}
			wantUnsupported := name == "complex64" || name == "float8" || name == "external data"
			if errors.Is(err, ErrUnsupported) != wantUnsupported {
				t.Fatalf("error %v: ErrUnsupported %v, want %v", err, !wantUnsupported, wantUnsupported)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	f := func(vs ...float32) tensor.Tensor { return tensor.FromFloat32("y", []int64{int64(len(vs))}, vs) }
	for _, tc := range []struct {
		name      string
		got, want tensor.Tensor
		ok        bool
	}{
		{"equal", f(1, 2), f(1, 2), true},
		{"within rtol", f(1000.5), f(1000), true},
		{"beyond", f(1.01), f(1), false},
		{"nan", f(nan), f(nan), true},
		{"nan vs number", f(nan), f(0), false},
		{"inf", f(inf), f(inf), true},
		{"inf sign", f(-inf), f(inf), false},
		{"shape", f(1, 2), tensor.FromFloat32("y", []int64{1, 2}, []float32{1, 2}), false},
		{"datatype", f(1), tensor.Tensor{Name: "y", DataType: tensor.Int32, Shape: []int64{1}, Data: make([]byte, 4)}, false},
		{"int exact", tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1}, Data: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
			tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1}, Data: []byte{2, 0, 0, 0, 0, 0, 0, 0}}, false},
		{"bytes", tensor.FromStrings("y", []int64{1}, []string{"a"}), tensor.FromStrings("y", []int64{1}, []string{"a"}), true},
		{"bytes differ", tensor.FromStrings("y", []int64{1}, []string{"a"}), tensor.FromStrings("y", []int64{1}, []string{"b"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Compare(tc.got, tc.want, RTol, ATol)
			if (err == nil) != tc.ok {
				t.Fatalf("Compare: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestBuildModelRoundTrip(t *testing.T) {
	b := BuildModel(13, []Node{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
		[]Tensor{{Name: "x", ElemType: 8, Shape: []int64{}}},
		[]Tensor{{Name: "y", ElemType: 8, Shape: []int64{-1, 3}}})
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	io, err := ReadModelIO(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(io.Inputs) != 1 || io.Inputs[0].Name != "x" || io.Inputs[0].DataType != tensor.Bytes || len(io.Inputs[0].Shape) != 0 {
		t.Errorf("inputs %+v", io.Inputs)
	}
	if len(io.Outputs) != 1 || !equalShape(io.Outputs[0].Shape, []int64{-1, 3}) {
		t.Errorf("outputs %+v", io.Outputs)
	}
	if io.Unsupported() != "" {
		t.Errorf("Unsupported() = %q", io.Unsupported())
	}
}

// TestReadNodeCases reads every case of libonnx-testdata: each is either
// read completely or refused as unsupported.
func TestReadNodeCases(t *testing.T) {
	cases, err := ListCases(NodeCasesDir)
	if err != nil {
		t.Fatalf("%v\nthe ONNX conformance cases are missing: run scripts/setup.sh --test (as root), or apt-get install libonnx-testdata", err)
	}
	if len(cases) < 100 {
		t.Fatalf("only %d cases in %s", len(cases), NodeCasesDir)
	}
	unsupported := 0
	for _, c := range cases {
		_, err := ReadCase(c)
		switch {
		case errors.Is(err, ErrUnsupported):
			unsupported++
			if !strings.Contains(err.Error(), "not a tensor") && !strings.Contains(err.Error(), "element type") {
				t.Errorf("%s: unexpected reason: %v", c.Name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.Name, err)
		}
	}
	t.Logf("%d cases, %d unsupported by the protocol", len(cases), unsupported)
}
