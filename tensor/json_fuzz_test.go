package tensor

import (
	"bytes"
	"errors"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

// FuzzDecodeJSONData feeds arbitrary JSON to the decoder under every
// datatype. The decoder must never panic, must fail only with ErrInvalid,
// and whatever it accepts must survive encode-then-decode unchanged (floats
// are left out of the byte comparison: NaN payloads are not preserved).
func FuzzDecodeJSONData(f *testing.F) {
	f.Add(uint8(Bool), int64(2), int64(1), []byte(`[true,false]`))
	f.Add(uint8(Int32), int64(2), int64(2), []byte(`[[1,2],[3,-4]]`))
	f.Add(uint8(Uint64), int64(1), int64(1), []byte(`[18446744073709551615]`))
	f.Add(uint8(FP32), int64(3), int64(1), []byte(`[1.5,"NaN",-1e-3]`))
	f.Add(uint8(FP16), int64(2), int64(1), []byte(`["-inf",65504]`))
	f.Add(uint8(Bytes), int64(2), int64(1), []byte(`["a\u00e9\n","\ud83d\ude00"]`))
	f.Fuzz(func(t *testing.T, dtb uint8, d0, d1 int64, raw []byte) {
		dt := DataType(dtb % uint8(Bytes+1))
		shape := []int64{d0 % 4096, d1 % 64}
		out, err := DecodeJSONData(dt, shape, raw)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		tn := Tensor{Name: "f", DataType: dt, Shape: shape, Data: out}
		if err := tn.Validate(); err != nil {
			t.Fatalf("decoded tensor is invalid: %v", err)
		}
		js, err := AppendJSONData(nil, &tn)
		if err != nil {
			if dt == Bytes && errors.Is(err, errdefs.ErrInvalid) {
				return // raw non-UTF-8 bytes in a string: JSON cannot carry them back
			}
			t.Fatalf("encode: %v", err)
		}
		again, err := DecodeJSONData(dt, shape, js)
		if err != nil {
			t.Fatalf("decode of %s: %v", js, err)
		}
		switch dt {
		case FP16, BF16, FP32, FP64:
			if !sameFloats(dt, out, again) {
				t.Fatalf("float round trip: % x then % x", out, again)
			}
		default:
			if !bytes.Equal(out, again) {
				t.Fatalf("round trip: % x then % x via %s", out, again, js)
			}
		}
	})
}
