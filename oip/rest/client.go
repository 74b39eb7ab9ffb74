package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Binary sends every input in the binary tensor extension and asks for
	// every output the same way. Without it inputs go as JSON (BYTES that
	// are not UTF-8 excepted) and outputs come back as each RequestedOutput
	// asks.
	Binary bool
	// HTTPClient makes the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// Client is an oip.Service backed by a remote server's REST API. Errors
// come back wrapping the errdefs sentinel matching the HTTP status, so a
// remote failure reads like a local one; a server that cannot be reached is
// errdefs.ErrUnavailable.
type Client struct {
	base string
	opts ClientOptions
	hc   *http.Client
}

var _ oip.Service = (*Client)(nil)

// maxErrorBody bounds how much of an error response the client reads.
const maxErrorBody = 1 << 20

// NewClient returns a client for the server at baseURL
// (e.g. "http://127.0.0.1:8000").
func NewClient(baseURL string, opts ClientOptions) *Client {
	hc := opts.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), opts: opts, hc: hc}
}

func modelPath(name, version string) string {
	p := "/v2/models/" + url.PathEscape(name)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

// do sends one request. A non-2xx answer other than those in okCodes comes
// back as an error; the caller closes the body of what it gets.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, header http.Header, okCodes ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("%s %s: %v", method, path, err))
	}
	maps.Copy(req.Header, header)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctxErr)
		}
		return nil, fmt.Errorf("%s %s: %w: %w", method, path, errdefs.ErrUnavailable, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	for _, code := range okCodes {
		if resp.StatusCode == code {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, responseError(resp)
}

// responseError reads {"error": "..."} from a failed response.
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	} else if s := strings.TrimSpace(string(b)); s != "" {
		msg = s
	} else {
		msg = resp.Status
	}
	return errdefs.FromHTTP(resp.StatusCode, msg)
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return errdefs.New(errdefs.ErrInternal, fmt.Sprintf("GET %s: bad response: %v", path, err))
	}
	return nil
}

// status reports whether path answers 200 (true) or 503 (false).
func (c *Client) status(ctx context.Context, path string) (bool, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, http.StatusServiceUnavailable)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// ServerMetadata implements oip.Service; a failure gives the zero value.
func (c *Client) ServerMetadata() oip.ServerMetadata {
	var m serverMetadataJSON
	if err := c.getJSON(context.Background(), "/v2", &m); err != nil {
		return oip.ServerMetadata{}
	}
	return oip.ServerMetadata{Name: m.Name, Version: m.Version, Extensions: m.Extensions}
}

// Live implements oip.Service.
func (c *Client) Live() bool {
	ok, err := c.status(context.Background(), "/v2/health/live")
	return err == nil && ok
}

// Ready implements oip.Service.
func (c *Client) Ready() bool {
	ok, err := c.status(context.Background(), "/v2/health/ready")
	return err == nil && ok
}

func tensorMetadataFromJSON(ts []tensorMetadataJSON) ([]oip.TensorMetadata, error) {
	if len(ts) == 0 {
		return nil, nil
	}
	out := make([]oip.TensorMetadata, len(ts))
	for i, t := range ts {
		dt, err := tensor.ParseDataType(t.Datatype)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		out[i] = oip.TensorMetadata{Name: t.Name, DataType: dt, Shape: t.Shape}
	}
	return out, nil
}

// ModelMetadata implements oip.Service.
func (c *Client) ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error) {
	var m modelMetadataJSON
	if err := c.getJSON(ctx, modelPath(name, version), &m); err != nil {
		return oip.ModelMetadata{}, err
	}
	in, err := tensorMetadataFromJSON(m.Inputs)
	if err != nil {
		return oip.ModelMetadata{}, err
	}
	out, err := tensorMetadataFromJSON(m.Outputs)
	if err != nil {
		return oip.ModelMetadata{}, err
	}
	return oip.ModelMetadata{Name: m.Name, Versions: m.Versions, Platform: m.Platform, Inputs: in, Outputs: out}, nil
}

// ModelReady implements oip.Service.
func (c *Client) ModelReady(ctx context.Context, name, version string) (bool, error) {
	return c.status(ctx, modelPath(name, version)+"/ready")
}

// Infer implements oip.Service. A deadline on ctx also travels as the
// request's "timeout" parameter (unless it has one) so the server can stop
// in time. Returned tensors alias one buffer holding the response body.
func (c *Client) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	r := *req
	if dl, ok := ctx.Deadline(); ok {
		if _, set := r.Parameters[ParamTimeout]; !set {
			r.Parameters = maps.Clone(r.Parameters)
			if r.Parameters == nil {
				r.Parameters = oip.Parameters{}
			}
			r.Parameters[ParamTimeout] = max(int64(time.Until(dl)/time.Microsecond), 1)
		}
	}
	if c.opts.Binary {
		r.Parameters = maps.Clone(r.Parameters)
		if r.Parameters == nil {
			r.Parameters = oip.Parameters{}
		}
		r.Parameters[ParamBinaryDataOutput] = true
		r.Outputs = make([]oip.RequestedOutput, len(req.Outputs))
		for i, o := range req.Outputs {
			o.Binary = true
			r.Outputs[i] = o
		}
	}
	header, blobs, err := EncodeInferRequest(nil, &r, c.opts.Binary)
	if err != nil {
		return nil, err
	}
	size := int64(len(header))
	for _, b := range blobs {
		size += int64(len(b))
	}
	h := http.Header{}
	if len(blobs) > 0 {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(HeaderContentLength, strconv.Itoa(len(header)))
	} else {
		h.Set("Content-Type", "application/json")
	}
	body := append(net.Buffers{header}, blobs...)
	bufs := body // consumed by reading; body stays whole for GetBody
	resp, err := c.doBody(ctx, modelPath(req.ModelName, req.ModelVersion)+"/infer", &bufs, body, size, h)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAll(resp)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("reading inference response: %w", ctxErr)
		}
		return nil, fmt.Errorf("reading inference response: %w: %w", errdefs.ErrUnavailable, err)
	}
	hl := 0
	if v := resp.Header.Get(HeaderContentLength); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("server sent a bad %s %q", HeaderContentLength, v))
		}
		hl = n
	}
	out, err := ParseInferResponse(data, hl)
	if err != nil {
		// The server's answer, not the caller's request, is at fault.
		return nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("bad inference response: %v", err))
	}
	return out, nil
}

// doBody posts a body made of several buffers without joining them; GetBody
// lets the transport send it again on a retry.
func (c *Client) doBody(ctx context.Context, path string, bufs *net.Buffers, whole net.Buffers, size int64, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bufs)
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("POST %s: %v", path, err))
	}
	req.ContentLength = size
	req.GetBody = func() (io.ReadCloser, error) {
		again := append(net.Buffers(nil), whole...)
		return io.NopCloser(&again), nil
	}
	req.Header = h
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("POST %s: %w", path, ctxErr)
		}
		return nil, fmt.Errorf("POST %s: %w: %w", path, errdefs.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

// readAll reads a response body, in one allocation when its length is known.
func readAll(resp *http.Response) ([]byte, error) {
	if resp.ContentLength >= 0 {
		b := make([]byte, resp.ContentLength)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(resp.Body)
}

// RepositoryIndex implements oip.Service.
func (c *Client) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	body := []byte(`{}`)
	if readyOnly {
		body = []byte(`{"ready":true}`)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v2/repository/index", bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var entries []indexEntryJSON
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("bad repository index response: %v", err))
	}
	out := make([]oip.ModelIndexEntry, len(entries))
	for i, e := range entries {
		out[i] = oip.ModelIndexEntry(e)
	}
	return out, nil
}

func (c *Client) repositoryAction(ctx context.Context, name, action string) error {
	return c.post(ctx, "/v2/repository/models/"+url.PathEscape(name)+"/"+action, http.NoBody)
}

// post sends body to path and expects 200 with nothing to read.
func (c *Client) post(ctx context.Context, path string, body io.Reader) error {
	resp, err := c.do(ctx, http.MethodPost, path, body, nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return resp.Body.Close()
}

// LoadModel implements oip.Service.
func (c *Client) LoadModel(ctx context.Context, name string) error {
	return c.repositoryAction(ctx, name, "load")
}

// UnloadModel implements oip.Service.
func (c *Client) UnloadModel(ctx context.Context, name string) error {
	return c.repositoryAction(ctx, name, "unload")
}

// The client's shared memory calls are named apart from oip.SharedMemory
// on purpose: a Client is an oip.Service, and a transport serving one (a
// relay) must not offer regions that live on the far machine.

// SharedMemoryRegister registers a system shared memory region.
func (c *Client) SharedMemoryRegister(ctx context.Context, r oip.SharedMemoryRegion) error {
	body, err := json.Marshal(shmRegionJSON{Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize})
	if err != nil {
		return err
	}
	return c.post(ctx, "/v2/systemsharedmemory/region/"+url.PathEscape(r.Name)+"/register", bytes.NewReader(body))
}

// SharedMemoryUnregister unregisters one region, or all with "".
func (c *Client) SharedMemoryUnregister(ctx context.Context, name string) error {
	path := "/v2/systemsharedmemory/unregister"
	if name != "" {
		path = "/v2/systemsharedmemory/region/" + url.PathEscape(name) + "/unregister"
	}
	return c.post(ctx, path, http.NoBody)
}

// SharedMemoryStatus lists one region, or all with "", by name.
func (c *Client) SharedMemoryStatus(ctx context.Context, name string) ([]oip.SharedMemoryRegion, error) {
	path := "/v2/systemsharedmemory/status"
	if name != "" {
		path = "/v2/systemsharedmemory/region/" + url.PathEscape(name) + "/status"
	}
	var rs []shmRegionJSON
	if err := c.getJSON(ctx, path, &rs); err != nil {
		return nil, err
	}
	out := make([]oip.SharedMemoryRegion, len(rs))
	for i, r := range rs {
		out[i] = oip.SharedMemoryRegion(r)
	}
	return out, nil
}
