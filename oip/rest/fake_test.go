package rest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// fake is a tiny oip.Service for the tests. Its models:
//
//	echo   returns the inputs as outputs, filtered and ordered by the
//	       requested outputs; request parameters come back as response
//	       parameters, input parameters as "in.<input>.<key>"
//	sleep  waits for its context (or "ms" milliseconds)
//	fail   returns the errdefs sentinel named by the "kind" parameter
//	panic  panics
//	cold   exists but is not ready
type fake struct {
	mu     sync.Mutex
	ready  bool
	loaded map[string]bool
}

var fakeSentinels = map[string]error{
	"invalid":            errdefs.ErrInvalid,
	"not_found":          errdefs.ErrNotFound,
	"already_exists":     errdefs.ErrAlreadyExists,
	"unavailable":        errdefs.ErrUnavailable,
	"resource_exhausted": errdefs.ErrResourceExhausted,
	"too_large":          errdefs.ErrTooLarge,
	"deadline":           errdefs.ErrDeadline,
	"unauthenticated":    errdefs.ErrUnauthenticated,
	"internal":           errdefs.ErrInternal,
}

func newFake() *fake {
	return &fake{ready: true, loaded: map[string]bool{"echo": true, "sleep": true, "fail": true, "panic": true, "cold": false}}
}

var _ oip.Service = (*fake)(nil)

func (f *fake) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: "fake", Version: "0.1", Extensions: []string{"binary_tensor_data", "model_repository"}}
}

func (f *fake) Live() bool { return true }

func (f *fake) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fake) known(name string) (loaded bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.loaded[name]
	if !ok {
		return false, fmt.Errorf("model %q: %w", name, errdefs.ErrNotFound)
	}
	return l, nil
}

func (f *fake) ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error) {
	if _, err := f.known(name); err != nil {
		return oip.ModelMetadata{}, err
	}
	if version != "" && version != "1" {
		return oip.ModelMetadata{}, fmt.Errorf("model %q version %q: %w", name, version, errdefs.ErrNotFound)
	}
	return oip.ModelMetadata{Name: name, Versions: []string{"1"}, Platform: "fake",
		Inputs:  []oip.TensorMetadata{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3}}},
		Outputs: []oip.TensorMetadata{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3}}}}, nil
}

func (f *fake) ModelReady(ctx context.Context, name, version string) (bool, error) {
	return f.known(name)
}

func (f *fake) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	loaded, err := f.known(req.ModelName)
	if err != nil {
		return nil, err
	}
	if !loaded {
		return nil, fmt.Errorf("model %q is not loaded: %w", req.ModelName, errdefs.ErrUnavailable)
	}
	switch req.ModelName {
	case "panic":
		panic("fake model panics")
	case "fail":
		kind, _ := req.Parameters["kind"].(string)
		if e, ok := fakeSentinels[kind]; ok {
			return nil, fmt.Errorf("fake failure: %w", e)
		}
		return nil, fmt.Errorf("unknown kind %q", kind)
	case "sleep":
		ms, _ := req.Parameters["ms"].(int64)
		if ms == 0 {
			ms = 1 << 30
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sleep: %w", ctx.Err())
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return &oip.InferResponse{}, nil
		}
	}
	resp := &oip.InferResponse{ModelName: req.ModelName, ModelVersion: "1", Parameters: oip.Parameters{}}
	for k, v := range req.Parameters {
		resp.Parameters[k] = v
	}
	byName := map[string]tensor.Tensor{}
	var names []string
	for _, in := range req.Inputs {
		byName[in.Name] = in.Tensor
		names = append(names, in.Name)
		for k, v := range in.Parameters {
			resp.Parameters["in."+in.Name+"."+k] = v
		}
	}
	if len(req.Outputs) > 0 {
		names = names[:0]
		for _, o := range req.Outputs {
			if _, ok := byName[o.Name]; !ok {
				return nil, fmt.Errorf("model %q has no output %q: %w", req.ModelName, o.Name, errdefs.ErrInvalid)
			}
			names = append(names, o.Name)
		}
	}
	for _, n := range names {
		resp.Outputs = append(resp.Outputs, byName[n])
	}
	return resp, nil
}

func (f *fake) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []oip.ModelIndexEntry
	for name, l := range f.loaded {
		if readyOnly && !l {
			continue
		}
		e := oip.ModelIndexEntry{Name: name, Version: "1", State: "READY"}
		if !l {
			e.State, e.Reason = "UNAVAILABLE", "unloaded"
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fake) setLoaded(name string, l bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.loaded[name]; !ok {
		return fmt.Errorf("model %q: %w", name, errdefs.ErrNotFound)
	}
	f.loaded[name] = l
	return nil
}

func (f *fake) LoadModel(ctx context.Context, name string) error   { return f.setLoaded(name, true) }
func (f *fake) UnloadModel(ctx context.Context, name string) error { return f.setLoaded(name, false) }
