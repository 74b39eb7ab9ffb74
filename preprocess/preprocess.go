// Package preprocess turns images into model input tensors in pure Go:
// resize (bilinear), layout (NCHW or NHWC), scale, per-channel mean/std
// normalisation and datatype (FP32, FP16 or UINT8). The CLI uses it to feed
// image files to models, and the agent runs the same code beside the model
// so devices on slow links can send compressed images (JPEG or PNG bytes)
// instead of raw tensors (Images).
package preprocess

import (
	"bufio"
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
	"runtime"
	"strings"

	"golang.org/x/sync/semaphore"

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

// MaxImageBytes bounds the memory that decoding one image may take, as
// DecodeCost counts it from the header: an 8192×8192 baseline JPEG or 8-bit
// PNG fits (4 bytes a pixel, and the decoder's buffers), a 16-bit,
// interlaced or progressive one that size does not. A few hundred bytes of
// compressed input can claim this much, so it is checked before decoding.
const MaxImageBytes = 257 << 20

// Formats names the encodings Decode accepts.
const Formats = "JPEG or PNG"

// Decode reads a JPEG or PNG image, refusing other formats, absurd
// dimensions and images whose decoding would take more than MaxImageBytes
// before allocating. Errors wrap errdefs.ErrInvalid.
func Decode(r io.ReadSeeker) (image.Image, error) {
	h, err := readHeader(r)
	if err == nil {
		var img image.Image
		if img, err = h.decode(r); err == nil {
			return img, nil
		}
	}
	return nil, fmt.Errorf("image: %w", err)
}

// header is what an image's header says about decoding it.
type header struct {
	format string // "jpeg" or "png"
	// cost is the memory decoding takes, in bytes (DecodeCost).
	cost int64
}

// DecodeCost reads an encoded image's header and returns the memory, in
// bytes, that decoding it will take, within a few percent of what Go's
// decoders allocate: the decoded pixels at their own depth and sampling
// (a 16-bit RGBA PNG takes 8 bytes a pixel, a 4:2:0 JPEG 1.5), 4 bytes a
// sample more for a progressive JPEG's coefficients, twice over for an
// interlaced PNG's passes, and the decoder's own tables and buffers.
// Errors are Decode's, so a nil error means the header is a JPEG or PNG
// within MaxPixels and MaxImageBytes.
func DecodeCost(b []byte) (int64, error) {
	h, err := readHeader(bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("image: %w", err)
	}
	return h.cost, nil
}

// readHeader reads and checks r's header and seeks back to the start. Its
// errors do not start "image: ".
func readHeader(r io.ReadSeeker) (header, error) {
	var head [32]byte
	n, _ := io.ReadFull(r, head[:])
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return header{}, err
	}
	if n == 0 {
		return header{}, errdefs.Invalid("empty (want " + Formats + ")")
	}
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return header{}, errdefs.Invalid(explain(head[:n], err))
	}
	if format != "jpeg" && format != "png" {
		// Another package of the program may have registered a decoder;
		// the contract stays JPEG or PNG.
		return header{}, errdefs.Invalid(fmt.Sprintf("%s images are not supported (want %s)", formatName(format), Formats))
	}
	pixels := int64(cfg.Width) * int64(cfg.Height)
	if cfg.Width <= 0 || cfg.Height <= 0 || pixels > MaxPixels {
		return header{}, errdefs.Invalid(fmt.Sprintf("%s of %dx%d pixels is outside 1..%d pixels", formatName(format), cfg.Width, cfg.Height, MaxPixels))
	}
	var cost int64
	var what string
	switch format {
	case "png":
		perPixel := pixelBytes(cfg.ColorModel)
		cost, what = pixels*perPixel, fmt.Sprintf("%d bytes a pixel", perPixel)
		// Besides: the inflater's state and window, and two rows.
		cost += 72<<10 + 2*(int64(cfg.Width)*perPixel+1)
		// The interlace method is the IHDR's last byte (offset 28);
		// Adam7 decodes each pass into its own image, then merges.
		if n > 28 && head[28] == 1 {
			cost, what = 2*cost, what+", interlaced"
		}
	case "jpeg":
		// The decoder keeps one plane per component at its own sampling,
		// a progressive frame's coefficients (4 bytes a sample) besides,
		// and converts 4-component images into a CMYK one.
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return header{}, err
		}
		planes, progressive, err := jpegFrame(r)
		if err != nil {
			return header{}, errdefs.Invalid("corrupt JPEG: " + err.Error())
		}
		perPixel := planes
		if progressive {
			perPixel *= 5
		}
		if cfg.ColorModel == color.CMYKModel {
			perPixel += 4
		}
		cost = int64(math.Ceil(float64(pixels)*perPixel)) + 24<<10 // and tables, buffers
		what = fmt.Sprintf("%.3g bytes a pixel", perPixel)
		if progressive {
			what += ", progressive"
		}
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return header{}, err
	}
	h := header{format: format, cost: cost}
	if cost > MaxImageBytes {
		return h, errdefs.Invalid(fmt.Sprintf("%s of %dx%d pixels at %s would take %d MiB to decode, more than the %d MiB one image may take",
			formatName(format), cfg.Width, cfg.Height, what, cost>>20, MaxImageBytes>>20))
	}
	return h, nil
}

// decode decodes the image whose header h was read from r.
func (h header) decode(r io.Reader) (image.Image, error) {
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("corrupt %s: %v", formatName(h.format), err))
	}
	return img, nil
}

// pixelBytes is how many bytes a pixel of a PNG decoded to color model m
// takes; an unknown model counts as the largest Go has.
func pixelBytes(m color.Model) int64 {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.RGBAModel, color.NRGBAModel:
		return 4
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8
}

// jpegFrame walks a JPEG's marker segments to its frame header (SOFn) and
// returns the decoded planes' size relative to the image's (3 for 4:4:4,
// 1.5 for 4:2:0, 1 for gray) and whether the frame is progressive. r starts
// at the SOI and image.DecodeConfig has already accepted the header.
func jpegFrame(r io.Reader) (planes float64, progressive bool, err error) {
	br := bufio.NewReader(r)
	var buf [4]byte
	if _, err := io.ReadFull(br, buf[:2]); err != nil || buf[0] != 0xff || buf[1] != 0xd8 {
		return 0, false, errors.New("no SOI marker")
	}
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, false, errors.New("no frame header")
		}
		if b != 0xff {
			continue // between segments: skip until a marker
		}
		m, err := br.ReadByte()
		for err == nil && m == 0xff { // fill bytes
			m, err = br.ReadByte()
		}
		if err != nil {
			return 0, false, errors.New("no frame header")
		}
		if m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7) {
			continue // stuffed byte, TEM or RSTn: no length follows
		}
		if _, err := io.ReadFull(br, buf[:2]); err != nil {
			return 0, false, errors.New("truncated segment")
		}
		n := int(buf[0])<<8 | int(buf[1])
		if n < 2 {
			return 0, false, errors.New("bad segment length")
		}
		if m < 0xc0 || m > 0xcf || m == 0xc4 || m == 0xc8 || m == 0xcc {
			// Not a frame header (APPn, DQT, ...): skip it unread.
			if _, err := br.Discard(n - 2); err != nil {
				return 0, false, errors.New("truncated segment")
			}
			continue
		}
		seg := make([]byte, n-2)
		if _, err := io.ReadFull(br, seg); err != nil {
			return 0, false, errors.New("truncated segment")
		}
		// SOFn: precision, height, width, component count, then per
		// component an id, its sampling factors (H<<4|V) and a table.
		if len(seg) < 6 || len(seg) < 6+3*int(seg[5]) || seg[5] == 0 {
			return 0, false, errors.New("bad frame header")
		}
		nc := int(seg[5])
		hmax, vmax := 1, 1
		for c := range nc {
			f := seg[7+3*c]
			hmax, vmax = max(hmax, int(f>>4)), max(vmax, int(f&15))
		}
		for c := range nc {
			f := seg[7+3*c]
			planes += float64(max(int(f>>4), 1)*max(int(f&15), 1)) / float64(hmax*vmax)
		}
		return planes, m == 0xc2 || m == 0xc6 || m == 0xca || m == 0xce, nil
	}
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

// Budget bounds the memory that images being decoded at once may take,
// across every request that shares it, as DecodeCost counts it: a decoder
// waits for its image's share (or its context) before allocating it.
type Budget struct {
	sem  *semaphore.Weighted
	size int64
}

// NewBudget returns a budget of size bytes; a size below MaxImageBytes is
// raised to it, so every image that Decode accepts can be decoded.
func NewBudget(size int64) *Budget {
	size = max(size, MaxImageBytes)
	return &Budget{sem: semaphore.NewWeighted(size), size: size}
}

// Size is the budget in bytes.
func (b *Budget) Size() int64 { return b.size }

// Images decodes encoded JPEG or PNG images, preprocesses each to spec and
// stacks them into one [N,3,H,W] or [N,H,W,3] tensor named name, exactly
// as ToTensor would for each decoded image. It decodes one image at a time,
// each within budget (nil: no shared bound), and checks ctx between images
// and while it waits for budget, returning ctx.Err() unwrapped when it
// ends. Bad images give errors that wrap errdefs.ErrInvalid and name the
// image's index.
func Images(ctx context.Context, name string, images [][]byte, spec Spec, budget *Budget) (tensor.Tensor, error) {
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
		if err := decodeInto(ctx, data[i*per:(i+1)*per], b, spec, budget); err != nil {
			if ctx.Err() != nil {
				return tensor.Tensor{}, ctx.Err()
			}
			return tensor.Tensor{}, fmt.Errorf("image %d of %d: %w", i, len(images), err)
		}
	}
	return tensor.Tensor{Name: name, DataType: spec.DataType, Shape: spec.shape(len(images)), Data: data}, nil
}

// decodeInto decodes one encoded image within budget and fills dst.
func decodeInto(ctx context.Context, dst, b []byte, spec Spec, budget *Budget) error {
	r := bytes.NewReader(b)
	h, err := readHeader(r)
	if err != nil {
		return err
	}
	if budget != nil {
		if err := budget.sem.Acquire(ctx, h.cost); err != nil {
			return err
		}
		defer budget.sem.Release(h.cost)
	}
	img, err := h.decode(r)
	if err != nil {
		return err
	}
	fill(dst, img, spec)
	if h.cost >= collectAbove {
		// The decoded pixels are garbage now. Collect them before the
		// budget lets the next large image in, or the heap grows by
		// GOGC's margin on top of what the budget bounds.
		runtime.GC()
	}
	return nil
}

// collectAbove is the decoding cost from which an image's pixels are
// collected at once after use (decodeInto): a collection costs far less
// than decoding this many bytes.
const collectAbove = 32 << 20

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
