package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/tensor"
)

// The relay: a request the proxy offloads over gRPC travels as the bytes
// the application sent, and the answer as the bytes the target sent. The
// proxy reads only what routing needs from them (wire-format field
// numbers of inference.ModelInferRequest and ModelInferResponse below)
// and adds its own response parameters by appending encoded map entries:
// protobuf merges map and repeated fields of concatenated messages, and
// the last value of a singular field wins.

// Field numbers of inference.ModelInferRequest.
const (
	reqModelName    = 1
	reqModelVersion = 2
	reqID           = 3
	reqParameters   = 4
	reqInputs       = 5
	reqRawInputs    = 7
)

// Field numbers of inference.ModelInferResponse.
const (
	respModelName  = 1
	respParameters = 4
	respOutputs    = 5
	respRawOutputs = 6
)

// Field numbers of InferInputTensor / InferOutputTensor, of a map entry
// and of InferParameter.
const (
	tensorName     = 1
	tensorDatatype = 2
	tensorShape    = 3
	tensorContents = 5

	entryKey   = 1
	entryValue = 2

	paramBool   = 1
	paramInt64  = 2
	paramString = 3
	paramDouble = 4
	paramUint64 = 5
)

// frame is a protobuf message kept as its wire bytes. Its buffers hold a
// reference the frame owns; free releases it.
type frame struct {
	data mem.BufferSlice
	// give hands the buffers to gRPC when it marshals the frame (a reply:
	// the handler that built it is gone by then); otherwise marshalling
	// takes a reference of its own and the frame stays usable.
	give bool
}

func (f *frame) free() {
	f.data.Free()
	f.data = nil
}

// relayCodec is grpcsvc's tensor codec (protobuf, tensors without a copy
// in Go), except for *frame, which it passes through as bytes.
type relayCodec struct{}

var _ encoding.CodecV2 = relayCodec{}

var protoCodec encoding.CodecV2 = grpcsvc.Codec{}

func (relayCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return protoCodec.Marshal(v)
	}
	if f.give {
		d := f.data
		f.data = nil
		return d, nil
	}
	f.data.Ref()
	return f.data, nil
}

func (relayCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	data.Ref()
	f.data = data
	return nil
}

// Name is the codec's content subtype: it reads and writes protobuf.
func (relayCodec) Name() string { return grpcproto.Name }

// rawRequest is what routing needs of a ModelInferRequest on the wire.
type rawRequest struct {
	// buf holds the request in one piece (the frame's buffer, or a copy
	// when it came in several).
	buf       mem.Buffer
	model     string
	version   string
	id        string
	params    oip.Parameters
	inputs    int
	wireBytes int64 // as WireBytes counts the inputs
}

func (r *rawRequest) bytes() []byte { return r.buf.ReadOnlyData() }

func (r *rawRequest) free() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
}

// invalidWire is a request that does not parse as a ModelInferRequest.
func invalidWire(what string, err error) error {
	return errdefs.Invalid(fmt.Sprintf("malformed ModelInferRequest: %s: %v", what, err))
}

// parseRequest reads data as a ModelInferRequest: the model, version, id
// and parameters, and each input's name, datatype and shape, with the
// checks the decoding transport makes on them (an input without a name or
// twice, an unknown datatype, raw contents that do not match the shape).
// A message that arrived in several buffers (gRPC reads a large one in
// 16 KiB pieces) is first gathered into one, a copy; in that one buffer
// tensor bytes are looked at in place. data stays owned by the caller and
// r takes its own reference.
func parseRequest(data mem.BufferSlice) (r *rawRequest, err error) {
	r = &rawRequest{buf: data.MaterializeToBuffer(mem.DefaultBufferPool())}
	defer func() {
		if err != nil {
			r.free()
		}
	}()
	b := r.bytes()
	type input struct {
		name     string
		dt       tensor.DataType
		shape    []int64
		contents int // bytes of typed contents
	}
	var ins []input
	var raws [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, invalidWire("field tag", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return r, invalidWire(fmt.Sprintf("field %d", num), protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			switch num {
			case reqModelName, reqModelVersion, reqID, reqParameters, reqInputs, reqRawInputs:
				return r, invalidWire(fmt.Sprintf("field %d", num), fmt.Errorf("wire type %d, want bytes", typ))
			}
			continue
		}
		switch num {
		case reqModelName:
			r.model = string(v)
		case reqModelVersion:
			r.version = string(v)
		case reqID:
			r.id = string(v)
		case reqParameters:
			k, val, err := parseParamEntry(v)
			if err != nil {
				return r, invalidWire("request parameter", err)
			}
			if val == nil {
				return r, errdefs.Invalid(fmt.Sprintf("request parameter %q has no value", k))
			}
			if r.params == nil {
				r.params = oip.Parameters{}
			}
			r.params[k] = val
		case reqInputs:
			in, err := parseTensorHeader(v)
			if err != nil {
				return r, invalidWire(fmt.Sprintf("input %d", len(ins)), err)
			}
			dt, err := tensor.ParseDataType(in.datatype)
			if err != nil {
				return r, fmt.Errorf("input %q: %w", in.name, err)
			}
			ins = append(ins, input{name: in.name, dt: dt, shape: in.shape, contents: in.contents})
		case reqRawInputs:
			raws = append(raws, v)
		}
	}
	if r.model == "" {
		return r, errdefs.Invalid("model_name is required")
	}
	for _, f := range []struct{ name, v string }{{"model_name", r.model}, {"model_version", r.version}, {"id", r.id}} {
		if !utf8.ValidString(f.v) {
			return r, errdefs.Invalid(fmt.Sprintf("malformed ModelInferRequest: %s is not valid UTF-8", f.name))
		}
	}
	if len(raws) > 0 && len(raws) != len(ins) {
		return r, errdefs.Invalid(fmt.Sprintf("raw_input_contents holds %d entries for %d inputs; it needs one per input, in the order of inputs", len(raws), len(ins)))
	}
	seen := make(map[string]bool, len(ins))
	for i, in := range ins {
		if in.name == "" {
			return r, errdefs.Invalid(fmt.Sprintf("input %d has no name", i))
		}
		if seen[in.name] {
			return r, errdefs.Invalid(fmt.Sprintf("input %q appears more than once", in.name))
		}
		seen[in.name] = true
		data := in.contents
		if len(raws) > 0 {
			if in.contents > 0 {
				return r, errdefs.Invalid(fmt.Sprintf("input %q sets contents while the request uses raw_input_contents; use one or the other for all inputs", in.name))
			}
			t := tensor.Tensor{Name: in.name, DataType: in.dt, Shape: in.shape, Data: raws[i]}
			if err := t.Validate(); err != nil {
				return r, fmt.Errorf("input %q raw contents: %w", in.name, err)
			}
			data = len(raws[i])
		} else if _, err := tensor.NumElements(in.shape); err != nil {
			return r, fmt.Errorf("input %q: %w", in.name, err)
		}
		r.wireBytes += int64(data) + int64(len(in.name)) + 8*int64(len(in.shape)) + 16
	}
	r.inputs = len(ins)
	return r, nil
}

// tensorHeader is what parseTensorHeader reads of an input or output.
type tensorHeader struct {
	name, datatype string
	shape          []int64
	contents       int // bytes of the typed contents field
}

// parseTensorHeader reads an InferInputTensor or InferOutputTensor (their
// fields 1, 2, 3 and 5 agree).
func parseTensorHeader(b []byte) (tensorHeader, error) {
	var h tensorHeader
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == tensorName && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			h.name, b = string(v), b[n:]
		case num == tensorDatatype && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			h.datatype, b = string(v), b[n:]
		case num == tensorShape && typ == protowire.BytesType: // packed
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			b = b[n:]
			for len(v) > 0 {
				d, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return h, protowire.ParseError(m)
				}
				h.shape, v = append(h.shape, int64(d)), v[m:]
			}
		case num == tensorShape && typ == protowire.VarintType: // unpacked
			d, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			h.shape, b = append(h.shape, int64(d)), b[n:]
		case num == tensorContents && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			h.contents += len(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return h, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return h, nil
}

// parseParamEntry reads one entry of a map<string, InferParameter>; val
// is nil when the parameter holds no value.
func parseParamEntry(b []byte) (key string, val any, err error) {
	var p []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == entryKey || num == entryValue) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			if num == entryKey {
				key = string(v)
			} else {
				p = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return "", nil, protowire.ParseError(n)
		}
		p = p[n:]
		switch {
		case num == paramBool && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			val, p = protowire.DecodeBool(v), p[n:]
		case num == paramInt64 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			val, p = int64(v), p[n:]
		case num == paramUint64 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			val, p = v, p[n:]
		case num == paramDouble && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			val, p = math.Float64frombits(v), p[n:]
		case num == paramString && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			val, p = string(v), p[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, p)
			if n < 0 {
				return "", nil, protowire.ParseError(n)
			}
			p = p[n:]
		}
	}
	return key, val, nil
}

// rawResponse is what the proxy reads of a target's ModelInferResponse.
type rawResponse struct {
	// server is the time the target reports (queue_us + preprocess_us +
	// compute_us).
	server    int64 // µs
	wireBytes int64 // as WireBytes counts the outputs
}

// maxHeaderField bounds the fields of a response the proxy reads into
// memory (parameters, output metadata); tensor contents are skipped.
const maxHeaderField = 1 << 20

// parseResponse reads the timing parameters and output sizes of a
// ModelInferResponse in data without copying or materializing it: the
// outputs' contents are skipped.
func parseResponse(data mem.BufferSlice) (rawResponse, error) {
	var out rawResponse
	rd := data.Reader()
	defer rd.Close()
	var scratch []byte
	read := func(n uint64) ([]byte, error) {
		if n > maxHeaderField {
			return nil, fmt.Errorf("a %d-byte header field", n)
		}
		if cap(scratch) < int(n) {
			scratch = make([]byte, n)
		}
		scratch = scratch[:n]
		_, err := io.ReadFull(rd, scratch)
		return scratch, err
	}
	outputs := 0
	for rd.Remaining() > 0 {
		tag, err := binary.ReadUvarint(rd)
		if err != nil {
			return out, fmt.Errorf("field tag: %w", err)
		}
		num, typ := protowire.DecodeTag(tag)
		if num <= 0 {
			return out, fmt.Errorf("field number %d", num)
		}
		var n uint64
		switch typ {
		case protowire.VarintType:
			if _, err := binary.ReadUvarint(rd); err != nil {
				return out, fmt.Errorf("field %d: %w", num, err)
			}
			continue
		case protowire.Fixed32Type:
			n = 4
		case protowire.Fixed64Type:
			n = 8
		case protowire.BytesType:
			if n, err = binary.ReadUvarint(rd); err != nil {
				return out, fmt.Errorf("field %d: %w", num, err)
			}
		default:
			return out, fmt.Errorf("field %d: wire type %d", num, typ)
		}
		if n > uint64(rd.Remaining()) {
			return out, fmt.Errorf("field %d: %d bytes, %d left", num, n, rd.Remaining())
		}
		switch {
		case typ == protowire.BytesType && num == respParameters:
			v, err := read(n)
			if err != nil {
				return out, err
			}
			k, val, err := parseParamEntry(v)
			if err != nil {
				return out, fmt.Errorf("parameter: %w", err)
			}
			switch k {
			case "queue_us", "preprocess_us", "compute_us":
				if d, ok := durationValue(val); ok {
					out.server += d.Microseconds()
				}
			}
		case typ == protowire.BytesType && num == respOutputs:
			v, err := read(n)
			if err != nil {
				return out, err
			}
			h, err := parseTensorHeader(v)
			if err != nil {
				return out, fmt.Errorf("output %d: %w", outputs, err)
			}
			out.wireBytes += int64(h.contents) + int64(len(h.name)) + 8*int64(len(h.shape)) + 16
			outputs++
		default:
			if num == respRawOutputs {
				out.wireBytes += int64(n)
			}
			if _, err := rd.Discard(int(n)); err != nil {
				return out, fmt.Errorf("field %d: %w", num, err)
			}
		}
	}
	return out, nil
}

// appendStringField appends field num holding s.
func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendParam appends one entry of a ModelInferResponse's (or Request's:
// both are field 4) parameters map; v is an int64 or a string.
func appendParam(b []byte, key string, v any) []byte {
	var p []byte
	switch v := v.(type) {
	case int64:
		p = protowire.AppendTag(p, paramInt64, protowire.VarintType)
		p = protowire.AppendVarint(p, uint64(v))
	case string:
		p = appendStringField(p, paramString, v)
	case bool:
		p = protowire.AppendTag(p, paramBool, protowire.VarintType)
		p = protowire.AppendVarint(p, protowire.EncodeBool(v))
	default:
		panic(fmt.Sprintf("appendParam: %T", v))
	}
	var e []byte
	e = appendStringField(e, entryKey, key)
	e = protowire.AppendTag(e, entryValue, protowire.BytesType)
	e = protowire.AppendBytes(e, p)
	b = protowire.AppendTag(b, respParameters, protowire.BytesType)
	return protowire.AppendBytes(b, e)
}
