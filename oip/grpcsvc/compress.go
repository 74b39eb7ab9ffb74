package grpcsvc

import (
	"bufio"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/accelpool/accelpool/internal/zrun"
)

// ZeroRun is the name of the zero-run message compression (internal/zrun)
// every accelpool gRPC server and client understands. A server answers a
// request compressed with it in kind, so a client asks for compressed
// answers with grpc.UseCompressor(ZeroRun) (see Compressed).
const ZeroRun = zrun.Name

func init() { encoding.RegisterCompressor(zeroRun{}) }

type zeroRun struct{}

func (zeroRun) Name() string { return zrun.Name }

// Compress buffers the encoder's output: its tokens are small writes, and
// gRPC's writer makes a buffer of each.
func (zeroRun) Compress(w io.Writer) (io.WriteCloser, error) {
	bw := bufio.NewWriterSize(w, 32<<10)
	return bufferedEncoder{zrun.NewEncoder(bw), bw}, nil
}

type bufferedEncoder struct {
	*zrun.Encoder
	bw *bufio.Writer
}

func (e bufferedEncoder) Close() error {
	if err := e.Encoder.Close(); err != nil {
		return err
	}
	return e.bw.Flush()
}

// Decompress returns a lazy reader: gRPC reads at most its receive limit
// from it, so a stream claiming a huge run costs nothing.
func (zeroRun) Decompress(r io.Reader) (io.Reader, error) { return zrun.NewDecoder(r), nil }

// Compressed is the call option that sends a request, and has its answer
// sent, with zero-run compression.
func Compressed() grpc.CallOption { return grpc.UseCompressor(zrun.Name) }
