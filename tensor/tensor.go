package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/accelpool/accelpool/errdefs"
)

// DataType is an element type of the Open Inference Protocol.
type DataType uint8

// The datatypes of the Open Inference Protocol, in its own spelling.
const (
	Invalid DataType = iota
	Bool
	Uint8
	Uint16
	Uint32
	Uint64
	Int8
	Int16
	Int32
	Int64
	FP16
	BF16
	FP32
	FP64
	Bytes
)

var names = [...]string{
	Invalid: "INVALID", Bool: "BOOL", Uint8: "UINT8", Uint16: "UINT16", Uint32: "UINT32",
	Uint64: "UINT64", Int8: "INT8", Int16: "INT16", Int32: "INT32", Int64: "INT64",
	FP16: "FP16", BF16: "BF16", FP32: "FP32", FP64: "FP64", Bytes: "BYTES",
}

var sizes = [...]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8, Int8: 1, Int16: 2, Int32: 4,
	Int64: 8, FP16: 2, BF16: 2, FP32: 4, FP64: 8, Bytes: 0,
}

// AllDataTypes lists every valid datatype.
var AllDataTypes = []DataType{Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, FP16, BF16, FP32, FP64, Bytes}

func (d DataType) String() string {
	if int(d) < len(names) {
		return names[d]
	}
	return fmt.Sprintf("DataType(%d)", d)
}

// Size is the byte size of one element; 0 for BYTES and INVALID.
func (d DataType) Size() int {
	if d == Invalid || int(d) >= len(sizes) {
		return 0
	}
	return sizes[d]
}

// Valid reports whether d is one of the protocol's datatypes.
func (d DataType) Valid() bool { return d > Invalid && d <= Bytes }

// ParseDataType reads a protocol datatype name ("FP32", "BYTES", ...).
func ParseDataType(s string) (DataType, error) {
	for i, n := range names {
		if i > 0 && n == s {
			return DataType(i), nil
		}
	}
	return Invalid, errdefs.Invalid(fmt.Sprintf("unknown datatype %q (want one of %s)", s, strings.Join(names[1:], ", ")))
}

// MaxElements bounds the element count of any one tensor: shapes that claim
// more are rejected before anything is allocated.
const MaxElements = int64(1) << 34

// NumElements is the product of shape's dimensions. Negative dimensions and
// products above MaxElements are errors.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, errdefs.Invalid(fmt.Sprintf("shape %v: dimension %d is negative", shape, i))
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > MaxElements/d {
			return 0, errdefs.Invalid(fmt.Sprintf("shape %v holds more than %d elements", shape, MaxElements))
		}
		n *= d
	}
	if n > MaxElements {
		return 0, errdefs.Invalid(fmt.Sprintf("shape %v holds more than %d elements", shape, MaxElements))
	}
	return n, nil
}

// Tensor is a named, typed, shaped block of elements.
//
// For fixed-size datatypes Data holds the elements row-major, little-endian
// (BOOL as one byte 0 or 1). For BYTES each element is a 4-byte
// little-endian length followed by that many bytes, the layout of the
// binary tensor extension and of gRPC raw contents.
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     []byte
}

// ExpectedBytes is the byte length Data must have for a fixed-size datatype;
// for BYTES it returns -1 (the length depends on the contents).
func ExpectedBytes(dt DataType, shape []int64) (int64, error) {
	n, err := NumElements(shape)
	if err != nil {
		return 0, err
	}
	if dt == Bytes {
		return -1, nil
	}
	if !dt.Valid() {
		return 0, errdefs.Invalid(fmt.Sprintf("invalid datatype %v", dt))
	}
	return n * int64(dt.Size()), nil
}

// Validate checks that Data matches DataType and Shape.
func (t *Tensor) Validate() error {
	if !t.DataType.Valid() {
		return errdefs.Invalid(fmt.Sprintf("tensor %q: invalid datatype", t.Name))
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.DataType == Bytes {
		if _, err := CountBytesElements(t.Data, n); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return nil
	}
	want := n * int64(t.DataType.Size())
	if int64(len(t.Data)) != want {
		return errdefs.Invalid(fmt.Sprintf("tensor %q: %s%v needs %d bytes, got %d", t.Name, t.DataType, t.Shape, want, len(t.Data)))
	}
	if t.DataType == Bool {
		for i, b := range t.Data {
			if b > 1 {
				return errdefs.Invalid(fmt.Sprintf("tensor %q: BOOL element %d is %d, not 0 or 1", t.Name, i, b))
			}
		}
	}
	return nil
}

// CountBytesElements walks a length-prefixed BYTES buffer and checks that it
// holds exactly want elements and nothing after them.
func CountBytesElements(data []byte, want int64) (int64, error) {
	var n int64
	for off := 0; off < len(data); n++ {
		if len(data)-off < 4 {
			return n, errdefs.Invalid(fmt.Sprintf("BYTES element %d: %d bytes left, too few for its 4-byte length", n, len(data)-off))
		}
		l := binary.LittleEndian.Uint32(data[off:])
		off += 4
		if uint64(l) > uint64(len(data)-off) {
			return n, errdefs.Invalid(fmt.Sprintf("BYTES element %d claims %d bytes, only %d remain", n, l, len(data)-off))
		}
		off += int(l)
		if n >= want {
			return n, errdefs.Invalid(fmt.Sprintf("BYTES data holds more than the %d elements of its shape", want))
		}
	}
	if n != want {
		return n, errdefs.Invalid(fmt.Sprintf("BYTES data holds %d elements, shape needs %d", n, want))
	}
	return n, nil
}

// SplitBytes returns the elements of a length-prefixed BYTES buffer. The
// returned slices alias data.
func SplitBytes(data []byte, n int64) ([][]byte, error) {
	if _, err := CountBytesElements(data, n); err != nil {
		return nil, err
	}
	out := make([][]byte, 0, n)
	for off := 0; off < len(data); {
		l := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		out = append(out, data[off:off+l:off+l])
		off += l
	}
	return out, nil
}

// JoinBytes builds a length-prefixed BYTES buffer.
func JoinBytes(elems [][]byte) []byte {
	size := 0
	for _, e := range elems {
		size += 4 + len(e)
	}
	out := make([]byte, 0, size)
	for _, e := range elems {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(e)))
		out = append(out, e...)
	}
	return out
}

// FromStrings builds a BYTES tensor from strings.
func FromStrings(name string, shape []int64, s []string) Tensor {
	elems := make([][]byte, len(s))
	for i := range s {
		elems[i] = []byte(s[i])
	}
	return Tensor{Name: name, DataType: Bytes, Shape: shape, Data: JoinBytes(elems)}
}

// FromFloat32 builds an FP32 tensor.
func FromFloat32(name string, shape []int64, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return Tensor{Name: name, DataType: FP32, Shape: shape, Data: b}
}

// Float32s decodes an FP32 tensor's data.
func (t *Tensor) Float32s() []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

// Float64At reads element i of a numeric tensor as float64 (for comparisons
// and printing). BYTES tensors are not numeric.
func (t *Tensor) Float64At(i int) float64 {
	d := t.Data
	switch t.DataType {
	case Bool, Uint8:
		return float64(d[i])
	case Int8:
		return float64(int8(d[i]))
	case Uint16:
		return float64(binary.LittleEndian.Uint16(d[2*i:]))
	case Int16:
		return float64(int16(binary.LittleEndian.Uint16(d[2*i:])))
	case Uint32:
		return float64(binary.LittleEndian.Uint32(d[4*i:]))
	case Int32:
		return float64(int32(binary.LittleEndian.Uint32(d[4*i:])))
	case Uint64:
		return float64(binary.LittleEndian.Uint64(d[8*i:]))
	case Int64:
		return float64(int64(binary.LittleEndian.Uint64(d[8*i:])))
	case FP16:
		return float64(FP16ToFloat32(binary.LittleEndian.Uint16(d[2*i:])))
	case BF16:
		return float64(BF16ToFloat32(binary.LittleEndian.Uint16(d[2*i:])))
	case FP32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:])))
	case FP64:
		return math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:]))
	}
	return math.NaN()
}

// Clone returns a deep copy.
func (t Tensor) Clone() Tensor {
	t.Shape = append([]int64(nil), t.Shape...)
	t.Data = append([]byte(nil), t.Data...)
	return t
}
