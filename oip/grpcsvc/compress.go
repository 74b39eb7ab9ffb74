package grpcsvc

import (
	"bufio"
	"io"
	"sync"

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

// zrunBuf is the size of the buffers around the codec; they are pooled
// between messages (one of each per message otherwise).
const zrunBuf = 32 << 10

var (
	zrunWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, zrunBuf) }}
	zrunReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, zrunBuf) }}
)

// Compress buffers the encoder's output: its tokens are small writes, and
// gRPC's writer makes a buffer of each.
func (zeroRun) Compress(w io.Writer) (io.WriteCloser, error) {
	bw := zrunWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	return &bufferedEncoder{zrun.NewEncoder(bw), bw}, nil
}

type bufferedEncoder struct {
	*zrun.Encoder
	bw *bufio.Writer // nil once closed and pooled again
}

func (e *bufferedEncoder) Close() error {
	if e.bw == nil {
		return nil
	}
	err := e.Encoder.Close()
	if err == nil {
		err = e.bw.Flush()
	}
	e.bw.Reset(nil)
	zrunWriters.Put(e.bw)
	e.bw = nil
	return err
}

// Decompress returns a lazy reader: gRPC reads at most its receive limit
// from it, so a stream claiming a huge run costs nothing. Its buffer goes
// back to the pool when the stream ends or fails, or when gRPC closes the
// reader (it does once done with it, early or not).
func (zeroRun) Decompress(r io.Reader) (io.Reader, error) {
	br := zrunReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return &pooledDecoder{d: zrun.NewDecoder(br), br: br}, nil
}

type pooledDecoder struct {
	d   *zrun.Decoder
	br  *bufio.Reader
	err error // the error that ended the stream; d is not read after it
}

func (p *pooledDecoder) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.d.Read(b)
	if err != nil {
		p.release(err)
	}
	return n, err
}

// Close implements io.Closer: the buffer goes back to the pool.
func (p *pooledDecoder) Close() error {
	if p.err == nil {
		p.release(io.ErrClosedPipe)
	}
	return nil
}

// release ends the stream with err and pools the buffer; the decoder,
// which holds it, is dropped.
func (p *pooledDecoder) release(err error) {
	p.err = err
	p.br.Reset(nil)
	zrunReaders.Put(p.br)
	p.br, p.d = nil, nil
}

// Compressed is the call option that sends a request, and has its answer
// sent, with zero-run compression.
func Compressed() grpc.CallOption { return grpc.UseCompressor(zrun.Name) }
