package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/tensor"
)

// The load generator: what the served modes time. Like Triton's
// perf_analyzer, it encodes each request once and sends the same bytes
// again and again, and reads each answer only as far as checking that it
// is one: the status, then every output present with the byte count of
// the answer that checkSame compared, element by element, with the
// in-process outputs before the measurements began. What it still costs
// (the transport's copies and system calls on the client's side) runs on
// the same CPUs as the server.

// wireOutputs are the byte counts of a checked answer's outputs, in order.
type wireOutputs []int

func outputSizes(ts []tensor.Tensor) wireOutputs {
	w := make(wireOutputs, len(ts))
	for i, t := range ts {
		w[i] = len(t.Data)
	}
	return w
}

// rawMsg is a protobuf message kept as its wire bytes.
type rawMsg struct {
	send []byte          // a request, encoded once
	recv mem.BufferSlice // an answer, as it came
}

// rawCodec passes rawMsg through as bytes (the content subtype stays
// "proto": the server reads and writes protobuf).
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Name() string { return grpcproto.Name }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m.send)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec cannot unmarshal %T", v)
	}
	data.Ref()
	m.recv = data
	return nil
}

// grpcLoad sends pre-encoded ModelInferRequests over conn.
type grpcLoad struct {
	conn *grpc.ClientConn
	// reqs are the encoded requests; each caller (worker) takes the next
	// in turn (with shared memory, each names its own output slot).
	reqs [][]byte
	next atomic.Uint64
	want wireOutputs
}

func newGRPCLoad(conn *grpc.ClientConn, model string, inputs []tensor.Tensor, want wireOutputs) (*grpcLoad, error) {
	req := &pb.ModelInferRequest{ModelName: model}
	for _, t := range inputs {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: t.DataType.String(), Shape: t.Shape})
		req.RawInputContents = append(req.RawInputContents, t.Data)
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	return &grpcLoad{conn: conn, reqs: [][]byte{b}, want: want}, nil
}

// call returns a callFunc with its own scratch buffer for answers.
func (g *grpcLoad) call() callFunc {
	var scratch []byte
	req := g.reqs[(g.next.Add(1)-1)%uint64(len(g.reqs))]
	return func(ctx context.Context) error {
		out := &rawMsg{}
		err := g.conn.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, &rawMsg{send: req}, out, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			return err
		}
		scratch = scratch[:0]
		for _, b := range out.recv {
			scratch = append(scratch, b.ReadOnlyData()...)
		}
		out.recv.Free()
		return checkGRPCAnswer(scratch, g.want)
	}
}

// checkGRPCAnswer checks that b is a ModelInferResponse whose
// raw_output_contents have the sizes want.
func checkGRPCAnswer(b []byte, want wireOutputs) error {
	const rawOutputs = 6 // ModelInferResponse.raw_output_contents
	var got wireOutputs
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad answer: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == rawOutputs && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("bad answer: %w", protowire.ParseError(n))
			}
			got = append(got, len(v))
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("bad answer: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("answer's raw outputs hold %v bytes, the checked answer's %v", got, want)
	}
	return nil
}

// restLoad posts one pre-encoded binary-extension request.
type restLoad struct {
	hc        *http.Client
	url       string
	body      []byte
	headerLen string
	want      int // binary bytes in the answer
}

func newRESTLoad(hc *http.Client, base, model string, inputs []tensor.Tensor, want wireOutputs) (*restLoad, error) {
	// What rest.Client sends with Binary set: inputs and outputs in the
	// binary extension.
	req := &oip.InferRequest{ModelName: model, Parameters: oip.Parameters{rest.ParamBinaryDataOutput: true}}
	for _, t := range inputs {
		req.Inputs = append(req.Inputs, oip.InferInput{Tensor: t})
	}
	header, blobs, err := rest.EncodeInferRequest(nil, req, true)
	if err != nil {
		return nil, err
	}
	body := bytes.Join(append([][]byte{header}, blobs...), nil)
	total := 0
	for _, n := range want {
		total += n
	}
	return &restLoad{hc: hc, url: base + "/v2/models/" + model + "/infer", body: body, headerLen: strconv.Itoa(len(header)), want: total}, nil
}

var restHeader = http.Header{"Content-Type": {"application/octet-stream"}}

func (l *restLoad) call() callFunc {
	var scratch []byte
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(l.body))
		if err != nil {
			return err
		}
		req.Header = maps.Clone(restHeader)
		req.Header.Set(rest.HeaderContentLength, l.headerLen)
		resp, err := l.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		hl, err := strconv.Atoi(resp.Header.Get(rest.HeaderContentLength))
		if err != nil {
			return fmt.Errorf("answer has no valid %s header", rest.HeaderContentLength)
		}
		if resp.ContentLength != int64(hl+l.want) {
			return fmt.Errorf("answer of %d bytes with a %d-byte header; the checked answer had %d binary bytes", resp.ContentLength, hl, l.want)
		}
		n := int(resp.ContentLength)
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		_, err = io.ReadFull(resp.Body, scratch[:n])
		return err
	}
}

// loadCall builds the served mode's callFunc factory: the load generator,
// with answers checked against want.
func (s *server) loadCall(m Mode, model string, inputs []tensor.Tensor, want wireOutputs) (func() callFunc, error) {
	switch m {
	case GRPC:
		g, err := newGRPCLoad(s.conn, model, inputs, want)
		if err != nil {
			return nil, err
		}
		return g.call, nil
	case REST:
		l, err := newRESTLoad(s.hc, "http://"+s.node.HTTPAddr(), model, inputs, want)
		if err != nil {
			return nil, err
		}
		return l.call, nil
	case GRPCSHM:
		if s.shm == nil {
			return nil, errors.New("shared memory is not set up")
		}
		return (&grpcLoad{conn: s.conn, reqs: s.shm.reqs, want: s.shm.want}).call, nil
	}
	return nil, errors.New("no load generator for " + string(m))
}

// loadgenConfig is what a load generator process needs for mode m.
func (s *server) loadgenConfig(m Mode, model string, inputs []tensor.Tensor, want wireOutputs) (LoadgenConfig, error) {
	cfg := LoadgenConfig{Mode: m, Model: model, Want: want}
	switch m {
	case GRPC:
		g, err := newGRPCLoad(nil, model, inputs, want)
		if err != nil {
			return cfg, err
		}
		cfg.Addr, cfg.Body = s.node.GRPCAddr(), frameRequests(g.reqs)
	case GRPCSHM:
		if s.shm == nil {
			return cfg, errors.New("shared memory is not set up")
		}
		cfg.Addr, cfg.Body, cfg.Want = s.node.GRPCAddr(), frameRequests(s.shm.reqs), s.shm.want
	case REST:
		l, err := newRESTLoad(nil, "", model, inputs, want)
		if err != nil {
			return cfg, err
		}
		cfg.Addr, cfg.Body = s.node.HTTPAddr(), l.body
		cfg.HeaderLen, _ = strconv.Atoi(l.headerLen)
	default:
		return cfg, errors.New("no load generator for " + string(m))
	}
	return cfg, nil
}

// frameRequests joins encoded requests, each after its length (uvarint).
func frameRequests(reqs [][]byte) []byte {
	var b []byte
	for _, r := range reqs {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return b
}

// splitRequests undoes frameRequests.
func splitRequests(b []byte) ([][]byte, error) {
	var reqs [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errors.New("malformed request file")
		}
		reqs = append(reqs, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	if len(reqs) == 0 {
		return nil, errors.New("no request in the request file")
	}
	return reqs, nil
}
