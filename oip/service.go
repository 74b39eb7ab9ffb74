// Package oip is the Open Inference Protocol (KServe v2) seen from inside
// accelpool: the protocol-neutral Service that every front door serves, and
// the request and response types. Subpackages put it on the wire: rest (HTTP
// with JSON and the binary tensor extension) and grpcsvc
// (inference.GRPCInferenceService). The agent implements Service over its
// loaded models; later the gateway implements the same interface by
// forwarding, so local and remote look alike.
package oip

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// TimeoutParameter is the request parameter that bounds an inference, in
// microseconds (Triton's convention); the transports turn it into a
// context deadline.
const TimeoutParameter = "timeout"

// Bounds on the structure of one request, checked while it is decoded so
// that a small body cannot make the server allocate far more than its size
// (21 million empty input objects fit in 64 MiB of JSON).
const (
	// MaxTensors bounds the inputs, and the requested outputs, of a request.
	MaxTensors = 1024
	// MaxRank bounds a tensor's number of dimensions.
	MaxRank = 64
	// MaxParameters bounds the parameters of a request or of one tensor.
	MaxParameters = 256
)

// CheckVersion refuses a model version that no repository can hold. A
// version is a non-negative decimal integer, as a model repository names
// its version directories; empty asks for the version served.
func CheckVersion(version string) error {
	if version == "" {
		return nil
	}
	ok := len(version) <= 19 // every such string fits an int64
	for i := 0; ok && i < len(version); i++ {
		ok = version[i] >= '0' && version[i] <= '9'
	}
	if !ok {
		return errdefs.Invalid(fmt.Sprintf("model version %q is not a version number (a non-negative integer of at most 19 digits)", version))
	}
	return nil
}

// RequestTimeout reads the timeout parameter: a non-negative integer count
// of microseconds; 0 or absent means none.
func RequestTimeout(p Parameters) (time.Duration, error) {
	v, ok := p[TimeoutParameter]
	if !ok {
		return 0, nil
	}
	var us uint64
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return 0, errdefs.Invalid(fmt.Sprintf("parameter %q is %d; want a non-negative number of microseconds", TimeoutParameter, v))
		}
		us = uint64(v)
	case uint64:
		us = v
	default:
		return 0, errdefs.Invalid(fmt.Sprintf("parameter %q is a %T; want an integer number of microseconds", TimeoutParameter, v))
	}
	if us > uint64(math.MaxInt64/int64(time.Microsecond)) {
		return 0, nil // longer than any deadline can be: no bound
	}
	return time.Duration(us) * time.Microsecond, nil
}

// Parameters are the free-form parameters of requests, responses and tensors.
// Values are bool, int64, uint64, float64 or string.
type Parameters map[string]any

// ServerMetadata answers GET /v2.
type ServerMetadata struct {
	Name       string
	Version    string
	Extensions []string
}

// TensorMetadata describes a model input or output; -1 marks a dynamic dimension.
type TensorMetadata struct {
	Name     string
	DataType tensor.DataType
	Shape    []int64
}

// ModelMetadata answers GET /v2/models/{m}[/versions/{v}].
type ModelMetadata struct {
	Name     string
	Versions []string
	Platform string
	Inputs   []TensorMetadata
	Outputs  []TensorMetadata
}

// InferInput is one input tensor with its per-tensor parameters.
type InferInput struct {
	tensor.Tensor
	Parameters Parameters
}

// RequestedOutput names an output the client wants.
type RequestedOutput struct {
	Name string
	// Binary asks the REST transport to return this output in the binary
	// extension (parameter binary_data); gRPC always returns raw contents.
	Binary     bool
	Parameters Parameters
}

// InferRequest is one inference request.
type InferRequest struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   Parameters
	Inputs       []InferInput
	// Outputs, when non-empty, restricts and orders the returned outputs.
	Outputs []RequestedOutput
}

// InferResponse is the answer to an InferRequest.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   Parameters
	Outputs      []tensor.Tensor
}

// ModelIndexEntry is one row of the repository index.
type ModelIndexEntry struct {
	Name    string
	Version string
	State   string // READY, UNAVAILABLE, LOADING, UNLOADING
	Reason  string
}

// Service is what a front door serves. Errors wrap errdefs sentinels; the
// transports map them to status codes.
type Service interface {
	ServerMetadata() ServerMetadata
	Live() bool
	Ready() bool
	ModelMetadata(ctx context.Context, name, version string) (ModelMetadata, error)
	ModelReady(ctx context.Context, name, version string) (bool, error)
	Infer(ctx context.Context, req *InferRequest) (*InferResponse, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]ModelIndexEntry, error)
	LoadModel(ctx context.Context, name string) error
	UnloadModel(ctx context.Context, name string) error
}
