package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/yamlx"
)

// APIVersion and KindApplication identify application documents.
const (
	APIVersion      = "accelpool.io/v1"
	KindApplication = "Application"
)

// Application is a model plus a latency objective, deployed once and
// placed by the control plane.
type Application struct {
	APIVersion string   `json:"apiVersion" yaml:"apiVersion"`
	Kind       string   `json:"kind" yaml:"kind"`
	Metadata   Metadata `json:"metadata" yaml:"metadata"`
	Spec       AppSpec  `json:"spec" yaml:"spec"`
}

// Metadata names an object.
type Metadata struct {
	Name   string            `json:"name" yaml:"name"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// AppSpec is what the application asks for.
type AppSpec struct {
	// Model is an artifact name, optionally pinned: "ocr-det" or
	// "ocr-det@sha256:<hex>".
	Model string `json:"model" yaml:"model"`
	// Objective is the latency the application needs.
	Objective Objective `json:"objective" yaml:"objective"`
	// Rate is the expected request rate (requests per second).
	Rate float64 `json:"rate,omitempty" yaml:"rate,omitempty"`
	// Replicas bounds the instances.
	Replicas Replicas `json:"replicas" yaml:"replicas"`
	// Constraints restrict where instances may run.
	Constraints Constraints `json:"constraints,omitempty" yaml:"constraints,omitempty"`
	// Batching configures dynamic batching on each instance.
	Batching Batching `json:"batching,omitempty" yaml:"batching,omitempty"`
	// Serving tunes how each instance serves the model, with the keys of
	// a model repository's config.yaml (max_queue_size, concurrency,
	// intra_op_threads, inter_op_threads, providers, default_timeout_ms,
	// allow_spinning, preprocess); batching is set by Batching above.
	Serving *repository.Config `json:"serving,omitempty" yaml:"serving,omitempty"`
	// MemoryBytes overrides the accelerator memory reserved per instance;
	// default: a multiple of the model file's size (see DefaultMemory).
	MemoryBytes int64 `json:"memoryBytes,omitempty" yaml:"memoryBytes,omitempty"`
}

// Objective is a latency objective.
type Objective struct {
	// P99Ms is the 99th-percentile latency objective in milliseconds.
	P99Ms float64 `json:"p99Ms" yaml:"p99Ms"`
}

// Replicas bounds an application's instances.
type Replicas struct {
	Min int `json:"min" yaml:"min"`
	Max int `json:"max" yaml:"max"`
}

// Constraints restrict placement.
type Constraints struct {
	Tiers  []Tier            `json:"tiers,omitempty" yaml:"tiers,omitempty"`
	Sites  []string          `json:"sites,omitempty" yaml:"sites,omitempty"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// AcceleratorKind requires "cpu", "gpu" or "tpu".
	AcceleratorKind string `json:"acceleratorKind,omitempty" yaml:"acceleratorKind,omitempty"`
}

// Batching configures dynamic batching.
type Batching struct {
	MaxBatchSize    int     `json:"maxBatchSize,omitempty" yaml:"maxBatchSize,omitempty"`
	MaxQueueDelayMs float64 `json:"maxQueueDelayMs,omitempty" yaml:"maxQueueDelayMs,omitempty"`
}

// Limits on application fields.
const (
	MaxReplicas  = 1000
	MaxNameLen   = 63
	MaxBatchSize = 4096
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s is a valid object name (DNS label).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ModelRef splits spec.model into name and optional digest.
func (s AppSpec) ModelRef() (name, digest string) {
	name, digest, _ = strings.Cut(s.Model, "@")
	return name, digest
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidDigest reports whether d is "sha256:" and 64 hex digits.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// FieldError names the field that is wrong and why.
func FieldError(field, format string, a ...any) error {
	return errdefs.Invalid(fmt.Sprintf("%s: %s", field, fmt.Sprintf(format, a...)))
}

// Validate checks every field and returns the first error, naming the
// field ("spec.objective.p99Ms: must be > 0").
func (a *Application) Validate() error {
	switch {
	case a.APIVersion != APIVersion:
		return FieldError("apiVersion", "%q is not supported (want %q)", a.APIVersion, APIVersion)
	case a.Kind != KindApplication:
		return FieldError("kind", "%q is not supported (want %q)", a.Kind, KindApplication)
	case !ValidName(a.Metadata.Name):
		return FieldError("metadata.name", "%q must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit", a.Metadata.Name)
	}
	s := &a.Spec
	name, digest := s.ModelRef()
	switch {
	case s.Model == "":
		return FieldError("spec.model", "is required (an artifact name pushed with `accelpool model push`)")
	case !ValidModelName(name):
		return FieldError("spec.model", "%q is not a valid model name", name)
	case digest != "" && !ValidDigest(digest):
		return FieldError("spec.model", "digest %q must be sha256:<64 hex digits>", digest)
	case !(s.Objective.P99Ms > 0) || s.Objective.P99Ms > 3.6e6:
		return FieldError("spec.objective.p99Ms", "%v must be > 0 and at most an hour", s.Objective.P99Ms)
	case s.Rate < 0 || s.Rate > 1e7 || s.Rate != s.Rate:
		return FieldError("spec.rate", "%v must be between 0 and 1e7 requests/s", s.Rate)
	case s.Replicas.Min < 0 || s.Replicas.Min > MaxReplicas:
		return FieldError("spec.replicas.min", "%d must be between 0 and %d", s.Replicas.Min, MaxReplicas)
	case s.Replicas.Max < 0 || s.Replicas.Max > MaxReplicas:
		return FieldError("spec.replicas.max", "%d must be between 0 and %d", s.Replicas.Max, MaxReplicas)
	case s.Replicas.Max != 0 && s.Replicas.Max < s.Replicas.Min:
		return FieldError("spec.replicas.max", "%d is below spec.replicas.min %d", s.Replicas.Max, s.Replicas.Min)
	case s.Batching.MaxBatchSize < 0 || s.Batching.MaxBatchSize > MaxBatchSize:
		return FieldError("spec.batching.maxBatchSize", "%d must be between 0 and %d", s.Batching.MaxBatchSize, MaxBatchSize)
	case !(s.Batching.MaxQueueDelayMs >= 0) || s.Batching.MaxQueueDelayMs > 10000:
		return FieldError("spec.batching.maxQueueDelayMs", "%v must be between 0 and 10000", s.Batching.MaxQueueDelayMs)
	case s.MemoryBytes < 0:
		return FieldError("spec.memoryBytes", "%d must not be negative", s.MemoryBytes)
	}
	if c := s.Serving; c != nil {
		if c.MaxBatchSize != 0 || c.MaxQueueDelayMS != 0 {
			return FieldError("spec.serving", "set batching with spec.batching (maxBatchSize, maxQueueDelayMs), not max_batch_size or max_queue_delay_ms")
		}
		if err := c.WithDefaults().Validate(); err != nil {
			return fmt.Errorf("spec.serving.%w", err)
		}
	}
	for i, t := range s.Constraints.Tiers {
		if !t.Valid() {
			return FieldError(fmt.Sprintf("spec.constraints.tiers[%d]", i), "%q is not one of device, edge, cloud", t)
		}
	}
	switch s.Constraints.AcceleratorKind {
	case "", "cpu", "gpu", "tpu":
	default:
		return FieldError("spec.constraints.acceleratorKind", "%q is not one of cpu, gpu, tpu", s.Constraints.AcceleratorKind)
	}
	return nil
}

// Normalize fills defaults: at least one replica.
func (a *Application) Normalize() {
	if a.Spec.Replicas.Min == 0 && a.Spec.Replicas.Max == 0 {
		a.Spec.Replicas.Min, a.Spec.Replicas.Max = 1, 1
	}
	if a.Spec.Replicas.Max == 0 {
		a.Spec.Replicas.Max = a.Spec.Replicas.Min
	}
}

var modelNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidModelName reports whether s may name a model artifact.
func ValidModelName(s string) bool { return modelNameRE.MatchString(s) }

// MaxDocumentBytes bounds one YAML file of applications.
const MaxDocumentBytes = 1 << 20

// ParseApplications reads one or more YAML documents ("---" separated).
// Unknown fields are errors naming the document and line.
func ParseApplications(data []byte) ([]Application, error) {
	if len(data) > MaxDocumentBytes {
		return nil, errdefs.New(errdefs.ErrTooLarge, fmt.Sprintf("application file is %d bytes, limit %d", len(data), MaxDocumentBytes))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var apps []Application
	seen := map[string]bool{}
	for i := 1; ; i++ {
		var a Application
		err := dec.Decode(&a)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errdefs.Invalid(fmt.Sprintf("document %d: %s", i, yamlx.Explain(data, err)))
		}
		if a.APIVersion == "" && a.Kind == "" && a.Metadata.Name == "" && a.Spec.Model == "" {
			continue // empty document
		}
		a.Normalize()
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, orUnnamed(a.Metadata.Name), err)
		}
		if seen[a.Metadata.Name] {
			return nil, errdefs.Invalid(fmt.Sprintf("document %d: application %q is declared twice", i, a.Metadata.Name))
		}
		seen[a.Metadata.Name] = true
		apps = append(apps, a)
	}
	if len(apps) == 0 {
		return nil, errdefs.Invalid("no application documents found")
	}
	return apps, nil
}

func orUnnamed(s string) string {
	if s == "" {
		return "unnamed"
	}
	return s
}

// DefaultMemory estimates the accelerator memory an instance of a model of
// the given file size takes once loaded, before a profile measures it:
// weights plus activations and runtime overhead.
func DefaultMemory(modelBytes int64) int64 {
	const overhead = 32 << 20
	return 3*modelBytes + overhead
}
