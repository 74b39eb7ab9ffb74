package onnxtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/accelpool/accelpool/tensor"
)

// ErrUnsupported marks tensors and models the protocol cannot carry: ONNX
// element types without a protocol datatype, and inputs or outputs that are
// not tensors.
var ErrUnsupported = errors.New("unsupported")

// onnxDataTypes maps TensorProto.DataType (the same enum as ONNX Runtime's
// element types) to protocol datatypes.
var onnxDataTypes = map[int32]tensor.DataType{
	1: tensor.FP32, 2: tensor.Uint8, 3: tensor.Int8, 4: tensor.Uint16, 5: tensor.Int16,
	6: tensor.Int32, 7: tensor.Int64, 8: tensor.Bytes, 9: tensor.Bool, 10: tensor.FP16,
	11: tensor.FP64, 12: tensor.Uint32, 13: tensor.Uint64, 16: tensor.BF16,
}

var onnxDataTypeNames = map[int32]string{
	0: "UNDEFINED", 14: "COMPLEX64", 15: "COMPLEX128", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ",
	19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
	24: "UINT2", 25: "INT2",
}

// DataTypeOf maps an ONNX element type to a protocol datatype; the error
// wraps ErrUnsupported.
func DataTypeOf(onnxType int32) (tensor.DataType, error) {
	if dt, ok := onnxDataTypes[onnxType]; ok {
		return dt, nil
	}
	name := onnxDataTypeNames[onnxType]
	if name == "" {
		name = fmt.Sprintf("%d", onnxType)
	}
	return tensor.Invalid, fmt.Errorf("ONNX element type %s: %w", name, ErrUnsupported)
}

// TensorProto field numbers.
const (
	tpDims         = 1
	tpDataType     = 2
	tpFloatData    = 4
	tpInt32Data    = 5
	tpStringData   = 6
	tpInt64Data    = 7
	tpName         = 8
	tpRawData      = 9
	tpDoubleData   = 10
	tpUint64Data   = 11
	tpDataLocation = 14
)

// ReadTensorProto reads a file holding one serialized onnx.TensorProto.
func ReadTensorProto(path string) (tensor.Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return tensor.Tensor{}, err
	}
	t, err := DecodeTensorProto(b)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// DecodeTensorProto decodes a serialized onnx.TensorProto into a Tensor.
// Element types without a protocol datatype and external data give an
// error wrapping ErrUnsupported.
func DecodeTensorProto(b []byte) (tensor.Tensor, error) {
	var (
		t        tensor.Tensor
		dataType int32
		raw      []byte
		haveRaw  bool
		floats   []float32
		doubles  []float64
		int32s   []int32
		int64s   []int64
		uint64s  []uint64
		strs     [][]byte
		external bool
		shape    = []int64{}
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return t, protowire.ParseError(n)
		}
		b = b[n:]
		var err error
		switch {
		case num == tpDims:
			err = consumeVarints(&b, typ, func(v uint64) { shape = append(shape, int64(v)) })
		case num == tpDataType && typ == protowire.VarintType:
			err = consumeVarints(&b, typ, func(v uint64) { dataType = int32(v) })
		case num == tpFloatData:
			err = consumeFixed32s(&b, typ, func(v uint32) { floats = append(floats, math.Float32frombits(v)) })
		case num == tpInt32Data:
			err = consumeVarints(&b, typ, func(v uint64) { int32s = append(int32s, int32(v)) })
		case num == tpStringData && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return t, protowire.ParseError(m)
			}
			strs = append(strs, v)
			b = b[m:]
		case num == tpInt64Data:
			err = consumeVarints(&b, typ, func(v uint64) { int64s = append(int64s, int64(v)) })
		case num == tpName && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return t, protowire.ParseError(m)
			}
			t.Name = string(v)
			b = b[m:]
		case num == tpRawData && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return t, protowire.ParseError(m)
			}
			raw, haveRaw = v, true
			b = b[m:]
		case num == tpDoubleData:
			err = consumeFixed64s(&b, typ, func(v uint64) { doubles = append(doubles, math.Float64frombits(v)) })
		case num == tpUint64Data:
			err = consumeVarints(&b, typ, func(v uint64) { uint64s = append(uint64s, v) })
		case num == tpDataLocation && typ == protowire.VarintType:
			err = consumeVarints(&b, typ, func(v uint64) { external = v == 1 })
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return t, protowire.ParseError(m)
			}
			b = b[m:]
		}
		if err != nil {
			return t, fmt.Errorf("field %d: %w", num, err)
		}
	}
	if external {
		return t, fmt.Errorf("tensor %q keeps its data in an external file: %w", t.Name, ErrUnsupported)
	}
	dt, err := DataTypeOf(dataType)
	if err != nil {
		return t, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	t.DataType, t.Shape = dt, shape
	n, err := tensor.NumElements(shape)
	if err != nil {
		return t, err
	}

	switch {
	case dt == tensor.Bytes:
		t.Data = tensor.JoinBytes(strs)
	case haveRaw:
		t.Data = append([]byte(nil), raw...)
	default:
		size := dt.Size()
		t.Data = make([]byte, 0, int(n)*size)
		switch dt {
		case tensor.FP32:
			for _, f := range floats {
				t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(f))
			}
		case tensor.FP64:
			for _, f := range doubles {
				t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
			}
		case tensor.Int64:
			for _, v := range int64s {
				t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(v))
			}
		case tensor.Uint32:
			for _, v := range uint64s {
				t.Data = binary.LittleEndian.AppendUint32(t.Data, uint32(v))
			}
		case tensor.Uint64:
			for _, v := range uint64s {
				t.Data = binary.LittleEndian.AppendUint64(t.Data, v)
			}
		default:
			// INT32, and the narrower types (INT8/16, UINT8/16, BOOL, FLOAT16,
			// BFLOAT16) whose values or bit patterns int32_data carries.
			for _, v := range int32s {
				switch size {
				case 1:
					t.Data = append(t.Data, byte(v))
				case 2:
					t.Data = binary.LittleEndian.AppendUint16(t.Data, uint16(v))
				case 4:
					t.Data = binary.LittleEndian.AppendUint32(t.Data, uint32(v))
				}
			}
		}
	}
	if err := t.Validate(); err != nil {
		return t, err
	}
	return t, nil
}

// consumeVarints reads one varint or a packed run of them.
func consumeVarints(b *[]byte, typ protowire.Type, f func(uint64)) error {
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		f(v)
		*b = (*b)[n:]
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		*b = (*b)[n:]
		for len(p) > 0 {
			v, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return protowire.ParseError(m)
			}
			f(v)
			p = p[m:]
		}
	default:
		return fmt.Errorf("wire type %d where varints belong", typ)
	}
	return nil
}

func consumeFixed32s(b *[]byte, typ protowire.Type, f func(uint32)) error {
	switch typ {
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		f(v)
		*b = (*b)[n:]
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		*b = (*b)[n:]
		if len(p)%4 != 0 {
			return fmt.Errorf("packed fixed32 run of %d bytes", len(p))
		}
		for i := 0; i < len(p); i += 4 {
			f(binary.LittleEndian.Uint32(p[i:]))
		}
	default:
		return fmt.Errorf("wire type %d where fixed32 values belong", typ)
	}
	return nil
}

func consumeFixed64s(b *[]byte, typ protowire.Type, f func(uint64)) error {
	switch typ {
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		f(v)
		*b = (*b)[n:]
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(*b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		*b = (*b)[n:]
		if len(p)%8 != 0 {
			return fmt.Errorf("packed fixed64 run of %d bytes", len(p))
		}
		for i := 0; i < len(p); i += 8 {
			f(binary.LittleEndian.Uint64(p[i:]))
		}
	default:
		return fmt.Errorf("wire type %d where fixed64 values belong", typ)
	}
	return nil
}

// ValueInfo is one graph input or output of a model.
type ValueInfo struct {
	Name string
	// Kind is "tensor", "sequence", "map", "optional", "sparse_tensor",
	// "opaque" or "unknown".
	Kind string
	// ElemType is the ONNX element type of a tensor; DataType its protocol
	// datatype, tensor.Invalid when there is none.
	ElemType int32
	DataType tensor.DataType
	// Shape has -1 for dimensions without a fixed value; nil when the
	// model declares no shape.
	Shape []int64
}

// ModelIO is what a model file declares about its graph's inputs (less
// those with an initializer) and outputs.
type ModelIO struct {
	Inputs  []ValueInfo
	Outputs []ValueInfo
}

// Unsupported says why the protocol cannot carry the model's inputs or
// outputs, or returns "".
func (m ModelIO) Unsupported() string {
	for _, group := range []struct {
		kind string
		vs   []ValueInfo
	}{{"input", m.Inputs}, {"output", m.Outputs}} {
		for _, v := range group.vs {
			if v.Kind != "tensor" {
				return fmt.Sprintf("%s %q is %s, not a tensor", group.kind, v.Name, withArticle(v.Kind))
			}
			if _, err := DataTypeOf(v.ElemType); err != nil {
				return fmt.Sprintf("%s %q has %v", group.kind, v.Name, errors.Unwrap(err))
			}
		}
	}
	return ""
}

// ReadModelIO reads the graph inputs and outputs of an .onnx file, without
// anything else of the model.
func ReadModelIO(path string) (ModelIO, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ModelIO{}, err
	}
	var io ModelIO
	// ModelProto.graph = 7.
	graph, err := field(b, 7)
	if err != nil {
		return io, fmt.Errorf("%s: %w", path, err)
	}
	if graph == nil {
		return io, fmt.Errorf("%s: no graph", path)
	}
	inits := map[string]bool{}
	var inputs, outputs [][]byte
	// GraphProto: initializer = 5, input = 11, output = 12.
	err = walk(graph, func(num protowire.Number, v []byte) error {
		switch num {
		case 5:
			name, err := field(v, tpName)
			if err != nil {
				return err
			}
			inits[string(name)] = true
		case 11:
			inputs = append(inputs, v)
		case 12:
			outputs = append(outputs, v)
		}
		return nil
	})
	if err != nil {
		return io, fmt.Errorf("%s: %w", path, err)
	}
	for _, in := range inputs {
		vi, err := decodeValueInfo(in)
		if err != nil {
			return io, fmt.Errorf("%s: %w", path, err)
		}
		if !inits[vi.Name] {
			io.Inputs = append(io.Inputs, vi)
		}
	}
	for _, out := range outputs {
		vi, err := decodeValueInfo(out)
		if err != nil {
			return io, fmt.Errorf("%s: %w", path, err)
		}
		io.Outputs = append(io.Outputs, vi)
	}
	return io, nil
}

// TypeProto's value fields.
var typeKinds = map[protowire.Number]string{
	1: "tensor", 4: "sequence", 5: "map", 7: "opaque", 8: "sparse_tensor", 9: "optional",
}

func decodeValueInfo(b []byte) (ValueInfo, error) {
	vi := ValueInfo{Kind: "unknown"}
	// ValueInfoProto: name = 1, type = 2.
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			vi.Name = string(v)
		case 2:
			return walk(v, func(num protowire.Number, v []byte) error {
				kind, ok := typeKinds[num]
				if !ok {
					return nil
				}
				vi.Kind = kind
				if kind == "tensor" {
					return decodeTensorType(v, &vi)
				}
				return nil
			})
		}
		return nil
	})
	return vi, err
}

// decodeTensorType reads TypeProto.Tensor: elem_type = 1, shape = 2
// (TensorShapeProto: dim = 1; Dimension: dim_value = 1, dim_param = 2).
func decodeTensorType(b []byte, vi *ValueInfo) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			vi.ElemType = int32(v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		if num == 2 && typ == protowire.BytesType {
			shape, _ := protowire.ConsumeBytes(b)
			vi.Shape = []int64{}
			err := walk(shape, func(num protowire.Number, dim []byte) error {
				if num != 1 {
					return nil
				}
				d := int64(-1)
				err := walkAll(dim, func(num protowire.Number, typ protowire.Type, v []byte) error {
					if num == 1 && typ == protowire.VarintType {
						x, _ := protowire.ConsumeVarint(v)
						d = int64(x)
					}
					return nil
				})
				vi.Shape = append(vi.Shape, d)
				return err
			})
			if err != nil {
				return err
			}
		}
		b = b[m:]
	}
	vi.DataType, _ = DataTypeOf(vi.ElemType)
	return nil
}

// walk calls f with each length-delimited field of a message.
func walk(b []byte, f func(protowire.Number, []byte) error) error {
	return walkAll(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		p, _ := protowire.ConsumeBytes(v)
		return f(num, p)
	})
}

// walkAll calls f with each field of a message and its raw value.
func walkAll(b []byte, f func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		if err := f(num, typ, b[:m]); err != nil {
			return err
		}
		b = b[m:]
	}
	return nil
}

// field returns the last length-delimited field num of a message, or nil.
func field(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := walk(b, func(n protowire.Number, v []byte) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out, err
}

// withArticle puts "a" or "an" before a kind name.
func withArticle(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}
