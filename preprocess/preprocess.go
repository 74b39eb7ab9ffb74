// Package preprocess turns images into model input tensors in pure Go:
// resize (bilinear), layout (NCHW or NHWC), scale, per-channel mean/std
// normalisation and datatype. The CLI uses it to feed image files to
// models; the device proxy will run the same code beside the model so
// devices can send compressed images instead of raw tensors.
package preprocess

import (
	"fmt"
	"image"
	_ "image/jpeg" // register decoders
	_ "image/png"
	"io"
	"math"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Layout orders a 4-D image tensor.
type Layout string

// The supported layouts.
const (
	NCHW Layout = "NCHW"
	NHWC Layout = "NHWC"
)

// Spec says how to build a tensor from an image.
type Spec struct {
	Width, Height int
	Layout        Layout
	// Scale multiplies 8-bit channel values first (1/255 maps to [0,1]).
	Scale float32
	// Mean and Std normalise each RGB channel after scaling: (v-mean)/std.
	Mean [3]float32
	Std  [3]float32
	// BGR swaps the channel order (PaddleOCR-style models).
	BGR bool
}

// MaxPixels bounds decoded images, checked from the header before decoding.
const MaxPixels = 64 << 20

// Decode reads a JPEG or PNG image, refusing absurd dimensions before
// allocating.
func Decode(r io.ReadSeeker) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("image: %v (want JPEG or PNG)", err))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, errdefs.Invalid(fmt.Sprintf("image: %s of %dx%d pixels is outside 1..%d pixels", format, cfg.Width, cfg.Height, MaxPixels))
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("image: corrupt %s: %v", format, err))
	}
	return img, nil
}

// ToTensor resizes img to spec and returns a [1,3,H,W] or [1,H,W,3] FP32
// tensor named name.
func ToTensor(name string, img image.Image, spec Spec) (tensor.Tensor, error) {
	if spec.Width <= 0 || spec.Height <= 0 || spec.Width*spec.Height > MaxPixels {
		return tensor.Tensor{}, errdefs.Invalid(fmt.Sprintf("preprocess: target size %dx%d is invalid", spec.Width, spec.Height))
	}
	if spec.Scale == 0 {
		spec.Scale = 1
	}
	for c := range 3 {
		if spec.Std[c] == 0 {
			spec.Std[c] = 1
		}
	}
	w, h := spec.Width, spec.Height
	rgb := resizeBilinear(img, w, h)
	vals := make([]float32, 3*w*h)
	for y := range h {
		for x := range w {
			for c := range 3 {
				src := c
				if spec.BGR {
					src = 2 - c
				}
				v := (rgb[(y*w+x)*3+src]*spec.Scale - spec.Mean[c]) / spec.Std[c]
				var idx int
				if spec.Layout == NHWC {
					idx = (y*w+x)*3 + c
				} else {
					idx = c*w*h + y*w + x
				}
				vals[idx] = v
			}
		}
	}
	shape := []int64{1, 3, int64(h), int64(w)}
	if spec.Layout == NHWC {
		shape = []int64{1, int64(h), int64(w), 3}
	}
	return tensor.FromFloat32(name, shape, vals), nil
}

// resizeBilinear samples img at w×h with pixel-centre alignment and returns
// interleaved RGB values in 0..255.
func resizeBilinear(img image.Image, w, h int) []float32 {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	src := make([]float32, sw*sh*3)
	for y := range sh {
		for x := range sw {
			r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			i := (y*sw + x) * 3
			src[i], src[i+1], src[i+2] = float32(r>>8), float32(g>>8), float32(bb>>8)
		}
	}
	out := make([]float32, w*h*3)
	fx := float64(sw) / float64(w)
	fy := float64(sh) / float64(h)
	for y := range h {
		sy := math.Max((float64(y)+0.5)*fy-0.5, 0)
		y0 := int(sy)
		y1 := min(y0+1, sh-1)
		dy := float32(sy - float64(y0))
		for x := range w {
			sx := math.Max((float64(x)+0.5)*fx-0.5, 0)
			x0 := int(sx)
			x1 := min(x0+1, sw-1)
			dx := float32(sx - float64(x0))
			for c := range 3 {
				p00 := src[(y0*sw+x0)*3+c]
				p01 := src[(y0*sw+x1)*3+c]
				p10 := src[(y1*sw+x0)*3+c]
				p11 := src[(y1*sw+x1)*3+c]
				top := p00 + (p01-p00)*dx
				bot := p10 + (p11-p10)*dx
				out[(y*w+x)*3+c] = top + (bot-top)*dy
			}
		}
	}
	return out
}
