//go:build unix

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"syscall"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
)

// mapRegion maps r of the object dir/key, read and write (outputs are
// written into regions), shared with the client. mem is the whole mapping
// (from the page holding r.Offset), data the region in it.
func mapRegion(dir string, r oip.SharedMemoryRegion) (mem, data []byte, err error) {
	path := filepath.Join(dir, r.Key[1:])
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("no shared memory object %q (%s): create it (shm_open) before registering", r.Key, path))
	case err != nil:
		return nil, nil, errdefs.Invalid(fmt.Sprintf("cannot open shared memory object %q read-write: %v", r.Key, err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, errdefs.Invalid(fmt.Sprintf("shared memory object %q: %v", r.Key, err))
	}
	if !st.Mode().IsRegular() {
		return nil, nil, errdefs.Invalid(fmt.Sprintf("shared memory object %q is a %v, not a shared memory object", r.Key, st.Mode().Type()))
	}
	size := uint64(st.Size())
	if r.Offset > size || r.ByteSize > size-r.Offset {
		return nil, nil, errdefs.Invalid(fmt.Sprintf("%d bytes at offset %d do not fit in shared memory object %q of %d bytes", r.ByteSize, r.Offset, r.Key, size))
	}
	page := uint64(os.Getpagesize())
	start := r.Offset / page * page
	length := r.Offset + r.ByteSize - start
	if length > math.MaxInt || start > math.MaxInt64 {
		return nil, nil, errdefs.Invalid(fmt.Sprintf("shared memory region of %d bytes at offset %d is too large to map", r.ByteSize, r.Offset))
	}
	mem, err = syscall.Mmap(int(f.Fd()), int64(start), int(length), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, errdefs.New(errdefs.ErrResourceExhausted, fmt.Sprintf("cannot map shared memory object %q: %v", r.Key, err))
	}
	off := r.Offset - start
	return mem, mem[off : off+r.ByteSize : off+r.ByteSize], nil
}

func unmap(mem []byte) {
	if mem != nil {
		_ = syscall.Munmap(mem)
	}
}
