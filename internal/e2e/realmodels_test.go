package e2e

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"path/filepath"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

// scene draws a deterministic test picture: light background, dark text-like
// bars and a skin-toned disc, so detectors see structure, not noise.
func scene(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 235, G: 235, B: 230, A: 255}
			if (y/12)%3 == 1 && (x/7)%5 != 0 && x > w/10 && x < w*9/10 {
				c = color.RGBA{R: 20, G: 20, B: 30, A: 255}
			}
			dx, dy := x-w/2, y-h/2
			if dx*dx+dy*dy < (w/5)*(w/5) {
				c = color.RGBA{R: 224, G: 172, B: 105, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	return img
}

// TestRealModels checks that every demo model answers through each
// transport with the outputs ONNX Runtime gives in-process.
func TestRealModels(t *testing.T) {
	repo := requireDemoModels(t)
	b := requireORT(t)
	s := startStack(t, repo, agent.NodeConfig{})
	imagenet := preprocess.Spec{Scale: 1.0 / 255, Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}}
	paddle := preprocess.Spec{Scale: 1.0 / 255, Mean: [3]float32{0.5, 0.5, 0.5}, Std: [3]float32{0.5, 0.5, 0.5}}
	face := preprocess.Spec{Scale: 1.0 / 127.5, Mean: [3]float32{1, 1, 1}, Std: [3]float32{1, 1, 1}, Layout: preprocess.NHWC}
	cases := []struct {
		model, input string
		w, h         int
		spec         preprocess.Spec
	}{
		{"ocr-det", "x", 640, 640, imagenet},
		{"ocr-rec", "x", 320, 48, paddle},
		{"ocr-cls", "x", 192, 48, paddle},
		{"blazeface-front", "input:0", 128, 128, face},
		{"blazeface-back", "input:0", 256, 256, face},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.model, func(t *testing.T) {
			spec := c.spec
			spec.Width, spec.Height = c.w, c.h
			in, err := preprocess.ToTensor(c.input, scene(c.w*2, c.h*2), spec)
			if err != nil {
				t.Fatal(err)
			}
			sess, err := b.Load(ctx, filepath.Join(repo, c.model, "1", "model.onnx"), runtime.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			want, err := sess.Run(ctx, []tensor.Tensor{in}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range transports {
				rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				resp, err := s.clients[tr].Infer(rctx, &oip.InferRequest{ModelName: c.model, ID: tr, Inputs: []oip.InferInput{{Tensor: in}}})
				cancel()
				if err != nil {
					t.Fatalf("%s: %v", tr, err)
				}
				if err := onnxtest.CheckOutputs(resp.Outputs, want); err != nil {
					t.Fatalf("%s: served outputs differ from in-process: %v", tr, err)
				}
				note := "within tolerance"
				if identical(resp.Outputs, want) {
					note = "bit-identical"
				}
				shapes := ""
				for _, o := range resp.Outputs {
					shapes += fmt.Sprintf(" %s%v", o.Name, o.Shape)
				}
				t.Logf("%s via %s: %s;%s", c.model, tr, note, shapes)
			}
		})
	}
}
