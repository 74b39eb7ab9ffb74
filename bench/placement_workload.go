package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/yamlx"
	"github.com/accelpool/accelpool/sim"
)

// Workload is a placement benchmark's input: the models with their
// profiles on one kind of accelerator, the node shapes of the simulated
// cluster, and the applications to add one at a time (cycled through,
// round after round, until one cannot be placed).
type Workload struct {
	// Source says where the figures come from; printed with the results.
	Source string `yaml:"source"`
	// Kind is the accelerator kind the profiles were measured on, for the
	// models that do not name their own; every application is constrained
	// to its model's kind.
	Kind string `yaml:"kind"`
	// Threads is the runtime intra-op threads one request uses on a CPU
	// (the simulator's JobThreads and the served config.yaml); 0: all cores.
	Threads int `yaml:"threads"`
	// Concurrency is each instance's executors (config.yaml concurrency
	// and the simulator's per-instance limit); 0: unlimited in the
	// simulator, and 8 when served.
	Concurrency int `yaml:"concurrency"`
	// Nodes are the node shapes; a cluster of N nodes draws them in
	// proportion to Share. With --mode real the first shape with an
	// accelerator of Kind gives this machine's memory for accelpool.
	Nodes  []NodeShape     `yaml:"nodes"`
	Models []WorkloadModel `yaml:"models"`
	Apps   []WorkloadApp   `yaml:"apps"`
	file   string
	byName map[string]*WorkloadModel
	// countCores is set by ServedDemand: the model-driven policy then
	// counts a CPU's cores (latency.CPUServers).
	countCores bool
	// modelMaxUtil, when positive, is the model-driven policy's bound on
	// an accelerator's predicted utilisation with served demands
	// (SetModelMaxUtilisation).
	modelMaxUtil float64
}

// SetModelMaxUtilisation bounds the predicted utilisation (work per
// server) of an accelerator the model-driven policy places on, once
// ServedDemand has set the demands (latency.Checker.MaxUtilisation; the
// default is latency.DefaultMaxUtilisation). Its use: keep the placement
// within the loads the latency model was validated at on this machine,
// rather than trust it beyond them. u must be in (0, 1].
func (w *Workload) SetModelMaxUtilisation(u float64) error {
	if !(u > 0 && u <= 1) {
		return errdefs.Invalid(fmt.Sprintf("model-driven utilisation bound %v: want a number in (0, 1]", u))
	}
	w.modelMaxUtil = u
	return nil
}

// NodeShape is one kind of node in the simulated cluster.
type NodeShape struct {
	Name         string             `yaml:"name"`
	Share        float64            `yaml:"share"`
	Tier         cluster.Tier       `yaml:"tier"`
	Accelerators []AcceleratorShape `yaml:"accelerators"`
}

// AcceleratorShape is one accelerator of a NodeShape.
type AcceleratorShape struct {
	Kind      string  `yaml:"kind"`
	MemoryMiB int64   `yaml:"memoryMiB"`
	Compute   float64 `yaml:"compute"`
}

// WorkloadModel is a model's profile on one accelerator kind.
type WorkloadModel struct {
	Name string `yaml:"name"`
	// Kind is the accelerator kind of this profile; empty: the
	// workload's. A heterogeneous workload gives GPU models and TPU
	// models, each application running on its model's kind.
	Kind string `yaml:"kind"`
	// ServiceMs and CV are the batch-1 service time alone and its
	// coefficient of variation; SwitchMs the model-switch cost on a TPU.
	ServiceMs float64 `yaml:"serviceMs"`
	CV        float64 `yaml:"cv"`
	SwitchMs  float64 `yaml:"switchMs"`
	// MemoryMiB is what an instance reserves on the accelerator.
	MemoryMiB float64 `yaml:"memoryMiB"`
	// Shape fixes the dynamic input dimensions when served, as
	// `accelpool profile --shape` takes them (NAME=1x3x48x192).
	Shape string `yaml:"shape"`
}

// WorkloadApp is one application of the workload.
type WorkloadApp struct {
	Name        string  `yaml:"name"`
	Model       string  `yaml:"model"`
	Rate        float64 `yaml:"rate"`
	ObjectiveMs float64 `yaml:"objectiveMs"`
	// MemoryMiB overrides the model's.
	MemoryMiB float64 `yaml:"memoryMiB"`
}

// ReadWorkload reads and validates a workload file.
func ReadWorkload(path string) (*Workload, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	w, err := ParseWorkload(data)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", path, err)
	}
	w.file = path
	return w, nil
}

// ParseWorkload decodes a workload and checks every entry; an error names
// the entry ("apps[3] (blaze-x): objectiveMs 1.5 is below blazeface-front's
// own service time 2.03 ms").
func ParseWorkload(data []byte) (*Workload, error) {
	var w Workload
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&w); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errdefs.Invalid("empty workload")
		}
		return nil, errdefs.Invalid(yamlx.Explain(data, err))
	}
	if err := w.validate(); err != nil {
		return nil, err
	}
	return &w, nil
}

func entryErr(list string, i int, name, format string, a ...any) error {
	if name == "" {
		name = "unnamed"
	}
	return errdefs.Invalid(fmt.Sprintf("%s[%d] (%s): %s", list, i, name, fmt.Sprintf(format, a...)))
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (w *Workload) validate() error {
	switch w.Kind {
	case "cpu", "gpu", "tpu":
	default:
		return errdefs.Invalid(fmt.Sprintf("kind %q is not one of cpu, gpu, tpu", w.Kind))
	}
	if w.Threads < 0 || w.Concurrency < 0 {
		return errdefs.Invalid("threads and concurrency must not be negative")
	}
	if len(w.Models) == 0 || len(w.Apps) == 0 {
		return errdefs.Invalid("a workload needs models and apps")
	}
	w.byName = map[string]*WorkloadModel{}
	for i := range w.Models {
		m := &w.Models[i]
		switch {
		case !cluster.ValidModelName(m.Name):
			return entryErr("models", i, m.Name, "%q is not a valid model name", m.Name)
		case w.byName[m.Name] != nil:
			return entryErr("models", i, m.Name, "declared twice")
		case m.Kind != "" && m.Kind != "cpu" && m.Kind != "gpu" && m.Kind != "tpu":
			return entryErr("models", i, m.Name, "kind %q is not one of cpu, gpu, tpu", m.Kind)
		case !(m.ServiceMs > 0) || !finite(m.ServiceMs):
			return entryErr("models", i, m.Name, "serviceMs %v must be > 0", m.ServiceMs)
		case !(m.CV >= 0) || m.CV > 10:
			return entryErr("models", i, m.Name, "cv %v must be between 0 and 10", m.CV)
		case !(m.SwitchMs >= 0) || !finite(m.SwitchMs):
			return entryErr("models", i, m.Name, "switchMs %v must be >= 0", m.SwitchMs)
		case !(m.MemoryMiB > 0) || !finite(m.MemoryMiB):
			return entryErr("models", i, m.Name, "memoryMiB %v must be > 0", m.MemoryMiB)
		}
		w.byName[m.Name] = m
	}
	seen := map[string]bool{}
	for i := range w.Apps {
		a := &w.Apps[i]
		m := w.byName[a.Model]
		switch {
		case !cluster.ValidName(a.Name) || len(a.Name) > 50:
			return entryErr("apps", i, a.Name, "name must be a DNS label of at most 50 characters (a round number is appended)")
		case seen[a.Name]:
			return entryErr("apps", i, a.Name, "declared twice")
		case m == nil:
			return entryErr("apps", i, a.Name, "unknown model %q (the workload's models are %s)", a.Model, w.modelNames())
		case !(a.Rate >= 0) || !finite(a.Rate) || a.Rate > 1e6:
			return entryErr("apps", i, a.Name, "rate %v must be between 0 and 1e6 requests/s", a.Rate)
		case !(a.ObjectiveMs > 0) || !finite(a.ObjectiveMs):
			return entryErr("apps", i, a.Name, "objectiveMs %v must be > 0", a.ObjectiveMs)
		case a.ObjectiveMs < m.ServiceMs:
			return entryErr("apps", i, a.Name, "objectiveMs %v is below %s's own service time %.3g ms: no placement can meet it", a.ObjectiveMs, m.Name, m.ServiceMs)
		case a.MemoryMiB < 0 || !finite(a.MemoryMiB):
			return entryErr("apps", i, a.Name, "memoryMiB %v must not be negative", a.MemoryMiB)
		}
		seen[a.Name] = true
	}
	for i, n := range w.Nodes {
		if !(n.Share > 0) || !finite(n.Share) {
			return entryErr("nodes", i, n.Name, "share %v must be > 0", n.Share)
		}
		if n.Tier != "" && !n.Tier.Valid() {
			return entryErr("nodes", i, n.Name, "tier %q is not one of device, edge, cloud", n.Tier)
		}
		if len(n.Accelerators) == 0 {
			return entryErr("nodes", i, n.Name, "has no accelerators")
		}
		for j, a := range n.Accelerators {
			if a.Kind != "cpu" && a.Kind != "gpu" && a.Kind != "tpu" {
				return entryErr("nodes", i, n.Name, "accelerators[%d]: kind %q is not one of cpu, gpu, tpu", j, a.Kind)
			}
			if a.MemoryMiB <= 0 || a.Compute < 0 || !finite(a.Compute) {
				return entryErr("nodes", i, n.Name, "accelerators[%d]: memoryMiB must be > 0 and compute >= 0", j)
			}
		}
	}
	if len(w.Nodes) == 0 {
		return errdefs.Invalid("a workload needs at least one node shape")
	}
	return nil
}

func (w *Workload) modelNames() string {
	var names []string
	for _, m := range w.Models {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

// kindOf is the accelerator kind m's profile is for.
func (w *Workload) kindOf(m *WorkloadModel) string {
	if m.Kind != "" {
		return m.Kind
	}
	return w.Kind
}

// Kinds are the accelerator kinds of the workload's models, sorted.
func (w *Workload) Kinds() []string {
	seen := map[string]bool{}
	var out []string
	for i := range w.Models {
		if k := w.kindOf(&w.Models[i]); !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Model returns the named model's entry.
func (w *Workload) Model(name string) (*WorkloadModel, bool) {
	m, ok := w.byName[name]
	return m, ok
}

// CheckRepository checks, for --mode real, that every model is in the
// model repository; the error names the first application whose model
// is missing.
func (w *Workload) CheckRepository(repo string) error {
	for i, a := range w.Apps {
		if _, err := modelFile(repo, a.Model); err != nil {
			return entryErr("apps", i, a.Name, "model %q: %v", a.Model, err)
		}
	}
	return nil
}

// Profiles are the workload's models as the simulator reads them.
func (w *Workload) Profiles() sim.Profiles {
	p := sim.Profiles{}
	for i := range w.Models {
		m := &w.Models[i]
		p.Set(m.Name, w.kindOf(m), sim.Service{MeanMs: m.ServiceMs, CV: m.CV, SwitchMs: m.SwitchMs})
	}
	return p
}

// ModelProfiles are the workload's models as cluster.ModelProfile values,
// what the scheduler's latency models read.
func (w *Workload) ModelProfiles() []cluster.ModelProfile {
	var out []cluster.ModelProfile
	for i := range w.Models {
		m := &w.Models[i]
		out = append(out, cluster.ModelProfile{
			Model: m.Name, AcceleratorKind: w.kindOf(m), MemoryBytes: int64(m.MemoryMiB * (1 << 20)),
			ServiceMs: map[int]float64{1: m.ServiceMs}, ServiceCV: m.CV,
		})
	}
	return out
}

// Expand returns n applications: the workload's apps cycled through,
// round after round, the k-th round's copies named "<name>-<k>", each
// constrained to its model's accelerator kind.
func (w *Workload) Expand(n int) []cluster.Application {
	out := make([]cluster.Application, 0, n)
	for i := 0; i < n; i++ {
		e := &w.Apps[i%len(w.Apps)]
		m := w.byName[e.Model]
		mem := e.MemoryMiB
		if mem == 0 {
			mem = m.MemoryMiB
		}
		out = append(out, cluster.Application{
			APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
			Metadata: cluster.Metadata{Name: fmt.Sprintf("%s-%d", e.Name, i/len(w.Apps))},
			Spec: cluster.AppSpec{
				Model: e.Model, Rate: e.Rate, Objective: cluster.Objective{P99Ms: e.ObjectiveMs},
				Replicas:    cluster.Replicas{Min: 1, Max: 1},
				Constraints: cluster.Constraints{AcceleratorKind: w.kindOf(m)},
				MemoryBytes: int64(mem * (1 << 20)),
			},
		})
	}
	return out
}

// Name is the workload file's base name.
func (w *Workload) Name() string {
	if w.file == "" {
		return "(inline)"
	}
	return filepath.Base(w.file)
}
