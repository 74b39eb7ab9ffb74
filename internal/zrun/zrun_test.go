package zrun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"testing"
)

// sparse is n float32s, a fraction zero of them exactly zero, in runs.
func sparse(rng *rand.Rand, n int, zero float64) []byte {
	b := make([]byte, 4*n)
	for i := 0; i < n; {
		run := 1 + rng.IntN(64)
		isZero := rng.Float64() < zero
		for ; run > 0 && i < n; run, i = run-1, i+1 {
			if !isZero {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(rng.Float32()+1e-6))
			}
		}
	}
	return b
}

// encode writes src to an Encoder in pieces cut at the given points.
func encode(t testing.TB, src []byte, cuts []int) []byte {
	t.Helper()
	var out bytes.Buffer
	e := NewEncoder(&out)
	prev := 0
	for _, c := range append(cuts, len(src)) {
		if c < prev || c > len(src) {
			continue
		}
		if _, err := e.Write(src[prev:c]); err != nil {
			t.Fatal(err)
		}
		prev = c
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func decode(b []byte) ([]byte, error) { return io.ReadAll(NewDecoder(bytes.NewReader(b))) }

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]byte{
		"empty":         {},
		"one zero":      {0},
		"all zeros":     make([]byte, 100003),
		"no zeros":      bytes.Repeat([]byte{7}, 1000),
		"short runs":    bytes.Repeat([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 100),
		"80% zeros":     sparse(rng, 640*640, 0.8),
		"10% zeros":     sparse(rng, 10000, 0.1),
		"trailing zero": append(bytes.Repeat([]byte{9}, 13), make([]byte, 7)...),
	}
	for name, src := range cases {
		for _, cuts := range [][]int{nil, {1}, {len(src) / 2}, {3, 5, 8, 9, 17, 100, 4096}} {
			enc := encode(t, src, cuts)
			got, err := decode(enc)
			if err != nil {
				t.Fatalf("%s, cuts %v: %v", name, cuts, err)
			}
			if !bytes.Equal(got, src) {
				t.Fatalf("%s, cuts %v: decoded %d bytes differ from the %d encoded", name, cuts, len(got), len(src))
			}
			if cuts == nil {
				t.Logf("%-13s %8d bytes → %8d", name, len(src), len(enc))
				if Size(src) != int64(len(enc)) {
					t.Errorf("%s: Size %d, encoded %d bytes", name, Size(src), len(enc))
				}
			}
		}
	}
	// What the encoding is for: a detection map that is 80 % zeros shrinks
	// at least threefold, data without zero runs grows by under 1 %.
	if src := cases["80% zeros"]; len(encode(t, src, nil))*3 > len(src) {
		t.Errorf("80%% zeros: %d bytes encode to %d, want under a third", len(src), len(encode(t, src, nil)))
	}
	if src := cases["no zeros"]; len(encode(t, src, nil)) > len(src)+len(src)/100 {
		t.Errorf("no zeros: %d bytes encode to %d", len(src), len(encode(t, src, nil)))
	}
}

func TestRandomWritesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		src := sparse(rng, rng.IntN(3000), rng.Float64())
		var cuts []int
		for range rng.IntN(6) {
			cuts = append(cuts, rng.IntN(len(src)+1))
		}
		cuts = sortedUnique(cuts)
		got, err := decode(encode(t, src, cuts))
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("%d bytes cut at %v: err %v, equal %v", len(src), cuts, err, bytes.Equal(got, src))
		}
	}
}

func sortedUnique(xs []int) []int {
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if xs[j] < xs[i] {
				xs[i], xs[j] = xs[j], xs[i]
			}
		}
	}
	return xs
}

func TestCorruptStreams(t *testing.T) {
	for name, b := range map[string][]byte{
		"literal cut short": {11, 'a', 'b'}, // literal of 5, two bytes
		"varint cut short":  {0x80},         // continuation with nothing after
		"varint overflow":   bytes.Repeat([]byte{0xff}, 11),
		"token too large":   {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		if _, err := decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

// TestHugeRunIsLazy: a run claiming 2^62 zeros costs nothing until read,
// and a bounded reader stops it.
func TestHugeRunIsLazy(t *testing.T) {
	var hdr [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(hdr[:], uint64(1)<<62)
	n, err := io.Copy(io.Discard, io.LimitReader(NewDecoder(bytes.NewReader(hdr[:k])), 1<<20))
	if err != nil || n != 1<<20 {
		t.Fatalf("read %d bytes (err %v) through a 1 MiB limit", n, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{11, 'a', 'b', 'c', 'd', 'e', 40})
	f.Add([]byte{0x80})
	f.Add(encode(f, sparse(rand.New(rand.NewPCG(5, 6)), 200, 0.7), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := io.ReadAll(io.LimitReader(NewDecoder(bytes.NewReader(b)), 1<<20))
		if err == nil && len(out) < 1<<20 {
			// A stream that decodes cleanly re-encodes to the same bytes.
			back, err := decode(encode(t, out, nil))
			if err != nil || !bytes.Equal(back, out) {
				t.Fatalf("re-encoding %d decoded bytes: err %v", len(out), err)
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 3)
	f.Add([]byte("literal bytes"), 5)
	f.Fuzz(func(t *testing.T, src []byte, cut int) {
		var cuts []int
		if cut >= 0 && cut <= len(src) {
			cuts = []int{cut}
		}
		got, err := decode(encode(t, src, cuts))
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("%d bytes cut at %d: err %v", len(src), cut, err)
		}
	})
}

func BenchmarkDecodeDetectionMap(b *testing.B) {
	src := sparse(rand.New(rand.NewPCG(7, 8)), 640*640, 0.8)
	enc := encode(b, src, nil)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(src)))
	b.ReportMetric(float64(len(src))/float64(len(enc)), "ratio")
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(enc))
		for {
			if _, err := d.Read(buf); err != nil {
				break
			}
		}
	}
}

func BenchmarkEncodeDetectionMap(b *testing.B) {
	src := sparse(rand.New(rand.NewPCG(7, 8)), 640*640, 0.8)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		e := NewEncoder(io.Discard)
		e.Write(src)
		e.Close()
	}
}
