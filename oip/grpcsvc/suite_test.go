package grpcsvc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// The suite below runs against the fake itself and against a Client talking
// to a Server serving the fake: the transport must be invisible.

func TestServiceInProcess(t *testing.T) { runServiceSuite(t, newFake()) }

func TestServiceOverGRPC(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	runServiceSuite(t, dial(t, addr))
}

// startServer serves svc on a random loopback port until the test ends.
func startServer(t *testing.T, svc oip.Service, opts Options) string {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	gs, err := New(svc, opts).NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.GracefulStop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *Client {
	t.Helper()
	c, err := Dial(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient speaks the generated API directly, to send what Client never would.
func rawClient(t *testing.T, addr string) pb.GRPCInferenceServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewGRPCInferenceServiceClient(conn)
}

// sample builds a valid tensor of dt and shape with varied contents: BOOL
// alternates 0 and 1, BYTES elements have lengths 0 to 4 and hold 0x00 and
// 0xff, fixed-size types get arbitrary bytes (any bit pattern is a value).
func sample(name string, dt tensor.DataType, shape []int64) tensor.Tensor {
	n, err := tensor.NumElements(shape)
	if err != nil {
		panic(err)
	}
	t := tensor.Tensor{Name: name, DataType: dt, Shape: shape}
	switch dt {
	case tensor.Bytes:
		elems := make([][]byte, n)
		for i := range elems {
			e := make([]byte, i%5)
			for j := range e {
				e[j] = byte(i*251 + j*127)
			}
			if len(e) > 1 {
				e[0], e[len(e)-1] = 0x00, 0xff
			}
			elems[i] = e
		}
		t.Data = tensor.JoinBytes(elems)
	case tensor.Bool:
		t.Data = make([]byte, n)
		for i := range t.Data {
			t.Data[i] = byte(i % 2)
		}
	default:
		t.Data = make([]byte, int(n)*dt.Size())
		for i := range t.Data {
			t.Data[i] = byte(i*37 + int(dt))
		}
	}
	return t
}

func sameTensor(t *testing.T, got, want tensor.Tensor) {
	t.Helper()
	if got.Name != want.Name || got.DataType != want.DataType || !slices.Equal(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data) {
		t.Errorf("tensor: got %s %v%v %d bytes %x, want %s %v%v %d bytes %x",
			got.Name, got.DataType, got.Shape, len(got.Data), head(got.Data),
			want.Name, want.DataType, want.Shape, len(want.Data), head(want.Data))
	}
}

func head(b []byte) []byte { return b[:min(len(b), 16)] }

func runServiceSuite(t *testing.T, svc oip.Service) {
	ctx := t.Context()

	t.Run("health and metadata", func(t *testing.T) {
		if !svc.Live() || !svc.Ready() {
			t.Fatal("not live or not ready")
		}
		md := svc.ServerMetadata()
		if md.Name != "fake" || md.Version != "0.0.1" || !slices.Equal(md.Extensions, []string{"model_repository"}) {
			t.Errorf("server metadata %+v", md)
		}
		mm, err := svc.ModelMetadata(ctx, "echo", "")
		if err != nil {
			t.Fatal(err)
		}
		want := oip.ModelMetadata{Name: "echo", Versions: []string{"1"}, Platform: "fake",
			Inputs:  []oip.TensorMetadata{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3}}},
			Outputs: []oip.TensorMetadata{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3}}}}
		if !reflect.DeepEqual(mm, want) {
			t.Errorf("model metadata %+v, want %+v", mm, want)
		}
		if _, err := svc.ModelMetadata(ctx, "nope", ""); errdefs.GRPCCode(err) != codes.NotFound {
			t.Errorf("metadata of unknown model: %v", err)
		}
		if ok, err := svc.ModelReady(ctx, "echo", "1"); !ok || err != nil {
			t.Errorf("ModelReady(echo) = %v, %v", ok, err)
		}
		if _, err := svc.ModelReady(ctx, "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("ModelReady(nope): %v", err)
		}
	})

	t.Run("every datatype round-trips", func(t *testing.T) {
		for _, dt := range tensor.AllDataTypes {
			for _, shape := range [][]int64{{2, 3}, {}, {0, 4}, {7}} {
				t.Run(fmt.Sprintf("%v%v", dt, shape), func(t *testing.T) {
					in := sample("x", dt, shape)
					resp, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "echo", ID: "r1",
						Inputs: []oip.InferInput{{Tensor: in}}})
					if err != nil {
						t.Fatal(err)
					}
					if resp.ID != "r1" || resp.ModelName != "echo" || len(resp.Outputs) != 1 {
						t.Fatalf("response %+v", resp)
					}
					sameTensor(t, resp.Outputs[0], in)
				})
			}
		}
	})

	t.Run("parameters and requested outputs", func(t *testing.T) {
		params := oip.Parameters{"b": true, "i": int64(-3), "u": uint64(1) << 63, "f": 2.5, "s": "text"}
		resp, err := svc.Infer(ctx, &oip.InferRequest{
			ModelName:  "echo",
			Parameters: params,
			Inputs: []oip.InferInput{
				{Tensor: sample("a", tensor.Int32, []int64{2}), Parameters: oip.Parameters{"k": "v"}},
				{Tensor: sample("b", tensor.Bytes, []int64{3})},
			},
			Outputs: []oip.RequestedOutput{{Name: "b"}, {Name: "a"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		want := oip.Parameters{"b": true, "i": int64(-3), "u": uint64(1) << 63, "f": 2.5, "s": "text",
			"in.a.k": "v", "outputs": "b,a"}
		if !reflect.DeepEqual(resp.Parameters, want) {
			t.Errorf("parameters %#v, want %#v", resp.Parameters, want)
		}
		if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "b" || resp.Outputs[1].Name != "a" {
			t.Fatalf("outputs not in requested order: %+v", resp.Outputs)
		}
		sameTensor(t, resp.Outputs[0], sample("b", tensor.Bytes, []int64{3}))
	})

	t.Run("errors keep their kind", func(t *testing.T) {
		for kind, sentinel := range failKinds {
			_, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "fail", Parameters: oip.Parameters{"kind": kind}})
			want := codes.Internal
			if sentinel != nil {
				want = errdefs.GRPCCode(sentinel)
			}
			if got := errdefs.GRPCCode(err); got != want {
				t.Errorf("%s: code %v, want %v (%v)", kind, got, want, err)
			}
			if sentinel != nil && !errors.Is(err, sentinel) && sentinel != errdefs.ErrTooLarge {
				t.Errorf("%s: %v does not wrap %v", kind, err, sentinel)
			}
			if err == nil || !strings.Contains(err.Error(), "fake failure") {
				t.Errorf("%s: message lost: %v", kind, err)
			}
		}
	})

	t.Run("deadline reaches the model", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := svc.Infer(dctx, &oip.InferRequest{ModelName: "sleep"})
		if errdefs.GRPCCode(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want deadline exceeded", err)
		}
	})

	t.Run("repository", func(t *testing.T) {
		if err := svc.LoadModel(ctx, "extra"); err != nil {
			t.Fatal(err)
		}
		idx, err := svc.RepositoryIndex(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(idx, func(e oip.ModelIndexEntry) bool { return e.Name == "extra" && e.State == "READY" }) {
			t.Errorf("index lacks extra: %+v", idx)
		}
		if err := svc.UnloadModel(ctx, "extra"); err != nil {
			t.Fatal(err)
		}
		idx, err = svc.RepositoryIndex(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		want := oip.ModelIndexEntry{Name: "extra", Version: "1", State: "UNAVAILABLE", Reason: "unloaded"}
		if !slices.Contains(idx, want) {
			t.Errorf("index lacks %+v: %+v", want, idx)
		}
		if idx, _ := svc.RepositoryIndex(ctx, true); slices.ContainsFunc(idx, func(e oip.ModelIndexEntry) bool { return e.Name == "extra" }) {
			t.Errorf("ready-only index lists unloaded model: %+v", idx)
		}
		if err := svc.UnloadModel(ctx, "never"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("unload unknown: %v", err)
		}
		if err := svc.LoadModel(ctx, ""); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("load empty name: %v", err)
		}
	})
}

// Little-endian helpers for hand-built expectations.
func le16(vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

func le32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func le64(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
