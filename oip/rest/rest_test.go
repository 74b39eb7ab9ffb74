package rest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// startServer serves svc on a random loopback port until the test ends.
func startServer(t *testing.T, svc oip.Service, opts Options) string {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv := httptest.NewServer(NewHandler(svc, opts))
	t.Cleanup(srv.Close)
	return srv.URL
}

func le(vals ...uint64) func(size int) []byte {
	return func(size int) []byte {
		var b []byte
		for _, v := range vals {
			switch size {
			case 1:
				b = append(b, byte(v))
			case 2:
				b = binary.LittleEndian.AppendUint16(b, uint16(v))
			case 4:
				b = binary.LittleEndian.AppendUint32(b, uint32(v))
			case 8:
				b = binary.LittleEndian.AppendUint64(b, v)
			}
		}
		return b
	}
}

// sampleTensors holds one tensor of every datatype with edge values. NaNs
// are the canonical ones the JSON codec writes back.
func sampleTensors() []tensor.Tensor {
	f64 := func(v ...float64) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
		}
		return b
	}
	nan32 := float32(math.NaN())
	return []tensor.Tensor{
		{Name: "bool", DataType: tensor.Bool, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "u8", DataType: tensor.Uint8, Shape: []int64{3}, Data: le(0, 1, 255)(1)},
		{Name: "u16", DataType: tensor.Uint16, Shape: []int64{3}, Data: le(0, 1, math.MaxUint16)(2)},
		{Name: "u32", DataType: tensor.Uint32, Shape: []int64{3}, Data: le(0, 1, math.MaxUint32)(4)},
		{Name: "u64", DataType: tensor.Uint64, Shape: []int64{3}, Data: le(0, 1, math.MaxUint64)(8)},
		{Name: "i8", DataType: tensor.Int8, Shape: []int64{3}, Data: le(0x80, 0xff, 0x7f)(1)},
		{Name: "i16", DataType: tensor.Int16, Shape: []int64{3}, Data: le(0x8000, 0xffff, 0x7fff)(2)},
		{Name: "i32", DataType: tensor.Int32, Shape: []int64{3}, Data: le(0x80000000, 0xffffffff, 0x7fffffff)(4)},
		{Name: "i64", DataType: tensor.Int64, Shape: []int64{3}, Data: le(1<<63, math.MaxUint64, 1<<63-1)(8)},
		{Name: "fp16", DataType: tensor.FP16, Shape: []int64{1, 5}, Data: le(0x3c00, 0xc100, 0x7bff, 0x7c00, 0x7e00)(2)},
		{Name: "bf16", DataType: tensor.BF16, Shape: []int64{1, 4}, Data: le(0x3f80, 0xc000, 0xff80, 0x7fc0)(2)},
		tensor.FromFloat32("fp32", []int64{2, 3}, []float32{0.1, -1.5e-30, math.MaxFloat32, float32(math.Inf(1)), nan32, 0}),
		{Name: "fp64", DataType: tensor.FP64, Shape: []int64{4}, Data: f64(0.1, -5e-324, math.Inf(-1), math.NaN())},
		tensor.FromStrings("bytes", []int64{3}, []string{"hello", "", "é \"quoted\" \n\t\\"}),
	}
}

func echoRequest(ts []tensor.Tensor) *oip.InferRequest {
	req := &oip.InferRequest{ModelName: "echo", ID: "req-1"}
	for _, tn := range ts {
		req.Inputs = append(req.Inputs, oip.InferInput{Tensor: tn})
	}
	return req
}

func sameTensor(t *testing.T, got, want tensor.Tensor) {
	t.Helper()
	if got.Name != want.Name || got.DataType != want.DataType || !reflect.DeepEqual(nonNil(got.Shape), nonNil(want.Shape)) {
		t.Errorf("tensor %s: got %s %s%v, want %s %s%v", want.Name, got.Name, got.DataType, got.Shape, want.Name, want.DataType, want.Shape)
		return
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("tensor %s: data % x, want % x", want.Name, got.Data, want.Data)
	}
}

func TestRoundTripEveryDatatype(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	for _, mode := range []struct {
		name   string
		binary bool
	}{{"json", false}, {"binary", true}} {
		t.Run(mode.name, func(t *testing.T) {
			c := NewClient(base, ClientOptions{Binary: mode.binary})
			ts := sampleTensors()
			if mode.binary {
				ts = append(ts, tensor.FromStrings("raw", []int64{2}, []string{"\xff\x00\xfe", "ok"}))
			}
			for _, tn := range ts {
				t.Run(tn.DataType.String()+"/"+tn.Name, func(t *testing.T) {
					resp, err := c.Infer(t.Context(), echoRequest([]tensor.Tensor{tn}))
					if err != nil {
						t.Fatal(err)
					}
					if resp.ID != "req-1" || resp.ModelName != "echo" || resp.ModelVersion != "1" {
						t.Errorf("response header: %+v", resp)
					}
					if len(resp.Outputs) != 1 {
						t.Fatalf("%d outputs", len(resp.Outputs))
					}
					sameTensor(t, resp.Outputs[0], tn)
				})
			}
			// All at once, too.
			resp, err := c.Infer(t.Context(), echoRequest(ts))
			if err != nil {
				t.Fatal(err)
			}
			for i := range ts {
				sameTensor(t, resp.Outputs[i], ts[i])
			}
		})
	}
}

// A JSON client sends non-UTF-8 BYTES raw on its own, and a JSON-only
// request for them fails with a pointer to binary_data.
func TestNonUTF8Bytes(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	raw := tensor.FromStrings("raw", []int64{1}, []string{"\xff\xfe"})
	c := NewClient(base, ClientOptions{})
	req := echoRequest([]tensor.Tensor{raw})
	req.Outputs = []oip.RequestedOutput{{Name: "raw", Binary: true}}
	resp, err := c.Infer(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	sameTensor(t, resp.Outputs[0], raw)

	req.Outputs = nil // now the output is asked for as JSON
	_, err = c.Infer(t.Context(), req)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "binary_data") {
		t.Errorf("JSON output of non-UTF-8 BYTES: got %v", err)
	}
	if _, err := EncodeInferRequestJSON(req); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("EncodeInferRequestJSON: got %v", err)
	}
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

func post(t *testing.T, url string, body []byte, headers ...string) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return send(t, req)
}

func send(t *testing.T, req *http.Request) httpResult {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{resp.StatusCode, resp.Header, b}
}

func get(t *testing.T, url string) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, req)
}

// parseJSONResponse reads a JSON-only inference response with the package's
// own parser.
func parseResponse(t *testing.T, r httpResult) *oip.InferResponse {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	hl := 0
	if v := r.header.Get(HeaderContentLength); v != "" {
		hl, _ = strconv.Atoi(v)
	}
	resp, err := ParseInferResponse(r.body, hl)
	if err != nil {
		t.Fatalf("parse response: %v (%s)", err, r.body)
	}
	return resp
}

func TestJSONShapes(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	tests := []struct {
		name string
		body string
		want tensor.Tensor
	}{
		{"nested", `{"inputs":[{"name":"x","shape":[2,2,2],"datatype":"INT32","data":[[[1,2],[3,4]],[[5,6],[7,8]]]}]}`,
			tensor.Tensor{Name: "x", DataType: tensor.Int32, Shape: []int64{2, 2, 2}, Data: le(1, 2, 3, 4, 5, 6, 7, 8)(4)}},
		{"scalar", `{"inputs":[{"name":"s","shape":[],"datatype":"FP32","data":[2.5]}]}`,
			tensor.FromFloat32("s", []int64{}, []float32{2.5})},
		{"zero elements", `{"inputs":[{"name":"z","shape":[0,3],"datatype":"FP32","data":[]}]}`,
			tensor.Tensor{Name: "z", DataType: tensor.FP32, Shape: []int64{0, 3}, Data: []byte{}}},
		{"zero elements bytes", `{"inputs":[{"name":"z","shape":[0],"datatype":"BYTES","data":[]}]}`,
			tensor.Tensor{Name: "z", DataType: tensor.Bytes, Shape: []int64{0}, Data: []byte{}}},
		{"bytes strings", `{"inputs":[{"name":"b","shape":[2],"datatype":"BYTES","data":["a\u00e9","\"x\""]}]}`,
			tensor.FromStrings("b", []int64{2}, []string{"aé", `"x"`})},
		{"nonfinite", `{"inputs":[{"name":"f","shape":[3],"datatype":"FP64","data":["Infinity","-inf",1e300]}]}`,
			tensor.Tensor{Name: "f", DataType: tensor.FP64, Shape: []int64{3}, Data: le(math.Float64bits(math.Inf(1)), math.Float64bits(math.Inf(-1)), math.Float64bits(1e300))(8)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, base+"/v2/models/echo/infer", []byte(tc.body), "Content-Type", "application/json")
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			resp := parseResponse(t, r)
			if len(resp.Outputs) != 1 {
				t.Fatalf("%d outputs", len(resp.Outputs))
			}
			if len(tc.want.Data) == 0 && len(resp.Outputs[0].Data) == 0 {
				resp.Outputs[0].Data = tc.want.Data
			}
			sameTensor(t, resp.Outputs[0], tc.want)
		})
	}
	// Binary zero-element input.
	hdr := `{"inputs":[{"name":"z","shape":[0],"datatype":"FP32","parameters":{"binary_data_size":0}}],"parameters":{"binary_data_output":true}}`
	r := post(t, base+"/v2/models/echo/infer", []byte(hdr), HeaderContentLength, strconv.Itoa(len(hdr)), "Content-Type", "application/octet-stream")
	resp := parseResponse(t, r)
	if len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 0 || r.header.Get(HeaderContentLength) == "" {
		t.Errorf("zero-element binary: %+v, headers %v", resp.Outputs, r.header)
	}
}

// binary_data_output applies to every output unless the output says
// binary_data: false; JSON and raw outputs mix in one response.
func TestBinaryOutputMixing(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	a := tensor.FromFloat32("a", []int64{2}, []float32{1, 2})
	b := tensor.FromFloat32("b", []int64{1}, []float32{3})
	c := tensor.FromStrings("c", []int64{1}, []string{"s"})
	// Inputs a and c raw, b JSON.
	hdr := `{"id":"mix","parameters":{"binary_data_output":true},"inputs":[` +
		`{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},` +
		`{"name":"b","shape":[1],"datatype":"FP32","data":[3]},` +
		`{"name":"c","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":5}}],` +
		`"outputs":[{"name":"c"},{"name":"b","parameters":{"binary_data":false}},{"name":"a","parameters":{"binary_data":true}}]}`
	body := append([]byte(hdr), a.Data...)
	body = append(body, c.Data...)
	r := post(t, base+"/v2/models/echo/infer", body, HeaderContentLength, strconv.Itoa(len(hdr)), "Content-Type", "application/octet-stream")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	hl, err := strconv.Atoi(r.header.Get(HeaderContentLength))
	if err != nil {
		t.Fatalf("%s: %v", HeaderContentLength, err)
	}
	var head struct {
		ID      string `json:"id"`
		Outputs []struct {
			Name       string         `json:"name"`
			Parameters map[string]any `json:"parameters"`
			Data       []any          `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(r.body[:hl], &head); err != nil {
		t.Fatalf("header: %v: %s", err, r.body[:hl])
	}
	if head.ID != "mix" || len(head.Outputs) != 3 {
		t.Fatalf("header: %s", r.body[:hl])
	}
	for _, o := range head.Outputs {
		_, isRaw := o.Parameters["binary_data_size"]
		if wantRaw := o.Name != "b"; isRaw != wantRaw || (o.Data == nil) != wantRaw {
			t.Errorf("output %s: raw %v, data %v", o.Name, isRaw, o.Data)
		}
	}
	if want := string(c.Data) + string(a.Data); string(r.body[hl:]) != want {
		t.Errorf("raw part % x, want % x", r.body[hl:], want)
	}
	resp := parseResponse(t, r)
	sameTensor(t, resp.Outputs[0], c)
	sameTensor(t, resp.Outputs[1], b)
	sameTensor(t, resp.Outputs[2], a)
}

func TestParametersTravel(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	c := NewClient(base, ClientOptions{})
	req := echoRequest([]tensor.Tensor{tensor.FromFloat32("x", []int64{1}, []float32{1})})
	req.Parameters = oip.Parameters{"b": true, "i": int64(-3), "u": uint64(math.MaxUint64), "f": 1.5, "s": "str"}
	req.Inputs[0].Parameters = oip.Parameters{"k": "v"}
	resp, err := c.Infer(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := oip.Parameters{"b": true, "i": int64(-3), "u": uint64(math.MaxUint64), "f": 1.5, "s": "str", "in.x.k": "v"}
	if !reflect.DeepEqual(resp.Parameters, want) {
		t.Errorf("parameters %v, want %v", resp.Parameters, want)
	}
}

func TestEndpoints(t *testing.T) {
	f := newFake()
	base := startServer(t, f, Options{})
	c := NewClient(base, ClientOptions{})
	ctx := t.Context()

	if !c.Live() || !c.Ready() {
		t.Error("not live or not ready")
	}
	f.mu.Lock()
	f.ready = false
	f.mu.Unlock()
	if c.Ready() {
		t.Error("ready while the service is not")
	}
	if r := get(t, base+"/v2/health/ready"); r.status != http.StatusServiceUnavailable || len(r.body) != 0 {
		t.Errorf("ready: %d %q", r.status, r.body)
	}
	if r := get(t, base+"/v2/health/live"); r.status != http.StatusOK || len(r.body) != 0 {
		t.Errorf("live: %d %q", r.status, r.body)
	}

	if got, want := c.ServerMetadata(), f.ServerMetadata(); !reflect.DeepEqual(got, want) {
		t.Errorf("server metadata %+v, want %+v", got, want)
	}
	for _, v := range []string{"", "1"} {
		got, err := c.ModelMetadata(ctx, "echo", v)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := f.ModelMetadata(ctx, "echo", v)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("model metadata %+v, want %+v", got, want)
		}
	}
	r := get(t, base+"/v2/models/echo")
	if !strings.Contains(string(r.body), `"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}]`) {
		t.Errorf("metadata JSON: %s", r.body)
	}
	if _, err := c.ModelMetadata(ctx, "echo", "7"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := c.ModelMetadata(ctx, "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown model: %v", err)
	}

	if ok, err := c.ModelReady(ctx, "echo", ""); !ok || err != nil {
		t.Errorf("echo ready: %v %v", ok, err)
	}
	if ok, err := c.ModelReady(ctx, "cold", "1"); ok || err != nil {
		t.Errorf("cold ready: %v %v", ok, err)
	}
	if r := get(t, base+"/v2/models/cold/ready"); r.status != http.StatusServiceUnavailable {
		t.Errorf("cold ready status %d", r.status)
	}
	if _, err := c.ModelReady(ctx, "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown model ready: %v", err)
	}
	if r := get(t, base+"/v2/models/nope/ready"); r.status != http.StatusNotFound || !strings.Contains(string(r.body), `"error"`) {
		t.Errorf("unknown ready: %d %s", r.status, r.body)
	}

	all, err := c.RepositoryIndex(ctx, false)
	if err != nil || len(all) != 5 {
		t.Fatalf("index: %v %v", all, err)
	}
	if all[0] != (oip.ModelIndexEntry{Name: "cold", Version: "1", State: "UNAVAILABLE", Reason: "unloaded"}) {
		t.Errorf("index[0] = %+v", all[0])
	}
	ready, err := c.RepositoryIndex(ctx, true)
	if err != nil || len(ready) != 4 {
		t.Errorf("ready index: %v %v", ready, err)
	}
	if r := post(t, base+"/v2/repository/index", nil); r.status != http.StatusOK || !strings.HasPrefix(string(r.body), "[") {
		t.Errorf("index without body: %d %s", r.status, r.body)
	}
	if r := post(t, base+"/v2/repository/index", []byte(`{"ready":`)); r.status != http.StatusBadRequest {
		t.Errorf("index with bad body: %d %s", r.status, r.body)
	}

	if err := c.LoadModel(ctx, "cold"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.ModelReady(ctx, "cold", ""); !ok {
		t.Error("cold not ready after load")
	}
	if err := c.UnloadModel(ctx, "cold"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Infer(ctx, &oip.InferRequest{ModelName: "cold", Inputs: echoRequest(sampleTensors()[:1]).Inputs}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("infer on unloaded model: %v", err)
	}
	if err := c.LoadModel(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("load unknown: %v", err)
	}
}

// Each sentinel the service returns reaches the client as its status and
// comes back as the same sentinel (503 covers both unavailable and
// resource exhausted).
func TestErrorStatuses(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	c := NewClient(base, ClientOptions{})
	tests := []struct {
		kind   string
		status int
		back   error
	}{
		{"invalid", 400, errdefs.ErrInvalid},
		{"not_found", 404, errdefs.ErrNotFound},
		{"already_exists", 409, errdefs.ErrAlreadyExists},
		{"unavailable", 503, errdefs.ErrUnavailable},
		{"resource_exhausted", 503, errdefs.ErrUnavailable},
		{"too_large", 413, errdefs.ErrTooLarge},
		{"deadline", 504, errdefs.ErrDeadline},
		{"unauthenticated", 401, errdefs.ErrUnauthenticated},
		{"internal", 500, errdefs.ErrInternal},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			body := `{"parameters":{"kind":"` + tc.kind + `"},"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`
			r := post(t, base+"/v2/models/fail/infer", []byte(body))
			var e struct{ Error string }
			if r.status != tc.status || json.Unmarshal(r.body, &e) != nil || !strings.Contains(e.Error, "fake failure") {
				t.Errorf("status %d body %s, want %d with the error", r.status, r.body, tc.status)
			}
			req := echoRequest(sampleTensors()[:1])
			req.ModelName, req.Parameters = "fail", oip.Parameters{"kind": tc.kind}
			if _, err := c.Infer(t.Context(), req); !errors.Is(err, tc.back) || !strings.Contains(err.Error(), "fake failure") {
				t.Errorf("client error %v, want %v", err, tc.back)
			}
		})
	}
}

func TestDeadlines(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	in := `"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]`
	start := time.Now()
	r := post(t, base+"/v2/models/sleep/infer", []byte(`{"parameters":{"timeout":20000},`+in+`}`))
	if r.status != http.StatusGatewayTimeout || !strings.Contains(string(r.body), "deadline") {
		t.Errorf("timeout parameter: %d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("timeout took %v", d)
	}
	for _, bad := range []string{`-1`, `"1s"`, `1.5`} {
		r := post(t, base+"/v2/models/sleep/infer", []byte(`{"parameters":{"timeout":`+bad+`},`+in+`}`))
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "timeout") {
			t.Errorf("timeout %s: %d %s", bad, r.status, r.body)
		}
	}
	// The client's context deadline reaches the service.
	c := NewClient(base, ClientOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req := echoRequest(sampleTensors()[:1])
	req.ModelName = "sleep"
	if _, err := c.Infer(ctx, req); !errors.Is(err, errdefs.ErrDeadline) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("client deadline: %v", err)
	}
}

func TestPanicIsContained(t *testing.T) {
	base := startServer(t, newFake(), Options{Logger: slog.New(slog.DiscardHandler)})
	for range 3 {
		r := post(t, base+"/v2/models/panic/infer", []byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`))
		if r.status != http.StatusInternalServerError || string(r.body) != `{"error":"internal error"}` {
			t.Errorf("panic: %d %s", r.status, r.body)
		}
	}
	if r := get(t, base+"/v2/health/live"); r.status != http.StatusOK {
		t.Errorf("after panic: %d", r.status)
	}
}

func TestConcurrentRequests(t *testing.T) {
	base := startServer(t, newFake(), Options{})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(hc.CloseIdleConnections)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c := NewClient(base, ClientOptions{Binary: i%2 == 0, HTTPClient: hc})
			v := []float32{float32(i), float32(i) + 0.5}
			req := echoRequest([]tensor.Tensor{tensor.FromFloat32("x", []int64{2}, v)})
			req.ID = strconv.Itoa(i)
			resp, err := c.Infer(t.Context(), req)
			if err != nil {
				errs <- err
				return
			}
			if got := resp.Outputs[0].Float32s(); resp.ID != req.ID || !reflect.DeepEqual(got, v) {
				errs <- errors.New("request " + req.ID + ": wrong answer " + resp.ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEncodeParseRequestRoundTrip(t *testing.T) {
	for _, bin := range []bool{false, true} {
		req := echoRequest(sampleTensors())
		req.Parameters = oip.Parameters{"p": "q"}
		req.Inputs[0].Parameters = oip.Parameters{"note": int64(1)}
		req.Outputs = []oip.RequestedOutput{{Name: "fp32", Binary: true}, {Name: "u8", Parameters: oip.Parameters{"classification": int64(2)}}}
		header, blobs, err := EncodeInferRequest(nil, req, bin)
		if err != nil {
			t.Fatal(err)
		}
		hl := 0
		body := header
		if len(blobs) > 0 {
			hl = len(header)
			for _, b := range blobs {
				body = append(body, b...)
			}
		}
		got, err := ParseInferRequest(body, hl)
		if err != nil {
			t.Fatalf("binary=%v: %v\n%s", bin, err, header)
		}
		if got.ID != req.ID || !reflect.DeepEqual(got.Parameters, req.Parameters) || !reflect.DeepEqual(got.Outputs, req.Outputs) {
			t.Errorf("binary=%v: got %+v", bin, got)
		}
		for i := range req.Inputs {
			sameTensor(t, got.Inputs[i].Tensor, req.Inputs[i].Tensor)
			if !reflect.DeepEqual(got.Inputs[i].Parameters, req.Inputs[i].Parameters) {
				t.Errorf("input %d parameters %v", i, got.Inputs[i].Parameters)
			}
		}
	}
}

// Binary inputs alias the request body: no copy on the way in.
func TestBinaryInputsAliasBody(t *testing.T) {
	hdr := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`
	body := append([]byte(hdr), make([]byte, 8)...)
	req, err := ParseInferRequest(body, len(hdr))
	if err != nil {
		t.Fatal(err)
	}
	if &req.Inputs[0].Data[0] != &body[len(hdr)] {
		t.Error("binary input was copied")
	}
}

func BenchmarkInferBinary(b *testing.B) {
	srv := httptest.NewServer(NewHandler(newFake(), Options{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	c := NewClient(srv.URL, ClientOptions{Binary: true})
	req := echoRequest([]tensor.Tensor{tensor.FromFloat32("x", []int64{1, 3, 224, 224}, make([]float32, 3*224*224))})
	b.SetBytes(int64(len(req.Inputs[0].Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Infer(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInferJSON(b *testing.B) {
	srv := httptest.NewServer(NewHandler(newFake(), Options{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	c := NewClient(srv.URL, ClientOptions{})
	req := echoRequest([]tensor.Tensor{tensor.FromFloat32("x", []int64{1, 3, 224, 224}, make([]float32, 3*224*224))})
	b.SetBytes(int64(len(req.Inputs[0].Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Infer(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// The pooled body buffer keeps its first byte and whole capacity when the
// body is shifted to align its binary section, so a second request of the
// same size reuses it. (It used to keep the shifted slice, a few bytes
// short, and every binary request allocated — and zeroed — a new body.)
func TestBodyBufferReused(t *testing.T) {
	h := &handler{max: 1 << 20}
	const headerLen = 37 // a binary section that needs the body shifted
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	var bp []byte
	var base *byte
	for i := range 3 {
		r := httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", bytes.NewReader(payload))
		body, err := h.readBody(httptest.NewRecorder(), r, &bp, headerLen)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, payload) {
			t.Fatalf("request %d: body differs from what was sent", i)
		}
		if a := uintptr(unsafe.Pointer(&body[headerLen])); a%tensor.Align != 0 {
			t.Fatalf("request %d: binary section at %#x, not %d-byte aligned", i, a, tensor.Align)
		}
		if cap(bp) < len(payload)+tensor.Align {
			t.Fatalf("request %d: pooled buffer kept %d bytes of capacity, fewer than the %d the next body needs", i, cap(bp), len(payload)+tensor.Align)
		}
		if i == 0 {
			base = unsafe.SliceData(bp[:1])
		} else if unsafe.SliceData(bp[:1]) != base {
			t.Fatalf("request %d allocated a new body buffer instead of reusing the pooled one", i)
		}
		bp = bp[:0]
	}
}

// TestStalledBodyTimesOut: a body that stops arriving fails with 408 after
// the idle timeout instead of holding its connection and buffer for ever;
// one that keeps moving, however slowly, is read.
func TestStalledBodyTimesOut(t *testing.T) {
	base := startServer(t, newFake(), Options{Logger: slog.New(slog.DiscardHandler), BodyIdleTimeout: 300 * time.Millisecond})
	send := func(gap time.Duration, parts int) (string, time.Duration) {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`
		fmt.Fprintf(conn, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
		start := time.Now()
		for i := range parts {
			time.Sleep(gap)
			lo, hi := i*len(body)/parts, (i+1)*len(body)/parts
			if parts == 1 {
				hi = 10 // a few bytes, then nothing
			}
			if _, err := conn.Write([]byte(body[lo:hi])); err != nil {
				break
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line, time.Since(start)
	}
	if line, took := send(0, 1); !strings.Contains(line, " 408 ") || took > 5*time.Second {
		t.Fatalf("stalled body: %q after %v, want 408 after about 300ms", line, took)
	}
	if line, _ := send(100*time.Millisecond, 8); strings.Contains(line, " 408 ") || line == "" {
		t.Fatalf("a slow body that keeps moving got %q", line)
	}
}

// TestParseBounds: the request's lists are bounded while they are decoded
// (a body of millions of empty inputs must not become gigabytes), and a
// parameter given twice is an error, not the last one silently.
func TestParseBounds(t *testing.T) {
	many := func(n int, item string) string { return strings.TrimSuffix(strings.Repeat(item+",", n), ",") }
	one := `{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`
	for name, c := range map[string]struct{ body, want string }{
		"inputs":     {`{"inputs":[` + many(oip.MaxTensors+1, `{}`) + `]}`, "more than 1024 tensors"},
		"outputs":    {`{"inputs":[` + one + `],"outputs":[` + many(oip.MaxTensors+1, `{"name":"y"}`) + `]}`, "more than 1024 requested outputs"},
		"rank":       {`{"inputs":[{"name":"x","shape":[` + many(oip.MaxRank+1, "1") + `],"datatype":"FP32","data":[1]}]}`, "more than 64 dimensions"},
		"parameters": {`{"parameters":{` + many(1, `"a":1,"a":2`) + `},"inputs":[` + one + `]}`, `parameter "a" is given twice`},
		"params max": {`{"parameters":{` + strings.Join(func() []string {
			var kv []string
			for i := range oip.MaxParameters + 1 {
				kv = append(kv, fmt.Sprintf(`"p%d":1`, i))
			}
			return kv
		}(), ",") + `},"inputs":[` + one + `]}`, "more than 256 parameters"},
	} {
		_, err := ParseInferRequest([]byte(c.body), 0)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an invalid-argument error saying %q", name, err, c.want)
		}
	}
	var all []string
	for i := range oip.MaxTensors {
		all = append(all, strings.Replace(one, `"x"`, fmt.Sprintf(`"x%d"`, i), 1))
	}
	if req, err := ParseInferRequest([]byte(`{"inputs":[`+strings.Join(all, ",")+`]}`), 0); err != nil || len(req.Inputs) != oip.MaxTensors {
		t.Errorf("%d inputs, the most allowed: %v", oip.MaxTensors, err)
	}
}

// TestCountElements: the pre-count that bounds a list before decoding it.
func TestCountElements(t *testing.T) {
	for in, want := range map[string]int{
		`null`: 0, `[]`: 0, "[ \n]": 0, `[1]`: 1, `[1,2]`: 2, `[{}]`: 1, `[[]]`: 1,
		`["a,b",[1,2],{"x":[3,4],"y":"]"}]`: 3, `["\"",1]`: 2, `["\\",1]`: 2, ` [ 1 , 2 , 3 ] `: 3,
	} {
		if got := countElements([]byte(in)); got != want {
			t.Errorf("countElements(%s) = %d, want %d", in, got, want)
		}
	}
}
