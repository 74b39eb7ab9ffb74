package npy

import (
	"bytes"
	"errors"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

func TestRoundTrip(t *testing.T) {
	for _, in := range []tensor.Tensor{
		tensor.FromFloat32("x", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
		tensor.FromFloat32("x", []int64{4}, []float32{1, 2, 3, 4}),
		{Name: "x", DataType: tensor.Int64, Shape: []int64{}, Data: make([]byte, 8)},
	} {
		b, err := Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		if (len(b)-len(in.Data))%64 != 0 {
			t.Errorf("header not 64-byte aligned: %d", len(b)-len(in.Data))
		}
		out, err := Decode("x", b)
		if err != nil {
			t.Fatal(err)
		}
		if out.DataType != in.DataType || len(out.Shape) != len(in.Shape) || !bytes.Equal(out.Data, in.Data) {
			t.Fatalf("round trip: %+v != %+v", out, in)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good, _ := Encode(tensor.FromFloat32("x", []int64{2}, []float32{1, 2}))
	for name, b := range map[string][]byte{
		"magic":     []byte("PK\x03\x04 not npy at all"),
		"truncated": good[:len(good)-3],
		"hlen":      append(append([]byte{}, good[:8]...), 0xff, 0xff),
		"dtype":     bytes.Replace(good, []byte("<f4"), []byte(">f4"), 1),
		"fortran":   bytes.Replace(good, []byte("False"), []byte("True "), 1),
	} {
		if _, err := Decode("x", b); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}
