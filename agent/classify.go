package agent

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// ClassificationParameter, on a requested output, asks for that output as
// Triton's classification extension gives it: the top k entries, highest
// first (ties: the lower index first), as BYTES strings "value:index", the
// value printed as C's %f. A model whose max_batch_size is above 0 gets k
// per batch row, shape [batch, k]; any other model k over the whole output,
// shape [k]. k beyond the entries there are gives them all.
const ClassificationParameter = "classification"

// The sequence batching parameters (Triton's stateful models), which this
// server does not implement: a request that sets them is refused rather
// than served as if it were independent.
var sequenceParameters = []string{"sequence_id", "sequence_start", "sequence_end"}

// classifyCount reads an output's classification parameter: 0 when absent.
func classifyCount(o oip.RequestedOutput) (int, error) {
	v, ok := o.Parameters[ClassificationParameter]
	if !ok {
		return 0, nil
	}
	var k int64
	switch v := v.(type) {
	case int64:
		k = v
	case uint64:
		k = int64(min(v, math.MaxInt32))
	default:
		return 0, errdefs.Invalid(fmt.Sprintf("output %q: parameter %q is a %T; want a positive integer", o.Name, ClassificationParameter, v))
	}
	if k < 1 {
		return 0, errdefs.Invalid(fmt.Sprintf("output %q: parameter %q is %d; want a positive integer", o.Name, ClassificationParameter, k))
	}
	return int(min(k, math.MaxInt32)), nil
}

// checkSequence refuses the sequence batching parameters when they ask for
// a sequence (a sequence_id other than 0 or "", a true start or end).
func checkSequence(p oip.Parameters) error {
	for _, name := range sequenceParameters {
		v, ok := p[name]
		if !ok {
			continue
		}
		switch v {
		case int64(0), uint64(0), "", false:
			continue
		}
		return errdefs.Invalid(fmt.Sprintf("parameter %q: sequence batching (stateful models) is not supported; send each request on its own, without sequence parameters", name))
	}
	return nil
}

// classify returns t's top k entries, per row when batched (the first
// dimension), as ClassificationParameter describes.
func classify(t tensor.Tensor, k int, batched bool) (tensor.Tensor, error) {
	if t.DataType == tensor.Bytes || !t.DataType.Valid() {
		return tensor.Tensor{}, errdefs.Invalid(fmt.Sprintf("output %q is %s; classification needs a numeric output", t.Name, t.DataType))
	}
	total, err := tensor.NumElements(t.Shape)
	if err != nil {
		return tensor.Tensor{}, err
	}
	rows := int64(1)
	if batched && len(t.Shape) > 0 {
		rows = t.Shape[0]
	}
	per := int64(0)
	if rows > 0 {
		per = total / rows
	}
	k = int(min(int64(k), per))
	strs := make([]string, 0, int(rows)*k)
	idx := make([]int, per)
	for r := range rows {
		base := int(r * per)
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			va, vb := t.Float64At(base+a), t.Float64At(base+b)
			switch {
			case va > vb || (!math.IsNaN(va) && math.IsNaN(vb)):
				return -1
			case va < vb || (math.IsNaN(va) && !math.IsNaN(vb)):
				return 1
			}
			return 0
		})
		for _, i := range idx[:k] {
			strs = append(strs, strconv.FormatFloat(t.Float64At(base+i), 'f', 6, 64)+":"+strconv.Itoa(i))
		}
	}
	shape := []int64{int64(k)}
	if batched && len(t.Shape) > 0 {
		shape = []int64{rows, int64(k)}
	}
	return tensor.FromStrings(t.Name, shape, strs), nil
}
