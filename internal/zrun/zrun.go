// Package zrun is a byte stream encoding that removes runs of zero bytes
// and leaves everything else as it is: "zero-run" compression for tensors.
//
// Detection maps, masks and ReLU activations are mostly exact zeros (the
// PaddleOCR detection map of a page is 80 % zeros), and those zeros are
// what makes such answers slow on a narrow link. General compressors
// (deflate, gzip) find them too, but cost a slow device more time to
// decode than the link saves; zrun's decoding is a memclr and a copy.
//
// The stream is a sequence of tokens, each a uvarint t: an even t is a run
// of t/2 zero bytes, an odd t is t/2 literal bytes that follow. Runs of
// zeros shorter than MinRun stay inside literals. Decoding allocates
// nothing that the stream's sizes decide: a run is produced lazily, so the
// reader's caller bounds the output (gRPC reads at most its message limit).
package zrun

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Name is the encoding's name on the wire (the grpc-encoding header).
const Name = "accelpool-zrun"

// MinRun is the shortest zero run encoded as a run: shorter ones cost a
// token more than they save.
const MinRun = 16

// maxToken bounds a token's count so that t/2 fits an int everywhere.
const maxToken = math.MaxInt64

// Encoder writes the zrun encoding of what is written to it to w. Close
// flushes a pending run of zeros; it does not close w.
type Encoder struct {
	w     io.Writer
	zeros int // a run of zeros not yet written (it may continue)
	hdr   [binary.MaxVarintLen64]byte
	err   error
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Write encodes p.
func (e *Encoder) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n := len(p)
	// A pending run continues into p's leading zeros.
	if e.zeros > 0 {
		z := zeroPrefix(p)
		e.zeros += z
		p = p[z:]
		if len(p) == 0 {
			return n, nil
		}
		e.flushZeros()
	}
	lit := 0 // start of the literal being gathered
	i := 0
	for i+8 <= len(p) {
		if binary.LittleEndian.Uint64(p[i:]) != 0 {
			i += 8
			continue
		}
		// An 8-byte zero word: find the whole run around it.
		start := i
		for start > lit && p[start-1] == 0 {
			start--
		}
		end := i + 8 + zeroPrefix(p[i+8:])
		if end == len(p) {
			// The run reaches the end of p: it may continue in the next
			// write, so it is kept pending whatever its length.
			e.literal(p[lit:start])
			e.zeros = end - start
			return n, e.err
		}
		if end-start >= MinRun {
			e.literal(p[lit:start])
			e.zeros = end - start
			e.flushZeros()
			lit = end
		}
		i = end
	}
	// The tail (under 8 bytes): its trailing zeros are kept pending.
	end := len(p)
	for end > max(i, lit) && p[end-1] == 0 {
		end--
	}
	e.literal(p[lit:end])
	e.zeros = len(p) - end
	return n, e.err
}

// Close writes a pending run of zeros.
func (e *Encoder) Close() error {
	e.flushZeros()
	return e.err
}

func (e *Encoder) flushZeros() {
	if e.zeros > 0 {
		e.token(uint64(e.zeros)<<1, nil)
		e.zeros = 0
	}
}

func (e *Encoder) literal(b []byte) {
	if len(b) > 0 {
		e.token(uint64(len(b))<<1|1, b)
	}
}

func (e *Encoder) token(t uint64, b []byte) {
	if e.err != nil {
		return
	}
	k := binary.PutUvarint(e.hdr[:], t)
	if _, e.err = e.w.Write(e.hdr[:k]); e.err == nil && len(b) > 0 {
		_, e.err = e.w.Write(b)
	}
}

// Size is the length of the encoding of bufs written one after another.
func Size(bufs ...[]byte) int64 {
	var n counter
	e := NewEncoder(&n)
	for _, b := range bufs {
		_, _ = e.Write(b)
	}
	_ = e.Close()
	return int64(n)
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// zeroPrefix is the number of zero bytes p starts with.
func zeroPrefix(p []byte) int {
	i := 0
	for i+8 <= len(p) && binary.LittleEndian.Uint64(p[i:]) == 0 {
		i += 8
	}
	for i < len(p) && p[i] == 0 {
		i++
	}
	return i
}

// ErrCorrupt is returned for a stream that is not zrun-encoded.
var ErrCorrupt = errors.New("zrun: corrupt stream")

// Decoder reads the bytes a zrun stream encodes.
type Decoder struct {
	r       *bufio.Reader
	zeros   uint64 // zeros left of the current run
	literal uint64 // literal bytes left of the current token
	err     error
}

// NewDecoder returns a Decoder reading the stream from r.
func NewDecoder(r io.Reader) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 32<<10)
	}
	return &Decoder{r: br}
}

// Read fills p with decoded bytes.
func (d *Decoder) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		switch {
		case d.zeros > 0:
			k := int(min(d.zeros, uint64(len(p)-n)))
			clear(p[n : n+k])
			d.zeros -= uint64(k)
			n += k
		case d.literal > 0:
			k := int(min(d.literal, uint64(len(p)-n)))
			got, err := io.ReadFull(d.r, p[n:n+k])
			n += got
			d.literal -= uint64(got)
			if err != nil {
				return n, fmt.Errorf("%w: a literal ends early (%d bytes missing)", ErrCorrupt, d.literal)
			}
		case d.err != nil:
			return n, d.err
		default:
			if n > 0 && d.r.Buffered() == 0 {
				// Hand over what is decoded rather than wait for more.
				return n, nil
			}
			d.next()
		}
	}
	return n, nil
}

// next reads the next token (or records the stream's end in d.err).
func (d *Decoder) next() {
	t, err := binary.ReadUvarint(d.r)
	switch {
	case err == io.EOF:
		d.err = io.EOF
	case err != nil:
		d.err = fmt.Errorf("%w: bad token: %v", ErrCorrupt, err)
	case t > maxToken:
		d.err = fmt.Errorf("%w: token %d too large", ErrCorrupt, t)
	case t&1 == 1:
		d.literal = t >> 1
	default:
		d.zeros = t >> 1
	}
}
