// Package runtime defines the interface between accelpool's model serving
// layers and the engines that execute models. Implementations live in
// subpackages: onnx (ONNX Runtime through cgo, the only cgo in accelpool) and
// fake (a pure-Go backend for testing the layers above). Both pass the
// conformance suite in runtime/runtimetest.
package runtime

import (
	"context"

	"github.com/accelpool/accelpool/tensor"
)

// IOSpec describes one model input or output. A dimension of -1 is dynamic.
type IOSpec struct {
	Name     string
	DataType tensor.DataType
	Shape    []int64
}

// Metadata is what a loaded model declares about itself.
type Metadata struct {
	Inputs  []IOSpec
	Outputs []IOSpec
}

// Batchable reports whether every input and output has a dynamic first
// dimension, so requests can be stacked along it.
func (m Metadata) Batchable() bool {
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return false
	}
	for _, list := range [][]IOSpec{m.Inputs, m.Outputs} {
		for _, s := range list {
			if len(s.Shape) == 0 || s.Shape[0] != -1 {
				return false
			}
		}
	}
	return true
}

// Options tune a session. Zero values mean the backend's defaults.
type Options struct {
	// IntraOpThreads and InterOpThreads size the runtime's thread pools.
	IntraOpThreads int
	InterOpThreads int
	// Providers lists execution providers in order of preference, e.g.
	// ["tensorrt", "cuda", "cpu"]. Providers the library lacks are skipped
	// with a logged reason; "cpu" is always the last resort.
	Providers []string
	// DeviceID selects the accelerator for GPU providers.
	DeviceID int
	// AllowSpinning lets the runtime's pool threads busy-wait for work
	// (lower latency for a lone model, but the spinning burns cores the
	// serving stack and other models need). Off by default.
	AllowSpinning bool
}

// Backend loads models into sessions.
type Backend interface {
	// Name is a short identifier ("onnxruntime", "fake").
	Name() string
	// Load opens the model file at path. A corrupt or unsupported file gives
	// an error wrapping errdefs.ErrInvalid.
	Load(ctx context.Context, path string, opts Options) (Session, error)
}

// Session is one loaded model. Run is safe for concurrent use.
type Session interface {
	Metadata() Metadata
	// Provider names the execution provider the session actually uses.
	Provider() string
	// Run executes the model. inputs must name every model input; outputs
	// lists the outputs to compute (nil: all, in metadata order). The
	// returned tensors are owned by the caller. Errors from bad inputs wrap
	// errdefs.ErrInvalid.
	Run(ctx context.Context, inputs []tensor.Tensor, outputs []string) ([]tensor.Tensor, error)
	// Close frees the session; Run must not be called afterwards.
	Close() error
}
