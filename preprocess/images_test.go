package preprocess

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// TestResizeHandComputed checks bilinear sampling, scale, normalisation
// and both layouts against values worked out by hand.
func TestResizeHandComputed(t *testing.T) {
	// A 2×1 image, red 0 and 100, green 10 and 10, blue 200 and 0,
	// stretched to 4×1. With pixel-centre alignment the source x of
	// output x is (x+0.5)/2-0.5 clamped at 0: 0, 0.25, 0.75, 1.25 (the
	// last clamps to pixel 1).
	up := image.NewRGBA(image.Rect(0, 0, 2, 1))
	up.Set(0, 0, color.RGBA{0, 10, 200, 255})
	up.Set(1, 0, color.RGBA{100, 10, 0, 255})
	got, err := ToTensor("x", up, Spec{Width: 4, Height: 1, Scale: 0.5, Mean: [3]float32{0, 5, 0}, Std: [3]float32{1, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{
		0, 12.5, 37.5, 50, // R: 0, 25, 75, 100, ×0.5
		0, 0, 0, 0, // G: 10×0.5-5
		50, 37.5, 12.5, 0, // B: 200, 150, 50, 0, ×0.5/2
	}
	assertFloats(t, "upsample NCHW", got, []int64{1, 3, 1, 4}, want)

	// A 4×1 ramp halved: source x 0.5 and 2.5.
	down := image.NewGray(image.Rect(0, 0, 4, 1))
	copy(down.Pix, []uint8{0, 40, 80, 120})
	got, err = ToTensor("x", down, Spec{Width: 2, Height: 1, Layout: NHWC})
	if err != nil {
		t.Fatal(err)
	}
	assertFloats(t, "downsample NHWC", got, []int64{1, 1, 2, 3}, []float32{20, 20, 20, 100, 100, 100})
}

func TestDataTypes(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.RGBA{255, 128, 3, 255})
	f16, err := ToTensor("x", img, Spec{Width: 1, Height: 1, Scale: 1.0 / 255, DataType: tensor.FP16})
	if err != nil {
		t.Fatal(err)
	}
	if f16.DataType != tensor.FP16 || len(f16.Data) != 6 {
		t.Fatalf("FP16 tensor %v %d bytes", f16.DataType, len(f16.Data))
	}
	for i, want := range []float32{1, 128.0 / 255, 3.0 / 255} {
		if got := f16.Float64At(i); got-float64(want) > 1e-3 || float64(want)-got > 1e-3 {
			t.Errorf("FP16[%d] = %v, want %v", i, got, want)
		}
	}
	// UINT8 rounds and clamps: (v-mean)/std with mean 100 on red.
	u8, err := ToTensor("x", img, Spec{Width: 1, Height: 1, Mean: [3]float32{100, 0, 0}, Std: [3]float32{1, 0.5, 1}, DataType: tensor.Uint8})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(u8.Data, []byte{155, 255, 3}) {
		t.Errorf("UINT8 data %v, want [155 255 3]", u8.Data)
	}
	if _, err := ToTensor("x", img, Spec{Width: 1, Height: 1, DataType: tensor.Int32}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("INT32: %v", err)
	}
}

// opaque hides an image's concrete type, forcing the generic pixel path.
type opaque struct{ image.Image }

func TestFastPathsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := image.Rect(3, 5, 3+37, 5+23) // odd sizes, non-zero origin
	ycc := []image.Image{}
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422,
		image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410} {
		im := image.NewYCbCr(r, ratio)
		for _, p := range [][]uint8{im.Y, im.Cb, im.Cr} {
			for i := range p {
				p[i] = uint8(rng.UintN(256))
			}
		}
		ycc = append(ycc, im)
	}
	rgba := image.NewRGBA(r)
	for i := range rgba.Pix {
		rgba.Pix[i] = uint8(rng.UintN(256))
		if i%4 == 3 {
			rgba.Pix[i] = 255
		}
	}
	gray := image.NewGray(r)
	for i := range gray.Pix {
		gray.Pix[i] = uint8(rng.UintN(256))
	}
	for _, img := range append(ycc, rgba, gray) {
		for _, size := range [][2]int{{16, 16}, {80, 50}} {
			spec := Spec{Width: size[0], Height: size[1], Scale: 1.0 / 255, Mean: [3]float32{0.4, 0.5, 0.6}, Std: [3]float32{0.2, 0.3, 0.4}}
			fast, _ := ToTensor("x", img, spec)
			slow, _ := ToTensor("x", opaque{img}, spec)
			if !bytes.Equal(fast.Data, slow.Data) {
				t.Errorf("%T %v: fast path differs from img.At", img, size)
			}
		}
	}
}

func encode(t *testing.T, img image.Image, format string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x + y) % 256), 255})
		}
	}
	return img
}

// TestImagesStacksLikeToTensor: the batch path gives, image by image, what
// ToTensor gives for the decoded image.
func TestImagesStacksLikeToTensor(t *testing.T) {
	encoded := [][]byte{encode(t, gradient(40, 30), "jpeg"), encode(t, gradient(17, 9), "png")}
	for _, spec := range []Spec{
		{Width: 8, Height: 6, Scale: 1.0 / 255, Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}},
		{Width: 5, Height: 7, Layout: NHWC, BGR: true, DataType: tensor.FP16},
		{Width: 5, Height: 7, Layout: NHWC, DataType: tensor.Uint8},
	} {
		got, err := Images(context.Background(), "in", encoded, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, b := range encoded {
			img, err := Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			one, err := ToTensor("in", img, spec)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, one.Data...)
		}
		wantShape := []int64{2, 3, int64(spec.Height), int64(spec.Width)}
		if spec.Layout == NHWC {
			wantShape = []int64{2, int64(spec.Height), int64(spec.Width), 3}
		}
		if got.Name != "in" || !equalShape(got.Shape, wantShape) || !bytes.Equal(got.Data, want) {
			t.Errorf("%+v: got %s%v (%d bytes), want %v (%d bytes) equal to ToTensor", spec, got.DataType, got.Shape, len(got.Data), wantShape, len(want))
		}
		if err := got.Validate(); err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Images(ctx, "in", encoded, Spec{Width: 2, Height: 2}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

// hugePNG is a PNG signature and IHDR chunk (with a valid checksum)
// declaring a w×h RGB image, and nothing else.
func hugePNG(w, h uint32) []byte { return pngHeader(w, h, 8, 2, 0) }

// pngHeader is a PNG's signature and IHDR chunk alone: enough for
// image.DecodeConfig.
func pngHeader(w, h uint32, depth, colorType, interlace byte) []byte {
	var ihdr []byte
	ihdr = binary.BigEndian.AppendUint32(ihdr, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, depth, colorType, 0, 0, interlace)
	out := []byte("\x89PNG\r\n\x1a\n")
	out = binary.BigEndian.AppendUint32(out, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	out = append(out, chunk...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(chunk))
}

func TestDecodeErrorsSayWhy(t *testing.T) {
	jpg := encode(t, gradient(16, 16), "jpeg")
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"empty":       {nil, "empty"},
		"garbage":     {[]byte("hello, world"), "not a JPEG or PNG image"},
		"gif":         {encode(t, gradient(4, 4), "gif"), "GIF images are not supported (want JPEG or PNG)"},
		"gif header":  {[]byte("GIF89a\x01"), "GIF images are not supported"},
		"bmp":         {append([]byte("BM"), make([]byte, 60)...), "BMP images are not supported"},
		"huge":        {hugePNG(100000, 100000), "PNG of 100000x100000 pixels is outside 1..67108864 pixels"},
		"bad header":  {append([]byte("\xff\xd8\xff\xc0"), make([]byte, 4)...), "corrupt JPEG"},
		"truncated":   {jpg[:len(jpg)/2], "corrupt JPEG"},
		"png no data": {hugePNG(4, 4), "corrupt PNG"},
	} {
		_, err := Decode(bytes.NewReader(c.data))
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInvalid containing %q", name, err, c.want)
		}
	}
	_, err := Images(context.Background(), "in", [][]byte{jpg, []byte("nope")}, Spec{Width: 2, Height: 2}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "image 1 of 2") {
		t.Errorf("second image bad: %v", err)
	}
}

func assertFloats(t *testing.T, what string, got tensor.Tensor, shape []int64, want []float32) {
	t.Helper()
	if got.DataType != tensor.FP32 || !equalShape(got.Shape, shape) {
		t.Fatalf("%s: %s%v, want FP32%v", what, got.DataType, got.Shape, shape)
	}
	v := got.Float32s()
	for i := range want {
		if d := v[i] - want[i]; d > 1e-5 || d < -1e-5 {
			t.Errorf("%s[%d] = %v, want %v (all: %v)", what, i, v[i], want[i], v)
			return
		}
	}
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
