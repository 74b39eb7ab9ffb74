package tensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func le16(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func le32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func le64(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

func f32bits(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func f64bits(v ...float64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func TestDecodeJSONData(t *testing.T) {
	tests := []struct {
		name  string
		dt    DataType
		shape []int64
		json  string
		want  []byte
	}{
		{"bool", Bool, []int64{3}, `[true,false,true]`, []byte{1, 0, 1}},
		{"uint8", Uint8, []int64{3}, `[0,255,7]`, []byte{0, 255, 7}},
		{"uint16", Uint16, []int64{2}, `[0,65535]`, le16(0, 65535)},
		{"uint32", Uint32, []int64{2}, `[4294967295,1]`, le32(math.MaxUint32, 1)},
		{"uint64", Uint64, []int64{2}, `[18446744073709551615,0]`, le64(math.MaxUint64, 0)},
		{"int8", Int8, []int64{3}, `[-128,127,-0]`, []byte{0x80, 0x7f, 0}},
		{"int16", Int16, []int64{2}, `[-32768,32767]`, le16(0x8000, 0x7fff)},
		{"int32", Int32, []int64{2}, `[-2147483648,2147483647]`, le32(0x80000000, 0x7fffffff)},
		{"int64", Int64, []int64{2}, `[-9223372036854775808,9223372036854775807]`, le64(1<<63, 1<<63-1)},
		{"fp32", FP32, []int64{4}, `[1.5,-2,1e-3,3.4028234663852886e38]`, f32bits(1.5, -2, 1e-3, math.MaxFloat32)},
		{"fp32 nonfinite", FP32, []int64{5}, `["NaN","Infinity","-Infinity","inf","-inf"]`,
			f32bits(float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Inf(1)), float32(math.Inf(-1)))},
		{"fp32 underflow to zero", FP32, []int64{1}, `[1e-50]`, f32bits(0)},
		{"fp64", FP64, []int64{3}, `[0.1,-1E+300,5e-324]`, f64bits(0.1, -1e300, 5e-324)},
		{"fp16", FP16, []int64{5}, `[1,-2.5,65504,0.000000059604645,"-Infinity"]`, le16(0x3c00, 0xc100, 0x7bff, 0x0001, 0xfc00)},
		{"fp16 rounds to nearest even", FP16, []int64{2}, `[1.00048828125,1.00146484375]`, le16(0x3c00, 0x3c02)},
		{"bf16", BF16, []int64{3}, `[1,-2,"NaN"]`, le16(0x3f80, 0xc000, 0x7fc0)},
		{"bytes", Bytes, []int64{3}, `["ab","","\u00e9\n\"x\""]`, JoinBytes([][]byte{[]byte("ab"), nil, []byte("é\n\"x\"")})},
		{"bytes raw utf8", Bytes, []int64{1}, `["héllo"]`, JoinBytes([][]byte{[]byte("héllo")})},
		{"nested", Int32, []int64{2, 2}, `[[1,2],[3,4]]`, le32(1, 2, 3, 4)},
		{"nested ragged counts only elements", Int32, []int64{4}, `[[1],[2,[3]],4]`, le32(1, 2, 3, 4)},
		{"whitespace", Uint8, []int64{2}, " [ 1 ,\n\t2 ] \r\n", []byte{1, 2}},
		{"scalar in array", FP64, nil, `[2]`, f64bits(2)},
		{"bare scalar", FP64, []int64{}, `2`, f64bits(2)},
		{"zero elements", FP32, []int64{0, 3}, `[]`, []byte{}},
		{"zero elements nested empty", FP32, []int64{2, 0}, `[[],[]]`, []byte{}},
		{"zero bytes elements", Bytes, []int64{0}, `[]`, []byte{}},
		{"depth 64", Uint8, []int64{1}, strings.Repeat("[", 64) + "1" + strings.Repeat("]", 64), []byte{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeJSONData(tc.dt, tc.shape, []byte(tc.json))
			if err != nil {
				t.Fatalf("DecodeJSONData: %v", err)
			}
			if tc.dt == FP32 || tc.dt == FP64 || tc.dt == BF16 {
				// NaN payloads may differ; compare NaN-ness per element.
				if !sameFloats(tc.dt, got, tc.want) {
					t.Fatalf("got % x, want % x", got, tc.want)
				}
				return
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got % x, want % x", got, tc.want)
			}
		})
	}
}

func sameFloats(dt DataType, a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	ta := Tensor{DataType: dt, Data: a}
	tb := Tensor{DataType: dt, Data: b}
	for i := range len(a) / dt.Size() {
		x, y := ta.Float64At(i), tb.Float64At(i)
		if math.IsNaN(x) && math.IsNaN(y) {
			continue
		}
		if math.Float64bits(x) != math.Float64bits(y) {
			return false
		}
	}
	return true
}

func TestDecodeJSONDataErrors(t *testing.T) {
	tests := []struct {
		name   string
		dt     DataType
		shape  []int64
		json   string
		phrase string
	}{
		{"too few", FP32, []int64{3}, `[1,2]`, "holds 2 elements, shape needs 3"},
		{"too many", FP32, []int64{2}, `[1,2,3,4]`, "holds 4 elements, shape needs 2"},
		{"shape far larger than data", FP32, []int64{1 << 30}, `[1,2,3]`, "holds 3 elements, shape needs 1073741824"},
		{"negative dim", FP32, []int64{-1}, `[1]`, "negative"},
		{"overflow shape", FP32, []int64{1 << 40, 1 << 40}, `[1]`, "more than"},
		{"invalid datatype", Invalid, []int64{1}, `[1]`, "invalid datatype"},
		{"empty", FP32, []int64{1}, ``, "empty"},
		{"only spaces", FP32, []int64{1}, `   `, "empty"},
		{"unclosed", FP32, []int64{2}, `[1,2`, "end of input"},
		{"unclosed nested", FP32, []int64{2}, `[[1,2]`, "end of input"},
		{"trailing comma", FP32, []int64{2}, `[1,2,]`, "not a number"},
		{"missing comma", FP32, []int64{2}, `[1 2]`, "want ',' or ']'"},
		{"trailing garbage", FP32, []int64{2}, `[1,2]x`, "want end of data"},
		{"too deep", Uint8, []int64{1}, strings.Repeat("[", 65) + "1" + strings.Repeat("]", 65), "depth exceeds 64"},
		{"10k deep", Uint8, []int64{1}, strings.Repeat("[", 10000), "depth exceeds 64"},
		{"object", FP32, []int64{1}, `[{"a":1}]`, "not a number"},
		{"string for fp32", FP32, []int64{1}, `["abc"]`, `element 0: "abc" is not a number`},
		{"null", FP32, []int64{2}, `[1,null]`, "element 1: null is not a number"},
		{"fp32 overflow", FP32, []int64{1}, `[1e39]`, "out of range for FP32"},
		{"fp64 overflow", FP64, []int64{1}, `[1e400]`, "out of range for FP64"},
		{"fp16 overflow", FP16, []int64{2}, `[1,65520]`, "element 1: 65520 is out of range for FP16"},
		{"bf16 overflow", BF16, []int64{1}, `[3.4e38]`, "out of range for BF16"},
		{"leading plus", FP32, []int64{1}, `[+1]`, "not a number"},
		{"bare dot", FP32, []int64{1}, `[.5]`, "not a number"},
		{"exponent without digits", FP32, []int64{1}, `[1e]`, "not a number"},
		{"uint8 range", Uint8, []int64{2}, `[1,256]`, "element 1: 256 is out of range for UINT8"},
		{"uint negative", Uint32, []int64{1}, `[-1]`, "-1 is out of range for UINT32"},
		{"int8 low", Int8, []int64{1}, `[-129]`, "out of range for INT8"},
		{"int32 high", Int32, []int64{3}, `[0,0,2147483648]`, "element 2: 2147483648 is out of range for INT32"},
		{"int64 low", Int64, []int64{1}, `[-9223372036854775809]`, "out of range for INT64"},
		{"uint64 high", Uint64, []int64{1}, `[18446744073709551616]`, "out of range for UINT64"},
		{"huge integer", Int64, []int64{1}, `[` + strings.Repeat("9", 400) + `]`, "out of range"},
		{"int fraction", Int32, []int64{1}, `[1.5]`, "1.5 is not an integer (INT32)"},
		{"int exponent", Int64, []int64{1}, `[1e3]`, "is not an integer"},
		{"int string", Int64, []int64{1}, `["1"]`, "not a number"},
		{"int leading zero", Int64, []int64{1}, `[01]`, "want ',' or ']'"},
		{"bool number", Bool, []int64{1}, `[1]`, "1 is not a BOOL"},
		{"bool misspelt", Bool, []int64{1}, `[True]`, "is not a BOOL"},
		{"bytes number", Bytes, []int64{1}, `[1]`, "not a string"},
		{"bytes unterminated", Bytes, []int64{1}, `["abc`, "unterminated string"},
		{"bytes bad escape", Bytes, []int64{1}, `["a\qb"]`, "invalid string"},
		{"bytes control char", Bytes, []int64{1}, "[\"a\nb\"]", "control character"},
		{"bytes too many", Bytes, []int64{1}, `["a","b"]`, "holds 2 elements, shape needs 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJSONData(tc.dt, tc.shape, []byte(tc.json))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.phrase) {
				t.Errorf("error %q does not mention %q", err, tc.phrase)
			}
		})
	}
}

func TestAppendJSONData(t *testing.T) {
	tests := []struct {
		name string
		t    Tensor
		want string
	}{
		{"bool", Tensor{DataType: Bool, Shape: []int64{2}, Data: []byte{1, 0}}, `[true,false]`},
		{"uint8", Tensor{DataType: Uint8, Shape: []int64{2}, Data: []byte{0, 255}}, `[0,255]`},
		{"uint16", Tensor{DataType: Uint16, Shape: []int64{1}, Data: le16(65535)}, `[65535]`},
		{"uint32", Tensor{DataType: Uint32, Shape: []int64{1}, Data: le32(math.MaxUint32)}, `[4294967295]`},
		{"uint64", Tensor{DataType: Uint64, Shape: []int64{1}, Data: le64(math.MaxUint64)}, `[18446744073709551615]`},
		{"int8", Tensor{DataType: Int8, Shape: []int64{2}, Data: []byte{0x80, 0x7f}}, `[-128,127]`},
		{"int16", Tensor{DataType: Int16, Shape: []int64{1}, Data: le16(0x8000)}, `[-32768]`},
		{"int32", Tensor{DataType: Int32, Shape: []int64{2}, Data: le32(0xffffffff, 7)}, `[-1,7]`},
		{"int64", Tensor{DataType: Int64, Shape: []int64{1}, Data: le64(1 << 63)}, `[-9223372036854775808]`},
		{"fp16", Tensor{DataType: FP16, Shape: []int64{4}, Data: le16(0x3c00, 0x3555, 0x7c00, 0x7e00)}, `[1,0.33325195,"Infinity","NaN"]`},
		{"bf16", Tensor{DataType: BF16, Shape: []int64{2}, Data: le16(0x3f80, 0xff80)}, `[1,"-Infinity"]`},
		{"fp32", FromFloat32("x", []int64{2, 2}, []float32{0.1, -1e6, 1e-7, float32(math.NaN())}), `[0.1,-1e+06,1e-07,"NaN"]`},
		{"fp64", Tensor{DataType: FP64, Shape: []int64{2}, Data: f64bits(0.1, math.Inf(-1))}, `[0.1,"-Infinity"]`},
		{"bytes", FromStrings("s", []int64{3}, []string{"a\"b\\", "", "é\n\x01\t\r"}), `["a\"b\\","","é\n\u0001\t\r"]`},
		{"scalar", Tensor{DataType: Int32, Shape: nil, Data: le32(5)}, `[5]`},
		{"empty", Tensor{DataType: FP32, Shape: []int64{0}}, `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendJSONData([]byte("x"), &tc.t)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "x"+tc.want {
				t.Fatalf("got %s, want x%s", got, tc.want)
			}
			// And back again.
			back, err := DecodeJSONData(tc.t.DataType, tc.t.Shape, got[1:])
			if err != nil {
				t.Fatalf("decode back: %v", err)
			}
			if tc.t.DataType == FP32 || tc.t.DataType == FP64 || tc.t.DataType == FP16 || tc.t.DataType == BF16 {
				if !sameFloats(tc.t.DataType, back, tc.t.Data) {
					t.Fatalf("round trip: got % x, want % x", back, tc.t.Data)
				}
			} else if !bytes.Equal(back, tc.t.Data) && len(back)+len(tc.t.Data) > 0 {
				t.Fatalf("round trip: got % x, want % x", back, tc.t.Data)
			}
		})
	}
}

func TestAppendJSONDataErrors(t *testing.T) {
	bad := FromStrings("out", []int64{2}, []string{"ok", "\xff\xfe"})
	_, err := AppendJSONData(nil, &bad)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "binary_data") || !strings.Contains(err.Error(), "element 1") {
		t.Errorf("non-UTF-8 BYTES: got %v", err)
	}
	short := Tensor{Name: "s", DataType: FP32, Shape: []int64{3}, Data: make([]byte, 8)}
	if _, err := AppendJSONData(nil, &short); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("short data: got %v", err)
	}
}

// Every FP16 value survives AppendJSONData then DecodeJSONData unchanged.
func TestFP16RoundTripExhaustive(t *testing.T) {
	for _, dt := range []DataType{FP16, BF16} {
		data := make([]byte, 2*65536)
		for i := range 65536 {
			binary.LittleEndian.PutUint16(data[2*i:], uint16(i))
		}
		tn := Tensor{DataType: dt, Shape: []int64{65536}, Data: data}
		js, err := AppendJSONData(nil, &tn)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeJSONData(dt, tn.Shape, js)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 65536 {
			got := binary.LittleEndian.Uint16(back[2*i:])
			want := uint16(i)
			isNaN := math.IsNaN(tn.Float64At(i))
			if got != want && !isNaN {
				t.Fatalf("%v %#04x came back as %#04x", dt, want, got)
			}
		}
	}
}

// Decoding from float64 rounds once: a value just above an FP16 tie rounds up
// even though float32 rounding alone would land exactly on the tie.
func TestHalfRoundingFromFloat64(t *testing.T) {
	// 1 + 2^-11 is the tie between 1 and 1+2^-10; add 2^-40 (lost in float32).
	got, err := DecodeJSONData(FP16, []int64{1}, []byte(`[1.0004882812509095]`))
	if err != nil {
		t.Fatal(err)
	}
	if h := binary.LittleEndian.Uint16(got); h != 0x3c01 {
		t.Fatalf("got %#04x, want 0x3c01", h)
	}
	got, err = DecodeJSONData(BF16, []int64{1}, []byte(`[1.0039062500000036]`)) // 1 + 2^-8 + tiny
	if err != nil {
		t.Fatal(err)
	}
	if h := binary.LittleEndian.Uint16(got); h != 0x3f81 {
		t.Fatalf("bf16 got %#04x, want 0x3f81", h)
	}
}

func BenchmarkDecodeJSONDataFP32(b *testing.B) {
	v := make([]float32, 1<<18)
	for i := range v {
		v[i] = float32(i) * 0.37
	}
	tn := FromFloat32("x", []int64{int64(len(v))}, v)
	js, _ := AppendJSONData(nil, &tn)
	b.SetBytes(int64(len(js)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeJSONData(FP32, tn.Shape, js); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendJSONDataFP32(b *testing.B) {
	v := make([]float32, 1<<18)
	for i := range v {
		v[i] = float32(i) * 0.37
	}
	tn := FromFloat32("x", []int64{int64(len(v))}, v)
	buf, _ := AppendJSONData(nil, &tn)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendJSONData(buf[:0], &tn)
	}
}
