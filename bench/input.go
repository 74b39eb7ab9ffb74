package bench

import (
	"fmt"
	"image"
	"image/color"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

// imagePrep is how a known model's image input is sized and normalised.
type imagePrep struct {
	height, width int // used where the model's own dimension is dynamic
	scale         float32
	mean, std     [3]float32
	bgr           bool
	what          string // the normalisation, in words
}

var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
	half         = [3]float32{0.5, 0.5, 0.5}
	ones         = [3]float32{1, 1, 1}
)

// knownPreps are the demo models' preprocessing (scripts/setup.sh installs
// them): BlazeFace takes [-1,1] RGB, PaddleOCR BGR normalised as in its own
// pipeline; detection runs at 640×640, the angle classifier at 48×192 and
// recognition at 48×320.
var knownPreps = map[string]imagePrep{
	"blazeface-back":  {height: 256, width: 256, scale: 1 / 127.5, mean: ones, std: ones, what: "RGB scaled to [-1,1]"},
	"blazeface-front": {height: 128, width: 128, scale: 1 / 127.5, mean: ones, std: ones, what: "RGB scaled to [-1,1]"},
	"ocr-det":         {height: 640, width: 640, scale: 1.0 / 255, mean: imagenetMean, std: imagenetStd, bgr: true, what: "BGR, ImageNet mean/std"},
	"ocr-cls":         {height: 48, width: 192, scale: 1.0 / 255, mean: half, std: half, bgr: true, what: "BGR scaled to [-1,1]"},
	"ocr-rec":         {height: 48, width: 320, scale: 1.0 / 255, mean: half, std: half, bgr: true, what: "BGR scaled to [-1,1]"},
}

// defaultPrep serves image inputs of models bench does not know.
var defaultPrep = imagePrep{height: 256, width: 256, scale: 1.0 / 255, mean: [3]float32{}, std: ones, what: "RGB scaled to [0,1]"}

// SyntheticImage is the deterministic picture used when no image is given:
// 640×480, a colour gradient crossed by dark bars that look like lines of
// text (so a text detector has something to find).
func SyntheticImage() image.Image {
	const w, h = 640, 480
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: uint8(x * 255 / (w - 1)), G: uint8(y * 255 / (h - 1)), B: uint8((x + y) % 256), A: 255}
			if y%48 >= 18 && y%48 < 30 && x >= 64 && x < w-64 && (x/24)%5 != 4 {
				c = color.RGBA{R: 20, G: 20, B: 20, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// buildInputs makes one deterministic tensor per model input. Image-like
// inputs (4-D FP32 with 3 channels first or last) come from img through
// preprocess, resized to the model's fixed size or, where that is dynamic,
// to the size knownPreps gives; any other FP32 input is a fixed ramp with
// dynamic dimensions set to 1. imgDesc names the image for the description.
func buildInputs(model string, meta runtime.Metadata, img image.Image, imgDesc string) ([]tensor.Tensor, string, error) {
	prep, ok := knownPreps[model]
	if !ok {
		prep = defaultPrep
	}
	var out []tensor.Tensor
	desc := ""
	for i, in := range meta.Inputs {
		if in.DataType != tensor.FP32 {
			return nil, "", fmt.Errorf("model %s: input %s is %s; the overhead benchmark only builds FP32 inputs", model, in.Name, in.DataType)
		}
		var t tensor.Tensor
		var what string
		if spec, ok := imageInputSpec(in.Shape, prep); ok {
			var err error
			if t, err = preprocess.ToTensor(in.Name, img, spec); err != nil {
				return nil, "", fmt.Errorf("model %s: input %s: %w", model, in.Name, err)
			}
			what = fmt.Sprintf("%s via preprocess (%s, %s)", imgDesc, spec.Layout, prep.what)
		} else {
			shape := make([]int64, len(in.Shape))
			for d, n := range in.Shape {
				shape[d] = max(n, 1)
			}
			n, err := tensor.NumElements(shape)
			if err != nil {
				return nil, "", fmt.Errorf("model %s: input %s: %w", model, in.Name, err)
			}
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(j%256) / 255
			}
			t = tensor.FromFloat32(in.Name, shape, v)
			what = "fixed ramp"
		}
		if i > 0 {
			desc += "; "
		}
		desc += fmt.Sprintf("%s %s%v from %s", t.Name, t.DataType, t.Shape, what)
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("model %s declares no inputs", model)
	}
	return out, desc, nil
}

// imageInputSpec recognises a 4-D image input (NCHW with 3 channels, or
// NHWC) and sizes it: fixed dimensions as declared, dynamic ones from prep.
// The batch dimension must be 1 or dynamic (it becomes 1).
func imageInputSpec(shape []int64, prep imagePrep) (preprocess.Spec, bool) {
	if len(shape) != 4 || (shape[0] != 1 && shape[0] != -1) {
		return preprocess.Spec{}, false
	}
	spec := preprocess.Spec{Scale: prep.scale, Mean: prep.mean, Std: prep.std, BGR: prep.bgr}
	var h, w int64
	switch {
	case shape[1] == 3:
		spec.Layout, h, w = preprocess.NCHW, shape[2], shape[3]
	case shape[3] == 3:
		spec.Layout, h, w = preprocess.NHWC, shape[1], shape[2]
	default:
		return preprocess.Spec{}, false
	}
	if h < 0 {
		h = int64(prep.height)
	}
	if w < 0 {
		w = int64(prep.width)
	}
	spec.Height, spec.Width = int(h), int(w)
	return spec, true
}
