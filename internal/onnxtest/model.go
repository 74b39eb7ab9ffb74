package onnxtest

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Node is one operator of a graph built with BuildModel.
type Node struct {
	Op      string
	Inputs  []string
	Outputs []string
	// Ints are integer attributes (e.g. "to" for Cast), IntLists lists of
	// them (e.g. "value_ints" for Constant).
	Ints     map[string]int64
	IntLists map[string][]int64
}

// Tensor declares a graph input or output for BuildModel. A dimension of -1
// becomes a symbolic one.
type Tensor struct {
	Name     string
	ElemType int32 // ONNX element type: 1 FLOAT, 8 STRING, 10 FLOAT16, ...
	Shape    []int64
}

// BuildModel encodes a small ONNX model (IR version 8, default domain at
// opset) for tests that need a model with particular inputs and outputs:
// scalars, empty tensors, strings, half precision, slow graphs.
func BuildModel(opset int64, nodes []Node, inputs, outputs []Tensor) []byte {
	var g []byte
	for i, n := range nodes {
		var nb []byte
		for _, in := range n.Inputs {
			nb = appendString(nb, 1, in)
		}
		for _, out := range n.Outputs {
			nb = appendString(nb, 2, out)
		}
		nb = appendString(nb, 3, fmt.Sprintf("n%d", i))
		nb = appendString(nb, 4, n.Op)
		for name, v := range n.Ints {
			// AttributeProto: name = 1, i = 3, type = 20 (INT = 2).
			var ab []byte
			ab = appendString(ab, 1, name)
			ab = protowire.AppendTag(ab, 3, protowire.VarintType)
			ab = protowire.AppendVarint(ab, uint64(v))
			ab = protowire.AppendTag(ab, 20, protowire.VarintType)
			ab = protowire.AppendVarint(ab, 2)
			nb = appendMessage(nb, 5, ab)
		}
		for name, vs := range n.IntLists {
			// AttributeProto: name = 1, ints = 8 (packed), type = 20 (INTS = 7).
			var ab, packed []byte
			ab = appendString(ab, 1, name)
			for _, v := range vs {
				packed = protowire.AppendVarint(packed, uint64(v))
			}
			ab = protowire.AppendTag(ab, 8, protowire.BytesType)
			ab = protowire.AppendBytes(ab, packed)
			ab = protowire.AppendTag(ab, 20, protowire.VarintType)
			ab = protowire.AppendVarint(ab, 7)
			nb = appendMessage(nb, 5, ab)
		}
		g = appendMessage(g, 1, nb)
	}
	g = appendString(g, 2, "g")
	for _, in := range inputs {
		g = appendMessage(g, 11, valueInfo(in))
	}
	for _, out := range outputs {
		g = appendMessage(g, 12, valueInfo(out))
	}

	var m []byte
	m = protowire.AppendTag(m, 1, protowire.VarintType) // ir_version
	m = protowire.AppendVarint(m, 8)
	m = appendString(m, 2, "accelpool-onnxtest") // producer_name
	m = appendMessage(m, 7, g)
	var op []byte
	op = appendString(op, 1, "")
	op = protowire.AppendTag(op, 2, protowire.VarintType)
	op = protowire.AppendVarint(op, uint64(opset))
	m = appendMessage(m, 8, op)
	return m
}

// PrefixModel encodes a model that does next to no work: it declares
// inputs (fixed shapes; inputs[src] must be FLOAT) and returns one FLOAT
// output, out, of shape [1, n]: the first n elements of inputs[src]
// flattened, repeated from the start when it holds fewer. The other inputs
// are accepted and not read. A request to it carries the same bytes as one
// to a real model with those inputs, and its answer n*4 bytes: a benchmark
// times the transport and the serving path with it, the model left out.
func PrefixModel(inputs []Tensor, src int, out string, n int64) ([]byte, error) {
	if src < 0 || src >= len(inputs) {
		return nil, fmt.Errorf("onnxtest: source input %d of %d", src, len(inputs))
	}
	in := inputs[src]
	if in.ElemType != 1 {
		return nil, fmt.Errorf("onnxtest: source input %s has element type %d, not FLOAT", in.Name, in.ElemType)
	}
	size := int64(1)
	for _, d := range in.Shape {
		if d < 0 {
			return nil, fmt.Errorf("onnxtest: source input %s has a dynamic shape %v", in.Name, in.Shape)
		}
		size *= d
	}
	if size == 0 || n < 1 {
		return nil, fmt.Errorf("onnxtest: %d elements from a source of %d", n, size)
	}
	constant := func(name string, v ...int64) Node {
		return Node{Op: "Constant", Outputs: []string{name}, IntLists: map[string][]int64{"value_ints": v}}
	}
	nodes := []Node{
		{Op: "Flatten", Inputs: []string{in.Name}, Outputs: []string{"prefix_flat"}, Ints: map[string]int64{"axis": 0}},
	}
	from := "prefix_flat"
	if n > size {
		nodes = append(nodes, constant("prefix_reps", 1, (n+size-1)/size),
			Node{Op: "Tile", Inputs: []string{from, "prefix_reps"}, Outputs: []string{"prefix_tiled"}})
		from = "prefix_tiled"
	}
	nodes = append(nodes, constant("prefix_starts", 0), constant("prefix_ends", n), constant("prefix_axes", 1),
		Node{Op: "Slice", Inputs: []string{from, "prefix_starts", "prefix_ends", "prefix_axes"}, Outputs: []string{out}})
	return BuildModel(13, nodes, inputs, []Tensor{{Name: out, ElemType: 1, Shape: []int64{1, n}}}), nil
}

func valueInfo(t Tensor) []byte {
	var shape []byte
	for i, d := range t.Shape {
		var dim []byte
		if d < 0 {
			dim = appendString(dim, 2, fmt.Sprintf("%s_d%d", t.Name, i))
		} else {
			dim = protowire.AppendTag(dim, 1, protowire.VarintType)
			dim = protowire.AppendVarint(dim, uint64(d))
		}
		shape = appendMessage(shape, 1, dim)
	}
	var tt []byte
	tt = protowire.AppendTag(tt, 1, protowire.VarintType)
	tt = protowire.AppendVarint(tt, uint64(t.ElemType))
	tt = protowire.AppendTag(tt, 2, protowire.BytesType) // present even when empty: a scalar
	tt = protowire.AppendBytes(tt, shape)
	var typ []byte
	typ = appendMessage(typ, 1, tt)
	var vi []byte
	vi = appendString(vi, 1, t.Name)
	vi = appendMessage(vi, 2, typ)
	return vi
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}
