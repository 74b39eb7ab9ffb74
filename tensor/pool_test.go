package tensor

import (
	"testing"
	"unsafe"
)

func TestTensorPoolClasses(t *testing.T) {
	for _, tc := range []struct{ n, class int }{
		{1, -1}, {1<<16 - 1, -1}, {1 << 16, 0}, {1<<16 + 1, 1}, {1 << 20, 4}, {1 << 26, 10}, {1<<26 + 1, -1},
	} {
		if got := poolClass(tc.n); got != tc.class {
			t.Errorf("poolClass(%d) = %d, want %d", tc.n, got, tc.class)
		}
	}
	for _, n := range []int{10, 1 << 16, 300000, 1<<26 + 5} {
		h, b := GetBuffer(n)
		if len(b) != n || uintptr(unsafe.Pointer(&b[0]))%Align != 0 {
			t.Errorf("GetBuffer(%d): %d bytes at %p", n, len(b), &b[0])
		}
		if (h == nil) != (poolClass(n+Align-1) < 0) {
			t.Errorf("GetBuffer(%d) pooled %v", n, h != nil)
		}
		if h != nil {
			lo := uintptr(unsafe.Pointer(unsafe.SliceData(*h)))
			if p := uintptr(unsafe.Pointer(&b[n-1])); p < lo || p >= lo+uintptr(cap(*h)) {
				t.Errorf("GetBuffer(%d): slice outside its buffer", n)
			}
		}
		PutBuffers([]*[]byte{h}) // nil when not pooled: skipped
	}
}
