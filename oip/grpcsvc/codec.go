package grpcsvc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// The tensor codec: gRPC's protobuf codec, except for the raw contents of
// inference requests and responses, which are most of their bytes.
//
//   - Marshalling ModelInferRequest or ModelInferResponse encodes every
//     field but raw_input_contents / raw_output_contents with protobuf, then
//     appends each raw entry's tag and length followed by the tensor's own
//     bytes as a buffer of their own: the tensors are not copied in Go
//     (gRPC copies them once, into its write buffer).
//   - Unmarshalling one reads the message from gRPC's receive buffers field
//     by field: each raw entry is copied once, straight into its own
//     tensorAlign-aligned buffer; every other field is gathered and handed
//     to protobuf. The default codec joins the receive buffers into one
//     (a copy) and protobuf then copies every bytes field (another), at an
//     arbitrary alignment.
//
// The bytes on the wire are what protobuf would write (fields in number
// order), and anything the field walk does not expect (groups, a raw field
// with another wire type) is left to protobuf, so malformed messages fail
// exactly as they do with the default codec. Every length is checked
// against the bytes that remain before anything is allocated for it.

// Field numbers of the raw contents (see TestWireFieldNumbers).
const (
	rawInputField  protowire.Number = 7 // ModelInferRequest.raw_input_contents
	rawOutputField protowire.Number = 6 // ModelInferResponse.raw_output_contents
)

// tensorAlign is the alignment of decoded raw contents: ONNX Runtime takes
// its aligned kernels, as for tensors made in process.
const tensorAlign = tensor.Align

// inlineRaw: raw entries shorter than this are copied into the protobuf
// part rather than referenced, so small tensors do not cost a buffer each.
const inlineRaw = 1 << 10

// Codec is the tensor codec. It names itself "proto", the content subtype
// it reads and writes, so either side may use it or gRPC's default codec.
// ServerOptions installs it on servers; the Client uses it for ModelInfer.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// Name implements encoding.CodecV2.
func (Codec) Name() string { return grpcproto.Name }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *pb.ModelInferRequest:
		if len(m.RawInputContents) == 0 || len(m.ProtoReflect().GetUnknown()) > 0 {
			break
		}
		head := &pb.ModelInferRequest{ModelName: m.ModelName, ModelVersion: m.ModelVersion, Id: m.Id,
			Parameters: m.Parameters, Inputs: m.Inputs, Outputs: m.Outputs}
		return marshalRaw(head, rawInputField, m.RawInputContents)
	case *pb.ModelInferResponse:
		if len(m.RawOutputContents) == 0 || len(m.ProtoReflect().GetUnknown()) > 0 {
			break
		}
		head := &pb.ModelInferResponse{ModelName: m.ModelName, ModelVersion: m.ModelVersion, Id: m.Id,
			Parameters: m.Parameters, Outputs: m.Outputs}
		return marshalRaw(head, rawOutputField, m.RawOutputContents)
	}
	return protoCodec.Marshal(v)
}

// marshalRaw encodes head, which lacks its raw field, and then the raw
// entries as field.
func marshalRaw(head proto.Message, field protowire.Number, raws [][]byte) (mem.BufferSlice, error) {
	b, err := proto.Marshal(head)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	out := make(mem.BufferSlice, 0, 1+2*len(raws))
	for _, r := range raws {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(r)))
		if len(r) < inlineRaw {
			b = append(b, r...)
			continue
		}
		out = append(out, mem.SliceBuffer(b), mem.SliceBuffer(r))
		b = nil
	}
	if len(b) > 0 {
		out = append(out, mem.SliceBuffer(b))
	}
	return out, nil
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *lenient:
		m.err = Codec{}.Unmarshal(data, m.msg)
		return nil
	case *inferRequest:
		return unmarshalRaw(data, m.msg, rawInputField, &m.msg.RawInputContents, &m.bufs)
	case *pb.ModelInferRequest:
		return unmarshalRaw(data, m, rawInputField, &m.RawInputContents, nil)
	case *pb.ModelInferResponse:
		return unmarshalRaw(data, m, rawOutputField, &m.RawOutputContents, nil)
	}
	return protoCodec.Unmarshal(data, v)
}

// ModelInferRequest's repeated fields the walk counts, beside raw_input_contents.
const (
	inputsField  protowire.Number = 5
	outputsField protowire.Number = 6
)

// tooMany is a request with more than oip.MaxTensors entries in a list.
type tooMany struct{ field protowire.Number }

func (e tooMany) Error() string {
	name := map[protowire.Number]string{rawInputField: "raw_input_contents", inputsField: "inputs", outputsField: "outputs"}[e.field]
	return fmt.Sprintf("the request has more than %d %s", oip.MaxTensors, name)
}

// errFallBack: the message has something the field walk leaves to
// protobuf as a whole.
var errFallBack = errors.New("fall back to protobuf")

// unmarshalRaw decodes data into m, whose raw field (field) is *raws. With
// pooled set, raw entries go in buffers from the tensor pool, each added to
// *pooled; otherwise they are allocated.
func unmarshalRaw(data mem.BufferSlice, m proto.Message, field protowire.Number, raws *[][]byte, pooled *[]*[]byte) error {
	r := reader{bufs: data}
	r.left = data.Len()
	var rest []byte
	var got [][]byte
	var nRaw, nInputs, nOutputs int
	err := func() error {
		for r.left > 0 {
			// Tags, lengths and varints are kept as they came (protobuf
			// keeps unknown fields byte for byte).
			mark := len(rest)
			var tag uint64
			var err error
			if rest, tag, err = r.varint(rest); err != nil {
				return err
			}
			num, typ := protowire.DecodeTag(tag)
			if field == rawInputField {
				// Bound the request's lists before allocating them: 64 MiB
				// of one-byte entries would otherwise take gigabytes.
				var n *int
				switch num {
				case rawInputField:
					n = &nRaw
				case inputsField:
					n = &nInputs
				case outputsField:
					n = &nOutputs
				}
				if n != nil {
					if *n++; *n > oip.MaxTensors {
						return tooMany{num}
					}
				}
			}
			if num == field && typ == protowire.BytesType {
				rest = rest[:mark]
				n, err := r.length()
				if err != nil {
					return err
				}
				var buf []byte
				if pooled != nil {
					var h *[]byte
					if h, buf = tensor.GetBuffer(n); h != nil {
						*pooled = append(*pooled, h)
					}
				} else {
					buf = tensor.AlignedBytes(n)
				}
				r.copyTo(buf)
				got = append(got, buf)
				continue
			}
			switch typ {
			case protowire.VarintType:
				if rest, _, err = r.varint(rest); err != nil {
					return err
				}
			case protowire.Fixed32Type, protowire.Fixed64Type:
				n := 4
				if typ == protowire.Fixed64Type {
					n = 8
				}
				if n > r.left {
					return errFallBack
				}
				rest = r.appendTo(rest, n)
			case protowire.BytesType:
				var x uint64
				if rest, x, err = r.varint(rest); err != nil {
					return err
				}
				if x > uint64(r.left) {
					return errFallBack
				}
				rest = r.appendTo(rest, int(x))
			default:
				return errFallBack
			}
		}
		return nil
	}()
	var many tooMany
	if errors.As(err, &many) {
		if pooled != nil {
			tensor.PutBuffers(*pooled)
			*pooled = nil
		}
		return many
	}
	if err != nil {
		// Truncated, or not what the walk expects: protobuf reads the
		// whole message and gives its own error, if any.
		if pooled != nil {
			tensor.PutBuffers(*pooled)
			*pooled = nil
		}
		return protoCodec.Unmarshal(data, m)
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return fmt.Errorf("unmarshal: %w", err)
	}
	*raws = got
	return nil
}

// protoMessage is what a protobuf codec can decode into.
type protoMessage interface {
	ProtoReflect() protoreflect.Message
}

// lenient is a request message to decode whose failure the Codec keeps in
// err instead of returning it: gRPC would answer a codec's error with
// Internal at once, and a message the client garbled is the client's
// error (see decodeAsInvalid). Any other protobuf codec decodes msg
// through ProtoReflect and fails as usual.
type lenient struct {
	msg protoMessage
	err error
}

// ProtoReflect makes a lenient decodable by any protobuf codec.
func (l *lenient) ProtoReflect() protoreflect.Message { return l.msg.ProtoReflect() }

// inferRequest is a ModelInferRequest decoded into pooled buffers (by the
// tensor Codec; with another codec, ProtoReflect lets protobuf decode it
// into msg and bufs stays empty).
type inferRequest struct {
	msg  *pb.ModelInferRequest
	bufs []*[]byte
}

// ProtoReflect makes an inferRequest decodable by any protobuf codec.
func (r *inferRequest) ProtoReflect() protoreflect.Message { return r.msg.ProtoReflect() }

// release gives the buffers back to the pool; r.msg must not be used after.
func (r *inferRequest) release() {
	tensor.PutBuffers(r.bufs)
	r.bufs = nil
	r.msg.RawInputContents = nil
}

// reader walks a BufferSlice without joining it.
type reader struct {
	bufs mem.BufferSlice
	i    int // current buffer
	off  int // offset in it
	left int // bytes not yet read, over all buffers
}

// cur is the unread part of the current buffer, skipping exhausted ones.
func (r *reader) cur() []byte {
	for r.i < len(r.bufs) {
		b := r.bufs[r.i].ReadOnlyData()[r.off:]
		if len(b) > 0 {
			return b
		}
		r.i, r.off = r.i+1, 0
	}
	return nil
}

func (r *reader) advance(n int) {
	r.off += n
	r.left -= n
}

// varint reads one varint, which may span buffers, and appends its bytes
// as they came to dst.
func (r *reader) varint(dst []byte) ([]byte, uint64, error) {
	if b := r.cur(); len(b) >= binary.MaxVarintLen64 || len(b) == r.left {
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, 0, errFallBack
		}
		r.advance(n)
		return append(dst, b[:n]...), x, nil
	}
	var x uint64
	for i := range binary.MaxVarintLen64 {
		b := r.cur()
		if len(b) == 0 {
			return dst, 0, errFallBack
		}
		c := b[0]
		r.advance(1)
		dst = append(dst, c)
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return dst, 0, errFallBack
			}
			return dst, x, nil
		}
	}
	return dst, 0, errFallBack
}

// length reads a length prefix and checks it against the bytes left.
func (r *reader) length() (int, error) {
	var scratch [binary.MaxVarintLen64]byte
	_, x, err := r.varint(scratch[:0])
	if err != nil {
		return 0, err
	}
	if x > uint64(r.left) {
		return 0, errFallBack
	}
	return int(x), nil
}

// copyTo fills dst from the reader; the caller checked len(dst) <= r.left.
func (r *reader) copyTo(dst []byte) {
	for len(dst) > 0 {
		n := copy(dst, r.cur())
		r.advance(n)
		dst = dst[n:]
	}
}

// appendTo appends the next n bytes to dst; the caller checked n <= r.left.
func (r *reader) appendTo(dst []byte, n int) []byte {
	for n > 0 {
		b := r.cur()
		b = b[:min(n, len(b))]
		dst = append(dst, b...)
		r.advance(len(b))
		n -= len(b)
	}
	return dst
}
