package grpcsvc

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// payloads records the sizes of the messages a client received: on the
// wire and once decompressed.
type payloads struct {
	mu         sync.Mutex
	wire, size int
}

func (p *payloads) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloads) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p *payloads) HandleConn(context.Context, stats.ConnStats) {}
func (p *payloads) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		p.mu.Lock()
		p.wire, p.size = in.CompressedLength, in.Length
		p.mu.Unlock()
	}
}

// TestZeroRunCompression: a request sent with Compressed has its answer
// compressed too, with the same tensors; a compressed request that
// decompresses past the server's limit is refused, not expanded.
func TestZeroRunCompression(t *testing.T) {
	addr := startServer(t, newFake(), Options{MaxRecvMsgSize: 3 << 20})
	var seen payloads
	c := dial(t, addr, grpc.WithStatsHandler(&seen))
	// A detection-map-like tensor: 1 MiB, 7 in 8 blocks of 64 floats zero.
	in := sample("x", tensor.FP32, []int64{256 << 10})
	for i := range len(in.Data) / 256 {
		if i%8 != 0 {
			clear(in.Data[i*256 : (i+1)*256])
		}
	}
	for _, opts := range [][]grpc.CallOption{nil, {Compressed()}} {
		resp, err := c.InferWith(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		sameTensor(t, resp.Outputs[0], in)
		seen.mu.Lock()
		wire, size := seen.wire, seen.size
		seen.mu.Unlock()
		t.Logf("compressed %v: answer %d bytes, %d on the wire", opts != nil, size, wire)
		if opts != nil && wire*4 > size {
			t.Errorf("compressed answer: %d bytes on the wire for %d, want under a quarter", wire, size)
		}
	}
	// 8 MiB of zeros compress to a few bytes; the server must refuse them.
	_, err := c.InferWith(t.Context(), &oip.InferRequest{ModelName: "echo",
		Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.Uint8, Shape: []int64{8 << 20}, Data: make([]byte, 8<<20)}}}}, Compressed())
	if errdefs.GRPCCode(err) != codes.ResourceExhausted || !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("compressed request decompressing past the limit: %v", err)
	}
}

// TestZeroRunPooledBuffers: the codec's buffers are pooled between
// messages; concurrent compressed calls of different sizes and contents
// each get their own tensors back, whole.
func TestZeroRunPooledBuffers(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	c := dial(t, addr)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 12 {
				n := int64(1+g) * int64(3000+i*7919) // across the buffer size, and not a multiple of it
				in := tensor.Tensor{Name: "x", DataType: tensor.Uint8, Shape: []int64{n}, Data: make([]byte, n)}
				for j := range in.Data {
					if (j/40)%3 == 0 { // zero runs between literals
						in.Data[j] = byte(g*31 + i*7 + j%251 + 1)
					}
				}
				resp, err := c.InferWith(t.Context(), &oip.InferRequest{ModelName: "echo", Inputs: []oip.InferInput{{Tensor: in}}}, Compressed())
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(resp.Outputs[0].Data, in.Data) {
					t.Errorf("caller %d, call %d: %d bytes came back different", g, i, n)
					return
				}
			}
		})
	}
	wg.Wait()
}
