package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/fake"
	"github.com/accelpool/accelpool/internal/npy"
	"github.com/accelpool/accelpool/tensor"
)

// TestInferAgainstNode runs `accelpool infer` against a node serving a
// fake add-one model on loopback: a .npy input gives the model's output,
// and files that name no input, or one input twice, are refused before a
// request is sent.
func TestInferAgainstNode(t *testing.T) {
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "m", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fake.WriteModel(filepath.Join(repo, "m", "1", "model.onnx"), fake.Model{Op: "add_one",
		Inputs:  []fake.IO{{Name: "x", DataType: "FP32", Shape: []int64{-1, 2}}},
		Outputs: []fake.IO{{Name: "y", DataType: "FP32", Shape: []int64{-1, 2}}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := agent.StartNode(ctx, agent.NodeConfig{Manager: agent.Config{Repository: repo, Backend: fake.New()},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(context.Background())
	b, err := npy.Encode(tensor.FromFloat32("x", []int64{1, 2}, []float32{1, 2}))
	if err != nil {
		t.Fatal(err)
	}
	x := filepath.Join(t.TempDir(), "x.npy")
	if err := os.WriteFile(x, b, 0o644); err != nil {
		t.Fatal(err)
	}
	url := "http://" + node.HTTPAddr()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{x}, 0, "y FP32[1 2]"},
		{[]string{x, x}, 1, "two files for input x: " + x + " and " + x},
		{[]string{"x=" + x, x}, 1, "two files for input x"},
		{[]string{"z=" + x}, 1, `model m has no input "z"`},
	} {
		var out, errb bytes.Buffer
		code := Main(append([]string{"infer", "--url", url, "--model", "m"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("infer %v: code %d, stdout %q, stderr %q; want %d and %q", c.args, code, out.String(), errb.String(), c.code, c.want)
		}
	}
}

// TestTryItLines: the banner's example commands carry --url, --server and
// the data dir exactly when up does not use the CLI's defaults.
func TestTryItLines(t *testing.T) {
	var b bytes.Buffer
	writeTryIt(&b, tryIt{self: "accelpool", base: defaultServerURL, example: "ocr-cls", open: true, dataDir: defaultDataDir()})
	for _, not := range []string{"--url", "--server", "ACCELPOOL_DATA_DIR", "Authorization"} {
		if strings.Contains(b.String(), not) {
			t.Errorf("defaults: %q in\n%s", not, b.String())
		}
	}
	b.Reset()
	writeTryIt(&b, tryIt{self: "accelpool", base: "http://127.0.0.1:38200", example: "ocr-cls", open: false, dataDir: "/tmp/my data"})
	for _, want := range []string{
		"accelpool infer --url http://127.0.0.1:38200 --model ocr-cls --print-request | curl -s -H \"Authorization: Bearer $ACCELPOOL_TOKEN\" -X POST http://127.0.0.1:38200/v2/models/ocr-cls/infer",
		"accelpool infer --url http://127.0.0.1:38200 --model ocr-cls path/to/photo.jpg",
		"ACCELPOOL_DATA_DIR='/tmp/my data' accelpool get apps --server http://127.0.0.1:38200",
		"ACCELPOOL_DATA_DIR='/tmp/my data' accelpool explain --server http://127.0.0.1:38200 ocr-cls",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("elsewhere: missing %q in\n%s", want, b.String())
		}
	}
}
