// Package preprocess turns images into model input tensors in pure Go:
// resize (bilinear), layout (NCHW or NHWC), scale, per-channel mean/std
// normalisation and datatype (FP32, FP16 or UINT8). The CLI uses it to feed
// image files to models, and the agent runs the same code beside the model
// so devices on slow links can send compressed images (JPEG or PNG bytes)
// instead of raw tensors (Images).
package preprocess

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register decoders
	_ "image/png"
	"io"
	"math"
	"strings"

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
	// Layout orders the tensor; empty is NCHW.
	Layout Layout
	// Scale multiplies 8-bit channel values first (1/255 maps to [0,1]);
	// 0 is 1.
	Scale float32
	// Mean and Std normalise each RGB channel after scaling: (v-mean)/std.
	// A zero Std entry is 1.
	Mean [3]float32
	Std  [3]float32
	// BGR swaps the channel order (PaddleOCR-style models).
	BGR bool
	// DataType of the tensor: FP32 (also the zero value), FP16, or UINT8
	// (normalised values rounded to the nearest integer and clamped to
	// 0..255, so use Scale 1 and no Mean/Std for raw pixels).
	DataType tensor.DataType
}

// Supported reports whether ToTensor can produce datatype dt.
func Supported(dt tensor.DataType) bool {
	return dt == tensor.FP32 || dt == tensor.FP16 || dt == tensor.Uint8
}

// MaxPixels bounds decoded images (8192×8192), checked from the header
// before decoding.
const MaxPixels = 64 << 20

// Formats names the encodings Decode accepts.
const Formats = "JPEG or PNG"

// Decode reads a JPEG or PNG image, refusing other formats and absurd
// dimensions before allocating. Errors wrap errdefs.ErrInvalid.
func Decode(r io.ReadSeeker) (image.Image, error) {
	img, err := decode(r)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return img, nil
}

// decode is Decode with errors that do not start "image: ".
func decode(r io.ReadSeeker) (image.Image, error) {
	var head [16]byte
	n, _ := io.ReadFull(r, head[:])
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, errdefs.Invalid("empty (want " + Formats + ")")
	}
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, errdefs.Invalid(explain(head[:n], err))
	}
	if format != "jpeg" && format != "png" {
		// Another package of the program may have registered a decoder;
		// the contract stays JPEG or PNG.
		return nil, errdefs.Invalid(fmt.Sprintf("%s images are not supported (want %s)", formatName(format), Formats))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, errdefs.Invalid(fmt.Sprintf("%s of %dx%d pixels is outside 1..%d pixels", formatName(format), cfg.Width, cfg.Height, MaxPixels))
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("corrupt %s: %v", formatName(format), err))
	}
	return img, nil
}

// explain turns a header error into words, naming formats it recognises.
func explain(head []byte, err error) string {
	magic := func(prefix string) bool { return bytes.HasPrefix(head, []byte(prefix)) }
	known := ""
	switch {
	case magic("\xff\xd8"):
		known = "JPEG"
	case magic("\x89PNG\r\n\x1a\n"):
		known = "PNG"
	}
	if known != "" {
		return fmt.Sprintf("corrupt %s: %v", known, err)
	}
	other := ""
	switch {
	case magic("GIF87a"), magic("GIF89a"):
		other = "GIF"
	case magic("BM"):
		other = "BMP"
	case magic("RIFF") && len(head) >= 12 && string(head[8:12]) == "WEBP":
		other = "WebP"
	case magic("II*\x00"), magic("MM\x00*"):
		other = "TIFF"
	}
	if other != "" {
		return fmt.Sprintf("%s images are not supported (want %s)", other, Formats)
	}
	if !errors.Is(err, image.ErrFormat) {
		return fmt.Sprintf("not a %s image: %v", Formats, err)
	}
	return fmt.Sprintf("not a %s image (unknown format)", Formats)
}

func formatName(f string) string {
	switch f {
	case "jpeg":
		return "JPEG"
	case "png":
		return "PNG"
	}
	return strings.ToUpper(f)
}

// check validates spec and fills in its defaults.
func (spec Spec) check() (Spec, error) {
	if spec.Width <= 0 || spec.Height <= 0 || spec.Width*spec.Height > MaxPixels {
		return spec, errdefs.Invalid(fmt.Sprintf("preprocess: target size %dx%d is invalid", spec.Width, spec.Height))
	}
	switch spec.Layout {
	case "":
		spec.Layout = NCHW
	case NCHW, NHWC:
	default:
		return spec, errdefs.Invalid(fmt.Sprintf("preprocess: layout %q is not NCHW or NHWC", spec.Layout))
	}
	if spec.DataType == tensor.Invalid {
		spec.DataType = tensor.FP32
	}
	if !Supported(spec.DataType) {
		return spec, errdefs.Invalid(fmt.Sprintf("preprocess: datatype %s is not FP32, FP16 or UINT8", spec.DataType))
	}
	if spec.Scale == 0 {
		spec.Scale = 1
	}
	for c := range 3 {
		if spec.Std[c] == 0 {
			spec.Std[c] = 1
		}
	}
	return spec, nil
}

// shape is the tensor shape of n images.
func (spec Spec) shape(n int) []int64 {
	if spec.Layout == NHWC {
		return []int64{int64(n), int64(spec.Height), int64(spec.Width), 3}
	}
	return []int64{int64(n), 3, int64(spec.Height), int64(spec.Width)}
}

// imageBytes is the size of one image's tensor data.
func (spec Spec) imageBytes() int { return 3 * spec.Width * spec.Height * spec.DataType.Size() }

// ToTensor resizes img to spec and returns a [1,3,H,W] or [1,H,W,3] tensor
// named name, of spec.DataType.
func ToTensor(name string, img image.Image, spec Spec) (tensor.Tensor, error) {
	spec, err := spec.check()
	if err != nil {
		return tensor.Tensor{}, err
	}
	data := make([]byte, spec.imageBytes())
	fill(data, img, spec)
	return tensor.Tensor{Name: name, DataType: spec.DataType, Shape: spec.shape(1), Data: data}, nil
}

// Images decodes encoded JPEG or PNG images, preprocesses each to spec and
// stacks them into one [N,3,H,W] or [N,H,W,3] tensor named name, exactly
// as ToTensor would for each decoded image. It decodes one image at a time
// and checks ctx between images, returning ctx.Err() unwrapped when it
// ends. Bad images give errors that wrap errdefs.ErrInvalid and name the
// image's index.
func Images(ctx context.Context, name string, images [][]byte, spec Spec) (tensor.Tensor, error) {
	spec, err := spec.check()
	if err != nil {
		return tensor.Tensor{}, err
	}
	if len(images) == 0 {
		return tensor.Tensor{}, errdefs.Invalid("preprocess: no images")
	}
	per := spec.imageBytes()
	data := make([]byte, len(images)*per)
	for i, b := range images {
		if err := ctx.Err(); err != nil {
			return tensor.Tensor{}, err
		}
		img, err := decode(bytes.NewReader(b))
		if err != nil {
			return tensor.Tensor{}, fmt.Errorf("image %d of %d: %w", i, len(images), err)
		}
		fill(data[i*per:(i+1)*per], img, spec)
	}
	return tensor.Tensor{Name: name, DataType: spec.DataType, Shape: spec.shape(len(images)), Data: data}, nil
}

// fill writes one image's tensor data into dst; spec has been checked.
func fill(dst []byte, img image.Image, spec Spec) {
	w, h := spec.Width, spec.Height
	rgb := resizeBilinear(img, w, h)
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
				switch spec.DataType {
				case tensor.FP32:
					binary.LittleEndian.PutUint32(dst[4*idx:], math.Float32bits(v))
				case tensor.FP16:
					binary.LittleEndian.PutUint16(dst[2*idx:], tensor.Float32ToFP16(v))
				case tensor.Uint8:
					dst[idx] = toUint8(v)
				}
			}
		}
	}
}

// toUint8 rounds v to the nearest integer in 0..255 (NaN is 0).
func toUint8(v float32) uint8 {
	switch {
	case !(v > 0):
		return 0
	case v >= 255:
		return 255
	}
	return uint8(math.Round(float64(v)))
}

// pixelFunc returns the 8-bit RGB values of the pixel at (x, y) relative to
// the image's bounds, reading the common concrete image types directly.
// Every path gives what img.At(x, y).RGBA() >> 8 gives.
func pixelFunc(img image.Image) func(x, y int) (r, g, b float32) {
	bnd := img.Bounds()
	switch im := img.(type) {
	case *image.YCbCr:
		return func(x, y int) (float32, float32, float32) {
			c := im.YCbCrAt(bnd.Min.X+x, bnd.Min.Y+y)
			r, g, b := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
			return float32(r), float32(g), float32(b)
		}
	case *image.RGBA:
		return func(x, y int) (float32, float32, float32) {
			i := im.PixOffset(bnd.Min.X+x, bnd.Min.Y+y)
			return float32(im.Pix[i]), float32(im.Pix[i+1]), float32(im.Pix[i+2])
		}
	case *image.Gray:
		return func(x, y int) (float32, float32, float32) {
			v := float32(im.Pix[im.PixOffset(bnd.Min.X+x, bnd.Min.Y+y)])
			return v, v, v
		}
	}
	return func(x, y int) (float32, float32, float32) {
		r, g, b, _ := img.At(bnd.Min.X+x, bnd.Min.Y+y).RGBA()
		return float32(r >> 8), float32(g >> 8), float32(b >> 8)
	}
}

// resizeBilinear samples img at w×h with pixel-centre alignment and returns
// interleaved RGB values in 0..255. It reads only the four source pixels
// around each output pixel, so a large source costs no extra memory.
func resizeBilinear(img image.Image, w, h int) []float32 {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	px := pixelFunc(img)
	out := make([]float32, w*h*3)
	fx := float64(sw) / float64(w)
	fy := float64(sh) / float64(h)
	for y := range h {
		sy := math.Max((float64(y)+0.5)*fy-0.5, 0)
		y0 := min(int(sy), sh-1)
		y1 := min(y0+1, sh-1)
		dy := float32(sy - float64(y0))
		for x := range w {
			sx := math.Max((float64(x)+0.5)*fx-0.5, 0)
			x0 := min(int(sx), sw-1)
			x1 := min(x0+1, sw-1)
			dx := float32(sx - float64(x0))
			var p00, p01, p10, p11 [3]float32
			p00[0], p00[1], p00[2] = px(x0, y0)
			p01[0], p01[1], p01[2] = px(x1, y0)
			p10[0], p10[1], p10[2] = px(x0, y1)
			p11[0], p11[1], p11[2] = px(x1, y1)
			for c := range 3 {
				top := p00[c] + (p01[c]-p00[c])*dx
				bot := p10[c] + (p11[c]-p10[c])*dx
				out[(y*w+x)*3+c] = top + (bot-top)*dy
			}
		}
	}
	return out
}
