package onnx

/*
#include <stdlib.h>
#include "ort.h"
*/
import "C"

import (
	"context"
	"fmt"
	goruntime "runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Session is one model loaded into ONNX Runtime. Run is safe for concurrent
// use; Close waits for runs in flight.
type Session struct {
	path     string
	provider string
	meta     runtime.Metadata

	// C copies of the input and output names, in metadata order, for Run.
	inNames  []*C.char
	outNames []*C.char
	inIndex  map[string]int
	outIndex map[string]int

	mu     sync.RWMutex // held for reading by Run, for writing by Close
	closed bool
	s      *C.OrtSession
}

var _ runtime.Session = (*Session)(nil)

func newSession(cs *C.OrtSession, path, provider string) (*Session, error) {
	s := &Session{path: path, provider: provider, s: cs, inIndex: map[string]int{}, outIndex: map[string]int{}}
	var bad []string
	for _, isInput := range []bool{true, false} {
		specs, unsupported, err := readIO(cs, isInput)
		if err != nil {
			s.freeNames()
			return nil, fmt.Errorf("onnxruntime: model %s: %w", path, err)
		}
		bad = append(bad, unsupported...)
		for i, sp := range specs {
			cname := C.CString(sp.Name)
			if isInput {
				s.meta.Inputs = append(s.meta.Inputs, sp)
				s.inNames = append(s.inNames, cname)
				s.inIndex[sp.Name] = i
			} else {
				s.meta.Outputs = append(s.meta.Outputs, sp)
				s.outNames = append(s.outNames, cname)
				s.outIndex[sp.Name] = i
			}
		}
	}
	if len(bad) > 0 {
		s.freeNames()
		return nil, errdefs.Invalid(fmt.Sprintf(
			"onnxruntime: model %s cannot be served over the Open Inference Protocol: %s",
			path, strings.Join(bad, "; ")))
	}
	return s, nil
}

// readIO reads the declared inputs or outputs. Those the protocol cannot
// carry are described in unsupported instead of specs.
func readIO(cs *C.OrtSession, isInput bool) (specs []runtime.IOSpec, unsupported []string, err error) {
	in := C.int(0)
	kind := "output"
	if isInput {
		in, kind = 1, "input"
	}
	var n C.size_t
	if err := statusError(C.ap_io_count(cs, in, &n)); err != nil {
		return nil, nil, err
	}
	for i := C.size_t(0); i < n; i++ {
		var (
			cname              *C.char
			onnxType, elemType C.int
			dims               *C.int64_t
			ndims              C.size_t
		)
		st := C.ap_io_info(cs, in, i, &cname, &onnxType, &elemType, &dims, &ndims)
		name := ""
		if cname != nil {
			name = C.GoString(cname)
			C.free(unsafe.Pointer(cname))
		}
		var shape []int64
		if dims != nil {
			shape = make([]int64, int(ndims))
			copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(dims)), int(ndims)))
			C.free(unsafe.Pointer(dims))
		}
		if err := statusError(st); err != nil {
			return nil, nil, fmt.Errorf("%s %d: %w", kind, i, err)
		}
		if why := describeUnsupported(onnxType, elemType); why != "" {
			unsupported = append(unsupported, fmt.Sprintf("%s %q %s", kind, name, why))
			continue
		}
		for j, d := range shape {
			if d < 0 {
				shape[j] = -1 // dynamic or symbolic
			}
		}
		specs = append(specs, runtime.IOSpec{Name: name, DataType: elemTypes[elemType], Shape: shape})
	}
	return specs, unsupported, nil
}

func (s *Session) freeNames() {
	for _, p := range s.inNames {
		C.free(unsafe.Pointer(p))
	}
	for _, p := range s.outNames {
		C.free(unsafe.Pointer(p))
	}
	s.inNames, s.outNames = nil, nil
}

// Metadata implements runtime.Session. The caller must not modify it.
func (s *Session) Metadata() runtime.Metadata { return s.meta }

// Provider implements runtime.Session: "cpu", or the first GPU provider the
// session was given ("tensorrt", "cuda"), which runs what it supports while
// the rest falls back to the CPU.
func (s *Session) Provider() string { return s.provider }

// Close implements runtime.Session.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	C.ap_release_session(s.s)
	s.s = nil
	s.freeNames()
	return nil
}

// Run implements runtime.Session.
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor, outputs []string) ([]tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError("run", err)
	}
	ordered, err := s.checkInputs(inputs)
	if err != nil {
		return nil, err
	}
	outIdx, err := s.pickOutputs(outputs)
	if err != nil {
		return nil, err
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errdefs.New(errdefs.ErrUnavailable, "onnxruntime: session is closed")
	}

	// The C side holds pointers into the input tensors' Data from value
	// creation until the values are released, so pin them for that long.
	// Deferred calls run last-in first-out: values are released before
	// the memory is unpinned.
	var pinner goruntime.Pinner
	defer pinner.Unpin()
	in := make([]*C.OrtValue, len(ordered))
	defer releaseValues(in)
	for i, t := range ordered {
		if in[i], err = newValue(t, &pinner); err != nil {
			return nil, fmt.Errorf("onnxruntime: input %q: %w", t.Name, err)
		}
	}
	outNames := make([]*C.char, len(outIdx))
	for i, j := range outIdx {
		outNames[i] = s.outNames[j]
	}
	out := make([]*C.OrtValue, len(outIdx))
	defer releaseValues(out)

	var ro *C.OrtRunOptions
	if err := statusError(C.ap_create_run_options(&ro)); err != nil {
		return nil, fmt.Errorf("onnxruntime: run options: %w", err)
	}
	// A cancelled context sets the terminate flag, which ONNX Runtime checks
	// between nodes. The run options outlive the callback: if stop reports
	// that it already started, wait for it to finish.
	var (
		stop     = func() bool { return true }
		finished = make(chan struct{})
	)
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			C.ap_terminate(ro)
			close(finished)
		})
	}
	var outNamesPtr **C.char
	var outPtr **C.OrtValue
	if len(out) > 0 {
		outNamesPtr, outPtr = &outNames[0], &out[0]
	}
	var inNamesPtr **C.char
	var inPtr **C.OrtValue
	if len(in) > 0 {
		inNamesPtr, inPtr = &s.inNames[0], &in[0]
	}
	runErr := statusError(C.ap_run(s.s, ro, inNamesPtr, inPtr, C.size_t(len(in)), outNamesPtr, C.size_t(len(out)), outPtr))
	if !stop() {
		<-finished
	}
	C.ap_release_run_options(ro)
	if runErr != nil {
		if err := ctx.Err(); err != nil {
			return nil, contextError("run stopped", err)
		}
		return nil, fmt.Errorf("onnxruntime: run: %w", runErrorKind(runErr))
	}

	res := make([]tensor.Tensor, len(out))
	for i, v := range out {
		name := s.meta.Outputs[outIdx[i]].Name
		t, err := copyValue(v, name)
		if err != nil {
			return nil, fmt.Errorf("onnxruntime: output %q: %w", name, err)
		}
		res[i] = t
	}
	return res, nil
}

// checkInputs checks inputs against the model's declaration and returns
// them in declaration order.
func (s *Session) checkInputs(inputs []tensor.Tensor) ([]*tensor.Tensor, error) {
	ordered := make([]*tensor.Tensor, len(s.meta.Inputs))
	for i := range inputs {
		t := &inputs[i]
		j, ok := s.inIndex[t.Name]
		if !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown input %q (the model's inputs are %s)", t.Name, ioNames(s.meta.Inputs)))
		}
		if ordered[j] != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("input %q given twice", t.Name))
		}
		if err := checkTensor(t, s.meta.Inputs[j]); err != nil {
			return nil, err
		}
		ordered[j] = t
	}
	for j, t := range ordered {
		if t == nil {
			return nil, errdefs.Invalid(fmt.Sprintf("missing input %q", s.meta.Inputs[j].Name))
		}
	}
	return ordered, nil
}

// checkTensor checks one input against its declaration.
func checkTensor(t *tensor.Tensor, spec runtime.IOSpec) error {
	if t.DataType != spec.DataType {
		return errdefs.Invalid(fmt.Sprintf("input %q: datatype %s, the model wants %s", t.Name, t.DataType, spec.DataType))
	}
	if len(t.Shape) != len(spec.Shape) {
		return errdefs.Invalid(fmt.Sprintf("input %q: shape %v has rank %d, the model wants rank %d (%s)",
			t.Name, t.Shape, len(t.Shape), len(spec.Shape), formatShape(spec.Shape)))
	}
	for i, d := range spec.Shape {
		if d >= 0 && t.Shape[i] != d {
			return errdefs.Invalid(fmt.Sprintf("input %q: shape %v, the model wants %s (dimension %d must be %d)",
				t.Name, t.Shape, formatShape(spec.Shape), i, d))
		}
	}
	return t.Validate()
}

func formatShape(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func ioNames(specs []runtime.IOSpec) string {
	names := make([]string, len(specs))
	for i, sp := range specs {
		names[i] = fmt.Sprintf("%q", sp.Name)
	}
	return strings.Join(names, ", ")
}

// pickOutputs maps requested output names to metadata indexes; nil means
// all outputs.
func (s *Session) pickOutputs(outputs []string) ([]int, error) {
	if outputs == nil {
		idx := make([]int, len(s.meta.Outputs))
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	idx := make([]int, 0, len(outputs))
	seen := make(map[int]bool, len(outputs))
	for _, name := range outputs {
		j, ok := s.outIndex[name]
		if !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown output %q (the model's outputs are %s)", name, ioNames(s.meta.Outputs)))
		}
		if seen[j] {
			return nil, errdefs.Invalid(fmt.Sprintf("output %q requested twice", name))
		}
		seen[j] = true
		idx = append(idx, j)
	}
	return idx, nil
}

// newValue creates an OrtValue for t. Numeric tensors use t.Data in place
// (pinned); BYTES tensors are copied into an ONNX Runtime string tensor.
func newValue(t *tensor.Tensor, pinner *goruntime.Pinner) (*C.OrtValue, error) {
	var shape *C.int64_t
	if len(t.Shape) > 0 {
		// ONNX Runtime copies the shape while creating the value.
		shape = (*C.int64_t)(unsafe.Pointer(&t.Shape[0]))
	}
	ndims := C.size_t(len(t.Shape))
	elem := onnxElem[t.DataType]
	var v *C.OrtValue
	switch {
	case t.DataType == tensor.Bytes:
		n, err := tensor.NumElements(t.Shape)
		if err != nil {
			return nil, err
		}
		var buf *C.char
		if len(t.Data) > 0 {
			buf = (*C.char)(unsafe.Pointer(&t.Data[0]))
		}
		err = statusError(C.ap_string_tensor(lib.alloc, shape, ndims, buf, C.size_t(len(t.Data)), C.size_t(n), &v))
		return v, err
	case len(t.Data) == 0:
		// Zero elements: there is no buffer to point at.
		return v, statusError(C.ap_empty_tensor(lib.alloc, shape, ndims, C.int(elem), &v))
	}
	data := t.Data
	if uintptr(unsafe.Pointer(&data[0]))%uintptr(t.DataType.Size()) != 0 {
		// Kernels may assume elements are aligned; a slice cut from a wire
		// buffer at an odd offset need not be.
		data = append(make([]byte, 0, len(data)), data...)
	}
	p := unsafe.Pointer(&data[0])
	pinner.Pin(p)
	err := statusError(C.ap_tensor_over(lib.memInfo, p, C.size_t(len(data)), shape, ndims, C.int(elem), &v))
	return v, err
}

func releaseValues(vs []*C.OrtValue) {
	for _, v := range vs {
		if v != nil {
			C.ap_release_value(v)
		}
	}
}

// copyValue copies an output value into a Go tensor: one copy of the
// elements, strings into the length-prefixed BYTES layout.
func copyValue(v *C.OrtValue, name string) (tensor.Tensor, error) {
	if v == nil {
		return tensor.Tensor{}, errdefs.New(errdefs.ErrInternal, "onnxruntime returned no value")
	}
	var (
		onnxType, elemType C.int
		dims               *C.int64_t
		ndims, count       C.size_t
		data               unsafe.Pointer
	)
	if err := statusError(C.ap_value_info(v, &onnxType, &elemType, &dims, &ndims, &count, &data)); err != nil {
		return tensor.Tensor{}, err
	}
	shape := make([]int64, int(ndims))
	if dims != nil {
		copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(dims)), int(ndims)))
		C.free(unsafe.Pointer(dims))
	}
	if why := describeUnsupported(onnxType, elemType); why != "" {
		return tensor.Tensor{}, errdefs.New(errdefs.ErrInternal, "value "+why)
	}
	dt := elemTypes[elemType]
	t := tensor.Tensor{Name: name, DataType: dt, Shape: shape}
	if dt == tensor.Bytes {
		var size C.size_t
		if err := statusError(C.ap_strings_size(v, count, &size)); err != nil {
			return t, err
		}
		t.Data = make([]byte, int(size))
		var dst *C.char
		if size > 0 {
			dst = (*C.char)(unsafe.Pointer(&t.Data[0]))
		}
		return t, statusError(C.ap_strings_copy(v, count, dst, size))
	}
	n := int(count) * dt.Size()
	t.Data = make([]byte, n)
	if n > 0 {
		copy(t.Data, unsafe.Slice((*byte)(data), n))
	}
	return t, nil
}
