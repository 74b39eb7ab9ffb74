package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/shm"
	"github.com/accelpool/accelpool/tensor"
)

// The gRPC mode with tensors in system shared memory (Triton's extension,
// as perf_analyzer --shared-memory=system uses it): the load generator
// writes the inputs once into a POSIX shared memory object and registers
// it with the node; each request then names where its inputs lie and
// where its outputs go, and carries no tensor bytes. Each caller (worker)
// has its own output slot. The node copies the inputs out of the region
// (a copy the TCP modes also make) and the outputs into it.

// shmSlots is how many output slots the object holds.
const shmSlots = 64

// Region names the bench registers.
const (
	shmInRegion  = "bench-in"
	shmOutRegion = "bench-out"
)

// shmSetup is a registered shared memory object with the requests that
// use it.
type shmSetup struct {
	path     string
	f        *os.File
	outBase  int64       // where the output slots start in the object
	outBytes int64       // one slot: every output, in order
	outOffs  []int64     // each output's offset in a slot
	reqs     [][]byte    // one ModelInferRequest per slot
	want     wireOutputs // the raw entries of an answer: all empty
	check    *oip.InferRequest
}

// setupSHM makes and registers the object for model, whose checked answer
// had outputs outs.
func (s *server) setupSHM(ctx context.Context, model string, inputs, outs []tensor.Tensor) (*shmSetup, error) {
	key := fmt.Sprintf("/accelpool-bench-%d-%s", os.Getpid(), model)
	st := &shmSetup{path: shm.DefaultDir + key, want: make(wireOutputs, len(outs))}
	var inBytes int64
	for _, t := range inputs {
		inBytes += int64(len(t.Data))
	}
	for _, o := range outs {
		st.outOffs = append(st.outOffs, st.outBytes)
		st.outBytes += int64(len(o.Data))
	}
	f, err := os.OpenFile(st.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shared memory object: %w", err)
	}
	st.f = f
	ok := false
	defer func() {
		if !ok {
			st.close(s)
		}
	}()
	st.outBase = inBytes
	if err := f.Truncate(inBytes + shmSlots*st.outBytes); err != nil {
		return nil, fmt.Errorf("shared memory object: %w", err)
	}
	var off int64
	for _, t := range inputs {
		if _, err := f.WriteAt(t.Data, off); err != nil {
			return nil, fmt.Errorf("shared memory object: %w", err)
		}
		off += int64(len(t.Data))
	}
	for _, r := range []oip.SharedMemoryRegion{
		{Name: shmInRegion, Key: key, ByteSize: uint64(inBytes)},
		{Name: shmOutRegion, Key: key, Offset: uint64(inBytes), ByteSize: uint64(shmSlots * st.outBytes)},
	} {
		if err := s.grpc.SharedMemoryRegister(ctx, r); err != nil {
			return nil, fmt.Errorf("registering %s: %w", r.Name, err)
		}
	}
	for slot := range int64(shmSlots) {
		req := &oip.InferRequest{ModelName: model}
		off = 0
		for _, t := range inputs {
			n := int64(len(t.Data))
			req.Inputs = append(req.Inputs, oip.InferInput{Tensor: tensor.Tensor{Name: t.Name, DataType: t.DataType, Shape: t.Shape},
				Parameters: oip.Parameters{oip.ParamSharedMemoryRegion: shmInRegion, oip.ParamSharedMemoryOffset: off, oip.ParamSharedMemoryByteSize: n}})
			off += n
		}
		for i, o := range outs {
			req.Outputs = append(req.Outputs, oip.RequestedOutput{Name: o.Name,
				Parameters: oip.Parameters{oip.ParamSharedMemoryRegion: shmOutRegion, oip.ParamSharedMemoryOffset: slot*st.outBytes + st.outOffs[i], oip.ParamSharedMemoryByteSize: int64(len(o.Data))}})
		}
		m, err := grpcsvc.EncodeInferRequest(req)
		if err != nil {
			return nil, err
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		st.reqs = append(st.reqs, b)
		if slot == 0 {
			st.check = req
		}
	}
	ok = true
	return st, nil
}

// answer runs slot 0's request through the product's gRPC client and
// returns its outputs as the node wrote them into the slot.
func (st *shmSetup) answer(ctx context.Context, s *server) ([]tensor.Tensor, error) {
	resp, err := s.grpc.Infer(ctx, st.check)
	if err != nil {
		return nil, err
	}
	if len(resp.Outputs) != len(st.outOffs) {
		return nil, fmt.Errorf("answer has %d outputs, want %d", len(resp.Outputs), len(st.outOffs))
	}
	out := make([]tensor.Tensor, len(resp.Outputs))
	for i, o := range resp.Outputs {
		if o.Data != nil {
			return nil, fmt.Errorf("output %s came on the wire, not in shared memory", o.Name)
		}
		n, err := tensor.ExpectedBytes(o.DataType, o.Shape)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("output %s: %s%v has no fixed size", o.Name, o.DataType, o.Shape)
		}
		o.Data = make([]byte, n)
		if _, err := st.f.ReadAt(o.Data, st.outBase+st.outOffs[i]); err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// close unregisters the regions and removes the object.
func (st *shmSetup) close(s *server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range []string{shmInRegion, shmOutRegion} {
		_ = s.grpc.SharedMemoryUnregister(ctx, r) // the node unmaps them when it closes anyway
	}
	_ = st.f.Close()
	_ = os.Remove(st.path)
}
