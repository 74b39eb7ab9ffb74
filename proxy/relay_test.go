package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/proxy/linkprobe"
	"github.com/accelpool/accelpool/tensor"
)

// recorder is a target that keeps the bytes of every ModelInfer request
// it gets and answers with a fixed response, or fails while fail is set.
type recorder struct {
	mu   sync.Mutex
	got  [][]byte
	fail error
	resp *pb.ModelInferResponse
	// garbage, when set, is sent instead of resp.
	garbage []byte
	// refuse, when set, is a grpc-encoding whose requests the target
	// answers with Unimplemented, as a grpc-go server does when it has no
	// such decompressor; encodings are the grpc-encoding of every
	// request, refused or not ("" for none).
	refuse    string
	encodings []string
	addr      string
}

func (r *recorder) setRefuse(encoding string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = encoding
}

func (r *recorder) requestEncodings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.encodings)
}

func (r *recorder) requests() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func startRecorder(t testing.TB) *recorder {
	t.Helper()
	rec := &recorder{resp: &pb.ModelInferResponse{
		ModelName: "m", Id: "req-1",
		Parameters: map[string]*pb.InferParameter{
			"queue_us":   {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 100}},
			"compute_us": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 900}},
			"note":       {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "from the target"}},
		},
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "y", Datatype: "FP32", Shape: []int64{1, 4}}},
		RawOutputContents: [][]byte{tensor.FromFloat32("y", []int64{1, 4}, []float32{5, 6, 7, 8}).Data},
	}}
	handler := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		enc := encodingOf(ctx)
		rec.mu.Lock()
		rec.encodings = append(rec.encodings, enc)
		refuse := enc != "" && enc == rec.refuse
		rec.mu.Unlock()
		if refuse {
			return nil, status.Errorf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", enc)
		}
		in := new(frame)
		if err := dec(in); err != nil {
			return nil, err
		}
		defer in.free()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.got = append(rec.got, in.data.Materialize())
		if rec.fail != nil {
			return nil, rec.fail
		}
		if rec.garbage != nil {
			return &frame{data: mem.BufferSlice{mem.SliceBuffer(rec.garbage)}, give: true}, nil
		}
		return rec.resp, nil
	}
	desc := grpc.ServiceDesc{
		ServiceName: pb.GRPCInferenceService_ServiceDesc.ServiceName,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "ModelInfer", Handler: handler}},
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(relayCodec{}), grpc.StatsHandler(encodingStats{}))
	gs.RegisterService(&desc, struct{}{})
	linkprobe.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	rec.addr = ln.Addr().String()
	return rec
}

// serveProxy serves p with NewGRPCServer on loopback and returns a
// connection to it.
func serveProxy(t testing.TB, p *Proxy, opts grpcsvc.Options) *grpc.ClientConn {
	t.Helper()
	gs, err := NewGRPCServer(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpcsvc.DefaultDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// wireRequest is a request for model as an application would send it.
func wireRequest(t testing.TB, model string) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.ModelInferRequest{
		ModelName: model, ModelVersion: "1", Id: "req-1",
		Parameters: map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5_000_000}}},
		Inputs:     []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 4}}},
		RawInputContents: [][]byte{
			tensor.FromFloat32("x", []int64{1, 4}, []float32{1, 2, 3, 4}).Data,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendRaw sends b as a ModelInfer request and returns the answer's bytes.
func sendRaw(conn *grpc.ClientConn, b []byte) ([]byte, error) {
	resp := new(frame)
	err := conn.Invoke(context.Background(), pb.GRPCInferenceService_ModelInfer_FullMethodName,
		&frame{data: mem.BufferSlice{mem.SliceBuffer(b)}}, resp, grpc.ForceCodecV2(relayCodec{}))
	if err != nil {
		return nil, err
	}
	defer resp.free()
	return resp.data.Materialize(), nil
}

func TestRelayForwardsRequestBytesAndAppendsParameters(t *testing.T) {
	rec := startRecorder(t)
	// Uncompressed only: one option to explore (compression is tested in
	// TestCompressesWhereItIsFaster).
	p := newProxy(t, Config{Targets: []Target{{Name: "edge", Addr: rec.addr, Tier: "edge"}}, Compress: CompressNever})
	waitProbed(t, p)
	conn := serveProxy(t, p, grpcsvc.Options{})

	// Byte for byte, twice (the second with a prediction).
	want := wireRequest(t, "m")
	for i := range 2 {
		raw, err := sendRaw(conn, want)
		if err != nil {
			t.Fatal(err)
		}
		got := rec.requests()
		if len(got) != i+1 || !bytes.Equal(got[i], want) {
			t.Fatalf("request %d reached the target as %d bytes %x, want the %d bytes sent %x", i+1, len(got[len(got)-1]), got[len(got)-1], len(want), want)
		}
		// The answer is the target's bytes, then the proxy's parameters.
		orig, err := proto.Marshal(rec.resp)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) <= len(orig) {
			t.Fatalf("answer of %d bytes, the target's alone is %d", len(raw), len(orig))
		}
		var r pb.ModelInferResponse
		if err := proto.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if r.GetParameters()["note"].GetStringParam() != "from the target" || r.GetParameters()["compute_us"].GetInt64Param() != 900 {
			t.Errorf("the target's parameters were lost: %v", r.GetParameters())
		}
		if r.GetParameters()[ParamTarget].GetStringParam() != "edge" || r.GetParameters()[ParamAttempts].GetInt64Param() != 1 {
			t.Errorf("proxy parameters: %v", r.GetParameters())
		}
		if _, ok := r.GetParameters()[ParamPredicted]; ok != (i > 0) {
			t.Errorf("request %d: prediction present %v (the first explores)", i+1, ok)
		}
	}

	// The standard client reads the same answer.
	c := grpcsvc.NewClient(conn)
	resp, err := c.Infer(context.Background(), request("m"))
	if err != nil {
		t.Fatal(err)
	}
	if targetOf(resp) != "edge" || resp.ModelName != "m" || resp.Parameters["queue_us"] != int64(100) {
		t.Fatalf("client read %+v", resp)
	}
	if _, ok := resp.Parameters[ParamPredicted].(int64); !ok {
		t.Errorf("no prediction: %v", resp.Parameters)
	}
	if got := resp.Outputs[0].Float32s(); len(got) != 4 || got[0] != 5 || got[3] != 8 {
		t.Fatalf("outputs %v", got)
	}
	// What the proxy learned came from the raw answer: 1 ms of server time.
	if est := p.Status().Targets[0].Models["m"]; est.Samples < 2 || est.ServerMs != 1 {
		t.Errorf("learned %+v, want 1 ms of server time from queue_us + compute_us", est)
	}
}

func TestRelayRenamesForTheTarget(t *testing.T) {
	rec := startRecorder(t)
	p := newProxy(t, Config{Targets: []Target{{Name: "n1", Addr: rec.addr, Tier: "edge", Models: map[string]string{"app": "served"}}}})
	waitProbed(t, p)
	conn := serveProxy(t, p, grpcsvc.Options{})
	sent := wireRequest(t, "app")
	raw, err := sendRaw(conn, sent)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.requests()[0]
	if !bytes.HasPrefix(got, sent) {
		t.Fatal("the request's bytes were not forwarded as they came")
	}
	var fwd pb.ModelInferRequest
	if err := proto.Unmarshal(got, &fwd); err != nil {
		t.Fatal(err)
	}
	if fwd.GetModelName() != "served" || fwd.GetModelVersion() != "" || fwd.GetId() != "req-1" || len(fwd.GetRawInputContents()) != 1 {
		t.Fatalf("the target read %q version %q id %q", fwd.GetModelName(), fwd.GetModelVersion(), fwd.GetId())
	}
	var r pb.ModelInferResponse
	if err := proto.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.GetModelName() != "app" {
		t.Fatalf("the answer names model %q, want the name asked for", r.GetModelName())
	}
}

func TestRelayFallsBackToLocal(t *testing.T) {
	rec := startRecorder(t)
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 20}),
		Targets: []Target{{Name: "edge", Addr: rec.addr, Tier: "edge"}},
	})
	waitProbed(t, p)
	c := grpcsvc.NewClient(serveProxy(t, p, grpcsvc.Options{}))
	// The first request explores local (the nearer tier), the second the
	// target, which fails: the request is decoded and runs locally.
	if r, err := c.Infer(context.Background(), request("m")); err != nil || targetOf(r) != LocalName {
		t.Fatalf("first request: %v on %v", err, r)
	}
	rec.setFail(status.Error(codes.Unavailable, "target going away"))
	r, err := c.Infer(context.Background(), request("m"))
	if err != nil {
		t.Fatal(err)
	}
	if targetOf(r) != LocalName || r.Parameters[ParamAttempts] != int64(2) {
		t.Fatalf("answered by %q after %v attempts, want local after 2", targetOf(r), r.Parameters[ParamAttempts])
	}
	if got := r.Outputs[0].Float32s(); len(got) != 4 || got[3] != 4 {
		t.Fatalf("outputs %v", got)
	}
	if len(rec.requests()) != 1 {
		t.Fatalf("the target saw %d requests, want the one relayed", len(rec.requests()))
	}
	// A target whose answer does not parse has failed too.
	rec.setFail(nil)
	rec.mu.Lock()
	rec.garbage = []byte{0x22, 0xff, 0x01}
	rec.mu.Unlock()
	r, err = c.Infer(context.Background(), request("m"))
	if err != nil {
		t.Fatal(err)
	}
	if targetOf(r) != LocalName || r.Parameters[ParamAttempts] != int64(2) || len(rec.requests()) != 2 {
		t.Fatalf("after a garbled answer: answered by %q after %v attempts, the target saw %d", targetOf(r), r.Parameters[ParamAttempts], len(rec.requests()))
	}
}

func TestRelayRefusesBadRequests(t *testing.T) {
	rec := startRecorder(t)
	p := newProxy(t, Config{Targets: []Target{{Name: "edge", Addr: rec.addr, Tier: "edge", Models: map[string]string{"m": "m"}}}})
	waitProbed(t, p)
	conn := serveProxy(t, p, grpcsvc.Options{MaxRecvMsgSize: 4 << 10})
	mustMarshal := func(m *pb.ModelInferRequest) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	input := func(shape ...int64) []*pb.ModelInferRequest_InferInputTensor {
		return []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: shape}}
	}
	for _, tc := range []struct {
		name string
		b    []byte
		code codes.Code
		want string
	}{
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff}, codes.InvalidArgument, "malformed ModelInferRequest"},
		{"truncated", wireRequest(t, "m")[:20], codes.InvalidArgument, "malformed ModelInferRequest"},
		{"oversize", mustMarshal(&pb.ModelInferRequest{ModelName: "m", Inputs: input(1, 2048), RawInputContents: [][]byte{make([]byte, 8192)}}), codes.ResourceExhausted, "larger than max"},
		{"no model", mustMarshal(&pb.ModelInferRequest{Inputs: input(1, 4), RawInputContents: [][]byte{make([]byte, 16)}}), codes.InvalidArgument, "model_name is required"},
		{"unknown model", wireRequest(t, "nosuch"), codes.NotFound, "nosuch"},
		{"short contents", mustMarshal(&pb.ModelInferRequest{ModelName: "m", Inputs: input(1, 4), RawInputContents: [][]byte{make([]byte, 8)}}), codes.InvalidArgument, "needs 16 bytes"},
		{"contents count", mustMarshal(&pb.ModelInferRequest{ModelName: "m", Inputs: input(1, 4), RawInputContents: [][]byte{make([]byte, 16), make([]byte, 16)}}), codes.InvalidArgument, "raw_input_contents holds 2 entries for 1 inputs"},
		{"bad datatype", mustMarshal(&pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP128", Shape: []int64{1}}}}), codes.InvalidArgument, "FP128"},
		{"bad timeout", mustMarshal(&pb.ModelInferRequest{ModelName: "m", Parameters: map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "soon"}}}}), codes.InvalidArgument, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sendRaw(conn, tc.b)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %v mentioning %q", err, tc.code, tc.want)
			}
		})
	}
	// The other methods' messages are decoded by protobuf: garbled ones
	// are the client's error too.
	garbled := &frame{data: mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x7f, 'm'})}}
	err := conn.Invoke(context.Background(), pb.GRPCInferenceService_ModelMetadata_FullMethodName,
		garbled, new(frame), grpc.ForceCodecV2(relayCodec{}))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed request message") {
		t.Fatalf("garbled ModelMetadata request: %v, want InvalidArgument", err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("the target saw %d of the refused requests", n)
	}
	// The same refusals through the standard client read as errdefs kinds.
	_, err = grpcsvc.NewClient(conn).Infer(context.Background(), request("nosuch"))
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown model through the client: %v", err)
	}
}

func TestParseRequestAgreesWithDecoding(t *testing.T) {
	req := &oip.InferRequest{ModelName: "m", ModelVersion: "2", ID: "abc",
		Parameters: oip.Parameters{"timeout": int64(1000), "flag": true, "ratio": 0.5, "n": uint64(7), "s": "x"},
		Inputs: []oip.InferInput{
			{Tensor: tensor.FromFloat32("x", []int64{1, 4}, []float32{1, 2, 3, 4})},
			{Tensor: tensor.Tensor{Name: "img", DataType: tensor.Bytes, Shape: []int64{2}, Data: tensor.JoinBytes([][]byte{[]byte("jpeg"), []byte("png!")})}},
		}}
	b, err := proto.Marshal(&pb.ModelInferRequest{
		ModelName: req.ModelName, ModelVersion: req.ModelVersion, Id: req.ID,
		Parameters: map[string]*pb.InferParameter{
			"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 1000}},
			"flag":    {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}},
			"ratio":   {ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 0.5}},
			"n":       {ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 7}},
			"s":       {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "x"}},
		},
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "x", Datatype: "FP32", Shape: []int64{1, 4}},
			{Name: "img", Datatype: "BYTES", Shape: []int64{2}},
		},
		RawInputContents: [][]byte{req.Inputs[0].Data, req.Inputs[1].Data},
	})
	if err != nil {
		t.Fatal(err)
	}
	// In one buffer and in many small ones (as gRPC receives it).
	var split mem.BufferSlice
	for i := 0; i < len(b); i += 7 {
		split = append(split, mem.SliceBuffer(b[i:min(i+7, len(b))]))
	}
	for _, data := range []mem.BufferSlice{{mem.SliceBuffer(b)}, split} {
		r, err := parseRequest(data)
		if err != nil {
			t.Fatal(err)
		}
		if r.model != "m" || r.version != "2" || r.id != "abc" || r.inputs != 2 || !bytes.Equal(r.bytes(), b) {
			t.Errorf("parsed %+v", r)
		}
		for k, v := range req.Parameters {
			if r.params[k] != v {
				t.Errorf("parameter %s: %v (%T), want %v", k, r.params[k], r.params[k], v)
			}
		}
		if r.wireBytes != inputBytes(req) {
			t.Errorf("input bytes %d, the decoded path counts %d", r.wireBytes, inputBytes(req))
		}
		r.free()
	}
}

func TestParseResponseAcrossBuffers(t *testing.T) {
	out := tensor.FromFloat32("y", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	b, err := proto.Marshal(&pb.ModelInferResponse{
		ModelName: "m",
		Parameters: map[string]*pb.InferParameter{
			"queue_us":      {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 10}},
			"preprocess_us": {ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 20}},
			"compute_us":    {ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 30}},
			"other_us":      {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 1000}},
		},
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "y", Datatype: "FP32", Shape: []int64{2, 3}}},
		RawOutputContents: [][]byte{out.Data},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{len(b), 1, 3, 16} {
		var data mem.BufferSlice
		for i := 0; i < len(b); i += size {
			data = append(data, mem.SliceBuffer(b[i:min(i+size, len(b))]))
		}
		r, err := parseResponse(data)
		if err != nil {
			t.Fatalf("buffers of %d: %v", size, err)
		}
		if r.server != 60 || r.wireBytes != WireBytes(out) {
			t.Errorf("buffers of %d: server %dµs, %d bytes; want 60µs, %d", size, r.server, r.wireBytes, WireBytes(out))
		}
	}
	if _, err := parseResponse(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-3])}); err == nil {
		t.Error("a truncated response parsed")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01, 'm'})
	b, _ := proto.Marshal(&pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "BYTES", Shape: []int64{1}}},
		RawInputContents: [][]byte{{3, 0, 0, 0, 'a', 'b', 'c'}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(mem.BufferSlice{mem.SliceBuffer(b)})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		defer r.free()
		if r.model == "" || r.wireBytes < 0 {
			t.Fatalf("parsed %+v", r)
		}
	})
}
