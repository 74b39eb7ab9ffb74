package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/npy"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

const inferHelp = `
Sends one inference request and prints each output's datatype, shape,
summary statistics and first values.

Inputs are files, given as FILE (for a model with one input) or NAME=FILE:
  *.jpg, *.jpeg, *.png  an image, resized and laid out (NCHW or NHWC) to the
                        input's shape; --scale, --mean, --std normalise it
  *.npy                 a NumPy array saved with numpy.save
  *.json                {"data": [...], "shape": [...], "datatype": "FP32"}
                        or a bare (nested) array, shaped like the input
With no file, a synthetic input (a smooth gradient) is generated and the
output says so. --print-request prints the Open Inference Protocol JSON
body instead of sending it (handy for curl).`

// clientFlags are the connection flags shared by the client commands.
type clientFlags struct {
	url, grpcAddr, token *string
	timeout              *time.Duration
}

func addClientFlags(fsAdd interface {
	String(string, string, string) *string
	Duration(string, time.Duration, string) *time.Duration
}) clientFlags {
	return clientFlags{
		url:      fsAdd.String("url", envOr("ACCELPOOL_URL", defaultServerURL), "server REST `URL`"),
		grpcAddr: fsAdd.String("grpc", "", "use gRPC to this `address` instead of REST"),
		token:    fsAdd.String("token", os.Getenv("ACCELPOOL_TOKEN"), "bearer `token` (default $ACCELPOOL_TOKEN)"),
		timeout:  fsAdd.Duration("timeout", 60*time.Second, "give up after this `duration`"),
	}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func (c clientFlags) dial(binary bool) (oip.Service, func(), error) {
	if *c.grpcAddr != "" {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20))}
		if *c.token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Credentials{Token: *c.token}))
		}
		cl, err := grpcsvc.Dial(*c.grpcAddr, opts...)
		if err != nil {
			return nil, nil, err
		}
		return cl, func() { _ = cl.Close() }, nil
	}
	hc := &http.Client{}
	if *c.token != "" {
		hc.Transport = bearer{token: *c.token, next: http.DefaultTransport}
	}
	return rest.NewClient(strings.TrimRight(*c.url, "/"), rest.ClientOptions{Binary: binary, HTTPClient: hc}), func() {}, nil
}

func runInfer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("infer", "infer --model NAME [flags] [FILE | NAME=FILE ...]", inferHelp, stderr)
	cf := addClientFlags(fs)
	model := fs.String("model", "", "model `name` (required)")
	version := fs.String("version", "", "model `version` (default: the one served)")
	binary := fs.Bool("binary", true, "REST: send and receive tensors in the binary extension instead of JSON")
	printReq := fs.Bool("print-request", false, "print the JSON request body and exit")
	asJSON := fs.Bool("json", false, "print the whole response as JSON")
	scale := fs.Float64("scale", 1.0/255, "images: multiply 8-bit values by this `factor` first")
	mean := fs.String("mean", "0,0,0", "images: per-channel `mean` subtracted after scaling")
	std := fs.String("std", "1,1,1", "images: per-channel `std` divided by after subtracting the mean")
	bgr := fs.Bool("bgr", false, "images: feed channels as BGR")
	maxSide := fs.Int("max-side", 960, "images: for inputs with dynamic height/width, cap the longer side at this many `pixels` (rounded to a multiple of 32)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		fs.Usage()
		return fmt.Errorf("--model is required")
	}
	ispec := imageOpts{scale: float32(*scale), bgr: *bgr, maxSide: *maxSide}
	var err error
	if ispec.mean, err = parseTriple(*mean, "--mean"); err != nil {
		return err
	}
	if ispec.std, err = parseTriple(*std, "--std"); err != nil {
		return err
	}
	switch {
	case *maxSide < 32:
		return fmt.Errorf("--max-side %d: must be at least 32 (sides are rounded to multiples of 32)", *maxSide)
	case *scale == 0 || math.IsNaN(*scale) || math.IsInf(*scale, 0):
		return fmt.Errorf("--scale %g: must be a finite number other than 0", *scale)
	case slices.Contains(ispec.std[:], 0):
		return fmt.Errorf("--std %q: every entry divides, so none may be 0", *std)
	}
	ctx, cancel := context.WithTimeout(ctx, *cf.timeout)
	defer cancel()
	svc, closeFn, err := cf.dial(*binary)
	if err != nil {
		return err
	}
	defer closeFn()
	meta, err := svc.ModelMetadata(ctx, *model, *version)
	if err != nil {
		return err
	}
	req := &oip.InferRequest{ModelName: *model, ModelVersion: *version, ID: fmt.Sprintf("cli-%d", time.Now().UnixNano())}
	files := map[string]string{}
	for _, a := range fs.Args() {
		name, file, ok := strings.Cut(a, "=")
		if !ok {
			if len(meta.Inputs) != 1 {
				return fmt.Errorf("model %s has %d inputs: give files as NAME=FILE", *model, len(meta.Inputs))
			}
			name, file = meta.Inputs[0].Name, a
		}
		if prev, dup := files[name]; dup {
			return fmt.Errorf("two files for input %s: %s and %s", name, prev, file)
		}
		files[name] = file
	}
	for _, in := range meta.Inputs {
		var t tensor.Tensor
		if f, ok := files[in.Name]; ok {
			delete(files, in.Name)
			if t, err = readInput(f, in, ispec); err != nil {
				return fmt.Errorf("input %s: %w", in.Name, err)
			}
		} else {
			if t, err = synthetic(in, ispec); err != nil {
				return fmt.Errorf("input %s: %w", in.Name, err)
			}
			fmt.Fprintf(stderr, "note: input %s is synthetic (%s%v gradient); pass a file for real output\n", in.Name, t.DataType, t.Shape)
		}
		req.Inputs = append(req.Inputs, oip.InferInput{Tensor: t})
	}
	for name := range files {
		return fmt.Errorf("model %s has no input %q", *model, name)
	}
	if *printReq {
		body, err := rest.EncodeInferRequestJSON(req)
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(body, '\n'))
		return err
	}
	start := time.Now()
	resp, err := svc.Infer(ctx, req)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(responseJSON(resp))
	}
	fmt.Fprintf(stdout, "model %s version %s, request %s, %v round trip\n", resp.ModelName, resp.ModelVersion, resp.ID, elapsed.Round(time.Microsecond))
	for _, o := range resp.Outputs {
		fmt.Fprintf(stdout, "  %s\n", summarize(o))
	}
	return nil
}

type imageOpts struct {
	scale     float32
	mean, std [3]float32
	bgr       bool
	maxSide   int
}

func parseTriple(s, flagName string) ([3]float32, error) {
	var out [3]float32
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return out, fmt.Errorf("%s %q: want three comma-separated numbers", flagName, s)
	}
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
		if err != nil {
			return out, fmt.Errorf("%s %q: %v", flagName, s, err)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return out, fmt.Errorf("%s %q: %s is not a finite number", flagName, s, p)
		}
		out[i] = float32(f)
	}
	return out, nil
}

// imageSpec derives the target size and layout from an input's shape.
func imageSpec(in oip.TensorMetadata, o imageOpts, w0, h0 int) (preprocess.Spec, error) {
	s := in.Shape
	if len(s) != 4 || in.DataType != tensor.FP32 {
		return preprocess.Spec{}, fmt.Errorf("an image needs a 4-D FP32 input; %s is %s%v", in.Name, in.DataType, s)
	}
	spec := preprocess.Spec{Scale: o.scale, Mean: o.mean, Std: o.std, BGR: o.bgr, Layout: preprocess.NCHW}
	hi, wi := 2, 3
	if s[1] != 3 && s[3] == 3 {
		spec.Layout, hi, wi = preprocess.NHWC, 1, 2
	}
	h, w := s[hi], s[wi]
	if h < 0 || w < 0 {
		// Dynamic: keep the aspect ratio, cap the longer side, round to 32.
		f := math.Min(1, float64(o.maxSide)/float64(max(w0, h0)))
		r := func(v int) int64 { return max(32, int64(math.Round(float64(v)*f/32))*32) }
		if h < 0 {
			h = r(h0)
		}
		if w < 0 {
			w = r(w0)
		}
	}
	spec.Width, spec.Height = int(w), int(h)
	return spec, nil
}

func readInput(path string, in oip.TensorMetadata, o imageOpts) (tensor.Tensor, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jpg", ".jpeg", ".png":
		f, err := os.Open(path)
		if err != nil {
			return tensor.Tensor{}, err
		}
		defer f.Close()
		img, err := preprocess.Decode(f)
		if err != nil {
			return tensor.Tensor{}, err
		}
		spec, err := imageSpec(in, o, img.Bounds().Dx(), img.Bounds().Dy())
		if err != nil {
			return tensor.Tensor{}, err
		}
		return preprocess.ToTensor(in.Name, img, spec)
	case ".npy":
		b, err := os.ReadFile(path)
		if err != nil {
			return tensor.Tensor{}, err
		}
		return npy.Decode(in.Name, b)
	case ".json":
		b, err := os.ReadFile(path)
		if err != nil {
			return tensor.Tensor{}, err
		}
		return jsonInput(b, in)
	}
	return tensor.Tensor{}, fmt.Errorf("%s: unsupported file type (want .jpg, .png, .npy or .json)", path)
}

func jsonInput(b []byte, in oip.TensorMetadata) (tensor.Tensor, error) {
	var obj struct {
		Data     json.RawMessage `json:"data"`
		Shape    []int64         `json:"shape"`
		Datatype string          `json:"datatype"`
	}
	trimmed := bytes.TrimSpace(b)
	t := tensor.Tensor{Name: in.Name, DataType: in.DataType, Shape: in.Shape}
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return t, err
		}
		trimmed = obj.Data
		if obj.Shape != nil {
			t.Shape = obj.Shape
		}
		if obj.Datatype != "" {
			dt, err := tensor.ParseDataType(obj.Datatype)
			if err != nil {
				return t, err
			}
			t.DataType = dt
		}
	}
	for _, d := range t.Shape {
		if d < 0 {
			return t, fmt.Errorf("input shape %v has dynamic dimensions: give \"shape\" in the JSON file", t.Shape)
		}
	}
	data, err := tensor.DecodeJSONData(t.DataType, t.Shape, trimmed)
	if err != nil {
		return t, err
	}
	t.Data = data
	return t, nil
}

// synthetic builds a deterministic gradient input for a model input.
func synthetic(in oip.TensorMetadata, o imageOpts) (tensor.Tensor, error) {
	shape := append([]int64(nil), in.Shape...)
	if spec, err := imageSpec(in, o, 256, 256); err == nil {
		if spec.Layout == preprocess.NHWC {
			shape = []int64{max(shape[0], 1), int64(spec.Height), int64(spec.Width), 3}
		} else {
			shape = []int64{max(shape[0], 1), 3, int64(spec.Height), int64(spec.Width)}
		}
	}
	for i, d := range shape {
		if d < 0 {
			shape[i] = 1
		}
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return tensor.Tensor{}, err
	}
	if in.DataType == tensor.Bytes {
		s := make([]string, n)
		for i := range s {
			s[i] = "accelpool"
		}
		return tensor.FromStrings(in.Name, shape, s), nil
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%256) / 255
	}
	t := tensor.FromFloat32(in.Name, shape, v)
	return convertFP32(t, in.DataType), nil
}

// convertFP32 converts an FP32 tensor to another numeric datatype.
func convertFP32(t tensor.Tensor, dt tensor.DataType) tensor.Tensor {
	if dt == tensor.FP32 {
		return t
	}
	v := t.Float32s()
	size := dt.Size()
	out := make([]byte, len(v)*size)
	for i, f := range v {
		var u uint64
		switch dt {
		case tensor.FP16:
			u = uint64(tensor.Float32ToFP16(f))
		case tensor.BF16:
			u = uint64(tensor.Float32ToBF16(f))
		case tensor.FP64:
			u = math.Float64bits(float64(f))
		case tensor.Bool:
			if f > 0.5 {
				u = 1
			}
		default:
			u = uint64(int64(f * 255))
		}
		for b := range size {
			out[i*size+b] = byte(u >> (8 * b))
		}
	}
	return tensor.Tensor{Name: t.Name, DataType: dt, Shape: t.Shape, Data: out}
}

func summarize(o tensor.Tensor) string {
	head := fmt.Sprintf("%s %s%v", o.Name, o.DataType, o.Shape)
	n, _ := tensor.NumElements(o.Shape)
	if o.DataType == tensor.Bytes {
		elems, err := tensor.SplitBytes(o.Data, n)
		if err != nil {
			return head + " (malformed)"
		}
		var parts []string
		for i := 0; i < len(elems) && i < 5; i++ {
			parts = append(parts, strconv.Quote(string(elems[i])))
		}
		return head + " [" + strings.Join(parts, " ") + "]"
	}
	if n == 0 {
		return head + " (empty)"
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	var first []string
	for i := range int(n) {
		v := o.Float64At(i)
		lo, hi, sum = math.Min(lo, v), math.Max(hi, v), sum+v
		if i < 6 {
			first = append(first, strconv.FormatFloat(v, 'g', 5, 64))
		}
	}
	return fmt.Sprintf("%s min %.5g max %.5g mean %.5g first [%s]", head, lo, hi, sum/float64(n), strings.Join(first, " "))
}

func responseJSON(r *oip.InferResponse) any {
	type out struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
		Data     any     `json:"data"`
	}
	res := struct {
		Model   string `json:"model_name"`
		Version string `json:"model_version"`
		ID      string `json:"id"`
		Outputs []out  `json:"outputs"`
	}{r.ModelName, r.ModelVersion, r.ID, nil}
	for _, o := range r.Outputs {
		b, err := tensor.AppendJSONData(nil, &o)
		var data any = json.RawMessage(b)
		if err != nil {
			data = err.Error()
		}
		res.Outputs = append(res.Outputs, out{o.Name, o.DataType.String(), o.Shape, data})
	}
	return res
}
