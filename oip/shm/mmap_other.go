//go:build !unix

package shm

import (
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
)

func mapRegion(string, oip.SharedMemoryRegion) (mem, data []byte, err error) {
	return nil, nil, errdefs.Invalid("system shared memory is not supported on this operating system")
}

func unmap([]byte) {}
