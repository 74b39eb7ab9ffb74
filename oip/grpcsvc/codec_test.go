package grpcsvc

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// ramp is n bytes counting from seed.
func ramp(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

// codecMessages are requests and responses the codec must carry exactly as
// protobuf does: raw entries small (inlined), large (referenced) and empty,
// typed contents, parameters, requested outputs.
func codecMessages() []proto.Message {
	params := map[string]*pb.InferParameter{
		"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5}},
		"s":       {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "x"}},
	}
	return []proto.Message{
		&pb.ModelInferRequest{ModelName: "m"},
		&pb.ModelInferRequest{ModelName: "m", ModelVersion: "2", Id: "id", Parameters: params,
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{input("a", "FP32", []int64{1, 3}, nil), input("b", "UINT8", []int64{0}, nil), input("c", "UINT8", []int64{200000}, nil)},
			Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}},
			RawInputContents: [][]byte{ramp(12, 1), {}, ramp(200000, 7)}},
		&pb.ModelInferRequest{ModelName: "typed", Inputs: []*pb.ModelInferRequest_InferInputTensor{
			input("t", "FP32", []int64{2}, &pb.InferTensorContents{Fp32Contents: []float32{1, 2}})}},
		&pb.ModelInferResponse{ModelName: "m", Id: "r", Parameters: params,
			Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "y", Datatype: "FP32", Shape: []int64{70000}}, {Name: "z", Datatype: "INT8", Shape: []int64{3}}},
			RawOutputContents: [][]byte{ramp(280000, 3), ramp(3, 9)}},
		&pb.ModelInferResponse{ModelName: "typed", Outputs: []*pb.ModelInferResponse_InferOutputTensor{
			{Name: "y", Datatype: "INT64", Shape: []int64{1}, Contents: &pb.InferTensorContents{Int64Contents: []int64{-1}}}}},
	}
}

func newLike(m proto.Message) proto.Message {
	return m.ProtoReflect().New().Interface()
}

// split cuts b into buffers at random points, as gRPC's receive path
// hands a message over in frames.
func split(b []byte, rng *rand.Rand) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(20000))
		if rng.IntN(4) == 0 {
			n = min(len(b), 1+rng.IntN(3))
		}
		out = append(out, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return out
}

func rawOf(m proto.Message) [][]byte {
	switch m := m.(type) {
	case *pb.ModelInferRequest:
		return m.RawInputContents
	case *pb.ModelInferResponse:
		return m.RawOutputContents
	}
	return nil
}

func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i, m := range codecMessages() {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			// Codec.Marshal writes what protobuf reads.
			bs, err := Codec{}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got := newLike(m)
			if err := proto.Unmarshal(bs.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, m) {
				t.Errorf("protobuf read back %v, want %v", got, m)
			}
			// Large raw entries are sent from the tensor, not copied.
			for _, r := range rawOf(m) {
				if len(r) < inlineRaw {
					continue
				}
				found := false
				for _, b := range bs {
					if d := b.ReadOnlyData(); len(d) > 0 && &d[0] == &r[0] {
						found = true
					}
				}
				if !found {
					t.Errorf("raw entry of %d bytes was copied", len(r))
				}
			}
			// Codec.Unmarshal reads what protobuf writes, however it is cut,
			// into aligned raw entries.
			wire, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				got := newLike(m)
				if err := (Codec{}).Unmarshal(split(wire, rng), got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, m) {
					t.Fatalf("codec read %v, want %v", got, m)
				}
				for _, r := range rawOf(got) {
					if len(r) > 0 && uintptr(unsafe.Pointer(&r[0]))%tensorAlign != 0 {
						t.Errorf("raw entry of %d bytes at %p is not %d-byte aligned", len(r), &r[0], tensorAlign)
					}
				}
			}
		})
	}
}

// TestCodecUnmarshalLikeProtobuf: on broken or unusual wire bytes the codec
// fails where protobuf fails and reads what protobuf reads.
func TestCodecUnmarshalLikeProtobuf(t *testing.T) {
	good, err := proto.Marshal(codecMessages()[1])
	if err != nil {
		t.Fatal(err)
	}
	raw7 := protowire.AppendTag(nil, rawInputField, protowire.BytesType)
	cases := map[string][]byte{
		"truncated in a raw entry": good[:len(good)-10],
		"truncated in a tag":       append(append([]byte{}, raw7...), 0x80),
		"raw length past the end":  append(append([]byte{}, raw7...), 0xff, 0xff, 0x03, 1, 2),
		"raw field as a varint":    protowire.AppendVarint(protowire.AppendTag(nil, rawInputField, protowire.VarintType), 3),
		"field number 0":           {0x02, 0x00},
		"unknown fixed32 field":    append(protowire.AppendTag(nil, 99, protowire.Fixed32Type), 1, 2, 3, 4),
		"unknown fixed64 cut":      append(protowire.AppendTag(nil, 99, protowire.Fixed64Type), 1, 2, 3),
		"unknown group":            append(protowire.AppendTag(nil, 98, protowire.StartGroupType), protowire.AppendTag(nil, 98, protowire.EndGroupType)...),
		"overlong varint":          append(protowire.AppendTag(nil, 97, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"bad utf-8 model name":     protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff"),
		"empty":                    {},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			checkLikeProtobuf(t, b, rng)
		})
	}
}

func checkLikeProtobuf(t *testing.T, b []byte, rng *rand.Rand) {
	t.Helper()
	for _, want := range []proto.Message{&pb.ModelInferRequest{}, &pb.ModelInferResponse{}} {
		werr := proto.Unmarshal(b, want)
		got := newLike(want)
		gerr := Codec{}.Unmarshal(split(b, rng), got)
		if errors.As(gerr, new(tooMany)) {
			continue // a bound protobuf does not have (TestCodecBoundsLists)
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%T: codec error %v, protobuf error %v", want, gerr, werr)
		}
		if werr == nil && !proto.Equal(got, want) {
			t.Fatalf("%T: codec read %v, protobuf %v", want, got, want)
		}
	}
}

// TestCodecBoundsLists: a request with more than oip.MaxTensors raw
// entries, inputs or outputs is refused during the walk, before protobuf
// would allocate them all; one at the bound decodes.
func TestCodecBoundsLists(t *testing.T) {
	for _, c := range []struct {
		what string
		msg  func(n int) *pb.ModelInferRequest
	}{
		{"raw_input_contents", func(n int) *pb.ModelInferRequest {
			return &pb.ModelInferRequest{ModelName: "m", RawInputContents: make([][]byte, n)}
		}},
		{"inputs", func(n int) *pb.ModelInferRequest {
			m := &pb.ModelInferRequest{ModelName: "m"}
			for range n {
				m.Inputs = append(m.Inputs, &pb.ModelInferRequest_InferInputTensor{})
			}
			return m
		}},
		{"outputs", func(n int) *pb.ModelInferRequest {
			m := &pb.ModelInferRequest{ModelName: "m"}
			for range n {
				m.Outputs = append(m.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{})
			}
			return m
		}},
	} {
		for _, n := range []int{oip.MaxTensors, oip.MaxTensors + 1} {
			b, err := proto.Marshal(c.msg(n))
			if err != nil {
				t.Fatal(err)
			}
			err = Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &pb.ModelInferRequest{})
			if over := n > oip.MaxTensors; over != (err != nil) || over && !strings.Contains(err.Error(), "more than 1024 "+c.what) {
				t.Errorf("%d %s: %v", n, c.what, err)
			}
		}
	}
}

func FuzzCodecUnmarshal(f *testing.F) {
	for _, m := range codecMessages() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 4096 {
			f.Add(b, uint64(1))
		}
	}
	f.Add([]byte{0x3a, 0x80}, uint64(2))
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		checkLikeProtobuf(t, b, rand.New(rand.NewPCG(seed, seed)))
	})
}

func TestOverlaps(t *testing.T) {
	a, b := make([]byte, 10), make([]byte, 10)
	if tensor.Overlaps([][]byte{a}, []*[]byte{&b}) || !tensor.Overlaps([][]byte{a[3:5]}, []*[]byte{&a}) {
		t.Error("overlaps is wrong")
	}
}

// TestPooledEchoConcurrent sends large tensors from many goroutines to the
// echo model, whose outputs are its inputs: pooled input buffers must not
// be reused while a response still points into them, nor shared between
// requests.
func TestPooledEchoConcurrent(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	c := dial(t, addr)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 10 {
				data := ramp(100000+g*1000+i, byte(g*16+i))
				in := tensor.Tensor{Name: "x", DataType: tensor.Uint8, Shape: []int64{int64(len(data))}, Data: data}
				resp, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}})
				if err != nil {
					errs <- err
					return
				}
				if len(resp.Outputs) != 1 || !bytes.Equal(resp.Outputs[0].Data, data) {
					errs <- fmt.Errorf("goroutine %d request %d: echo answered other bytes", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRegisterWithoutCodec: Register works on a *grpc.Server that keeps
// gRPC's own protobuf codec (the request is then decoded by protobuf into
// the same message, without pooling).
func TestRegisterWithoutCodec(t *testing.T) {
	gs := grpc.NewServer()
	New(newFake(), Options{}).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	c := dial(t, lis.Addr().String())
	data := ramp(100000, 5)
	in := tensor.Tensor{Name: "x", DataType: tensor.Uint8, Shape: []int64{int64(len(data))}, Data: data}
	resp, err := c.Infer(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Outputs) != 1 || !bytes.Equal(resp.Outputs[0].Data, data) {
		t.Error("echo answered other bytes")
	}
}
