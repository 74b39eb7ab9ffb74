package tensor

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Align is the alignment of tensor buffers that transports fill: ONNX
// Runtime then takes its aligned kernels, as for tensors made in process.
const Align = 64

// AlignedBytes is a zeroed n-byte slice starting on an Align boundary.
func AlignedBytes(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	b := make([]byte, n+Align-1)
	off := int((Align - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align) % Align)
	return b[off : off+n : off+n]
}

// The tensor pool holds raw input buffers between requests in power-of-two
// size classes from 1<<minPooledShift to 1<<maxPooledShift bytes. Smaller
// and larger tensors are allocated. Pooled buffers are not cleared: every
// byte a request uses is written by its decoding.
const (
	minPooledShift = 16 // 64 KiB
	maxPooledShift = 26 // 64 MiB, the serving nodes' default message limit
)

var tensorPools [maxPooledShift - minPooledShift + 1]sync.Pool

// poolClass is the index of the smallest class that holds n bytes, or -1.
func poolClass(n int) int {
	if n < 1<<minPooledShift || n > 1<<maxPooledShift {
		return -1
	}
	return max(bits.Len(uint(n-1)), minPooledShift) - minPooledShift
}

// GetBuffer returns an n-byte Align-aligned slice, and the pooled
// buffer it lies in (nil when n is not pooled). Its contents are undefined.
func GetBuffer(n int) (*[]byte, []byte) {
	c := poolClass(n + Align - 1)
	if c < 0 {
		return nil, AlignedBytes(n)
	}
	h, _ := tensorPools[c].Get().(*[]byte)
	if h == nil {
		b := make([]byte, 1<<(c+minPooledShift))
		h = &b
	}
	b := *h
	off := int((Align - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align) % Align)
	return h, b[off : off+n : off+n]
}

// PutBuffers gives buffers from GetBuffer back to the pool; nil entries
// (GetBuffer's unpooled sizes) are skipped.
func PutBuffers(hs []*[]byte) {
	for _, h := range hs {
		if h == nil {
			continue
		}
		if c := poolClass(cap(*h)); c >= 0 && cap(*h) == 1<<(c+minPooledShift) {
			tensorPools[c].Put(h)
		}
	}
}

// Overlaps reports whether any of bs shares memory with any of hs (nil
// entries of hs are skipped): a caller about to give hs back to the pool
// checks that nothing it hands on still points into them.
func Overlaps(bs [][]byte, hs []*[]byte) bool {
	for _, b := range bs {
		if cap(b) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		hi := lo + uintptr(cap(b))
		for _, h := range hs {
			if h == nil {
				continue
			}
			plo := uintptr(unsafe.Pointer(unsafe.SliceData(*h)))
			if lo < plo+uintptr(cap(*h)) && plo < hi {
				return true
			}
		}
	}
	return false
}
