package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/accelpool/accelpool/agent"
	pb "github.com/accelpool/accelpool/api/inference"
)

// badRepo links two demo models into a repository with a small queue, so
// floods overflow it, and an 8 MiB body limit.
func badRepo(t *testing.T) string {
	demo := requireDemoModels(t)
	repo := t.TempDir()
	for name, cfg := range map[string]string{
		"blazeface-front": "max_queue_size: 4\nconcurrency: 1\n",
		"ocr-det":         "max_queue_size: 4\n",
	} {
		dir := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(demo, name, "1", "model.onnx"), filepath.Join(dir, "1", "model.onnx")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A corrupt model: it must be UNAVAILABLE while the others serve.
	if err := os.MkdirAll(filepath.Join(repo, "corrupt", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "corrupt", "1", "model.onnx"), []byte("this is not an onnx model"), 0o644); err != nil {
		t.Fatal(err)
	}
	return repo
}

const faceInput = "input:0"

// faceFloats is a valid blazeface-front input as raw FP32 bytes.
func faceFloats() []byte {
	b := make([]byte, 128*128*3*4)
	for i := 0; i < len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(i%1024)/1024))
	}
	return b
}

func faceJSON() string {
	vals := make([]string, 128*128*3)
	for i := range vals {
		vals[i] = "0.5"
	}
	return `{"id":"ok","inputs":[{"name":"input:0","shape":[1,128,128,3],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]}`
}

// binaryBody builds a binary-extension body: JSON header + raw tensor.
func binaryBody(header string, raw []byte) ([]byte, string) {
	return append([]byte(header), raw...), fmt.Sprint(len(header))
}

func TestBadInputREST(t *testing.T) {
	s := startStack(t, badRepo(t), agent.NodeConfig{MaxBodyBytes: 8 << 20})
	base := "http://" + s.node.HTTPAddr()
	raw := faceFloats()
	goodHeader := fmt.Sprintf(`{"inputs":[{"name":"input:0","shape":[1,128,128,3],"datatype":"FP32","parameters":{"binary_data_size":%d}}]}`, len(raw))
	type tc struct {
		name, method, path string
		body               []byte
		headerLen          string
		wantStatus         int
		wantMsg            string
	}
	infer := "/v2/models/blazeface-front/infer"
	body := func(s string) []byte { return []byte(s) }
	good, goodLen := binaryBody(goodHeader, raw)
	cases := []tc{
		{"invalid JSON", "POST", infer, body(`{"inputs": [`), "", 400, ""},
		{"not an object", "POST", infer, body(`[1,2,3]`), "", 400, ""},
		{"empty body", "POST", infer, nil, "", 400, ""},
		{"deeply nested JSON", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 100000) + `]}]}`), "", 400, ""},
		{"wrong rank", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,128,128],"datatype":"FP32","data":[]}]}`), "", 400, ""},
		{"wrong shape", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,2,2,3],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12]}]}`), "", 400, "shape"},
		{"wrong datatype", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,1],"datatype":"FP64","data":[1]}]}`), "", 400, "datatype"},
		{"unknown datatype", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1],"datatype":"FLOAT32","data":[1]}]}`), "", 400, "datatype"},
		{"data count vs shape", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,128,128,3],"datatype":"FP32","data":[1,2,3]}]}`), "", 400, ""},
		{"negative dimension", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,-128,128,3],"datatype":"FP32","data":[]}]}`), "", 400, "negative"},
		{"overflowing shape", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[4294967296,4294967296,4294967296,3],"datatype":"FP32","data":[]}]}`), "", 400, ""},
		{"non-numeric data", "POST", infer, body(`{"inputs":[{"name":"input:0","shape":[1,1,1,3],"datatype":"FP32","data":["a","b","c"]}]}`), "", 400, ""},
		{"no inputs", "POST", infer, body(`{"inputs":[]}`), "", 400, "missing input"},
		{"unknown extra input", "POST", infer, append([]byte(`{"inputs":[{"name":"bogus","shape":[1],"datatype":"FP32","data":[1]},`), []byte(faceJSON()[len(`{"id":"ok","inputs":[`):])...), "", 400, "bogus"},
		{"unknown output", "POST", infer, []byte(strings.Replace(faceJSON(), `"inputs"`, `"outputs":[{"name":"nope"}],"inputs"`, 1)), "", 400, "nope"},
		{"unknown model", "POST", "/v2/models/no-such-model/infer", []byte(faceJSON()), "", 404, "no-such-model"},
		{"unknown version", "POST", "/v2/models/blazeface-front/versions/7/infer", []byte(faceJSON()), "", 404, "version"},
		{"version not a number", "POST", "/v2/models/blazeface-front/versions/latest/infer", []byte(faceJSON()), "", 400, "not a version number"},
		{"model not ready (corrupt file)", "POST", "/v2/models/corrupt/infer", []byte(faceJSON()), "", 503, "not ready"},
		{"binary: truncated body", "POST", infer, good[:len(good)-100], goodLen, 400, ""},
		{"binary: trailing bytes", "POST", infer, append(append([]byte{}, good...), 1, 2, 3), goodLen, 400, ""},
		{"binary: header length beyond body", "POST", infer, good, "99999999", 400, ""},
		{"binary: absurd header length", "POST", infer, good, "4611686018427387904", 400, ""},
		{"binary: negative header length", "POST", infer, good, "-5", 400, ""},
		{"binary: non-numeric header length", "POST", infer, good, "twelve", 400, ""},
		{"binary: byte count vs shape", "POST", infer, func() []byte {
			b, _ := binaryBody(strings.Replace(goodHeader, fmt.Sprint(len(raw)), fmt.Sprint(len(raw)-4), 1), raw[:len(raw)-4])
			return b
		}(), fmt.Sprint(len(strings.Replace(goodHeader, fmt.Sprint(len(raw)), fmt.Sprint(len(raw)-4), 1))), 400, ""},
		{"oversized body", "POST", infer, make([]byte, 9<<20), "", 413, ""},
		// Shapes the declaration allows ([-1,3,-1,-1]) but the graph
		// cannot run: the client's fault, said without ONNX Runtime's
		// source paths.
		{"sides the graph cannot take", "POST", "/v2/models/ocr-det/infer", body(`{"inputs":[{"name":"x","shape":[1,3,40,40],"datatype":"FP32","data":[` + strings.Repeat("0.5,", 3*40*40-1) + `0.5]}]}`), "", 400, "failed on this input: Attempting to broadcast"},
		{"wrong method", "GET", infer, nil, "", 405, ""},
		{"load unknown model", "POST", "/v2/repository/models/no-such-model/load", nil, "", 404, ""},
		{"metadata of unknown model", "GET", "/v2/models/ghost", nil, "", 404, ""},
	}
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path string, b []byte, headerLen string) (int, string) {
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		if headerLen != "" {
			req.Header.Set("Inference-Header-Content-Length", headerLen)
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := do(c.method, c.path, c.body, c.headerLen)
			if code != c.wantStatus {
				t.Fatalf("status %d, want %d; body %.300s", code, c.wantStatus, out)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &e); err != nil || e.Error == "" {
				t.Fatalf("error body is not {\"error\": ...}: %.300s", out)
			}
			if c.wantMsg != "" && !strings.Contains(e.Error, c.wantMsg) {
				t.Errorf("error %q does not mention %q", e.Error, c.wantMsg)
			}
			t.Logf("%d %s", code, e.Error)
			// The server keeps serving.
			if code, out := do("POST", infer, good, goodLen); code != 200 {
				t.Fatalf("good request after %q: %d %.300s", c.name, code, out)
			}
		})
	}

	t.Run("deadline in queue (timeout parameter)", func(t *testing.T) {
		vals := strings.Repeat("0.5,", 3*640*640-1) + "0.5"
		b := `{"parameters":{"timeout":1},"inputs":[{"name":"x","shape":[1,3,640,640],"datatype":"FP32","data":[` + vals + `]}]}`
		code, out := do("POST", "/v2/models/ocr-det/infer", []byte(b), "")
		if code != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504; %.300s", code, out)
		}
	})

	t.Run("flood of concurrent requests", func(t *testing.T) {
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _ := do("POST", infer, good, goodLen)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("64 concurrent requests against a queue of 4: %v", codes)
		if codes[200] == 0 || codes[200]+codes[503] != 64 {
			t.Fatalf("want only 200s and 503s (queue full), got %v", codes)
		}
		if code, _ := do("POST", infer, good, goodLen); code != 200 {
			t.Fatalf("server not serving after the flood: %d", code)
		}
	})
}

func TestBadInputGRPC(t *testing.T) {
	s := startStack(t, badRepo(t), agent.NodeConfig{MaxBodyBytes: 8 << 20})
	conn, err := grpc.NewClient(s.node.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := pb.NewGRPCInferenceServiceClient(conn)
	raw := faceFloats()
	faceReq := func(mut func(r *pb.ModelInferRequest)) *pb.ModelInferRequest {
		r := &pb.ModelInferRequest{ModelName: "blazeface-front", Id: "g",
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: faceInput, Datatype: "FP32", Shape: []int64{1, 128, 128, 3}}},
			RawInputContents: [][]byte{raw}}
		if mut != nil {
			mut(r)
		}
		return r
	}
	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		ctx  func() (context.Context, context.CancelFunc)
		want codes.Code
		msg  string
	}{
		{"unknown model", faceReq(func(r *pb.ModelInferRequest) { r.ModelName = "ghost" }), nil, codes.NotFound, "ghost"},
		{"sides the graph cannot take", &pb.ModelInferRequest{ModelName: "ocr-det",
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3, 40, 40}}},
			RawInputContents: [][]byte{make([]byte, 4*3*40*40)}}, nil, codes.InvalidArgument, "failed on this input"},
		{"unknown version", faceReq(func(r *pb.ModelInferRequest) { r.ModelVersion = "9" }), nil, codes.NotFound, "version"},
		{"version not a number", faceReq(func(r *pb.ModelInferRequest) { r.ModelVersion = "-1" }), nil, codes.InvalidArgument, "not a version number"},
		{"unknown output", faceReq(func(r *pb.ModelInferRequest) {
			r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "nope"}}
		}), nil, codes.InvalidArgument, "nope"},
		{"raw count vs inputs", faceReq(func(r *pb.ModelInferRequest) { r.RawInputContents = append(r.RawInputContents, raw) }), nil, codes.InvalidArgument, ""},
		{"raw byte count vs shape", faceReq(func(r *pb.ModelInferRequest) { r.RawInputContents[0] = raw[:len(raw)-1] }), nil, codes.InvalidArgument, ""},
		{"wrong datatype", faceReq(func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "FP16"; r.RawInputContents[0] = raw[:len(raw)/2] }), nil, codes.InvalidArgument, "datatype"},
		{"unknown datatype", faceReq(func(r *pb.ModelInferRequest) { r.Inputs[0].Datatype = "F32" }), nil, codes.InvalidArgument, "datatype"},
		{"wrong shape", faceReq(func(r *pb.ModelInferRequest) { r.Inputs[0].Shape = []int64{1, 3, 128, 128} }), nil, codes.InvalidArgument, "shape"},
		{"negative dimension", faceReq(func(r *pb.ModelInferRequest) { r.Inputs[0].Shape = []int64{1, -128, -128, 3} }), nil, codes.InvalidArgument, ""},
		{"typed count vs shape", faceReq(func(r *pb.ModelInferRequest) {
			r.RawInputContents = nil
			r.Inputs[0].Contents = &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}}
		}), nil, codes.InvalidArgument, ""},
		{"missing input", faceReq(func(r *pb.ModelInferRequest) { r.Inputs = nil; r.RawInputContents = nil }), nil, codes.InvalidArgument, ""},
		{"oversized message", faceReq(func(r *pb.ModelInferRequest) { r.RawInputContents[0] = make([]byte, 9<<20) }), nil, codes.ResourceExhausted, ""},
		{"client deadline", faceReq(nil), func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Microsecond)
		}, codes.DeadlineExceeded, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if c.ctx != nil {
				cancel()
				ctx, cancel = c.ctx()
			}
			defer cancel()
			_, err := cl.ModelInfer(ctx, c.req)
			st, _ := status.FromError(err)
			if st.Code() != c.want {
				t.Fatalf("code %v (%v), want %v", st.Code(), err, c.want)
			}
			if c.msg != "" && !strings.Contains(st.Message(), c.msg) {
				t.Errorf("message %q does not mention %q", st.Message(), c.msg)
			}
			t.Logf("%v %s", st.Code(), st.Message())
			if _, err := cl.ModelInfer(context.Background(), faceReq(nil)); err != nil {
				t.Fatalf("good request after %q: %v", c.name, err)
			}
		})
	}
	t.Run("flood of concurrent requests", func(t *testing.T) {
		var mu sync.Mutex
		got := map[codes.Code]int{}
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := cl.ModelInfer(context.Background(), faceReq(nil))
				mu.Lock()
				got[status.Code(err)]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("64 concurrent requests against a queue of 4: %v", got)
		if got[codes.OK] == 0 || got[codes.OK]+got[codes.ResourceExhausted] != 64 {
			t.Fatalf("want only OK and ResourceExhausted, got %v", got)
		}
	})
}
