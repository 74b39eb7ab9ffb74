package grpcsvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// fakeService is an in-test oip.Service with a few models:
//
//	echo     returns its inputs as outputs (restricted and ordered by the
//	         requested outputs) and its request parameters as response
//	         parameters, plus "in.<input>.<key>" for each input parameter
//	sleep    waits for its context to end and returns ctx.Err()
//	fail     returns the error named by the "kind" parameter
//	panic    panics
//	badparam answers with a parameter of a type the wire cannot carry
//	capture  remembers the request it got and answers nothing
type fakeService struct {
	ctxEnded atomic.Int64 // sleep calls that returned because ctx ended

	mu       sync.Mutex
	loaded   map[string]bool
	captured *oip.InferRequest
}

var _ oip.Service = (*fakeService)(nil)

func newFake() *fakeService {
	return &fakeService{loaded: map[string]bool{"echo": true, "sleep": true, "fail": true, "panic": true, "badparam": true, "capture": true}}
}

// failKinds maps the fail model's "kind" parameter to the error it returns.
var failKinds = map[string]error{
	"invalid":            errdefs.ErrInvalid,
	"not_found":          errdefs.ErrNotFound,
	"already_exists":     errdefs.ErrAlreadyExists,
	"unavailable":        errdefs.ErrUnavailable,
	"resource_exhausted": errdefs.ErrResourceExhausted,
	"too_large":          errdefs.ErrTooLarge,
	"deadline":           errdefs.ErrDeadline,
	"canceled":           errdefs.ErrCanceled,
	"unauthenticated":    errdefs.ErrUnauthenticated,
	"internal":           errdefs.ErrInternal,
	"plain":              nil, // an error wrapping no sentinel
}

func (f *fakeService) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: "fake", Version: "0.0.1", Extensions: []string{"model_repository"}}
}

func (f *fakeService) Live() bool  { return true }
func (f *fakeService) Ready() bool { return true }

func (f *fakeService) known(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded[name] {
		return fmt.Errorf("model %q: %w", name, errdefs.ErrNotFound)
	}
	return nil
}

func (f *fakeService) ModelMetadata(_ context.Context, name, _ string) (oip.ModelMetadata, error) {
	if err := f.known(name); err != nil {
		return oip.ModelMetadata{}, err
	}
	io := []oip.TensorMetadata{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3}}}
	return oip.ModelMetadata{Name: name, Versions: []string{"1"}, Platform: "fake", Inputs: io, Outputs: io}, nil
}

func (f *fakeService) ModelReady(_ context.Context, name, _ string) (bool, error) {
	if err := f.known(name); err != nil {
		return false, err
	}
	return true, nil
}

func (f *fakeService) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	if err := f.known(req.ModelName); err != nil {
		return nil, err
	}
	switch req.ModelName {
	case "echo":
		return echo(req)
	case "sleep":
		select {
		case <-ctx.Done():
			f.ctxEnded.Add(1)
			return nil, ctx.Err()
		case <-time.After(30 * time.Second):
			return nil, errors.New("sleep model was never interrupted")
		}
	case "fail":
		kind, _ := req.Parameters["kind"].(string)
		sentinel, ok := failKinds[kind]
		if !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown failure kind %q", kind))
		}
		if sentinel == nil {
			return nil, errors.New("fake failure: plain")
		}
		return nil, fmt.Errorf("fake failure: %w", sentinel)
	case "panic":
		panic("boom: secret panic value")
	case "badparam":
		return &oip.InferResponse{Parameters: oip.Parameters{"x": struct{}{}}}, nil
	case "capture":
		f.mu.Lock()
		f.captured = req
		f.mu.Unlock()
		return &oip.InferResponse{}, nil
	}
	return nil, fmt.Errorf("model %q: %w", req.ModelName, errdefs.ErrNotFound)
}

func echo(req *oip.InferRequest) (*oip.InferResponse, error) {
	resp := &oip.InferResponse{ModelName: req.ModelName, ModelVersion: "1", ID: req.ID, Parameters: oip.Parameters{}}
	for k, v := range req.Parameters {
		resp.Parameters[k] = v
	}
	for _, in := range req.Inputs {
		for k, v := range in.Parameters {
			resp.Parameters["in."+in.Name+"."+k] = v
		}
	}
	if len(req.Outputs) == 0 {
		for _, in := range req.Inputs {
			resp.Outputs = append(resp.Outputs, in.Tensor)
		}
		return resp, nil
	}
	var names []string
	for _, o := range req.Outputs {
		i := slices.IndexFunc(req.Inputs, func(in oip.InferInput) bool { return in.Name == o.Name })
		if i < 0 {
			return nil, errdefs.Invalid(fmt.Sprintf("echo has no output %q", o.Name))
		}
		resp.Outputs = append(resp.Outputs, req.Inputs[i].Tensor)
		names = append(names, o.Name)
	}
	resp.Parameters["outputs"] = strings.Join(names, ",")
	return resp, nil
}

func (f *fakeService) RepositoryIndex(_ context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []oip.ModelIndexEntry
	for name, ok := range f.loaded {
		e := oip.ModelIndexEntry{Name: name, Version: "1", State: "READY"}
		if !ok {
			if readyOnly {
				continue
			}
			e.State, e.Reason = "UNAVAILABLE", "unloaded"
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b oip.ModelIndexEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *fakeService) LoadModel(_ context.Context, name string) error {
	if name == "" {
		return errdefs.Invalid("model_name is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loaded[name] = true
	return nil
}

func (f *fakeService) UnloadModel(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.loaded[name]; !ok {
		return fmt.Errorf("model %q: %w", name, errdefs.ErrNotFound)
	}
	f.loaded[name] = false
	return nil
}
