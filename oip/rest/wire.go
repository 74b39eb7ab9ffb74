package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"reflect"
	"slices"
	"strconv"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// HeaderContentLength is the HTTP header of the binary tensor extension: the
// byte length of the JSON header at the front of the body.
const HeaderContentLength = "Inference-Header-Content-Length"

// Parameters with a meaning on the wire.
const (
	// ParamBinaryDataSize on an input or output: its data follows the JSON
	// header as this many raw bytes.
	ParamBinaryDataSize = "binary_data_size"
	// ParamBinaryData on a requested output: return it raw (bool).
	ParamBinaryData = "binary_data"
	// ParamBinaryDataOutput on a request: return every output raw unless the
	// output says binary_data: false (bool).
	ParamBinaryDataOutput = "binary_data_output"
	// ParamTimeout on a request bounds it, in microseconds (Triton's
	// convention); 0 means no bound.
	ParamTimeout = oip.TimeoutParameter
)

func invalidf(format string, args ...any) error {
	return errdefs.Invalid(fmt.Sprintf(format, args...))
}

// The JSON shapes of requests and responses. Tensor data stays raw JSON so
// that it reaches the streaming codec untouched.
type (
	wireParams map[string]json.RawMessage

	wireTensor struct {
		Name       string          `json:"name"`
		Shape      wireShape       `json:"shape"`
		Datatype   string          `json:"datatype"`
		Parameters wireParams      `json:"parameters"`
		Data       json.RawMessage `json:"data"`
	}

	wireOutput struct {
		Name       string     `json:"name"`
		Parameters wireParams `json:"parameters"`
	}

	wireRequest struct {
		ID         string      `json:"id"`
		Parameters wireParams  `json:"parameters"`
		Inputs     wireTensors `json:"inputs"`
		Outputs    wireOutputs `json:"outputs"`
	}

	// The request's lists, decoded within the bounds of package oip.
	wireTensors []wireTensor
	wireOutputs []wireOutput
	wireShape   []int64

	wireResponse struct {
		ModelName    string       `json:"model_name"`
		ModelVersion string       `json:"model_version"`
		ID           string       `json:"id"`
		Parameters   wireParams   `json:"parameters"`
		Outputs      []wireTensor `json:"outputs"`
	}
)

func (l *wireTensors) UnmarshalJSON(b []byte) (err error) {
	*l, err = decodeList[wireTensor](b, oip.MaxTensors, "tensors")
	return err
}

func (l *wireOutputs) UnmarshalJSON(b []byte) (err error) {
	*l, err = decodeList[wireOutput](b, oip.MaxTensors, "requested outputs")
	return err
}

func (l *wireShape) UnmarshalJSON(b []byte) (err error) {
	*l, err = decodeList[int64](b, oip.MaxRank, "dimensions")
	return err
}

// UnmarshalJSON decodes parameters within oip.MaxParameters, refusing a
// key given twice (encoding/json would keep the last silently).
func (p *wireParams) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		*p = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("parameters must be an object")
	}
	m := wireParams{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if _, dup := m[key]; dup {
			return fmt.Errorf("parameter %q is given twice", key)
		}
		if len(m) == oip.MaxParameters {
			return fmt.Errorf("more than %d parameters", oip.MaxParameters)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		m[key] = v
	}
	*p = m
	return nil
}

// decodeList decodes a JSON array (or null) of at most limit elements.
// It counts them first, in one pass over the bytes without allocating
// (encoding/json has already checked the syntax), so that an array of
// millions fails before any is decoded; within the limit it is plain
// json.Unmarshal.
func decodeList[T any](b []byte, limit int, what string) ([]T, error) {
	if n := countElements(b); n > limit {
		return nil, fmt.Errorf("more than %d %s", limit, what)
	}
	var out []T
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// countElements counts the top-level elements of a syntactically valid
// JSON array; anything else counts 0.
func countElements(b []byte) int {
	depth, n, inString, empty := 0, 0, false, true
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
			continue
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth == 1 {
				continue
			}
		case c == ']' || c == '}':
			depth--
			continue
		case c == ',' && depth == 1:
			n++
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		if depth >= 1 {
			empty = false
		}
	}
	if empty {
		return 0
	}
	return n + 1
}

// paramValue converts one JSON parameter value to the types oip.Parameters
// allows: bool, int64, uint64, float64 or string.
func paramValue(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	switch raw[0] {
	case 't', 'f':
		var b bool
		err := json.Unmarshal(raw, &b)
		return b, err
	case '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case 'n':
		return nil, fmt.Errorf("null is not a parameter value")
	case '[', '{':
		return nil, fmt.Errorf("want a bool, number or string, not an array or object")
	}
	s := string(raw)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("%s is not a usable number", s)
	}
	return f, nil
}

// toParams converts wire parameters, leaving out the keys in skip (which the
// transport consumes itself).
func (p wireParams) toParams(where string, skip ...string) (oip.Parameters, error) {
	if len(p) == 0 {
		return nil, nil
	}
	out := make(oip.Parameters, len(p))
	for k, raw := range p {
		if slices.Contains(skip, k) {
			continue
		}
		v, err := paramValue(raw)
		if err != nil {
			return nil, invalidf("%s parameter %q: %v", where, k, err)
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// boolParam reads an optional bool parameter.
func (p wireParams) boolParam(where, key string) (v, ok bool, err error) {
	raw, ok := p[key]
	if !ok {
		return false, false, nil
	}
	x, err := paramValue(raw)
	b, isBool := x.(bool)
	if err != nil || !isBool {
		return false, false, invalidf("%s parameter %q must be true or false, got %s", where, key, shorten(raw))
	}
	return b, true, nil
}

// sizeParam reads an optional non-negative integer parameter.
func (p wireParams) sizeParam(where, key string) (v int64, ok bool, err error) {
	raw, ok := p[key]
	if !ok {
		return 0, false, nil
	}
	x, err := paramValue(raw)
	n, isInt := x.(int64)
	if err != nil || !isInt || n < 0 {
		return 0, false, invalidf("%s parameter %q must be a non-negative integer, got %s", where, key, shorten(raw))
	}
	return n, true, nil
}

func shorten(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// splitBody checks the header length against the body and returns the JSON
// header and the binary part. headerLen 0 means the whole body is JSON.
func splitBody(body []byte, headerLen int) (header, binary []byte, err error) {
	switch {
	case headerLen < 0:
		return nil, nil, invalidf("%s %d is negative", HeaderContentLength, headerLen)
	case headerLen > len(body):
		return nil, nil, invalidf("%s %d is larger than the %d-byte body", HeaderContentLength, headerLen, len(body))
	case headerLen == 0:
		return body, nil, nil
	}
	return body[:headerLen], body[headerLen:], nil
}

// binaryPart slices the binary section among the tensors that declared a
// binary_data_size, in order, after checking the sizes add up exactly.
func binaryPart(what string, sizes []int64, bin []byte) ([][]byte, error) {
	var total int64
	for _, s := range sizes {
		if s > math.MaxInt64-total {
			return nil, invalidf("%s binary_data_size values overflow", what)
		}
		total += s
	}
	switch {
	case total > 0 && bin == nil:
		return nil, invalidf("%s declare %d bytes in binary_data_size but there is no %s header to say where the JSON ends", what, total, HeaderContentLength)
	case total > int64(len(bin)):
		return nil, invalidf("binary data truncated: %s declare %d bytes in binary_data_size but only %d follow the JSON header", what, total, len(bin))
	case total < int64(len(bin)):
		return nil, invalidf("%d extra trailing bytes: %s declare %d bytes in binary_data_size but %d follow the JSON header", int64(len(bin))-total, what, total, len(bin))
	}
	out := make([][]byte, len(sizes))
	off := int64(0)
	for i, s := range sizes {
		out[i] = bin[off : off+s : off+s]
		off += s
	}
	return out, nil
}

// decodeTensors turns wire tensors into tensors: JSON data through the
// streaming codec, binary data as slices of bin (no copy). kind is "input"
// or "output".
func decodeTensors(kind string, ws []wireTensor, bin []byte) ([]tensor.Tensor, []oip.Parameters, error) {
	ts := make([]tensor.Tensor, len(ws))
	params := make([]oip.Parameters, len(ws))
	binIdx := make([]int, 0, len(ws))
	var sizes []int64
	var seen map[string]bool
	if len(ws) > 8 {
		seen = make(map[string]bool, len(ws))
	}
	for i := range ws {
		w := &ws[i]
		if w.Name == "" {
			return nil, nil, invalidf("%s %d has no name", kind, i)
		}
		if seen != nil {
			if seen[w.Name] {
				return nil, nil, invalidf("%s %q appears twice", kind, w.Name)
			}
			seen[w.Name] = true
		} else {
			for j := range i {
				if ws[j].Name == w.Name {
					return nil, nil, invalidf("%s %q appears twice", kind, w.Name)
				}
			}
		}
		where := fmt.Sprintf("%s %q", kind, w.Name)
		if w.Datatype == "" {
			return nil, nil, invalidf("%s has no datatype", where)
		}
		dt, err := tensor.ParseDataType(w.Datatype)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", where, err)
		}
		if w.Shape == nil {
			return nil, nil, invalidf("%s has no shape", where)
		}
		if _, err := tensor.NumElements(w.Shape); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", where, err)
		}
		size, hasSize, err := w.Parameters.sizeParam(where, ParamBinaryDataSize)
		if err != nil {
			return nil, nil, err
		}
		if params[i], err = w.Parameters.toParams(where, ParamBinaryDataSize); err != nil {
			return nil, nil, err
		}
		hasData := len(w.Data) > 0 && string(w.Data) != "null"
		ts[i] = tensor.Tensor{Name: w.Name, DataType: dt, Shape: w.Shape}
		_, inSHM, err := oip.SharedMemoryRefOf(where, params[i])
		if err != nil {
			return nil, nil, err
		}
		switch {
		case inSHM && (hasData || hasSize):
			return nil, nil, invalidf("%s has data and a shared memory region; give one", where)
		case inSHM:
			// Its bytes are in client shared memory: the service reads them.
		case hasData && hasSize:
			return nil, nil, invalidf("%s has both data and binary_data_size; give one", where)
		case !hasData && !hasSize:
			return nil, nil, invalidf("%s has neither data nor binary_data_size", where)
		case hasData:
			if ts[i].Data, err = tensor.DecodeJSONData(dt, w.Shape, w.Data); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", where, err)
			}
		default:
			want, _ := tensor.ExpectedBytes(dt, w.Shape)
			if want >= 0 && size != want {
				return nil, nil, invalidf("%s: binary_data_size is %d but %s%v needs %d bytes", where, size, dt, w.Shape, want)
			}
			binIdx = append(binIdx, i)
			sizes = append(sizes, size)
		}
	}
	parts, err := binaryPart(kind+"s", sizes, bin)
	if err != nil {
		return nil, nil, err
	}
	for k, i := range binIdx {
		ts[i].Data = parts[k]
		switch ts[i].DataType {
		case tensor.Bytes:
			n, _ := tensor.NumElements(ts[i].Shape)
			if _, err := tensor.CountBytesElements(ts[i].Data, n); err != nil {
				return nil, nil, fmt.Errorf("%s %q: %w", kind, ts[i].Name, err)
			}
		case tensor.Bool:
			for j, b := range ts[i].Data {
				if b > 1 {
					return nil, nil, invalidf("%s %q: BOOL element %d is %d, not 0 or 1", kind, ts[i].Name, j, b)
				}
			}
		}
	}
	return ts, params, nil
}

// ParseInferRequest parses an inference request body. headerLen is the
// value of Inference-Header-Content-Length: the JSON header's length, the
// rest of body being binary input data; 0 means the whole body is JSON.
// Binary inputs alias body. Every error wraps errdefs.ErrInvalid.
//
// ModelName and ModelVersion are left for the caller (they come from the
// URL). Requested outputs carry Binary resolved from binary_data and
// binary_data_output; binary_data_output stays in Parameters as the default
// for outputs the request does not list, and binary_data_size and
// binary_data are consumed.
func ParseInferRequest(body []byte, headerLen int) (*oip.InferRequest, error) {
	header, bin, err := splitBody(body, headerLen)
	if err != nil {
		return nil, err
	}
	if err := checkRequestKeys(header); err != nil {
		return nil, err
	}
	var w wireRequest
	if err := json.Unmarshal(header, &w); err != nil {
		return nil, jsonError("request", err)
	}
	req := &oip.InferRequest{ID: w.ID}
	if req.Parameters, err = w.Parameters.toParams("request"); err != nil {
		return nil, err
	}
	binaryAll, _, err := w.Parameters.boolParam("request", ParamBinaryDataOutput)
	if err != nil {
		return nil, err
	}
	if _, err := oip.RequestTimeout(req.Parameters); err != nil {
		return nil, err
	}
	ts, params, err := decodeTensors("input", w.Inputs, bin)
	if err != nil {
		return nil, err
	}
	req.Inputs = make([]oip.InferInput, len(ts))
	for i := range ts {
		req.Inputs[i] = oip.InferInput{Tensor: ts[i], Parameters: params[i]}
	}
	if len(w.Outputs) > 0 {
		req.Outputs = make([]oip.RequestedOutput, len(w.Outputs))
	}
	for i, o := range w.Outputs {
		if o.Name == "" {
			return nil, invalidf("requested output %d has no name", i)
		}
		where := fmt.Sprintf("output %q", o.Name)
		b, ok, err := o.Parameters.boolParam(where, ParamBinaryData)
		if err != nil {
			return nil, err
		}
		if !ok {
			b = binaryAll
		}
		p, err := o.Parameters.toParams(where, ParamBinaryData)
		if err != nil {
			return nil, err
		}
		req.Outputs[i] = oip.RequestedOutput{Name: o.Name, Binary: b, Parameters: p}
	}
	return req, nil
}

// jsonError explains why encoding/json refused a request or response.
func jsonError(what string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return invalidf("malformed %s JSON: want an object, got %s", what, te.Value)
		}
		want := te.Type.Kind().String()
		switch te.Type.Kind() {
		case reflect.Slice:
			want = "array"
		case reflect.Map, reflect.Struct:
			want = "object"
		}
		return invalidf("malformed %s JSON: field %q: %s is not a valid %s", what, te.Field, te.Value, want)
	}
	return invalidf("malformed %s JSON: %v", what, err)
}

// binaryChoice tells, per output name, whether the response carries it raw.
func binaryChoice(req *oip.InferRequest) func(name string) bool {
	if req == nil {
		return func(string) bool { return false }
	}
	def, _ := req.Parameters[ParamBinaryDataOutput].(bool)
	return func(name string) bool {
		for i := range req.Outputs {
			if req.Outputs[i].Name == name {
				return req.Outputs[i].Binary
			}
		}
		return def
	}
}

// EncodeInferResponse appends the JSON of resp to dst and returns it with
// the raw output data that follows it on the wire (aliasing the outputs, not
// copied). req says which outputs go raw: its requested outputs' Binary, and
// binary_data_output for the rest; a nil req means all JSON. With no raw
// outputs the JSON is the whole body; otherwise it is the header of an
// application/octet-stream body and its length goes in
// Inference-Header-Content-Length.
//
// An output that fails tensor validation is a server fault (ErrInternal); a
// BYTES output that is not UTF-8 and was not asked for raw is ErrInvalid,
// with a message telling the client to ask for binary_data.
func EncodeInferResponse(dst []byte, req *oip.InferRequest, resp *oip.InferResponse) (header []byte, blobs net.Buffers, err error) {
	isBinary := binaryChoice(req)
	dst = append(dst, `{"model_name":`...)
	dst = tensor.AppendJSONString(dst, resp.ModelName)
	if resp.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = tensor.AppendJSONString(dst, resp.ModelVersion)
	}
	if resp.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = tensor.AppendJSONString(dst, resp.ID)
	}
	if len(resp.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		if dst, err = appendParams(dst, resp.Parameters, "", 0); err != nil {
			return dst, nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("response parameters: %v", err))
		}
	}
	dst = append(dst, `,"outputs":[`...)
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if ref, ok := req.SharedMemoryOutput(o.Name); ok && o.Data == nil {
			// Written into the client's shared memory: no data here.
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendTensorHead(dst, o)
			dst = append(dst, `,"parameters":{"shared_memory_region":`...)
			dst = tensor.AppendJSONString(dst, ref.Region)
			dst = append(dst, `,"shared_memory_offset":`...)
			dst = strconv.AppendInt(dst, ref.Offset, 10)
			if n, err := tensor.ExpectedBytes(o.DataType, o.Shape); err == nil && n >= 0 {
				dst = append(dst, `,"shared_memory_byte_size":`...)
				dst = strconv.AppendInt(dst, n, 10)
			}
			dst = append(dst, "}}"...)
			continue
		}
		if err := o.Validate(); err != nil {
			return dst, nil, errdefs.New(errdefs.ErrInternal, fmt.Sprintf("model returned a bad output: %v", err))
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTensorHead(dst, o)
		if isBinary(o.Name) {
			dst = append(dst, `,"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(len(o.Data)), 10)
			dst = append(dst, "}}"...)
			blobs = append(blobs, o.Data)
			continue
		}
		dst = append(dst, `,"data":`...)
		if dst, err = tensor.AppendJSONData(dst, o); err != nil {
			return dst, nil, err
		}
		dst = append(dst, '}')
	}
	dst = append(dst, "]}"...)
	return dst, blobs, nil
}

// appendTensorHead writes `{"name":..,"datatype":..,"shape":[..]` (open).
func appendTensorHead(dst []byte, t *tensor.Tensor) []byte {
	dst = append(dst, `{"name":`...)
	dst = tensor.AppendJSONString(dst, t.Name)
	dst = append(dst, `,"datatype":"`...)
	dst = append(dst, t.DataType.String()...)
	dst = append(dst, `","shape":[`...)
	for j, d := range t.Shape {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

// encodeMode says how EncodeInferRequest carries input data.
type encodeMode int

const (
	jsonOnly      encodeMode = iota // every input as JSON; fail if one cannot be
	jsonPreferred                   // JSON, but raw for BYTES JSON cannot carry
	binaryInputs                    // every input raw
)

// EncodeInferRequest appends the JSON of req to dst and returns it with the
// raw input data that follows it (aliasing the inputs). With binary set
// every input travels raw; otherwise inputs are JSON, except BYTES inputs
// that are not UTF-8, which go raw since JSON cannot carry them. When blobs
// is non-empty the JSON is a header whose length goes in
// Inference-Header-Content-Length. Requested outputs ask for binary_data
// when their Binary is set.
func EncodeInferRequest(dst []byte, req *oip.InferRequest, binary bool) (header []byte, blobs net.Buffers, err error) {
	mode := jsonPreferred
	if binary {
		mode = binaryInputs
	}
	return encodeRequest(dst, req, mode)
}

// EncodeInferRequestJSON encodes req as a JSON body with every input's data
// inline, for printing or for clients without the binary extension. A BYTES
// input that is not UTF-8 is an error.
func EncodeInferRequestJSON(req *oip.InferRequest) ([]byte, error) {
	b, _, err := encodeRequest(nil, req, jsonOnly)
	return b, err
}

func encodeRequest(dst []byte, req *oip.InferRequest, mode encodeMode) ([]byte, net.Buffers, error) {
	var blobs net.Buffers
	var err error
	dst = append(dst, '{')
	if req.ID != "" {
		dst = append(dst, `"id":`...)
		dst = tensor.AppendJSONString(dst, req.ID)
		dst = append(dst, ',')
	}
	if len(req.Parameters) > 0 {
		dst = append(dst, `"parameters":`...)
		if dst, err = appendParams(dst, req.Parameters, "", 0); err != nil {
			return dst, nil, errdefs.Invalid(fmt.Sprintf("request parameters: %v", err))
		}
		dst = append(dst, ',')
	}
	dst = append(dst, `"inputs":[`...)
	for i := range req.Inputs {
		in := &req.Inputs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		if _, ok := in.Parameters[oip.ParamSharedMemoryRegion]; ok && in.Data == nil {
			// In client shared memory: the parameters say where.
			dst = appendTensorHead(dst, &in.Tensor)
			dst = append(dst, `,"parameters":`...)
			if dst, err = appendParams(dst, in.Parameters, "", 0); err != nil {
				return dst, nil, errdefs.Invalid(fmt.Sprintf("input %q parameters: %v", in.Name, err))
			}
			dst = append(dst, '}')
			continue
		}
		if err := in.Validate(); err != nil {
			return dst, nil, err
		}
		dst = appendTensorHead(dst, &in.Tensor)
		raw := mode == binaryInputs
		var js []byte
		if !raw {
			js, err = tensor.AppendJSONData(nil, &in.Tensor)
			if err != nil {
				if mode == jsonOnly || in.DataType != tensor.Bytes {
					return dst, nil, fmt.Errorf("input %q: %w", in.Name, err)
				}
				raw = true
			}
		}
		if raw {
			dst = append(dst, `,"parameters":`...)
			if dst, err = appendParams(dst, in.Parameters, ParamBinaryDataSize, int64(len(in.Data))); err != nil {
				return dst, nil, errdefs.Invalid(fmt.Sprintf("input %q parameters: %v", in.Name, err))
			}
			blobs = append(blobs, in.Data)
		} else {
			if len(in.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				if dst, err = appendParams(dst, in.Parameters, "", 0); err != nil {
					return dst, nil, errdefs.Invalid(fmt.Sprintf("input %q parameters: %v", in.Name, err))
				}
			}
			dst = append(dst, `,"data":`...)
			dst = append(dst, js...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if len(req.Outputs) > 0 {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = tensor.AppendJSONString(dst, o.Name)
			p := o.Parameters
			if o.Binary {
				p = maps.Clone(p)
				if p == nil {
					p = oip.Parameters{}
				}
				p[ParamBinaryData] = true
			}
			if len(p) > 0 {
				dst = append(dst, `,"parameters":`...)
				if dst, err = appendParams(dst, p, "", 0); err != nil {
					return dst, nil, errdefs.Invalid(fmt.Sprintf("output %q parameters: %v", o.Name, err))
				}
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	return dst, blobs, nil
}

// ParseInferResponse parses an inference response body, the client side of
// EncodeInferResponse. headerLen is the response's
// Inference-Header-Content-Length (0 when absent). Raw outputs alias body.
func ParseInferResponse(body []byte, headerLen int) (*oip.InferResponse, error) {
	header, bin, err := splitBody(body, headerLen)
	if err != nil {
		return nil, err
	}
	var w wireResponse
	if err := json.Unmarshal(header, &w); err != nil {
		return nil, jsonError("response", err)
	}
	resp := &oip.InferResponse{ModelName: w.ModelName, ModelVersion: w.ModelVersion, ID: w.ID}
	if resp.Parameters, err = w.Parameters.toParams("response"); err != nil {
		return nil, err
	}
	if resp.Outputs, _, err = decodeTensors("output", w.Outputs, bin); err != nil {
		return nil, err
	}
	return resp, nil
}

// appendParams writes p as a JSON object with sorted keys; extraKey, when
// not empty, is written (replacing any entry of that name) with extraVal.
func appendParams(dst []byte, p oip.Parameters, extraKey string, extraVal int64) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	for _, k := range slices.Sorted(maps.Keys(p)) {
		if k == extraKey {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = tensor.AppendJSONString(dst, k)
		dst = append(dst, ':')
		switch v := p[k].(type) {
		case bool:
			dst = strconv.AppendBool(dst, v)
		case int64:
			dst = strconv.AppendInt(dst, v, 10)
		case int:
			dst = strconv.AppendInt(dst, int64(v), 10)
		case int32:
			dst = strconv.AppendInt(dst, int64(v), 10)
		case uint64:
			dst = strconv.AppendUint(dst, v, 10)
		case uint32:
			dst = strconv.AppendUint(dst, uint64(v), 10)
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return dst, fmt.Errorf("parameter %q is %v, which JSON cannot carry", k, v)
			}
			dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
		case float32:
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return dst, fmt.Errorf("parameter %q is %v, which JSON cannot carry", k, v)
			}
			dst = strconv.AppendFloat(dst, float64(v), 'g', -1, 32)
		case string:
			dst = tensor.AppendJSONString(dst, v)
		default:
			return dst, fmt.Errorf("parameter %q has unsupported type %T (want bool, integer, float or string)", k, v)
		}
	}
	if extraKey != "" {
		if !first {
			dst = append(dst, ',')
		}
		dst = tensor.AppendJSONString(dst, extraKey)
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, extraVal, 10)
	}
	return append(dst, '}'), nil
}
