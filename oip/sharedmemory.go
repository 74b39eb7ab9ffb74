package oip

import (
	"context"
	"fmt"
	"math"

	"github.com/accelpool/accelpool/errdefs"
)

// Triton's system shared memory extension: a client on the same machine
// registers a region of a POSIX shared memory object (shm_open's name, the
// "key") under a name, then names the region in an input's or a requested
// output's parameters instead of sending the tensor's bytes.
const (
	// ParamSharedMemoryRegion names a registered region (string).
	ParamSharedMemoryRegion = "shared_memory_region"
	// ParamSharedMemoryOffset is the tensor's offset in bytes into the
	// region (optional, default 0).
	ParamSharedMemoryOffset = "shared_memory_offset"
	// ParamSharedMemoryByteSize is the tensor's size in bytes (required
	// with a region).
	ParamSharedMemoryByteSize = "shared_memory_byte_size"

	// ExtensionSystemSharedMemory is the extension's name in server
	// metadata.
	ExtensionSystemSharedMemory = "system_shared_memory"
)

// SharedMemoryRef is where a tensor lies in a registered region.
type SharedMemoryRef struct {
	Region   string
	Offset   int64
	ByteSize int64
}

// SharedMemoryRefOf reads the shared memory parameters of an input or a
// requested output. ok is false when p names no region; a byte size or an
// offset without a region, or a region without a byte size, is an error
// (ErrInvalid) naming where.
func SharedMemoryRefOf(where string, p Parameters) (ref SharedMemoryRef, ok bool, err error) {
	region, hasRegion := p[ParamSharedMemoryRegion]
	_, hasSize := p[ParamSharedMemoryByteSize]
	_, hasOffset := p[ParamSharedMemoryOffset]
	if !hasRegion {
		if hasSize || hasOffset {
			return ref, false, errdefs.Invalid(fmt.Sprintf("%s has %s or %s but no %s", where, ParamSharedMemoryByteSize, ParamSharedMemoryOffset, ParamSharedMemoryRegion))
		}
		return ref, false, nil
	}
	name, isString := region.(string)
	if !isString || name == "" {
		return ref, false, errdefs.Invalid(fmt.Sprintf("%s parameter %q must be a region's name, got %v", where, ParamSharedMemoryRegion, region))
	}
	if !hasSize {
		return ref, false, errdefs.Invalid(fmt.Sprintf("%s names shared memory region %q but has no %s", where, name, ParamSharedMemoryByteSize))
	}
	ref.Region = name
	if ref.ByteSize, err = nonNegative(where, ParamSharedMemoryByteSize, p[ParamSharedMemoryByteSize]); err != nil {
		return ref, false, err
	}
	if hasOffset {
		if ref.Offset, err = nonNegative(where, ParamSharedMemoryOffset, p[ParamSharedMemoryOffset]); err != nil {
			return ref, false, err
		}
	}
	return ref, true, nil
}

func nonNegative(where, key string, v any) (int64, error) {
	switch n := v.(type) {
	case int64:
		if n >= 0 {
			return n, nil
		}
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), nil
		}
	}
	return 0, errdefs.Invalid(fmt.Sprintf("%s parameter %q must be a non-negative integer, got %v", where, key, v))
}

// SharedMemoryRegion is a registered region, as status reports it.
type SharedMemoryRegion struct {
	Name     string
	Key      string
	Offset   uint64
	ByteSize uint64
}

// SharedMemory is the optional capability of a Service that accepts
// tensors in client shared memory (Triton's system shared memory
// extension). A transport offers the extension's endpoints only when its
// Service implements it; inputs and outputs that name a region are left
// to the Service (their tensors carry no Data).
type SharedMemory interface {
	RegisterSystemSharedMemory(ctx context.Context, r SharedMemoryRegion) error
	// UnregisterSystemSharedMemory removes one region, or all with "".
	UnregisterSystemSharedMemory(ctx context.Context, name string) error
	// SystemSharedMemoryStatus lists one region, or all with "".
	SystemSharedMemoryStatus(ctx context.Context, name string) ([]SharedMemoryRegion, error)
}

// ErrNoSharedMemory is the answer to a shared memory request at a server
// that does not accept client shared memory.
var ErrNoSharedMemory = errdefs.Invalid("this server does not accept client shared memory (accelpool serve and up accept it with --allow-client-shm, for clients on their machine)")

// UsesSharedMemory reports whether any input or requested output of req
// has a shared memory parameter.
func UsesSharedMemory(req *InferRequest) bool {
	has := func(p Parameters) bool {
		for _, k := range [...]string{ParamSharedMemoryRegion, ParamSharedMemoryByteSize, ParamSharedMemoryOffset} {
			if _, ok := p[k]; ok {
				return true
			}
		}
		return false
	}
	for i := range req.Inputs {
		if has(req.Inputs[i].Parameters) {
			return true
		}
	}
	for i := range req.Outputs {
		if has(req.Outputs[i].Parameters) {
			return true
		}
	}
	return false
}

// SharedMemoryOutput is where r asks for the output name to be written in
// client shared memory, if it does. A nil r asks for none.
func (r *InferRequest) SharedMemoryOutput(name string) (SharedMemoryRef, bool) {
	if r == nil {
		return SharedMemoryRef{}, false
	}
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			ref, ok, err := SharedMemoryRefOf("", r.Outputs[i].Parameters)
			return ref, ok && err == nil
		}
	}
	return SharedMemoryRef{}, false
}
