package onnx

/*
#include <stdlib.h>
#include "ort.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Config configures a Backend.
type Config struct {
	// LibPath is the ONNX Runtime library to load (the --ort-lib flag).
	// Empty means FindLibrary's search.
	LibPath string
	// Logger receives provider fallbacks and library discovery; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Backend runs ONNX models with ONNX Runtime.
type Backend struct {
	log *slog.Logger
}

var _ runtime.Backend = (*Backend)(nil)

// New loads the ONNX Runtime library (once per process; see Init) and
// returns a Backend.
func New(cfg Config) (*Backend, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "onnxruntime")
	if path, _, _, ok := LibraryInfo(); !ok || (cfg.LibPath != "" && cfg.LibPath != path) {
		found, tried, err := FindLibrary(cfg.LibPath)
		if err != nil {
			return nil, err
		}
		if len(tried) > 1 && (cfg.LibPath != "" || os.Getenv(EnvLibPath) != "") {
			log.Warn("onnxruntime library not found where asked; using another",
				"using", found, "tried", tried)
		}
		if err := Init(found); err != nil {
			return nil, err
		}
	}
	path, version, api, _ := LibraryInfo()
	log.Debug("onnxruntime library loaded", "path", path, "version", version, "api_version", api)
	return &Backend{log: log}, nil
}

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "onnxruntime" }

// The execution providers Load knows, by accelpool's name and ONNX Runtime's.
var providerNames = map[string]string{
	"cpu":      "CPUExecutionProvider",
	"cuda":     "CUDAExecutionProvider",
	"tensorrt": "TensorrtExecutionProvider",
}

// Load implements runtime.Backend. See the package documentation for how
// execution providers are chosen and which models are refused.
func (b *Backend) Load(ctx context.Context, path string, opts runtime.Options) (runtime.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError("load", err)
	}
	if _, _, _, ok := LibraryInfo(); !ok || b.log == nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "onnxruntime: backend not initialised; create it with New")
	}
	for _, p := range opts.Providers {
		if _, ok := providerNames[strings.ToLower(p)]; !ok {
			return nil, errdefs.Invalid(fmt.Sprintf("onnxruntime: unknown execution provider %q (want cuda, tensorrt or cpu)", p))
		}
	}
	if opts.IntraOpThreads < 0 || opts.InterOpThreads < 0 {
		return nil, errdefs.Invalid("onnxruntime: thread counts must not be negative")
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("onnxruntime: model %s: %w", path, errdefs.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("onnxruntime: model %s: %w", path, err)
	case fi.IsDir():
		return nil, errdefs.Invalid(fmt.Sprintf("onnxruntime: model %s is a directory, not an .onnx file", path))
	}

	var so *C.OrtSessionOptions
	if err := statusError(C.ap_create_session_options(&so)); err != nil {
		return nil, fmt.Errorf("onnxruntime: session options: %w", err)
	}
	defer C.ap_release_session_options(so)
	if err := statusError(C.ap_set_threads(so, C.int(opts.IntraOpThreads), C.int(opts.InterOpThreads))); err != nil {
		return nil, fmt.Errorf("onnxruntime: threads: %w", wrapKind(errdefs.ErrInvalid, err))
	}
	if err := statusError(C.ap_set_optimize_all(so)); err != nil {
		return nil, fmt.Errorf("onnxruntime: optimisation level: %w", err)
	}
	if !opts.AllowSpinning {
		// ONNX Runtime's pool threads busy-wait for work by default: on a
		// server that burns the cores the transports and the other models
		// need. Park them instead.
		for _, k := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
			ck, cv := C.CString(k), C.CString("0")
			err := statusError(C.ap_add_config(so, ck, cv))
			C.free(unsafe.Pointer(ck))
			C.free(unsafe.Pointer(cv))
			if err != nil {
				return nil, fmt.Errorf("onnxruntime: %s: %w", k, err)
			}
		}
	}
	provider := b.appendProviders(so, path, opts)

	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cs *C.OrtSession
	if err := statusError(C.ap_create_session(lib.env, cpath, so, &cs)); err != nil {
		return nil, fmt.Errorf("onnxruntime: load %s: %w", path, loadErrorKind(err))
	}
	s, err := newSession(cs, path, provider)
	if err != nil {
		C.ap_release_session(cs)
		return nil, err
	}
	return s, nil
}

// appendProviders adds the requested GPU providers to so in order, skipping
// (with a warning) those the library lacks, and returns the name of the
// first one added, or "cpu".
func (b *Backend) appendProviders(so *C.OrtSessionOptions, path string, opts runtime.Options) string {
	primary := ""
	var available []string
	for _, p := range opts.Providers {
		p = strings.ToLower(p)
		if p == "cpu" {
			break // the last resort; nothing after it matters
		}
		if available == nil {
			var err error
			if available, err = availableProviders(); err != nil {
				b.log.Warn("cannot list execution providers; using cpu", "model", path, "reason", err)
				return "cpu"
			}
		}
		ortName := providerNames[p]
		if !contains(available, ortName) {
			b.log.Warn("execution provider unavailable; falling back", "provider", p, "model", path,
				"reason", fmt.Sprintf("the ONNX Runtime library lacks %s (it has %s)", ortName, strings.Join(available, ", ")))
			continue
		}
		dev := C.CString(strconv.Itoa(opts.DeviceID))
		var err error
		switch p {
		case "cuda":
			err = statusError(C.ap_append_cuda(so, dev))
		case "tensorrt":
			err = statusError(C.ap_append_tensorrt(so, dev))
		}
		C.free(unsafe.Pointer(dev))
		if err != nil {
			b.log.Warn("execution provider unavailable; falling back", "provider", p, "model", path,
				"device", opts.DeviceID, "reason", err)
			continue
		}
		if primary == "" {
			primary = p
		}
	}
	if primary == "" {
		return "cpu"
	}
	return primary
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// loadErrorKind classifies a failed CreateSession: a model ONNX Runtime
// cannot read, check or run is invalid; running out of memory or a failing
// accelerator is not the model's fault.
func loadErrorKind(err error) error {
	var oe *ortError
	if !errors.As(err, &oe) {
		return err
	}
	switch {
	case oe.code == ortNoSuchFile || oe.code == ortNotFound && strings.Contains(oe.msg, "No such file"):
		return wrapKind(errdefs.ErrNotFound, err)
	case isOutOfMemory(oe.msg):
		return wrapKind(errdefs.ErrResourceExhausted, err)
	case oe.code == ortEPFail:
		return wrapKind(errdefs.ErrUnavailable, err)
	}
	return wrapKind(errdefs.ErrInvalid, err)
}

// runErrorKind classifies a failed Run. Inputs have been checked against
// the model's declaration (names, datatypes, ranks, fixed dimensions), so
// an invalid argument, or a node that fails on them, fails on what the
// client sent: a dynamic dimension the graph cannot take (a reshape, a
// broadcast), an empty batch, an index out of range. Those are invalid
// input, told without ONNX Runtime's source paths (nodeFailure). Running
// out of memory is exhausted; a failing execution provider and anything
// else are internal.
func runErrorKind(err error) error {
	var oe *ortError
	if !errors.As(err, &oe) {
		return err
	}
	switch {
	case isOutOfMemory(oe.msg):
		return wrapKind(errdefs.ErrResourceExhausted, err)
	case oe.code == ortEPFail:
		return wrapKind(errdefs.ErrInternal, err)
	}
	if msg, ok := nodeFailure(oe.msg); ok {
		return wrapKind(errdefs.ErrInvalid, errors.New(msg))
	}
	if oe.code == ortInvalidArgument {
		return wrapKind(errdefs.ErrInvalid, err)
	}
	return wrapKind(errdefs.ErrInternal, err)
}

// nodeFailure rewrites ONNX Runtime's report of a node that failed while
// running ("Non-zero status code returned while running Add node.
// Name:'n' Status Message: /onnxruntime_src/...h:583 void f(...) cond was
// false. Attempting to broadcast ...") as what a client can act on:
// `the model's Add node "n" failed on this input: Attempting to broadcast
// ...`. ok is false for any other message.
func nodeFailure(msg string) (string, bool) {
	const head, name, status = "Non-zero status code returned while running ", " node. Name:'", "' Status Message: "
	rest, found := strings.CutPrefix(msg, head)
	if !found {
		return "", false
	}
	op, rest, found := strings.Cut(rest, name)
	if !found {
		return "", false
	}
	node, detail, found := strings.Cut(rest, status)
	if !found {
		return "", false
	}
	// An enforcement failure starts with the source location and the C++
	// function: keep what follows the failed condition. Any other message
	// that starts with a path keeps what follows its location.
	if strings.HasPrefix(detail, "/") {
		if _, after, ok := strings.Cut(detail, " was false. "); ok {
			detail = after
		} else if _, after, ok := strings.Cut(detail, " "); ok {
			detail = after
		}
	}
	return fmt.Sprintf("the model's %s node %q failed on this input: %s", op, node, strings.TrimSpace(detail)), true
}

func isOutOfMemory(msg string) bool {
	return strings.Contains(msg, "bad_alloc") || strings.Contains(msg, "Failed to allocate memory") ||
		strings.Contains(msg, "out of memory")
}

// kindError keeps ONNX Runtime's message and matches a sentinel.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

func wrapKind(kind, err error) error { return &kindError{kind: kind, err: err} }

// contextError wraps a context's error with the matching sentinel.
func contextError(op string, err error) error {
	kind := errdefs.ErrCanceled
	if errors.Is(err, context.DeadlineExceeded) {
		kind = errdefs.ErrDeadline
	}
	return fmt.Errorf("onnxruntime: %s: %w", op, &kindError{kind: kind, err: err})
}

// Element types, by ONNXTensorElementDataType.
var elemTypes = map[C.int]tensor.DataType{
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:    tensor.FP32,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:    tensor.Uint8,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:     tensor.Int8,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16:   tensor.Uint16,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:    tensor.Int16,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:    tensor.Int32,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:    tensor.Int64,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING:   tensor.Bytes,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:     tensor.Bool,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:  tensor.FP16,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:   tensor.FP64,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32:   tensor.Uint32,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64:   tensor.Uint64,
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: tensor.BF16,
}

// onnxElem is the inverse of elemTypes.
var onnxElem = func() map[tensor.DataType]C.int {
	m := make(map[tensor.DataType]C.int, len(elemTypes))
	for k, v := range elemTypes {
		m[v] = k
	}
	return m
}()

var elemTypeNames = map[C.int]string{
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED:  "undefined",
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64:  "complex64",
	C.ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128: "complex128",
	17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
	21: "uint4", 22: "int4", 23: "float4e2m1", 24: "uint2", 25: "int2",
}

var onnxTypeNames = map[C.int]string{
	C.ONNX_TYPE_UNKNOWN: "unknown", C.ONNX_TYPE_TENSOR: "tensor", C.ONNX_TYPE_SEQUENCE: "sequence",
	C.ONNX_TYPE_MAP: "map", C.ONNX_TYPE_OPAQUE: "opaque", C.ONNX_TYPE_SPARSETENSOR: "sparse tensor",
	C.ONNX_TYPE_OPTIONAL: "optional",
}

// describeUnsupported says why an input or output cannot be carried by the
// protocol, or "" if it can.
func describeUnsupported(onnxType, elemType C.int) string {
	if onnxType != C.ONNX_TYPE_TENSOR {
		n := onnxTypeNames[onnxType]
		if n == "" {
			n = fmt.Sprintf("ONNXType %d", int(onnxType))
		}
		article := "a "
		if strings.ContainsRune("aeiou", rune(n[0])) {
			article = "an "
		}
		return "is " + article + n + ", not a tensor"
	}
	if _, ok := elemTypes[elemType]; ok {
		return ""
	}
	n := elemTypeNames[elemType]
	if n == "" {
		n = fmt.Sprintf("element type %d", int(elemType))
	}
	return "has element type " + n + ", which the protocol has no datatype for"
}
