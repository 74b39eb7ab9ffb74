package grpcsvc

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// TimeoutParameter is oip.TimeoutParameter: it bounds an inference, in
// microseconds (Triton's convention). It tightens, never loosens, the gRPC
// deadline.
const TimeoutParameter = oip.TimeoutParameter

func invalidf(format string, args ...any) error {
	return errdefs.Invalid(fmt.Sprintf(format, args...))
}

// decodeInferRequest turns a wire request into an oip.InferRequest. Raw
// contents are used as they are, without a copy; typed contents are encoded
// once into raw little-endian bytes. Every count and size is checked before
// anything is allocated.
func decodeInferRequest(req *pb.ModelInferRequest) (*oip.InferRequest, error) {
	if req.GetModelName() == "" {
		return nil, invalidf("model_name is required")
	}
	raw := req.GetRawInputContents()
	ins := req.GetInputs()
	inSHM := make([]bool, len(ins))
	for i, in := range ins {
		_, inSHM[i] = in.GetParameters()[oip.ParamSharedMemoryRegion]
	}
	slots, err := rawSlots("raw_input_contents", "inputs", inSHM, len(raw))
	if err != nil {
		return nil, err
	}
	if len(raw) > 0 {
		for _, in := range ins {
			if contentsSet(in.GetContents()) != "" {
				return nil, invalidf("input %q sets contents while the request uses raw_input_contents; use one or the other for all inputs", in.GetName())
			}
		}
	}
	params, err := paramsFromProto("request", req.GetParameters())
	if err != nil {
		return nil, err
	}
	out := &oip.InferRequest{
		ModelName:    req.GetModelName(),
		ModelVersion: req.GetModelVersion(),
		ID:           req.GetId(),
		Parameters:   params,
		Inputs:       make([]oip.InferInput, len(ins)),
	}
	seen := make(map[string]bool, len(ins))
	for i, in := range ins {
		name := in.GetName()
		if name == "" {
			return nil, invalidf("input %d has no name", i)
		}
		if seen[name] {
			return nil, invalidf("input %q appears more than once", name)
		}
		seen[name] = true
		where := fmt.Sprintf("input %q", name)
		p, err := paramsFromProto(where, in.GetParameters())
		if err != nil {
			return nil, err
		}
		if inSHM[i] {
			t, err := sharedMemoryInput(where, in, p, slots[i] >= 0 && len(raw[slots[i]]) > 0)
			if err != nil {
				return nil, err
			}
			out.Inputs[i] = oip.InferInput{Tensor: t, Parameters: p}
			continue
		}
		var data []byte
		if slots[i] >= 0 {
			data = raw[slots[i]]
		}
		t, err := decodeTensor("input", name, in.GetDatatype(), in.GetShape(), in.GetContents(), data, len(raw) > 0)
		if err != nil {
			return nil, err
		}
		out.Inputs[i] = oip.InferInput{Tensor: t, Parameters: p}
	}
	if outs := req.GetOutputs(); len(outs) > 0 {
		out.Outputs = make([]oip.RequestedOutput, len(outs))
		clear(seen)
		for i, o := range outs {
			name := o.GetName()
			if name == "" {
				return nil, invalidf("requested output %d has no name", i)
			}
			if seen[name] {
				return nil, invalidf("output %q is requested more than once", name)
			}
			seen[name] = true
			p, err := paramsFromProto(fmt.Sprintf("output %q", name), o.GetParameters())
			if err != nil {
				return nil, err
			}
			out.Outputs[i] = oip.RequestedOutput{Name: name, Parameters: p}
		}
	}
	return out, nil
}

// rawSlots maps tensors to raw contents entries: slot[i] is tensor i's
// entry, or -1. The entries are one per tensor in order, or one per tensor
// not in client shared memory (inSHM), as Triton's clients and server send
// them; none at all when nRaw is 0.
func rawSlots(field, what string, inSHM []bool, nRaw int) ([]int, error) {
	slots := make([]int, len(inSHM))
	nSHM := 0
	for _, s := range inSHM {
		if s {
			nSHM++
		}
	}
	skip := false
	switch {
	case nRaw == 0:
		for i := range slots {
			slots[i] = -1
		}
		return slots, nil
	case nRaw == len(inSHM):
	case nSHM > 0 && nRaw == len(inSHM)-nSHM:
		skip = true
	default:
		return nil, invalidf("%s holds %d entries for %d %s (%d in shared memory); it needs one per %s, in order", field, nRaw, len(inSHM), what, nSHM, strings.TrimSuffix(what, "s"))
	}
	next := 0
	for i := range slots {
		if skip && inSHM[i] {
			slots[i] = -1
			continue
		}
		slots[i] = next
		next++
	}
	return slots, nil
}

// sharedMemoryInput is an input whose bytes are in client shared memory:
// its tensor has no Data (the service reads it), and it must carry none.
func sharedMemoryInput(where string, in *pb.ModelInferRequest_InferInputTensor, p oip.Parameters, hasRaw bool) (tensor.Tensor, error) {
	if _, _, err := oip.SharedMemoryRefOf(where, p); err != nil {
		return tensor.Tensor{}, err
	}
	if hasRaw || contentsSet(in.GetContents()) != "" {
		return tensor.Tensor{}, invalidf("%s has contents and a shared memory region; give one", where)
	}
	return tensorHead("input", in.GetName(), in.GetDatatype(), in.GetShape())
}

// tensorHead is a tensor without its bytes, after checking its datatype
// and shape.
func tensorHead(what, name, datatype string, shape []int64) (tensor.Tensor, error) {
	dt, err := tensor.ParseDataType(datatype)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s %q: %w", what, name, err)
	}
	if _, err := tensor.NumElements(shape); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s %q: %w", what, name, err)
	}
	return tensor.Tensor{Name: name, DataType: dt, Shape: shape}, nil
}

// decodeTensor builds one tensor from its wire form: raw bytes when hasRaw,
// typed contents otherwise. what is "input" or "output", for messages.
func decodeTensor(what, name, datatype string, shape []int64, c *pb.InferTensorContents, raw []byte, hasRaw bool) (tensor.Tensor, error) {
	dt, err := tensor.ParseDataType(datatype)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s %q: %w", what, name, err)
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s %q: %w", what, name, err)
	}
	t := tensor.Tensor{Name: name, DataType: dt, Shape: shape}
	if hasRaw {
		t.Data = raw
		if err := t.Validate(); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%s %q raw contents: %w", what, name, err)
		}
		return t, nil
	}
	t.Data, err = typedToRaw(dt, shape, n, c)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%s %q: %w", what, name, err)
	}
	return t, nil
}

// typedField names the InferTensorContents field that carries dt; "" for
// FP16 and BF16, which have none.
func typedField(dt tensor.DataType) string {
	switch dt {
	case tensor.Bool:
		return "bool_contents"
	case tensor.Int8, tensor.Int16, tensor.Int32:
		return "int_contents"
	case tensor.Int64:
		return "int64_contents"
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		return "uint_contents"
	case tensor.Uint64:
		return "uint64_contents"
	case tensor.FP32:
		return "fp32_contents"
	case tensor.FP64:
		return "fp64_contents"
	case tensor.Bytes:
		return "bytes_contents"
	}
	return ""
}

// contentsSet lists the non-empty fields of c, comma-separated; "" when c is
// nil or empty.
func contentsSet(c *pb.InferTensorContents) string {
	if c == nil {
		return ""
	}
	var set []string
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.BoolContents)},
		{"int_contents", len(c.IntContents)},
		{"int64_contents", len(c.Int64Contents)},
		{"uint_contents", len(c.UintContents)},
		{"uint64_contents", len(c.Uint64Contents)},
		{"fp32_contents", len(c.Fp32Contents)},
		{"fp64_contents", len(c.Fp64Contents)},
		{"bytes_contents", len(c.BytesContents)},
	} {
		if f.n > 0 {
			set = append(set, f.name)
		}
	}
	return strings.Join(set, ", ")
}

// typedLen is the element count of c's field for dt.
func typedLen(dt tensor.DataType, c *pb.InferTensorContents) int {
	switch dt {
	case tensor.Bool:
		return len(c.GetBoolContents())
	case tensor.Int8, tensor.Int16, tensor.Int32:
		return len(c.GetIntContents())
	case tensor.Int64:
		return len(c.GetInt64Contents())
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		return len(c.GetUintContents())
	case tensor.Uint64:
		return len(c.GetUint64Contents())
	case tensor.FP32:
		return len(c.GetFp32Contents())
	case tensor.FP64:
		return len(c.GetFp64Contents())
	case tensor.Bytes:
		return len(c.GetBytesContents())
	}
	return 0
}

// typedToRaw encodes typed contents as raw little-endian bytes after checking
// that only dt's field is used, that it holds exactly n elements and that
// every value fits dt.
func typedToRaw(dt tensor.DataType, shape []int64, n int64, c *pb.InferTensorContents) ([]byte, error) {
	set := contentsSet(c)
	field := typedField(dt)
	switch {
	case set == "" && n == 0:
		return []byte{}, nil
	case set == "" && field == "":
		return nil, invalidf("%s%v has no data: %s has no typed contents field, send it in raw contents", dt, shape, dt)
	case set == "":
		return nil, invalidf("%s%v has no data: set %s or raw contents", dt, shape, field)
	case field == "":
		return nil, invalidf("%s has no typed contents field (got %s); send it in raw contents", dt, set)
	case set != field:
		return nil, invalidf("%s takes %s, got %s", dt, field, set)
	}
	if got := int64(typedLen(dt, c)); got != n {
		return nil, invalidf("%s%v needs %d elements, %s holds %d", dt, shape, n, field, got)
	}
	if err := checkRange(dt, c); err != nil {
		return nil, err
	}
	if dt == tensor.Bytes {
		for i, e := range c.BytesContents {
			if uint64(len(e)) > math.MaxUint32 {
				return nil, invalidf("BYTES element %d is longer than 4 GiB", i)
			}
		}
		return tensor.JoinBytes(c.BytesContents), nil
	}
	size := dt.Size()
	b := make([]byte, int(n)*size)
	le := binary.LittleEndian
	switch dt {
	case tensor.Bool:
		for i, v := range c.BoolContents {
			if v {
				b[i] = 1
			}
		}
	case tensor.Int8:
		for i, v := range c.IntContents {
			b[i] = byte(int8(v))
		}
	case tensor.Int16:
		for i, v := range c.IntContents {
			le.PutUint16(b[2*i:], uint16(int16(v)))
		}
	case tensor.Int32:
		for i, v := range c.IntContents {
			le.PutUint32(b[4*i:], uint32(v))
		}
	case tensor.Int64:
		for i, v := range c.Int64Contents {
			le.PutUint64(b[8*i:], uint64(v))
		}
	case tensor.Uint8:
		for i, v := range c.UintContents {
			b[i] = byte(v)
		}
	case tensor.Uint16:
		for i, v := range c.UintContents {
			le.PutUint16(b[2*i:], uint16(v))
		}
	case tensor.Uint32:
		for i, v := range c.UintContents {
			le.PutUint32(b[4*i:], v)
		}
	case tensor.Uint64:
		for i, v := range c.Uint64Contents {
			le.PutUint64(b[8*i:], v)
		}
	case tensor.FP32:
		for i, v := range c.Fp32Contents {
			le.PutUint32(b[4*i:], math.Float32bits(v))
		}
	case tensor.FP64:
		for i, v := range c.Fp64Contents {
			le.PutUint64(b[8*i:], math.Float64bits(v))
		}
	}
	return b, nil
}

// checkRange rejects int_contents and uint_contents values that do not fit
// the narrower datatypes they stand for.
func checkRange(dt tensor.DataType, c *pb.InferTensorContents) error {
	var lo, hi int64
	switch dt {
	case tensor.Int8:
		lo, hi = math.MinInt8, math.MaxInt8
	case tensor.Int16:
		lo, hi = math.MinInt16, math.MaxInt16
	case tensor.Uint8:
		lo, hi = 0, math.MaxUint8
	case tensor.Uint16:
		lo, hi = 0, math.MaxUint16
	default:
		return nil
	}
	check := func(i int, v int64) error {
		if v < lo || v > hi {
			return invalidf("element %d (%d) is out of range for %s [%d, %d]", i, v, dt, lo, hi)
		}
		return nil
	}
	for i, v := range c.GetIntContents() {
		if err := check(i, int64(v)); err != nil {
			return err
		}
	}
	for i, v := range c.GetUintContents() {
		if err := check(i, int64(v)); err != nil {
			return err
		}
	}
	return nil
}

// encodeInferResponse puts resp on the wire: every output's elements go in
// raw_output_contents, in the order of outputs. The request's id and model
// fill in what resp leaves empty.
func encodeInferResponse(resp *oip.InferResponse, req *oip.InferRequest) (*pb.ModelInferResponse, error) {
	params, err := paramsToProto(resp.Parameters)
	if err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	out := &pb.ModelInferResponse{
		ModelName:         cmp.Or(resp.ModelName, req.ModelName),
		ModelVersion:      cmp.Or(resp.ModelVersion, req.ModelVersion),
		Id:                cmp.Or(resp.ID, req.ID),
		Parameters:        params,
		Outputs:           make([]*pb.ModelInferResponse_InferOutputTensor, len(resp.Outputs)),
		RawOutputContents: make([][]byte, len(resp.Outputs)),
	}
	for i, t := range resp.Outputs {
		if !t.DataType.Valid() {
			return nil, fmt.Errorf("output %q has invalid datatype %v", t.Name, t.DataType)
		}
		out.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{
			Name:     t.Name,
			Datatype: t.DataType.String(),
			Shape:    t.Shape,
		}
		if ref, ok := req.SharedMemoryOutput(t.Name); ok && t.Data == nil {
			// Written into the client's shared memory: an empty raw entry
			// keeps the others at their outputs' positions.
			p := map[string]*pb.InferParameter{
				oip.ParamSharedMemoryRegion: {ParameterChoice: &pb.InferParameter_StringParam{StringParam: ref.Region}},
				oip.ParamSharedMemoryOffset: {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: ref.Offset}},
			}
			if n, err := tensor.ExpectedBytes(t.DataType, t.Shape); err == nil && n >= 0 {
				p[oip.ParamSharedMemoryByteSize] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: n}}
			}
			out.Outputs[i].Parameters = p
			out.RawOutputContents[i] = []byte{}
			continue
		}
		data := t.Data
		if data == nil {
			data = []byte{}
		}
		out.RawOutputContents[i] = data
	}
	return out, nil
}

// EncodeInferRequest puts req on the wire as Client sends it: every
// input's bytes go in raw_input_contents as they are (an empty entry for
// an input in client shared memory).
func EncodeInferRequest(req *oip.InferRequest) (*pb.ModelInferRequest, error) {
	params, err := paramsToProto(req.Parameters)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	out := &pb.ModelInferRequest{
		ModelName:    req.ModelName,
		ModelVersion: req.ModelVersion,
		Id:           req.ID,
		Parameters:   params,
		Inputs:       make([]*pb.ModelInferRequest_InferInputTensor, len(req.Inputs)),
	}
	if len(req.Inputs) > 0 {
		out.RawInputContents = make([][]byte, len(req.Inputs))
	}
	for i, in := range req.Inputs {
		if !in.DataType.Valid() {
			return nil, invalidf("input %q has invalid datatype %v", in.Name, in.DataType)
		}
		p, err := paramsToProto(in.Parameters)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		out.Inputs[i] = &pb.ModelInferRequest_InferInputTensor{
			Name:       in.Name,
			Datatype:   in.DataType.String(),
			Shape:      in.Shape,
			Parameters: p,
		}
		data := in.Data
		if data == nil {
			data = []byte{}
		}
		out.RawInputContents[i] = data
	}
	for _, o := range req.Outputs {
		p, err := paramsToProto(o.Parameters)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", o.Name, err)
		}
		out.Outputs = append(out.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name, Parameters: p})
	}
	return out, nil
}

// decodeInferResponse reads a wire response for the client. It accepts raw
// or typed output contents, so it also reads servers that answer typed.
func decodeInferResponse(resp *pb.ModelInferResponse) (*oip.InferResponse, error) {
	raw := resp.GetRawOutputContents()
	outs := resp.GetOutputs()
	inSHM := make([]bool, len(outs))
	for i, o := range outs {
		_, inSHM[i] = o.GetParameters()[oip.ParamSharedMemoryRegion]
	}
	slots, err := rawSlots("raw_output_contents", "outputs", inSHM, len(raw))
	if err != nil {
		return nil, err
	}
	params, err := paramsFromProto("response", resp.GetParameters())
	if err != nil {
		return nil, err
	}
	out := &oip.InferResponse{
		ModelName:    resp.GetModelName(),
		ModelVersion: resp.GetModelVersion(),
		ID:           resp.GetId(),
		Parameters:   params,
		Outputs:      make([]tensor.Tensor, len(outs)),
	}
	for i, o := range outs {
		if len(raw) > 0 && contentsSet(o.GetContents()) != "" {
			return nil, invalidf("output %q sets contents while the response uses raw_output_contents", o.GetName())
		}
		if inSHM[i] && (slots[i] < 0 || len(raw[slots[i]]) == 0) && contentsSet(o.GetContents()) == "" {
			// Written into the client's shared memory: no bytes here.
			t, err := tensorHead("output", o.GetName(), o.GetDatatype(), o.GetShape())
			if err != nil {
				return nil, err
			}
			out.Outputs[i] = t
			continue
		}
		var data []byte
		if slots[i] >= 0 {
			data = raw[slots[i]]
		}
		t, err := decodeTensor("output", o.GetName(), o.GetDatatype(), o.GetShape(), o.GetContents(), data, len(raw) > 0)
		if err != nil {
			return nil, err
		}
		out.Outputs[i] = t
	}
	return out, nil
}

// paramsFromProto converts wire parameters; nil when there are none. where
// names the owner for messages.
func paramsFromProto(where string, m map[string]*pb.InferParameter) (oip.Parameters, error) {
	if len(m) == 0 {
		return nil, nil
	}
	p := make(oip.Parameters, len(m))
	for k, v := range m {
		switch c := v.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			p[k] = c.BoolParam
		case *pb.InferParameter_Int64Param:
			p[k] = c.Int64Param
		case *pb.InferParameter_Uint64Param:
			p[k] = c.Uint64Param
		case *pb.InferParameter_DoubleParam:
			p[k] = c.DoubleParam
		case *pb.InferParameter_StringParam:
			p[k] = c.StringParam
		default:
			return nil, invalidf("%s parameter %q has no value", where, k)
		}
	}
	return p, nil
}

// paramsToProto converts parameters for the wire. Besides the five kinds of
// the protocol it takes Go's other integer and float types.
func paramsToProto(p oip.Parameters) (map[string]*pb.InferParameter, error) {
	if len(p) == 0 {
		return nil, nil
	}
	m := make(map[string]*pb.InferParameter, len(p))
	for k, v := range p {
		var c pb.InferParameter
		switch v := v.(type) {
		case bool:
			c.ParameterChoice = &pb.InferParameter_BoolParam{BoolParam: v}
		case int64:
			c.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: v}
		case int:
			c.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(v)}
		case int32:
			c.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(v)}
		case int16:
			c.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(v)}
		case int8:
			c.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(v)}
		case uint64:
			c.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: v}
		case uint:
			c.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: uint64(v)}
		case uint32:
			c.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: uint64(v)}
		case uint16:
			c.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: uint64(v)}
		case uint8:
			c.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: uint64(v)}
		case float64:
			c.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: v}
		case float32:
			c.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: float64(v)}
		case string:
			c.ParameterChoice = &pb.InferParameter_StringParam{StringParam: v}
		default:
			return nil, invalidf("parameter %q: unsupported type %T (want bool, integer, float or string)", k, v)
		}
		m[k] = &c
	}
	return m, nil
}

// metadataFromProto converts tensor metadata for the client.
func metadataFromProto(ts []*pb.ModelMetadataResponse_TensorMetadata) ([]oip.TensorMetadata, error) {
	if len(ts) == 0 {
		return nil, nil
	}
	out := make([]oip.TensorMetadata, len(ts))
	for i, t := range ts {
		dt, err := tensor.ParseDataType(t.GetDatatype())
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.GetName(), err)
		}
		out[i] = oip.TensorMetadata{Name: t.GetName(), DataType: dt, Shape: t.GetShape()}
	}
	return out, nil
}

// metadataToProto converts tensor metadata for the wire.
func metadataToProto(ts []oip.TensorMetadata) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.DataType.String(), Shape: t.Shape}
	}
	return out
}
