package shm

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// Service serves an oip.Service with client shared memory: inputs that
// name a region are read from it (copied once into a buffer of this
// process, so a client that truncates its object gets an error rather than
// crashing the server), and outputs requested into a region are written
// there, leaving the response without their bytes. The wrapped service
// sees ordinary tensors and no shared memory parameters, so a gateway that
// forwards them elsewhere forwards the bytes.
type Service struct {
	oip.Service
	reg *Registry
	max int64 // bytes of inputs one request may read from shared memory
}

var (
	_ oip.Service      = (*Service)(nil)
	_ oip.SharedMemory = (*Service)(nil)
)

// DefaultMaxInputBytes bounds what one request's inputs may read from
// shared memory unless Wrap is told otherwise: the transports' default
// bound on a request body.
const DefaultMaxInputBytes = 64 << 20

// Wrap returns svc with the system shared memory extension over reg. One
// request's inputs may read at most maxInputBytes from shared memory in
// all (0: DefaultMaxInputBytes), as a request body is bounded on the wire:
// each is copied into this process's memory, and a region can be as large
// as the client's object.
func Wrap(svc oip.Service, reg *Registry, maxInputBytes int64) *Service {
	if maxInputBytes <= 0 {
		maxInputBytes = DefaultMaxInputBytes
	}
	return &Service{Service: svc, reg: reg, max: maxInputBytes}
}

// ServerMetadata adds the extension to the wrapped service's.
func (s *Service) ServerMetadata() oip.ServerMetadata {
	md := s.Service.ServerMetadata()
	if !slices.Contains(md.Extensions, oip.ExtensionSystemSharedMemory) {
		md.Extensions = append(slices.Clone(md.Extensions), oip.ExtensionSystemSharedMemory)
	}
	return md
}

// RegisterSystemSharedMemory implements oip.SharedMemory.
func (s *Service) RegisterSystemSharedMemory(ctx context.Context, r oip.SharedMemoryRegion) error {
	return s.reg.Register(ctx, r)
}

// UnregisterSystemSharedMemory implements oip.SharedMemory.
func (s *Service) UnregisterSystemSharedMemory(ctx context.Context, name string) error {
	return s.reg.Unregister(ctx, name)
}

// SystemSharedMemoryStatus implements oip.SharedMemory.
func (s *Service) SystemSharedMemoryStatus(ctx context.Context, name string) ([]oip.SharedMemoryRegion, error) {
	return s.reg.Status(ctx, name)
}

// withoutSHM is p less the shared memory parameters (nil if none remain).
func withoutSHM(p oip.Parameters) oip.Parameters {
	if len(p) == 0 {
		return p
	}
	q := maps.Clone(p)
	delete(q, oip.ParamSharedMemoryRegion)
	delete(q, oip.ParamSharedMemoryOffset)
	delete(q, oip.ParamSharedMemoryByteSize)
	if len(q) == 0 {
		return nil
	}
	return q
}

// Infer implements oip.Service. req keeps its shared memory parameters
// (the transport encodes the response from them); the wrapped service
// gets a copy without them.
func (s *Service) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	if !oip.UsesSharedMemory(req) {
		return s.Service.Infer(ctx, req)
	}
	fwd := *req
	var (
		bufs            []*[]byte
		spans           []span
		ownIns, ownOuts bool // fwd's slices are copies
		recycle         = true
		read            int64 // input bytes taken from shared memory
	)
	defer func() {
		for _, sp := range spans {
			sp.release()
		}
		if recycle {
			tensor.PutBuffers(bufs)
		}
	}()
	for i := range req.Inputs {
		in := &req.Inputs[i]
		where := fmt.Sprintf("input %q", in.Name)
		ref, ok, err := oip.SharedMemoryRefOf(where, in.Parameters)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if ref.ByteSize > s.max-read {
			return nil, errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("%s: %d bytes from shared memory, after %d for the inputs before it, is over this server's limit of %d per request", where, ref.ByteSize, read, s.max))
		}
		read += ref.ByteSize
		if !ownIns {
			fwd.Inputs, ownIns = slices.Clone(req.Inputs), true
		}
		t, h, err := s.readInput(where, in.Tensor, ref)
		if err != nil {
			return nil, err
		}
		if h != nil {
			bufs = append(bufs, h)
		}
		fwd.Inputs[i] = oip.InferInput{Tensor: t, Parameters: withoutSHM(in.Parameters)}
	}
	outRefs := make(map[string]span)
	for i := range req.Outputs {
		o := &req.Outputs[i]
		where := fmt.Sprintf("output %q", o.Name)
		ref, ok, err := oip.SharedMemoryRefOf(where, o.Parameters)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		sp, err := s.reg.acquire(where, ref)
		if err != nil {
			return nil, err
		}
		spans = append(spans, sp)
		outRefs[o.Name] = sp
		if !ownOuts {
			fwd.Outputs, ownOuts = slices.Clone(req.Outputs), true
		}
		fwd.Outputs[i].Parameters = withoutSHM(o.Parameters)
	}
	resp, err := s.Service.Infer(ctx, &fwd)
	if err != nil {
		// The service may have left work behind that still reads the
		// inputs: their buffers are not reused.
		recycle = false
		return nil, err
	}
	if resp != nil && len(bufs) > 0 {
		// An output that shares memory with an input (a service that
		// passes an input through) is sent after this returns: the
		// input's buffer is then not reused.
		datas := make([][]byte, len(resp.Outputs))
		for i := range resp.Outputs {
			datas[i] = resp.Outputs[i].Data
		}
		recycle = !tensor.Overlaps(datas, bufs)
	}
	if resp == nil || len(outRefs) == 0 {
		return resp, nil
	}
	out := *resp
	out.Outputs = slices.Clone(resp.Outputs)
	for i := range out.Outputs {
		t := &out.Outputs[i]
		sp, ok := outRefs[t.Name]
		if !ok {
			continue
		}
		if len(t.Data) > len(sp.data) {
			return nil, errdefs.Invalid(fmt.Sprintf("output %q is %d bytes (%s%v) but its shared memory region %q holds %d from its offset", t.Name, len(t.Data), t.DataType, t.Shape, sp.r.info.Name, len(sp.data)))
		}
		if err := guardedCopy(sp.data, t.Data); err != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("output %q into shared memory region %q: %v", t.Name, sp.r.info.Name, err))
		}
		t.Data = nil
	}
	return &out, nil
}

// readInput copies an input's bytes out of its region into a buffer of
// this process (h, when pooled) and checks them as the transports check
// bytes sent on the wire.
func (s *Service) readInput(where string, t tensor.Tensor, ref oip.SharedMemoryRef) (tensor.Tensor, *[]byte, error) {
	if t.Data != nil {
		return t, nil, errdefs.Invalid(fmt.Sprintf("%s has data and a shared memory region; give one", where))
	}
	if want, err := tensor.ExpectedBytes(t.DataType, t.Shape); err != nil {
		return t, nil, fmt.Errorf("%s: %w", where, err)
	} else if want >= 0 && ref.ByteSize != want {
		return t, nil, errdefs.Invalid(fmt.Sprintf("%s: %s is %d but %s%v needs %d bytes", where, oip.ParamSharedMemoryByteSize, ref.ByteSize, t.DataType, t.Shape, want))
	}
	sp, err := s.reg.acquire(where, ref)
	if err != nil {
		return t, nil, err
	}
	defer sp.release()
	h, b := tensor.GetBuffer(len(sp.data))
	if err := guardedCopy(b, sp.data); err != nil {
		return t, nil, errdefs.Invalid(fmt.Sprintf("%s from shared memory region %q: %v", where, ref.Region, err))
	}
	t.Data = b
	if err := t.Validate(); err != nil {
		tensor.PutBuffers([]*[]byte{h})
		return t, nil, fmt.Errorf("%s in shared memory region %q: %w", where, ref.Region, err)
	}
	return t, h, nil
}
