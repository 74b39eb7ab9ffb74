package preprocess

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func TestToTensorLayoutsAndNormalisation(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 4, 2))
	for y := range 2 {
		for x := range 4 {
			img.Set(x, y, color.RGBA{R: 255, G: 0, B: 51, A: 255})
		}
	}
	spec := Spec{Width: 2, Height: 2, Scale: 1.0 / 255, Mean: [3]float32{0.5, 0, 0}, Std: [3]float32{0.5, 1, 1}}
	nchw, err := ToTensor("x", img, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := nchw.Shape; len(got) != 4 || got[1] != 3 || got[2] != 2 || got[3] != 2 {
		t.Fatalf("NCHW shape %v", got)
	}
	v := nchw.Float32s()
	// R plane: (1-0.5)/0.5 = 1; G plane 0; B plane 0.2.
	for i, want := range []float32{1, 1, 1, 1, 0, 0, 0, 0, 0.2, 0.2, 0.2, 0.2} {
		if d := v[i] - want; d > 1e-6 || d < -1e-6 {
			t.Fatalf("NCHW[%d] = %v, want %v", i, v[i], want)
		}
	}
	spec.Layout, spec.BGR = NHWC, true
	nhwc, _ := ToTensor("x", img, spec)
	v = nhwc.Float32s()
	// BGR: channel 0 is blue: (0.2-0.5)/0.5 = -0.6.
	if d := v[0] + 0.6; d > 1e-6 || d < -1e-6 || nhwc.Shape[3] != 3 {
		t.Fatalf("NHWC BGR first value %v shape %v", v[0], nhwc.Shape)
	}
}

func TestDecodeRejectsCorrupt(t *testing.T) {
	var buf bytes.Buffer
	_ = png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 3, 3)))
	if _, err := Decode(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	trunc := buf.Bytes()[:buf.Len()/2]
	if _, err := Decode(bytes.NewReader(trunc)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("truncated PNG: %v", err)
	}
	if _, err := Decode(bytes.NewReader([]byte("GIF89a not really"))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("unsupported format: %v", err)
	}
}
