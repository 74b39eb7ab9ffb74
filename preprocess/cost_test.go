package preprocess

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/color/palette"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// TestDecodeCostMatchesAllocation checks DecodeCost against what Go's
// decoders allocate, measured, for each depth, sampling and encoding: the
// charge must cover the allocation and not overstate it by more than 15 %.
func TestDecodeCostMatchesAllocation(t *testing.T) {
	const w, h = 512, 512
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	rgba64 := image.NewRGBA64(rgba.Bounds())
	gray16 := image.NewGray16(rgba.Bounds())
	pal := image.NewPaletted(rgba.Bounds(), palette.Plan9)
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x / 2), uint8(y / 2), uint8(x ^ y), 255}
			rgba.Set(x, y, c)
			rgba64.Set(x, y, c)
			gray16.Set(x, y, c)
			pal.Set(x, y, c)
		}
	}
	cases := map[string][]byte{
		"baseline 4:2:0 JPEG": encode(t, rgba, "jpeg"),
		"gray JPEG":           encode(t, image.NewGray(rgba.Bounds()), "jpeg"),
		"RGBA PNG":            encode(t, rgba, "png"),
		"RGBA64 PNG":          encode(t, rgba64, "png"),
		"Gray16 PNG":          encode(t, gray16, "png"),
		"paletted PNG":        encode(t, pal, "png"),
	}
	files, _ := filepath.Glob("testdata/*-512.*")
	if len(files) < 5 {
		t.Fatalf("testdata has %d of the 5 fixture images", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = b
	}
	for name, b := range cases {
		cost, err := DecodeCost(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		img, _, err := image.Decode(bytes.NewReader(b))
		runtime.ReadMemStats(&after)
		if err != nil || img.Bounds().Dx() != w {
			t.Fatalf("%s: decoded %v, %v", name, img.Bounds(), err)
		}
		alloc := int64(after.TotalAlloc - before.TotalAlloc)
		ratio := float64(cost) / float64(alloc)
		t.Logf("%-26s cost %5.2f B/px, allocated %5.2f B/px (%.2fx)", name, float64(cost)/(w*h), float64(alloc)/(w*h), ratio)
		if ratio < 0.98 || ratio > 1.15 {
			t.Errorf("%s: DecodeCost %d bytes, decoding allocated %d (%.2fx, want 0.98–1.15)", name, cost, alloc, ratio)
		}
	}
}

// jpegHeader is a JPEG's SOI, a JFIF segment and a frame header (SOF
// marker sof) of w×h with nc components sampled 1×1: enough for
// image.DecodeConfig.
func jpegHeader(sof byte, w, h uint16, nc int) []byte {
	seg := []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), byte(nc)}
	for c := range nc {
		seg = append(seg, byte(c+1), 0x11, 0)
	}
	out := []byte{0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0xff, sof}
	out = binary.BigEndian.AppendUint16(out, uint16(len(seg)+2))
	return append(out, seg...)
}

// TestDecompressionBombsRefused: a header that claims an image whose
// decoding would take more than MaxImageBytes is refused before any pixel
// is allocated, saying what it would take.
func TestDecompressionBombsRefused(t *testing.T) {
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"16-bit RGBA PNG 8192²":       {pngHeader(8192, 8192, 16, 6, 0), "PNG of 8192x8192 pixels at 8 bytes a pixel would take 512 MiB to decode, more than the 257 MiB"},
		"interlaced RGB PNG 8192²":    {pngHeader(8192, 8192, 8, 2, 1), "4 bytes a pixel, interlaced would take 512 MiB"},
		"progressive JPEG 8192²":      {jpegHeader(0xc2, 8192, 8192, 3), "JPEG of 8192x8192 pixels at 15 bytes a pixel, progressive would take 960 MiB"},
		"progressive gray JPEG 8192²": {jpegHeader(0xc2, 8192, 8192, 1), "5 bytes a pixel, progressive would take 320 MiB"},
	} {
		_, err := DecodeCost(c.data)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: DecodeCost: %v, want ErrInvalid containing %q", name, err, c.want)
		}
		_, err = Images(context.Background(), "in", [][]byte{c.data}, Spec{Width: 2, Height: 2}, NewBudget(0))
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), "image 0 of 1: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Images: %v", name, err)
		}
	}
	// The same sizes at a cost that fits are accepted from the header.
	for name, b := range map[string][]byte{
		"8-bit RGBA PNG 8192²":   pngHeader(8192, 8192, 8, 6, 0),
		"baseline JPEG 8192²":    jpegHeader(0xc0, 8192, 8192, 3),
		"progressive JPEG 2048²": jpegHeader(0xc2, 2048, 2048, 3),
	} {
		if _, err := DecodeCost(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestBudgetBoundsConcurrentDecoding: an image waits for its share of the
// budget, and gives up with its context.
func TestBudgetBoundsConcurrentDecoding(t *testing.T) {
	img := encode(t, gradient(64, 64), "png")
	cost, err := DecodeCost(img)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBudget(0)
	if b.Size() != MaxImageBytes {
		t.Fatalf("NewBudget(0).Size() = %d, want MaxImageBytes", b.Size())
	}
	// Hold all but less than the image's cost, as other decoders would.
	held := b.Size() - cost + 1
	if err := b.sem.Acquire(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Images(ctx, "in", [][]byte{img}, Spec{Width: 8, Height: 8}, b); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with the budget held: %v, want context.DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Images(context.Background(), "in", [][]byte{img}, Spec{Width: 8, Height: 8}, b)
		done <- err
	}()
	b.sem.Release(held)
	if err := <-done; err != nil {
		t.Fatalf("after release: %v", err)
	}
	// Everything was given back: the whole budget can be taken again.
	if !b.sem.TryAcquire(b.Size()) {
		t.Fatal("budget not fully released after decoding")
	}
}
