package rest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// DefaultMaxBodyBytes bounds a request body unless Options says otherwise.
const DefaultMaxBodyBytes = 64 << 20

// maxControlBody bounds the bodies of the small control requests
// (repository index, load, unload).
const maxControlBody = 1 << 20

// maxPooledBuffer: larger buffers are left to the garbage collector rather
// than kept in the pool.
const maxPooledBuffer = 32 << 20

// Options configure NewHandler.
type Options struct {
	// MaxBodyBytes bounds an inference request body; larger ones get 413.
	// 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives one debug line per request and an error per panic.
	// nil means slog.Default().
	Logger *slog.Logger
	// BodyIdleTimeout is how long reading a request body may wait for
	// more bytes before the request fails with 408; 0 means
	// DefaultBodyIdleTimeout. It bounds a stalled upload without capping
	// a slow one that keeps moving.
	BodyIdleTimeout time.Duration
}

// DefaultBodyIdleTimeout is Options.BodyIdleTimeout's default.
const DefaultBodyIdleTimeout = 30 * time.Second

type handler struct {
	svc  oip.Service
	max  int64
	idle time.Duration
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewHandler serves svc over the Open Inference Protocol's REST API; see
// the package documentation for routes and behaviour.
func NewHandler(svc oip.Service, opts Options) http.Handler {
	h := &handler{svc: svc, max: opts.MaxBodyBytes, idle: opts.BodyIdleTimeout, log: opts.Logger, mux: http.NewServeMux()}
	if h.max <= 0 {
		h.max = DefaultMaxBodyBytes
	}
	if h.idle <= 0 {
		h.idle = DefaultBodyIdleTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.log = h.log.With("component", "rest")
	routes := []struct {
		method, path string
		fn           func(http.ResponseWriter, *http.Request) error
	}{
		{"GET", "/v2/health/live", h.live},
		{"GET", "/v2/health/ready", h.ready},
		{"GET", "/v2", h.serverMetadata},
		{"GET", "/v2/models/{m}", h.modelMetadata},
		{"GET", "/v2/models/{m}/versions/{v}", h.modelMetadata},
		{"GET", "/v2/models/{m}/ready", h.modelReady},
		{"GET", "/v2/models/{m}/versions/{v}/ready", h.modelReady},
		{"POST", "/v2/models/{m}/infer", h.infer},
		{"POST", "/v2/models/{m}/versions/{v}/infer", h.infer},
		{"POST", "/v2/repository/index", h.repositoryIndex},
		{"POST", "/v2/repository/models/{m}/load", h.load},
		{"POST", "/v2/repository/models/{m}/unload", h.unload},
		{"GET", "/v2/systemsharedmemory/status", h.shmStatus},
		{"GET", "/v2/systemsharedmemory/region/{r}/status", h.shmStatus},
		{"POST", "/v2/systemsharedmemory/region/{r}/register", h.shmRegister},
		{"POST", "/v2/systemsharedmemory/unregister", h.shmUnregister},
		{"POST", "/v2/systemsharedmemory/region/{r}/unregister", h.shmUnregister},
	}
	for _, rt := range routes {
		h.mux.Handle(rt.method+" "+rt.path, h.handle(rt.fn))
		// The same path without a method catches the other methods: the
		// more specific pattern above wins for its own.
		allow := rt.method
		if allow == "GET" {
			allow = "GET, HEAD"
		}
		h.mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, rt.path, allow))
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	return h
}

// statusWriter remembers whether and what status was written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if sw.status == 0 {
				writeError(sw, http.StatusInternalServerError, "internal error")
			}
		}
		if h.log.Enabled(r.Context(), slog.LevelDebug) {
			h.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", sw.status), slog.Int64("bytes_in", r.ContentLength),
				slog.Duration("duration", time.Since(start)))
		}
	}()
	if refusedUnclean(sw, r) {
		return
	}
	h.mux.ServeHTTP(sw, r)
}

// CleanPaths answers a request whose path has an empty, "." or ".."
// segment with 404 and a JSON error, and passes the others to next.
// net/http's ServeMux would answer such a path with a redirect to its
// cleaned form, which a client that does not follow redirects reads as
// an empty answer, and which would drop a POST's body if followed.
func CleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !refusedUnclean(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// refusedUnclean answers r with the JSON 404 of CleanPaths when its path
// is not its own path.Clean (a trailing slash aside, which ServeMux
// leaves to the patterns), and reports whether it did.
func refusedUnclean(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if p == "" || p == "/" {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") {
		c += "/"
	}
	if c == p {
		return false
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s: the path has an empty, \".\" or \"..\" segment", r.Method, p))
	return true
}

// handle adapts a handler that returns an error: the error becomes the
// JSON error response with the status errdefs gives it.
func (h *handler) handle(fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			code := errdefs.HTTPStatus(err)
			if errors.As(err, new(errStalled)) {
				code = http.StatusRequestTimeout
			}
			if code >= 500 && code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout {
				h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
			}
			writeError(w, code, err.Error())
		}
	})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{errdefs.Clip(msg)})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return errdefs.New(errdefs.ErrInternal, fmt.Sprintf("encoding response: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	return nil
}

func okOr503(w http.ResponseWriter, ok bool) {
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

func (h *handler) live(w http.ResponseWriter, r *http.Request) error {
	okOr503(w, h.svc.Live())
	return nil
}

func (h *handler) ready(w http.ResponseWriter, r *http.Request) error {
	okOr503(w, h.svc.Ready())
	return nil
}

// JSON shapes of the metadata responses.
type (
	serverMetadataJSON struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}
	tensorMetadataJSON struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
	}
	modelMetadataJSON struct {
		Name     string               `json:"name"`
		Versions []string             `json:"versions"`
		Platform string               `json:"platform"`
		Inputs   []tensorMetadataJSON `json:"inputs"`
		Outputs  []tensorMetadataJSON `json:"outputs"`
	}
	indexEntryJSON struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
	}
)

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (h *handler) serverMetadata(w http.ResponseWriter, r *http.Request) error {
	m := h.svc.ServerMetadata()
	return writeJSON(w, serverMetadataJSON{Name: m.Name, Version: m.Version, Extensions: nonNil(m.Extensions)})
}

func tensorMetadataToJSON(ts []oip.TensorMetadata) []tensorMetadataJSON {
	out := make([]tensorMetadataJSON, len(ts))
	for i, t := range ts {
		out[i] = tensorMetadataJSON{Name: t.Name, Datatype: t.DataType.String(), Shape: nonNil(t.Shape)}
	}
	return out
}

func (h *handler) modelMetadata(w http.ResponseWriter, r *http.Request) error {
	m, err := h.svc.ModelMetadata(r.Context(), r.PathValue("m"), r.PathValue("v"))
	if err != nil {
		return err
	}
	return writeJSON(w, modelMetadataJSON{Name: m.Name, Versions: nonNil(m.Versions), Platform: m.Platform,
		Inputs: tensorMetadataToJSON(m.Inputs), Outputs: tensorMetadataToJSON(m.Outputs)})
}

func (h *handler) modelReady(w http.ResponseWriter, r *http.Request) error {
	ok, err := h.svc.ModelReady(r.Context(), r.PathValue("m"), r.PathValue("v"))
	if err != nil {
		return err
	}
	okOr503(w, ok)
	return nil
}

func (h *handler) repositoryIndex(w http.ResponseWriter, r *http.Request) error {
	body, err := h.readControl(w, r)
	if err != nil {
		return err
	}
	var q struct {
		Ready bool `json:"ready"`
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &q); err != nil {
			return invalidf("repository index request is not valid JSON: %v", err)
		}
	}
	entries, err := h.svc.RepositoryIndex(r.Context(), q.Ready)
	if err != nil {
		return err
	}
	out := make([]indexEntryJSON, len(entries))
	for i, e := range entries {
		out[i] = indexEntryJSON(e)
	}
	return writeJSON(w, out)
}

func (h *handler) load(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.LoadModel(r.Context(), r.PathValue("m")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *handler) unload(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.UnloadModel(r.Context(), r.PathValue("m")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// sharedMemory is the service's shared memory capability, or the error a
// server without it answers.
func (h *handler) sharedMemory() (oip.SharedMemory, error) {
	sm, ok := h.svc.(oip.SharedMemory)
	if !ok {
		return nil, oip.ErrNoSharedMemory
	}
	return sm, nil
}

type shmRegionJSON struct {
	Name     string `json:"name,omitempty"`
	Key      string `json:"key"`
	Offset   uint64 `json:"offset"`
	ByteSize uint64 `json:"byte_size"`
}

func (h *handler) shmStatus(w http.ResponseWriter, r *http.Request) error {
	sm, err := h.sharedMemory()
	if err != nil {
		return err
	}
	regions, err := sm.SystemSharedMemoryStatus(r.Context(), r.PathValue("r"))
	if err != nil {
		return err
	}
	out := make([]shmRegionJSON, len(regions))
	for i, g := range regions {
		out[i] = shmRegionJSON(g)
	}
	return writeJSON(w, out)
}

func (h *handler) shmRegister(w http.ResponseWriter, r *http.Request) error {
	sm, err := h.sharedMemory()
	if err != nil {
		return err
	}
	body, err := h.readControl(w, r)
	if err != nil {
		return err
	}
	var q struct {
		Key      *string `json:"key"`
		Offset   uint64  `json:"offset"`
		ByteSize *uint64 `json:"byte_size"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return invalidf("shared memory register request: %v (want {\"key\": \"/name\", \"offset\": 0, \"byte_size\": N})", err)
	}
	if q.Key == nil || q.ByteSize == nil {
		return invalidf("shared memory register request needs \"key\" and \"byte_size\"")
	}
	if err := sm.RegisterSystemSharedMemory(r.Context(), oip.SharedMemoryRegion{Name: r.PathValue("r"), Key: *q.Key, Offset: q.Offset, ByteSize: *q.ByteSize}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *handler) shmUnregister(w http.ResponseWriter, r *http.Request) error {
	sm, err := h.sharedMemory()
	if err != nil {
		return err
	}
	if err := sm.UnregisterSystemSharedMemory(r.Context(), r.PathValue("r")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// bodyError classifies an error reading a request body.
func bodyError(err error, limit int64, idle time.Duration) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("request body exceeds the %d-byte limit", limit))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errStalled{idle}
	}
	return invalidf("reading request body: %v", err)
}

// readControl reads a small control request's body (repository and
// shared-memory calls), within maxControlBody and the idle timeout.
func (h *handler) readControl(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body := h.bodyReader(w, r, maxControlBody)
	b, err := io.ReadAll(body)
	body.done(err)
	if err != nil {
		return nil, bodyError(err, maxControlBody, h.idle)
	}
	return b, nil
}

// errStalled is a request body that stopped arriving: 408.
type errStalled struct{ idle time.Duration }

func (e errStalled) Error() string {
	return fmt.Sprintf("request body stalled: no bytes for %v", e.idle)
}
func (e errStalled) Unwrap() error { return errdefs.ErrInvalid }

// idleReader reads a request body, within a size limit, with the
// connection's read deadline moved idle ahead before each read.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

// bodyReader reads r's body within limit bytes and h.idle between bytes.
func (h *handler) bodyReader(w http.ResponseWriter, r *http.Request, limit int64) *idleReader {
	return &idleReader{r: http.MaxBytesReader(w, r.Body, limit), rc: http.NewResponseController(w), idle: h.idle}
}

func (r *idleReader) Read(p []byte) (int, error) {
	_ = r.rc.SetReadDeadline(time.Now().Add(r.idle))
	return r.r.Read(p)
}

// done ends the body's deadline once it was read without error, handing
// the connection back to the server's own timeouts. After a failed read
// the deadline stays, so that the server's discarding what is left of
// the body cannot wait for ever either.
func (r *idleReader) done(err error) {
	if err == nil {
		_ = r.rc.SetReadDeadline(time.Time{})
	}
}

// Request bodies and response headers are pooled apart, so a small header
// never takes the place of a body buffer (which would then be allocated
// again, and on a machine where fresh pages fault, that is most of its
// cost).
var (
	bodyPool   = sync.Pool{New: func() any { return new([]byte) }}
	headerPool = sync.Pool{New: func() any { return new([]byte) }}
)

func getBuf(p *sync.Pool) *[]byte { return p.Get().(*[]byte) }

func putBuf(p *sync.Pool, b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	*b = (*b)[:0]
	p.Put(b)
}

// readBody reads the whole body, within h.max, into the pooled buffer *bp
// and returns it. *bp keeps the buffer from its first byte (so its whole
// capacity is there for the next request); the body returned may start a
// few bytes in, where its binary section falls on a tensor.Align boundary.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, bp *[]byte, headerLen int) (_ []byte, err error) {
	if r.ContentLength > h.max {
		return nil, errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("request body of %d bytes exceeds the %d-byte limit", r.ContentLength, h.max))
	}
	body := h.bodyReader(w, r, h.max)
	defer func() { body.done(err) }()
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip", "deflate":
		return h.readCompressed(body, enc, bp)
	default:
		return nil, invalidf("Content-Encoding %q is not supported (want gzip, deflate or identity)", enc)
	}
	buf := (*bp)[:0]
	if r.ContentLength >= 0 {
		n := int(r.ContentLength)
		// Place the body so that the binary section (after the JSON
		// header) starts on a tensor.Align boundary: ONNX Runtime's kernels
		// take their aligned paths, and the results match in-process runs
		// bit for bit.
		if cap(buf) < n+tensor.Align {
			buf = make([]byte, 0, n+tensor.Align)
			*bp = buf
		}
		pad := 0
		if headerLen > 0 && headerLen < n {
			addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:1]))) + uintptr(headerLen)
			pad = int((tensor.Align - addr%tensor.Align) % tensor.Align)
		}
		got := buf[pad : pad+n]
		if _, err := io.ReadFull(body, got); err != nil {
			return nil, bodyError(err, h.max, h.idle)
		}
		return got, nil
	}
	return readGrowing(body, bp, func(err error) error { return bodyError(err, h.max, h.idle) })
}

// readGrowing reads r to its end into the pooled buffer *bp, growing it,
// and maps read errors with fail.
func readGrowing(r io.Reader, bp *[]byte, fail func(error) error) ([]byte, error) {
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
			*bp = buf[:0]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fail(err)
		}
	}
}

// readCompressed reads a gzip or deflate (zlib) request body, as Triton
// accepts them, within h.max bytes both as sent and once decompressed: a
// small body may decompress to gigabytes. Inference-Header-Content-Length
// counts the decompressed bytes.
func (h *handler) readCompressed(body io.Reader, enc string, bp *[]byte) ([]byte, error) {
	fail := func(err error) error {
		if e := bodyError(err, h.max, h.idle); !errors.Is(e, errdefs.ErrInvalid) || errors.As(e, new(errStalled)) {
			return e
		}
		return invalidf("%s request body: %v", enc, err)
	}
	var zr io.ReadCloser
	var err error
	if enc == "deflate" {
		zr, err = zlib.NewReader(body)
	} else {
		zr, err = gzip.NewReader(body)
	}
	if err != nil {
		return nil, fail(err)
	}
	defer zr.Close()
	lr := &io.LimitedReader{R: zr, N: h.max + 1}
	b, err := readGrowing(lr, bp, fail)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > h.max {
		return nil, errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("%s request body decompresses to more than the %d-byte limit", enc, h.max))
	}
	return b, nil
}

func (h *handler) infer(w http.ResponseWriter, r *http.Request) error {
	headerLen := 0
	if v := r.Header.Get(HeaderContentLength); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case err != nil:
			return invalidf("%s %q is not an integer", HeaderContentLength, v)
		case n < 0:
			return invalidf("%s %d is negative", HeaderContentLength, n)
		case n > h.max:
			return invalidf("%s %d is larger than the %d-byte body limit", HeaderContentLength, n, h.max)
		}
		headerLen = int(n)
	}
	bp := getBuf(&bodyPool)
	reuse := true
	defer func() {
		if reuse {
			putBuf(&bodyPool, bp)
		}
	}()
	body, err := h.readBody(w, r, bp, headerLen)
	if err != nil {
		return err
	}
	req, err := ParseInferRequest(body, headerLen)
	if err != nil {
		return err
	}
	req.ModelName, req.ModelVersion = r.PathValue("m"), r.PathValue("v")
	if _, ok := h.svc.(oip.SharedMemory); !ok && oip.UsesSharedMemory(req) {
		return oip.ErrNoSharedMemory
	}
	ctx := r.Context()
	if d, _ := oip.RequestTimeout(req.Parameters); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	resp, err := h.svc.Infer(ctx, req)
	if err != nil {
		// The service may still be reading the inputs (work abandoned on a
		// deadline): leave the buffer to the garbage collector.
		reuse = false
		return err
	}
	if resp == nil {
		return errdefs.New(errdefs.ErrInternal, "model returned no response")
	}
	if resp.ModelName == "" {
		resp.ModelName = req.ModelName
	}
	if resp.ModelVersion == "" {
		resp.ModelVersion = req.ModelVersion
	}
	if resp.ID == "" {
		resp.ID = req.ID
	}
	hp := getBuf(&headerPool)
	defer putBuf(&headerPool, hp)
	header, blobs, err := EncodeInferResponse((*hp)[:0], req, resp)
	*hp = header
	if err != nil {
		return err
	}
	total := len(header)
	for _, b := range blobs {
		total += len(b)
	}
	hdr := w.Header()
	if len(blobs) > 0 {
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set(HeaderContentLength, strconv.Itoa(len(header)))
	} else {
		hdr.Set("Content-Type", "application/json")
	}
	hdr.Set("Content-Length", strconv.Itoa(total))
	w.WriteHeader(http.StatusOK)
	// Header, then each raw output straight from its tensor. A write error
	// means the client went away; there is no one left to tell.
	if _, err := w.Write(header); err != nil {
		return nil
	}
	for _, b := range blobs {
		if _, err := w.Write(b); err != nil {
			return nil
		}
	}
	return nil
}
