package agent

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
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

// imageModel is an identity fake model whose outputs mirror its inputs, so
// a response shows exactly the tensor the runtime received.
func imageModel(ios ...fake.IO) fake.Model {
	m := fake.Model{Inputs: ios}
	for _, io := range ios {
		io.Name += "_out"
		m.Outputs = append(m.Outputs, io)
	}
	return m
}

func testImage(w, h int, seed uint8) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x*255/w) + seed, uint8(y*255/h) ^ seed, uint8(x*y) + 3*seed, 255})
		}
	}
	return img
}

func encodeImage(t *testing.T, img image.Image, format string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85})
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeader is a PNG signature and a valid IHDR chunk declaring a w×h RGB
// image, with no pixel data.
func pngHeader(w, h uint32) []byte {
	chunk := []byte("IHDR")
	chunk = binary.BigEndian.AppendUint32(chunk, w)
	chunk = binary.BigEndian.AppendUint32(chunk, h)
	chunk = append(chunk, 8, 2, 0, 0, 0)
	out := binary.BigEndian.AppendUint32([]byte("\x89PNG\r\n\x1a\n"), uint32(len(chunk)-4))
	out = append(out, chunk...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(chunk))
}

func imagesInput(name string, files ...[]byte) oip.InferInput {
	return oip.InferInput{Tensor: tensor.Tensor{Name: name, DataType: tensor.Bytes, Shape: []int64{int64(len(files))}, Data: tensor.JoinBytes(files)}}
}

// reference is what preprocess.ToTensor gives for the decoded files,
// stacked: the tensor the model must receive.
func reference(t *testing.T, spec preprocess.Spec, files ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, f := range files {
		img, _, err := image.Decode(bytes.NewReader(f))
		if err != nil {
			t.Fatal(err)
		}
		one, err := preprocess.ToTensor("ref", img, spec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, one.Data...)
	}
	return out
}

func sameShape(a, b []int64) bool {
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

func TestEncodedImagesRoundTrip(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{
		// H=8, W=6; layout inferred (NCHW), normalised like ImageNet.
		"nchw": {model: imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 8, 6}}),
			config: "max_batch_size: 4\npreprocess:\n  image:\n    mean: [0.485, 0.456, 0.406]\n    std: [0.229, 0.224, 0.225]\n"},
		// Dynamic size taken from the config; layout inferred (NHWC).
		"nhwc": {model: imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, -1, -1, 3}}),
			config: "preprocess: {image: {width: 7, height: 5, scale: 0.5, bgr: true, layout: NHWC}}\n"},
		// Raw pixels for a UINT8 model: scale defaults to 1.
		"u8": {model: imageModel(fake.IO{Name: "image", DataType: "UINT8", Shape: []int64{-1, 4, 4, 3}}),
			config: "preprocess: {image: {}}\n"},
		"f16": {model: imageModel(fake.IO{Name: "image", DataType: "FP16", Shape: []int64{-1, 3, 4, 4}}),
			config: "preprocess: {image: {datatype: FP16}}\n"},
		// A second, ordinary input next to the image.
		"two": {model: imageModel(fake.IO{Name: "k", DataType: "FP32", Shape: []int64{-1, 2}}, fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 3, 5}}),
			config: "preprocess: {image: {}}\n"},
	})
	m, b, _ := newManager(t, root)
	ctx := context.Background()
	jpg := encodeImage(t, testImage(40, 30, 0), "jpeg")
	pngFile := encodeImage(t, testImage(13, 21, 7), "png")

	for _, c := range []struct {
		model string
		spec  preprocess.Spec
		shape []int64
	}{
		{"nchw", preprocess.Spec{Width: 6, Height: 8, Layout: preprocess.NCHW, Scale: 1.0 / 255,
			Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}}, []int64{2, 3, 8, 6}},
		{"nhwc", preprocess.Spec{Width: 7, Height: 5, Layout: preprocess.NHWC, Scale: 0.5, BGR: true}, []int64{2, 5, 7, 3}},
		{"u8", preprocess.Spec{Width: 4, Height: 4, Layout: preprocess.NHWC, Scale: 1, DataType: tensor.Uint8}, []int64{2, 4, 4, 3}},
		{"f16", preprocess.Spec{Width: 4, Height: 4, Scale: 1.0 / 255, DataType: tensor.FP16}, []int64{2, 3, 4, 4}},
	} {
		resp, err := m.Infer(ctx, &oip.InferRequest{ModelName: c.model, Inputs: []oip.InferInput{imagesInput("image", jpg, pngFile)}})
		if err != nil {
			t.Fatalf("%s: %v", c.model, err)
		}
		got := resp.Outputs[0]
		if want := reference(t, c.spec, jpg, pngFile); !sameShape(got.Shape, c.shape) || !bytes.Equal(got.Data, want) {
			t.Errorf("%s: model got %s%v, want %v equal to preprocess.ToTensor of the decoded images", c.model, got.DataType, got.Shape, c.shape)
		}
		if _, ok := resp.Parameters[PreprocessParameter].(int64); !ok {
			t.Errorf("%s: no %s in %v", c.model, PreprocessParameter, resp.Parameters)
		}
		// One image alone gives the first half.
		one, err := m.Infer(ctx, &oip.InferRequest{ModelName: c.model, Inputs: []oip.InferInput{imagesInput("image", pngFile)}})
		if err != nil {
			t.Fatalf("%s, one image: %v", c.model, err)
		}
		if want := reference(t, c.spec, pngFile); one.Outputs[0].Shape[0] != 1 || !bytes.Equal(one.Outputs[0].Data, want) {
			t.Errorf("%s, one image: shape %v or data differ", c.model, one.Outputs[0].Shape)
		}
	}

	// Mixed with an ordinary input, the image keeps its place.
	resp, err := m.Infer(ctx, &oip.InferRequest{ModelName: "two", Inputs: []oip.InferInput{
		imagesInput("image", jpg), {Tensor: tensor.FromFloat32("k", []int64{1, 2}, []float32{4, 2})}}})
	if err != nil {
		t.Fatal(err)
	}
	if k := resp.Outputs[0].Float32s(); k[0] != 4 || k[1] != 2 {
		t.Errorf("k_out %v", k)
	}
	if want := reference(t, preprocess.Spec{Width: 5, Height: 3, Scale: 1.0 / 255}, jpg); !bytes.Equal(resp.Outputs[1].Data, want) {
		t.Error("two: image_out differs from the reference")
	}

	// The ordinary tensor is still accepted for a preprocessed input, and
	// reports no preprocessing time.
	raw := tensor.FromFloat32("image", []int64{1, 3, 8, 6}, make([]float32, 3*8*6))
	resp, err = m.Infer(ctx, &oip.InferRequest{ModelName: "nchw", Inputs: []oip.InferInput{{Tensor: raw}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, has := resp.Parameters[PreprocessParameter]; has || !bytes.Equal(resp.Outputs[0].Data, raw.Data) {
		t.Errorf("tensor request: parameters %v", resp.Parameters)
	}

	// Metadata still describes the model's real input.
	md, err := m.ModelMetadata(ctx, "nchw", "")
	if err != nil || md.Inputs[0].DataType != tensor.FP32 || !sameShape(md.Inputs[0].Shape, []int64{-1, 3, 8, 6}) {
		t.Errorf("metadata %+v %v", md, err)
	}

	// A canceled request decodes nothing and never runs.
	before := b.Stats(root + "/nchw/1/model.onnx").Runs
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Infer(cctx, &oip.InferRequest{ModelName: "nchw", Inputs: []oip.InferInput{imagesInput("image", jpg)}}); !errors.Is(err, errdefs.ErrCanceled) {
		t.Errorf("canceled: %v, want ErrCanceled", err)
	}
	if after := b.Stats(root + "/nchw/1/model.onnx").Runs; after != before {
		t.Errorf("canceled request ran (%d runs, was %d)", after, before)
	}
}

func TestEncodedImagesRefused(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{
		"dyn": {model: imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 4, 4}}, fake.IO{Name: "k", DataType: "FP32", Shape: []int64{-1, 2}}),
			config: "preprocess: {image: {}}\n"},
		"fixed": {model: imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{1, 3, 4, 4}}),
			config: "preprocess: {image: {}}\n"},
	})
	m, _, _ := newManager(t, root)
	ctx := context.Background()
	good := encodeImage(t, testImage(8, 8, 1), "png")
	k := oip.InferInput{Tensor: tensor.FromFloat32("k", []int64{1, 2}, []float32{1, 2})}
	req := func(model string, in ...oip.InferInput) *oip.InferRequest {
		if model == "dyn" && len(in) == 1 {
			in = append(in, k)
		}
		return &oip.InferRequest{ModelName: model, Inputs: in}
	}
	jpg := encodeImage(t, testImage(8, 8, 2), "jpeg")
	for name, c := range map[string]struct {
		req  *oip.InferRequest
		want []string
	}{
		"corrupt bytes":   {req("dyn", imagesInput("image", good, []byte("definitely not an image"))), []string{`input "image"`, "image 1 of 2", "not a JPEG or PNG image"}},
		"truncated JPEG":  {req("dyn", imagesInput("image", jpg[:len(jpg)/2])), []string{`input "image"`, "corrupt JPEG"}},
		"GIF":             {req("dyn", imagesInput("image", encodeImage(t, testImage(4, 4, 0), "gif"))), []string{`input "image"`, "GIF images are not supported (want JPEG or PNG)"}},
		"huge header":     {req("dyn", imagesInput("image", pngHeader(100000, 100000))), []string{`input "image"`, "100000x100000", "outside 1..67108864 pixels"}},
		"empty element":   {req("dyn", imagesInput("image", nil)), []string{`input "image"`, "empty"}},
		"fixed batch":     {req("fixed", imagesInput("image", good, good)), []string{`input "image"`, "2 images", "fixed at 1"}},
		"no preprocess":   {req("dyn", imagesInput("image", good), imagesInput("k", good)), []string{`input "k"`, "BYTES", "preprocess"}},
		"rank 2":          {req("dyn", oip.InferInput{Tensor: tensor.Tensor{Name: "image", DataType: tensor.Bytes, Shape: []int64{1, 1}, Data: tensor.JoinBytes([][]byte{good})}}), []string{`input "image"`, "shape [N]"}},
		"no images":       {req("dyn", imagesInput("image")), []string{`input "image"`, "N ≥ 1"}},
		"count mismatch":  {req("dyn", oip.InferInput{Tensor: tensor.Tensor{Name: "image", DataType: tensor.Bytes, Shape: []int64{2}, Data: tensor.JoinBytes([][]byte{good})}}), []string{`input "image"`, "holds 1 elements"}},
		"too many images": {req("dyn", imagesInput("image", bytes.Split(bytes.Repeat([]byte("x,"), MinImagesPerRequest+1), []byte(","))[:MinImagesPerRequest+1]...)), []string{`input "image"`, "more than the 64"}},
	} {
		_, err := m.Infer(ctx, c.req)
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", name, err, w)
			}
		}
	}
	// One image for the fixed-batch model is fine.
	if _, err := m.Infer(ctx, req("fixed", imagesInput("image", good))); err != nil {
		t.Errorf("fixed batch, one image: %v", err)
	}
}

func TestPreprocessConfigErrors(t *testing.T) {
	nchw := imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 224, 224}})
	models := map[string]repoModel{"ok": {model: nchw, config: "preprocess: {image: {width: 224}}\n"}}
	cases := map[string]struct {
		model  fake.Model
		config string
		want   []string
	}{
		"unknown input": {nchw, "preprocess: {img: {}}\n", []string{"preprocess.img", `no input "img"`, "image"}},
		"bad layout":    {nchw, "preprocess: {image: {layout: CHW}}\n", []string{"preprocess.image.layout", "CHW"}},
		"mean length":   {nchw, "preprocess: {image: {mean: [0.5, 0.5]}}\n", []string{"preprocess.image.mean", "want 3"}},
		"unknown key":   {nchw, "preprocess: {image: {widht: 224}}\n", []string{"widht"}},
		"width differs": {nchw, "preprocess: {image: {width: 320}}\n", []string{"preprocess.image.width", "320", "224"}},
		"datatype":      {nchw, "preprocess: {image: {datatype: FP16}}\n", []string{"preprocess.image.datatype", "FP32"}},
		"wrong layout":  {nchw, "preprocess: {image: {layout: NHWC}}\n", []string{"preprocess.image.layout", "dimension 3"}},
		"not 4-D":       {vec, "preprocess: {x: {}}\n", []string{"preprocess.x", "4-D"}},
		"not a float":   {imageModel(fake.IO{Name: "image", DataType: "INT32", Shape: []int64{-1, 3, 4, 4}}), "preprocess: {image: {}}\n", []string{"preprocess.image", "INT32"}},
		"dynamic size":  {imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, -1, -1}}), "preprocess: {image: {width: 64}}\n", []string{"preprocess.image.height", "dynamic"}},
		"no channels":   {imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 4, 4, 4}}), "preprocess: {image: {}}\n", []string{"preprocess.image.layout", "set layout"}},
		"ambiguous":     {imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 8, 3}}), "preprocess: {image: {}}\n", []string{"preprocess.image.layout", "NCHW or NHWC"}},
		"std zero":      {nchw, "preprocess: {image: {std: [1, 0, 1]}}\n", []string{"preprocess.image.std[1]"}},
		"not a mapping": {nchw, "preprocess: [image]\n", []string{"preprocess"}},
		"zero scale":    {nchw, "preprocess: {image: {scale: 0}}\n", []string{"preprocess.image.scale"}},
	}
	for name, c := range cases {
		models[strings.ReplaceAll(name, " ", "_")] = repoModel{model: c.model, config: c.config}
	}
	root := writeRepo(t, models)
	b := fake.New()
	m, err := NewManager(Config{Repository: root, Backend: b, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.LoadAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	index, err := m.RepositoryIndex(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]oip.ModelIndexEntry{}
	for _, e := range index {
		states[e.Name] = e
	}
	if states["ok"].State != StateReady {
		t.Errorf("ok: %s (%s)", states["ok"].State, states["ok"].Reason)
	}
	for name, c := range cases {
		e := states[strings.ReplaceAll(name, " ", "_")]
		if e.State != StateUnavailable {
			t.Errorf("%s: state %s, want %s", name, e.State, StateUnavailable)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(e.Reason, w) {
				t.Errorf("%s: reason %q does not say %q", name, e.Reason, w)
			}
		}
	}
	if n := b.OpenSessions(); n != 1 {
		t.Errorf("%d sessions open, want 1 (refused models must close theirs)", n)
	}
}

// TestTimingParametersOnTheWire: every successful response carries the
// server-side timings, as int64 microseconds, through both transports.
func TestTimingParametersOnTheWire(t *testing.T) {
	root := writeRepo(t, map[string]repoModel{
		"m": {model: vec},
		"img": {model: imageModel(fake.IO{Name: "image", DataType: "FP32", Shape: []int64{-1, 3, 4, 4}}),
			config: "preprocess: {image: {}}\n"},
	})
	ctx := context.Background()
	n, err := StartNode(ctx, NodeConfig{
		Manager:  Config{Repository: root, Backend: fake.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close(ctx) }()
	gc, err := grpcsvc.Dial(n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	jpg := encodeImage(t, testImage(16, 16, 3), "jpeg")
	want := reference(t, preprocess.Spec{Width: 4, Height: 4, Scale: 1.0 / 255}, jpg)
	for _, c := range []struct {
		transport string
		svc       oip.Service
	}{{"in-process", n.Manager}, {"REST", rest.NewClient("http://"+n.HTTPAddr(), rest.ClientOptions{})}, {"gRPC", gc}} {
		resp, err := c.svc.Infer(ctx, vecReq("m", 2))
		if err != nil {
			t.Fatalf("%s: %v", c.transport, err)
		}
		for _, p := range []string{QueueParameter, ComputeParameter} {
			if v, ok := resp.Parameters[p].(int64); !ok || v < 0 {
				t.Errorf("%s: %s = %#v, want a non-negative int64 (all: %v)", c.transport, p, resp.Parameters[p], resp.Parameters)
			}
		}
		if _, has := resp.Parameters[PreprocessParameter]; has {
			t.Errorf("%s: %s set without preprocessing", c.transport, PreprocessParameter)
		}
		resp, err = c.svc.Infer(ctx, &oip.InferRequest{ModelName: "img", Inputs: []oip.InferInput{imagesInput("image", jpg)}})
		if err != nil {
			t.Fatalf("%s, image: %v", c.transport, err)
		}
		if v, ok := resp.Parameters[PreprocessParameter].(int64); !ok || v < 0 {
			t.Errorf("%s: %s = %#v, want a non-negative int64", c.transport, PreprocessParameter, resp.Parameters[PreprocessParameter])
		}
		if !bytes.Equal(resp.Outputs[0].Data, want) {
			t.Errorf("%s: image tensor differs from the reference", c.transport)
		}
		_, err = c.svc.Infer(ctx, &oip.InferRequest{ModelName: "img", Inputs: []oip.InferInput{imagesInput("image", []byte("junk"))}})
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "not a JPEG or PNG image") {
			t.Errorf("%s: junk image: %v", c.transport, err)
		}
	}
}
