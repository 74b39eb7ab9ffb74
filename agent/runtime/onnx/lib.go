package onnx

/*
#cgo CFLAGS: -I${SRCDIR}/include -O2
#cgo linux LDFLAGS: -ldl
#include <stdlib.h>
#include "ort.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/cache"
)

// EnvLibPath is the environment variable that names an ONNX Runtime library.
const EnvLibPath = "ACCELPOOL_ORT_LIB"

// The C API versions this package asks for: the header's, down to the
// oldest that has every function it calls (GetResizedStringTensorElementBuffer
// arrived in ONNX Runtime 1.16).
const (
	wantAPIVersion = C.ORT_API_VERSION
	minAPIVersion  = 16
)

// ortLogError is ORT_LOGGING_LEVEL_FATAL: every error ONNX Runtime reports
// reaches accelpool as a status, which it returns and logs itself as a
// structured line; ONNX Runtime's own colored stderr copies would only
// duplicate them. Its warnings are mostly about how a model was exported.
const ortLogError = 4

// The process-wide state: the library can be loaded once, and ONNX Runtime
// wants one environment per process.
var lib struct {
	mu         sync.Mutex
	loaded     bool
	path       string
	version    string
	apiVersion int
	env        *C.OrtEnv
	memInfo    *C.OrtMemoryInfo
	alloc      *C.OrtAllocator // ONNX Runtime's default CPU allocator; never released
}

// FindLibrary looks for an ONNX Runtime library that loads, in this order:
// flagPath (the --ort-lib flag) when set, $ACCELPOOL_ORT_LIB when set, the
// copy scripts/setup.sh installs in the cache, then the system's
// libonnxruntime.so.1 and libonnxruntime.so through the dynamic loader's
// search path. tried lists every candidate attempted, in order, as
// "PATH (source)" with ": reason" appended for those that did not load; when
// err is nil the last entry is the one found.
func FindLibrary(flagPath string) (path string, tried []string, err error) {
	type candidate struct{ path, source string }
	var cands []candidate
	if flagPath != "" {
		cands = append(cands, candidate{flagPath, "--ort-lib"})
	}
	if p := os.Getenv(EnvLibPath); p != "" {
		cands = append(cands, candidate{p, EnvLibPath})
	}
	cands = append(cands, candidate{cache.ORTLibPath(), "cache"})
	system := []string{"libonnxruntime.so.1", "libonnxruntime.so"}
	if goruntime.GOOS == "darwin" {
		system = []string{"libonnxruntime.dylib"}
	}
	for _, s := range system {
		cands = append(cands, candidate{s, "system"})
	}

	for _, c := range cands {
		desc := fmt.Sprintf("%s (%s)", c.path, c.source)
		if strings.Contains(c.path, "/") {
			if _, err := os.Stat(c.path); err != nil {
				reason := err.Error()
				if errors.Is(err, os.ErrNotExist) {
					reason = "no such file"
				}
				tried = append(tried, desc+": "+reason)
				continue
			}
		}
		if err := probe(c.path); err != nil {
			tried = append(tried, desc+": "+err.Error())
			continue
		}
		return c.path, append(tried, desc), nil
	}
	return "", tried, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf(
		"no ONNX Runtime library found; tried:\n  %s\nrun scripts/setup.sh (or make setup) to install one, or set %s to a libonnxruntime.so of your own",
		strings.Join(tried, "\n  "), EnvLibPath))
}

// EnvDisableTelemetry is ONNX Runtime's own switch for its usage
// telemetry; Init sets it to 1 unless it is set.
const EnvDisableTelemetry = "ORT_DISABLE_TELEMETRY"

// telemetryWanted reports whether the operator asked for ONNX Runtime's
// telemetry: only an explicit 0, false, no or off in EnvDisableTelemetry
// does; any other value (1, true, …) keeps it off.
func telemetryWanted(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "0", "false", "no", "off":
		return true
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func probe(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	if C.ap_probe(cpath, &buf[0], C.size_t(len(buf))) != 0 {
		return errors.New(C.GoString(&buf[0]))
	}
	return nil
}

// Init loads the ONNX Runtime library at libPath, or the one FindLibrary
// finds when libPath is empty, and creates the process's environment. Only
// one library can be loaded per process: a later call with an empty libPath
// or the same path is a no-op, and one naming another library is an error.
func Init(libPath string) error {
	lib.mu.Lock()
	defer lib.mu.Unlock()
	if lib.loaded {
		if libPath != "" && libPath != lib.path {
			return fmt.Errorf("onnxruntime: %s is already loaded; a process can load one library, not also %s", lib.path, libPath)
		}
		return nil
	}
	path := libPath
	if path == "" {
		p, _, err := FindLibrary("")
		if err != nil {
			return err
		}
		path = p
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	v := C.ap_init(cpath, C.uint32_t(wantAPIVersion), C.uint32_t(minAPIVersion), &buf[0], C.size_t(len(buf)))
	if v == 0 {
		return errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("onnxruntime: load %s: %s (run scripts/setup.sh, or set %s)",
			path, C.GoString(&buf[0]), EnvLibPath))
	}
	// ONNX Runtime 1.30 on Linux and macOS keeps a device ID under
	// ~/.cache/Microsoft, writes /tmp/mat-debug-PID.log and uploads usage
	// events from the moment the environment is created, unless this
	// variable is 1 then. accelpool turns it off unless the operator set
	// the variable, and disables the events unless the operator set it
	// to 0 (or false, no, off).
	if _, set := os.LookupEnv(EnvDisableTelemetry); !set {
		if err := os.Setenv(EnvDisableTelemetry, "1"); err != nil {
			return fmt.Errorf("onnxruntime: setting %s: %w", EnvDisableTelemetry, err)
		}
	}
	var env *C.OrtEnv
	if err := statusError(C.ap_create_env(ortLogError, C.int(boolInt(!telemetryWanted(os.Getenv(EnvDisableTelemetry)))), &env)); err != nil {
		return fmt.Errorf("onnxruntime: create environment: %w", err)
	}
	var mi *C.OrtMemoryInfo
	if err := statusError(C.ap_cpu_memory_info(&mi)); err != nil {
		return fmt.Errorf("onnxruntime: cpu memory info: %w", err)
	}
	var alloc *C.OrtAllocator
	if err := statusError(C.ap_default_allocator(&alloc)); err != nil {
		return fmt.Errorf("onnxruntime: default allocator: %w", err)
	}
	lib.loaded = true
	lib.path = path
	lib.version = C.GoString(C.ap_version_string())
	lib.apiVersion = int(v)
	lib.env = env
	lib.memInfo = mi
	lib.alloc = alloc
	return nil
}

// LibraryInfo reports the loaded library's path, its ONNX Runtime version
// and the C API version in use; ok is false before Init succeeds.
func LibraryInfo() (path, version string, apiVersion int, ok bool) {
	lib.mu.Lock()
	defer lib.mu.Unlock()
	return lib.path, lib.version, lib.apiVersion, lib.loaded
}

// availableProviders lists the execution providers the library was built
// with, by ONNX Runtime's names ("CPUExecutionProvider", ...).
func availableProviders() ([]string, error) {
	var p **C.char
	var n C.int
	if err := statusError(C.ap_available_providers(&p, &n)); err != nil {
		return nil, err
	}
	defer C.ap_release_available_providers(p, n)
	out := make([]string, 0, int(n))
	for _, s := range unsafe.Slice(p, int(n)) {
		out = append(out, C.GoString(s))
	}
	return out, nil
}

// ortError is a failed OrtStatus, read and released.
type ortError struct {
	code int
	msg  string
}

// The OrtErrorCode values this package tells apart.
const (
	ortFail            = 1
	ortInvalidArgument = 2
	ortNoSuchFile      = 3
	ortNoModel         = 4
	ortInvalidProtobuf = 7
	ortModelLoaded     = 8
	ortNotImplemented  = 9
	ortInvalidGraph    = 10
	ortEPFail          = 11
	ortNotFound        = 14
)

var codeNames = map[int]string{
	1: "FAIL", 2: "INVALID_ARGUMENT", 3: "NO_SUCHFILE", 4: "NO_MODEL", 5: "ENGINE_ERROR",
	6: "RUNTIME_EXCEPTION", 7: "INVALID_PROTOBUF", 8: "MODEL_LOADED", 9: "NOT_IMPLEMENTED",
	10: "INVALID_GRAPH", 11: "EP_FAIL", 12: "MODEL_LOAD_CANCELED", 13: "MODEL_REQUIRES_COMPILATION",
	14: "NOT_FOUND",
}

func (e *ortError) Error() string {
	name := codeNames[e.code]
	if name == "" {
		name = fmt.Sprintf("code %d", e.code)
	}
	return fmt.Sprintf("onnxruntime %s: %s", name, e.msg)
}

// statusError turns a status into an error and releases it; nil is success.
func statusError(st *C.OrtStatus) error {
	if st == nil {
		return nil
	}
	e := &ortError{code: int(C.ap_error_code(st)), msg: strings.TrimSpace(C.GoString(C.ap_error_message(st)))}
	C.ap_release_status(st)
	return e
}
