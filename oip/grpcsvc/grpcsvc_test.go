package grpcsvc

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

func input(name, dt string, shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest_InferInputTensor {
	return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape, Contents: c}
}

func TestTypedContents(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	rc := rawClient(t, addr)
	f32 := func(v float32) uint32 { return math.Float32bits(v) }
	f64 := func(v float64) uint64 { return math.Float64bits(v) }
	cases := []struct {
		dt    string
		shape []int64
		c     *pb.InferTensorContents
		raw   []byte
	}{
		{"BOOL", []int64{3}, &pb.InferTensorContents{BoolContents: []bool{true, false, true}}, []byte{1, 0, 1}},
		{"INT8", []int64{3}, &pb.InferTensorContents{IntContents: []int32{-128, -1, 127}}, []byte{0x80, 0xff, 0x7f}},
		{"INT16", []int64{3}, &pb.InferTensorContents{IntContents: []int32{-32768, -1, 32767}}, le16(0x8000, 0xffff, 0x7fff)},
		{"INT32", []int64{1, 3}, &pb.InferTensorContents{IntContents: []int32{math.MinInt32, -1, math.MaxInt32}}, le32(0x80000000, 0xffffffff, 0x7fffffff)},
		{"INT64", []int64{3, 1}, &pb.InferTensorContents{Int64Contents: []int64{math.MinInt64, -1, 5}}, le64(1<<63, math.MaxUint64, 5)},
		{"UINT8", []int64{3}, &pb.InferTensorContents{UintContents: []uint32{0, 1, 255}}, []byte{0, 1, 255}},
		{"UINT16", []int64{3}, &pb.InferTensorContents{UintContents: []uint32{0, 1, 65535}}, le16(0, 1, 65535)},
		{"UINT32", []int64{3}, &pb.InferTensorContents{UintContents: []uint32{0, 1, math.MaxUint32}}, le32(0, 1, math.MaxUint32)},
		{"UINT64", []int64{3}, &pb.InferTensorContents{Uint64Contents: []uint64{0, 1, math.MaxUint64}}, le64(0, 1, math.MaxUint64)},
		{"FP32", []int64{2, 2}, &pb.InferTensorContents{Fp32Contents: []float32{1.5, -2, float32(math.Inf(1)), 0}}, le32(f32(1.5), f32(-2), f32(float32(math.Inf(1))), 0)},
		{"FP64", []int64{2}, &pb.InferTensorContents{Fp64Contents: []float64{math.Pi, -0.25}}, le64(f64(math.Pi), f64(-0.25))},
		{"BYTES", []int64{4}, &pb.InferTensorContents{BytesContents: [][]byte{{}, {0x00, 0xff}, []byte("hello"), nil}},
			[]byte{0, 0, 0, 0, 2, 0, 0, 0, 0x00, 0xff, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0}},
		{"INT32", nil, &pb.InferTensorContents{IntContents: []int32{7}}, le32(7)},               // scalar
		{"FP32", []int64{0, 3}, nil, []byte{}},                                                  // zero elements, no contents
		{"BYTES", []int64{0}, &pb.InferTensorContents{}, []byte{}},                              // zero elements, empty contents
		{"FP16", []int64{4, 0}, nil, []byte{}},                                                  // no typed field, but nothing to send
		{"UINT8", []int64{}, &pb.InferTensorContents{UintContents: []uint32{200}}, []byte{200}}, // scalar
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s%v", tc.dt, tc.shape), func(t *testing.T) {
			resp, err := rc.ModelInfer(t.Context(), &pb.ModelInferRequest{ModelName: "echo", Id: "typed",
				Inputs: []*pb.ModelInferRequest_InferInputTensor{input("x", tc.dt, tc.shape, tc.c)}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Id != "typed" || len(resp.Outputs) != 1 || len(resp.RawOutputContents) != 1 {
				t.Fatalf("response %v", resp)
			}
			o := resp.Outputs[0]
			if o.Name != "x" || o.Datatype != tc.dt || !slices.Equal(o.Shape, tc.shape) || o.Contents != nil {
				t.Errorf("output %v", o)
			}
			if !bytes.Equal(resp.RawOutputContents[0], tc.raw) {
				t.Errorf("raw output %x, want %x", resp.RawOutputContents[0], tc.raw)
			}
		})
	}
}

func TestRawContentsNotCopied(t *testing.T) {
	f := newFake()
	s := New(f, Options{})
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	_, err := s.ModelInfer(t.Context(), &pb.ModelInferRequest{ModelName: "capture",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{input("x", "FP32", []int64{2}, nil)},
		RawInputContents: [][]byte{data}})
	if err != nil {
		t.Fatal(err)
	}
	got := f.captured.Inputs[0].Data
	if &got[0] != &data[0] {
		t.Error("raw input contents were copied")
	}
}

func TestBadRequests(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	rc := rawClient(t, addr)
	fp32 := func(name string, shape ...int64) *pb.ModelInferRequest_InferInputTensor {
		return input(name, "FP32", shape, nil)
	}
	req := func(raw [][]byte, ins ...*pb.ModelInferRequest_InferInputTensor) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "echo", Inputs: ins, RawInputContents: raw}
	}
	withParam := func(r *pb.ModelInferRequest, k string, v *pb.InferParameter) *pb.ModelInferRequest {
		r.Parameters = map[string]*pb.InferParameter{k: v}
		return r
	}
	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"no model name", &pb.ModelInferRequest{}, codes.InvalidArgument, "model_name is required"},
		{"unknown model", &pb.ModelInferRequest{ModelName: "nope"}, codes.NotFound, `model "nope"`},
		{"wrong raw count", req([][]byte{make([]byte, 8)}, fp32("a", 2), fp32("b", 2)),
			codes.InvalidArgument, "raw_input_contents holds 1 entries for 2 inputs"},
		{"raw byte count mismatch", req([][]byte{make([]byte, 7)}, fp32("a", 2)),
			codes.InvalidArgument, `input "a" raw contents: tensor "a": FP32[2] needs 8 bytes, got 7`},
		{"raw BOOL not 0 or 1", req([][]byte{{0, 2}}, input("a", "BOOL", []int64{2}, nil)),
			codes.InvalidArgument, "not 0 or 1"},
		{"raw BYTES truncated", req([][]byte{{9, 0, 0, 0, 'x'}}, input("a", "BYTES", []int64{1}, nil)),
			codes.InvalidArgument, "claims 9 bytes"},
		{"raw BYTES count", req([][]byte{{0, 0, 0, 0}}, input("a", "BYTES", []int64{2}, nil)),
			codes.InvalidArgument, "holds 1 elements, shape needs 2"},
		{"typed count mismatch", req(nil, input("a", "INT32", []int64{3}, &pb.InferTensorContents{IntContents: []int32{1, 2}})),
			codes.InvalidArgument, `input "a": INT32[3] needs 3 elements, int_contents holds 2`},
		{"typed wrong field", req(nil, input("a", "FP32", []int64{1}, &pb.InferTensorContents{IntContents: []int32{1}})),
			codes.InvalidArgument, `input "a": FP32 takes fp32_contents, got int_contents`},
		{"typed two fields", req(nil, input("a", "INT64", []int64{1}, &pb.InferTensorContents{Int64Contents: []int64{1}, Fp64Contents: []float64{1}})),
			codes.InvalidArgument, "INT64 takes int64_contents, got int64_contents, fp64_contents"},
		{"typed FP16", req(nil, input("a", "FP16", []int64{1}, &pb.InferTensorContents{Fp32Contents: []float32{1}})),
			codes.InvalidArgument, `input "a": FP16 has no typed contents field (got fp32_contents); send it in raw contents`},
		{"BF16 without data", req(nil, input("a", "BF16", []int64{2}, nil)),
			codes.InvalidArgument, "BF16 has no typed contents field, send it in raw contents"},
		{"no data", req(nil, fp32("a", 2)), codes.InvalidArgument, `input "a": FP32[2] has no data: set fp32_contents or raw contents`},
		{"uint out of range", req(nil, input("a", "UINT8", []int64{2}, &pb.InferTensorContents{UintContents: []uint32{1, 256}})),
			codes.InvalidArgument, `input "a": element 1 (256) is out of range for UINT8`},
		{"uint16 out of range", req(nil, input("a", "UINT16", []int64{1}, &pb.InferTensorContents{UintContents: []uint32{70000}})),
			codes.InvalidArgument, "out of range for UINT16"},
		{"int8 out of range", req(nil, input("a", "INT8", []int64{1}, &pb.InferTensorContents{IntContents: []int32{-129}})),
			codes.InvalidArgument, "element 0 (-129) is out of range for INT8"},
		{"int16 out of range", req(nil, input("a", "INT16", []int64{1}, &pb.InferTensorContents{IntContents: []int32{40000}})),
			codes.InvalidArgument, "out of range for INT16"},
		{"unknown datatype", req(nil, input("a", "FP8", []int64{1}, nil)), codes.InvalidArgument, `input "a": unknown datatype "FP8"`},
		{"negative dim", req(nil, fp32("a", 2, -1)), codes.InvalidArgument, `input "a": shape [2 -1]: dimension 1 is negative`},
		{"shape overflow", req([][]byte{{}}, fp32("a", 1<<40, 1<<40)), codes.InvalidArgument, `input "a": shape [1099511627776 1099511627776] holds more than`},
		{"shape overflow int64", req(nil, fp32("a", math.MaxInt64, math.MaxInt64, 2)), codes.InvalidArgument, "holds more than"},
		{"mixing raw and typed", req([][]byte{make([]byte, 4), make([]byte, 4)}, fp32("a", 1),
			input("b", "FP32", []int64{1}, &pb.InferTensorContents{Fp32Contents: []float32{1}})),
			codes.InvalidArgument, `input "b" sets contents while the request uses raw_input_contents`},
		{"unnamed input", req(nil, fp32("", 0)), codes.InvalidArgument, "input 0 has no name"},
		{"duplicate input", req(nil, fp32("a", 0), fp32("a", 0)), codes.InvalidArgument, `input "a" appears more than once`},
		{"unnamed output", &pb.ModelInferRequest{ModelName: "echo", Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{}}},
			codes.InvalidArgument, "requested output 0 has no name"},
		{"parameter without value", withParam(req(nil), "p", &pb.InferParameter{}), codes.InvalidArgument, `request parameter "p" has no value`},
		{"negative timeout", withParam(req(nil), "timeout", &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -1}}),
			codes.InvalidArgument, `parameter "timeout" is -1`},
		{"string timeout", withParam(req(nil), "timeout", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "1s"}}),
			codes.InvalidArgument, `parameter "timeout" is a string`},
		{"response parameter the wire cannot carry", &pb.ModelInferRequest{ModelName: "badparam"},
			codes.Internal, `unsupported type struct {}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rc.ModelInfer(t.Context(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}

	t.Run("other rpcs", func(t *testing.T) {
		ctx := t.Context()
		check := func(what string, err error, code codes.Code, msg string) {
			t.Helper()
			st := status.Convert(err)
			if st.Code() != code || !strings.Contains(st.Message(), msg) {
				t.Errorf("%s: got %v %q, want %v containing %q", what, st.Code(), st.Message(), code, msg)
			}
		}
		_, err := rc.ModelReady(ctx, &pb.ModelReadyRequest{})
		check("ModelReady without name", err, codes.InvalidArgument, "name is required")
		_, err = rc.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"})
		check("ModelMetadata unknown", err, codes.NotFound, `model "nope"`)
		_, err = rc.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: "m",
			Parameters: map[string]*pb.ModelRepositoryParameter{"config": {ParameterChoice: &pb.ModelRepositoryParameter_StringParam{StringParam: "{}"}}}})
		check("load with parameters", err, codes.InvalidArgument, `repository parameters are not supported (got ["config"])`)
		_, err = rc.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{})
		check("unload without name", err, codes.InvalidArgument, "model_name is required")
	})
}

func TestMessageSizeLimits(t *testing.T) {
	addr := startServer(t, newFake(), Options{MaxRecvMsgSize: 3 << 20, MaxSendMsgSize: 1 << 20})
	c := dial(t, addr)
	infer := func(size int) error {
		_, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo",
			Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.Uint8, Shape: []int64{int64(size)}, Data: make([]byte, size)}}}})
		return err
	}
	if err := infer(512 << 10); err != nil {
		t.Fatalf("small request: %v", err)
	}
	if err := infer(4 << 20); errdefs.GRPCCode(err) != codes.ResourceExhausted || !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("request beyond MaxRecvMsgSize: %v", err)
	}
	if err := infer(2 << 20); errdefs.GRPCCode(err) != codes.ResourceExhausted {
		t.Errorf("response beyond MaxSendMsgSize: %v", err)
	}
	if err := infer(16); err != nil {
		t.Errorf("server stopped serving after oversized messages: %v", err)
	}
}

func TestDefaultMessageSize(t *testing.T) {
	// 32 MiB is beyond grpc-go's 4 MiB defaults but within ours, both ways.
	addr := startServer(t, newFake(), Options{})
	c := dial(t, addr)
	in := sample("x", tensor.FP32, []int64{8 << 20})
	resp, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}})
	if err != nil {
		t.Fatal(err)
	}
	sameTensor(t, resp.Outputs[0], in)
}

func TestDeadlines(t *testing.T) {
	f := newFake()
	addr := startServer(t, f, Options{})
	c := dial(t, addr)

	t.Run("grpc deadline cancels the model", func(t *testing.T) {
		before := f.ctxEnded.Load()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Infer(ctx, &oip.InferRequest{ModelName: "sleep"})
		if !errors.Is(err, errdefs.ErrDeadline) {
			t.Fatalf("got %v, want deadline exceeded", err)
		}
		waitFor(t, func() bool { return f.ctxEnded.Load() > before })
	})

	t.Run("timeout parameter", func(t *testing.T) {
		for _, v := range []any{int64(20_000), uint64(20_000)} {
			start := time.Now()
			_, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "sleep", Parameters: oip.Parameters{"timeout": v}})
			if !errors.Is(err, errdefs.ErrDeadline) {
				t.Fatalf("timeout %T: got %v, want deadline exceeded", v, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("timeout of 20ms took %v", d)
			}
		}
	})

	t.Run("zero timeout means none", func(t *testing.T) {
		_, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", Parameters: oip.Parameters{"timeout": int64(0)}})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	c := dial(t, addr)
	for range 3 {
		_, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "panic"})
		if errdefs.GRPCCode(err) != codes.Internal {
			t.Fatalf("got %v, want internal", err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("panic value leaked to client: %v", err)
		}
		in := sample("x", tensor.Int64, []int64{4})
		resp, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}})
		if err != nil {
			t.Fatalf("server stopped serving after a panic: %v", err)
		}
		sameTensor(t, resp.Outputs[0], in)
	}
}

func TestReflection(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	list := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "inference.GRPCInferenceService") {
		t.Errorf("reflection lists %v", names)
	}
	file := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "inference.ModelInferRequest"}})
	if len(file.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("no descriptor for inference.ModelInferRequest: %v", file)
	}
}

func TestConcurrentFlood(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	c := dial(t, addr)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("req-%d", i)
			in := tensor.FromStrings("s", []int64{2}, []string{id, strings.Repeat("x", i)})
			resp, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", ID: id, Inputs: []oip.InferInput{{Tensor: in}}})
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", id, err)
			case resp.ID != id || len(resp.Outputs) != 1 || !bytes.Equal(resp.Outputs[0].Data, in.Data):
				errs <- fmt.Errorf("%s: wrong answer %+v", id, resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM := writeSelfSigned(t, dir)
	addr := startServer(t, newFake(), Options{TLSCertFile: filepath.Join(dir, "cert.pem"), TLSKeyFile: filepath.Join(dir, "key.pem")})

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("bad cert")
	}
	c := dial(t, addr, grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")))
	if !c.Live() {
		t.Fatal("TLS client: server not live")
	}
	if ok, err := c.ModelReady(t.Context(), "echo", ""); !ok || err != nil {
		t.Fatalf("ModelReady over TLS: %v %v", ok, err)
	}
	plain := dial(t, addr)
	if plain.Live() {
		t.Error("plaintext client reached a TLS server")
	}
}

func TestOptionErrors(t *testing.T) {
	if _, err := ServerOptions(Options{TLSCertFile: "cert.pem"}); err == nil {
		t.Error("cert without key accepted")
	}
	if _, err := New(newFake(), Options{TLSCertFile: "/nonexistent/c", TLSKeyFile: "/nonexistent/k"}).NewGRPCServer(); err == nil {
		t.Error("missing TLS files accepted")
	}
}

func TestClientAgainstUnreachableServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := dial(t, addr)
	if c.Live() || c.Ready() {
		t.Error("unreachable server reported live or ready")
	}
	if md := c.ServerMetadata(); md.Name != "" {
		t.Errorf("metadata from nowhere: %+v", md)
	}
	if _, err := c.ModelReady(t.Context(), "echo", ""); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("got %v, want unavailable", err)
	}
}

func TestDecodeTypedResponse(t *testing.T) {
	// Servers other than accelpool may answer with typed contents.
	resp, err := decodeInferResponse(&pb.ModelInferResponse{Id: "1", Outputs: []*pb.ModelInferResponse_InferOutputTensor{
		{Name: "y", Datatype: "FP32", Shape: []int64{2}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sameTensor(t, resp.Outputs[0], tensor.FromFloat32("y", []int64{2}, []float32{1, 2}))
	if _, err := decodeInferResponse(&pb.ModelInferResponse{Outputs: []*pb.ModelInferResponse_InferOutputTensor{{Name: "y", Datatype: "FP32"}},
		RawOutputContents: [][]byte{{}, {}}}); err == nil {
		t.Error("raw count mismatch accepted")
	}
}

func writeSelfSigned(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "accelpool test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}
