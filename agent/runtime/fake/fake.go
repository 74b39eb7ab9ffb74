package fake

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

// Model is the content of a fake model file.
type Model struct {
	Inputs  []IO `yaml:"inputs"`
	Outputs []IO `yaml:"outputs"`
	// Op is what Run computes: "identity" (the default) copies input i to
	// output i, "add_one" adds one to every element, "sleep" is identity
	// after sleeping SleepMS (10 when unset).
	Op string `yaml:"op,omitempty"`
	// SleepMS is slept once per Run, whatever the batch size, so batching
	// shows as fewer, not longer, runs.
	SleepMS int `yaml:"sleep_ms,omitempty"`
	// FailLoad makes Load fail with errdefs.ErrInvalid; FailRun makes every
	// Run fail with errdefs.ErrInternal.
	FailLoad bool `yaml:"fail_load,omitempty"`
	FailRun  bool `yaml:"fail_run,omitempty"`
}

// IO declares one input or output.
type IO struct {
	Name     string  `yaml:"name"`
	DataType string  `yaml:"datatype"`
	Shape    []int64 `yaml:"shape"`
}

// Stats is what a model's sessions have done.
type Stats struct {
	Loads int // successful loads of the file
	Runs  int // Run calls that computed outputs
	// BatchSizes holds, per such Run, the first dimension of the first
	// input (1 for a scalar).
	BatchSizes []int64
}

// Backend is a runtime.Backend over fake model files. It is safe for
// concurrent use.
type Backend struct {
	mu    sync.Mutex
	stats map[string]*Stats
	open  int
}

var _ runtime.Backend = (*Backend)(nil)

// New returns a Backend.
func New() *Backend { return &Backend{stats: map[string]*Stats{}} }

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "fake" }

// Stats returns a copy of the counters for the model file at path, summed
// over all its sessions.
func (b *Backend) Stats(path string) Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats[path]
	if s == nil {
		return Stats{}
	}
	return Stats{Loads: s.Loads, Runs: s.Runs, BatchSizes: append([]int64(nil), s.BatchSizes...)}
}

// OpenSessions counts sessions loaded and not yet closed.
func (b *Backend) OpenSessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}

// WriteModel writes m as a model file at path, for tests.
func WriteModel(path string, m Model) error {
	out, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// Load implements runtime.Backend.
func (b *Backend) Load(ctx context.Context, path string, opts runtime.Options) (runtime.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("fake: model %s: %w", path, errdefs.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("fake: model %s: %w", path, err)
	}
	var m Model
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("fake: model %s: %v", path, err))
	}
	meta, err := m.check()
	if err != nil {
		return nil, errdefs.Invalid(fmt.Sprintf("fake: model %s: %v", path, err))
	}
	if m.FailLoad {
		return nil, errdefs.Invalid(fmt.Sprintf("fake: model %s: fail_load is set", path))
	}
	b.mu.Lock()
	st := b.stats[path]
	if st == nil {
		st = &Stats{}
		b.stats[path] = st
	}
	st.Loads++
	b.open++
	b.mu.Unlock()
	sleep := time.Duration(m.SleepMS) * time.Millisecond
	if m.Op == "sleep" && m.SleepMS == 0 {
		sleep = 10 * time.Millisecond
	}
	return &Session{b: b, path: path, model: m, meta: meta, sleep: sleep}, nil
}

// check validates a model and returns its metadata.
func (m *Model) check() (runtime.Metadata, error) {
	var meta runtime.Metadata
	switch m.Op {
	case "":
		m.Op = "identity"
	case "identity", "add_one", "sleep":
	default:
		return meta, fmt.Errorf("unknown op %q (want identity, add_one or sleep)", m.Op)
	}
	if m.SleepMS < 0 {
		return meta, errors.New("sleep_ms is negative")
	}
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		return meta, errors.New("a model needs inputs and outputs")
	}
	if len(m.Inputs) != len(m.Outputs) {
		return meta, fmt.Errorf("op %s needs as many outputs as inputs (%d inputs, %d outputs)", m.Op, len(m.Inputs), len(m.Outputs))
	}
	conv := func(kind string, ios []IO) ([]runtime.IOSpec, error) {
		seen := map[string]bool{}
		specs := make([]runtime.IOSpec, len(ios))
		for i, io := range ios {
			if io.Name == "" {
				return nil, fmt.Errorf("%s %d has no name", kind, i)
			}
			if seen[io.Name] {
				return nil, fmt.Errorf("%s %q declared twice", kind, io.Name)
			}
			seen[io.Name] = true
			dt, err := tensor.ParseDataType(io.DataType)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %v", kind, io.Name, err)
			}
			for _, d := range io.Shape {
				if d < -1 {
					return nil, fmt.Errorf("%s %q: dimension %d (use -1 for dynamic)", kind, io.Name, d)
				}
			}
			specs[i] = runtime.IOSpec{Name: io.Name, DataType: dt, Shape: append([]int64{}, io.Shape...)}
		}
		return specs, nil
	}
	var err error
	if meta.Inputs, err = conv("input", m.Inputs); err != nil {
		return meta, err
	}
	if meta.Outputs, err = conv("output", m.Outputs); err != nil {
		return meta, err
	}
	for i, in := range meta.Inputs {
		out := meta.Outputs[i]
		if in.DataType != out.DataType || len(in.Shape) != len(out.Shape) {
			return meta, fmt.Errorf("op %s: output %q must have the datatype and rank of input %q", m.Op, out.Name, in.Name)
		}
		if m.Op == "add_one" && (in.DataType == tensor.Bytes || in.DataType == tensor.Bool) {
			return meta, fmt.Errorf("op add_one: input %q is %s, not a number", in.Name, in.DataType)
		}
	}
	return meta, nil
}

// Session is a loaded fake model.
type Session struct {
	b     *Backend
	path  string
	model Model
	meta  runtime.Metadata
	sleep time.Duration

	mu     sync.Mutex
	closed bool
}

var _ runtime.Session = (*Session)(nil)

// Metadata implements runtime.Session.
func (s *Session) Metadata() runtime.Metadata { return s.meta }

// Provider implements runtime.Session.
func (s *Session) Provider() string { return "cpu" }

// Close implements runtime.Session.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.b.mu.Lock()
		s.b.open--
		s.b.mu.Unlock()
	}
	return nil
}

// Run implements runtime.Session.
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor, outputs []string) ([]tensor.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errdefs.New(errdefs.ErrUnavailable, "fake: session is closed")
	}
	ordered, err := checkInputs(s.meta, inputs)
	if err != nil {
		return nil, err
	}
	want, err := pickOutputs(s.meta, outputs)
	if err != nil {
		return nil, err
	}
	if s.model.FailRun {
		return nil, errdefs.New(errdefs.ErrInternal, "fake: fail_run is set")
	}
	if s.sleep > 0 {
		t := time.NewTimer(s.sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	res := make([]tensor.Tensor, len(want))
	for i, j := range want {
		in := ordered[j]
		out := tensor.Tensor{Name: s.meta.Outputs[j].Name, DataType: in.DataType,
			Shape: append([]int64{}, in.Shape...), Data: append([]byte(nil), in.Data...)}
		if s.model.Op == "add_one" {
			addOne(out.DataType, out.Data)
		}
		res[i] = out
	}
	batch := int64(1)
	if len(ordered) > 0 && len(ordered[0].Shape) > 0 {
		batch = ordered[0].Shape[0]
	}
	s.b.mu.Lock()
	st := s.b.stats[s.path]
	st.Runs++
	st.BatchSizes = append(st.BatchSizes, batch)
	s.b.mu.Unlock()
	return res, nil
}

// checkInputs checks inputs against the declaration, as the ONNX Runtime
// backend does, and returns them in declaration order.
func checkInputs(meta runtime.Metadata, inputs []tensor.Tensor) ([]*tensor.Tensor, error) {
	ordered := make([]*tensor.Tensor, len(meta.Inputs))
	for i := range inputs {
		t := &inputs[i]
		j := -1
		for k, sp := range meta.Inputs {
			if sp.Name == t.Name {
				j = k
			}
		}
		if j < 0 {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown input %q", t.Name))
		}
		if ordered[j] != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("input %q given twice", t.Name))
		}
		sp := meta.Inputs[j]
		if t.DataType != sp.DataType {
			return nil, errdefs.Invalid(fmt.Sprintf("input %q: datatype %s, the model wants %s", t.Name, t.DataType, sp.DataType))
		}
		if len(t.Shape) != len(sp.Shape) {
			return nil, errdefs.Invalid(fmt.Sprintf("input %q: shape %v has rank %d, the model wants rank %d", t.Name, t.Shape, len(t.Shape), len(sp.Shape)))
		}
		for k, d := range sp.Shape {
			if d >= 0 && t.Shape[k] != d {
				return nil, errdefs.Invalid(fmt.Sprintf("input %q: shape %v, the model wants %v", t.Name, t.Shape, sp.Shape))
			}
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		ordered[j] = t
	}
	var missing []string
	for j, t := range ordered {
		if t == nil {
			missing = append(missing, fmt.Sprintf("%q", meta.Inputs[j].Name))
		}
	}
	if len(missing) > 0 {
		return nil, errdefs.Invalid("missing input " + strings.Join(missing, ", "))
	}
	return ordered, nil
}

func pickOutputs(meta runtime.Metadata, outputs []string) ([]int, error) {
	if outputs == nil {
		idx := make([]int, len(meta.Outputs))
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	idx := make([]int, 0, len(outputs))
	seen := map[int]bool{}
	for _, name := range outputs {
		j := -1
		for k, sp := range meta.Outputs {
			if sp.Name == name {
				j = k
			}
		}
		if j < 0 {
			return nil, errdefs.Invalid(fmt.Sprintf("unknown output %q", name))
		}
		if seen[j] {
			return nil, errdefs.Invalid(fmt.Sprintf("output %q requested twice", name))
		}
		seen[j] = true
		idx = append(idx, j)
	}
	return idx, nil
}

// addOne adds one to every element of data in place.
func addOne(dt tensor.DataType, d []byte) {
	le := binary.LittleEndian
	switch dt {
	case tensor.Uint8, tensor.Int8:
		for i := range d {
			d[i]++
		}
	case tensor.Uint16, tensor.Int16:
		for i := 0; i < len(d); i += 2 {
			le.PutUint16(d[i:], le.Uint16(d[i:])+1)
		}
	case tensor.Uint32, tensor.Int32:
		for i := 0; i < len(d); i += 4 {
			le.PutUint32(d[i:], le.Uint32(d[i:])+1)
		}
	case tensor.Uint64, tensor.Int64:
		for i := 0; i < len(d); i += 8 {
			le.PutUint64(d[i:], le.Uint64(d[i:])+1)
		}
	case tensor.FP16:
		for i := 0; i < len(d); i += 2 {
			le.PutUint16(d[i:], tensor.Float32ToFP16(tensor.FP16ToFloat32(le.Uint16(d[i:]))+1))
		}
	case tensor.BF16:
		for i := 0; i < len(d); i += 2 {
			le.PutUint16(d[i:], tensor.Float32ToBF16(tensor.BF16ToFloat32(le.Uint16(d[i:]))+1))
		}
	case tensor.FP32:
		for i := 0; i < len(d); i += 4 {
			le.PutUint32(d[i:], math.Float32bits(math.Float32frombits(le.Uint32(d[i:]))+1))
		}
	case tensor.FP64:
		for i := 0; i < len(d); i += 8 {
			le.PutUint64(d[i:], math.Float64bits(math.Float64frombits(le.Uint64(d[i:]))+1))
		}
	}
}
