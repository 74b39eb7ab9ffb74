// Package repository reads a model repository: a directory holding
// <name>/<version>/model.onnx for each model, with an optional
// <name>/config.yaml that tunes how the model is served. It only reads the
// file tree and validates configuration; loading models is the agent's job.
package repository

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/yamlx"
)

// ModelFile is the file name of a model inside a version directory.
const ModelFile = "model.onnx"

// ConfigFile is the optional per-model configuration file.
const ConfigFile = "config.yaml"

// Limits on configuration values, so a typo cannot ask for absurd resources.
const (
	MaxBatchSizeLimit  = 4096
	MaxQueueSizeLimit  = 1 << 20
	MaxConcurrency     = 256
	MaxThreads         = 1024
	MaxQueueDelayLimit = 10 * time.Second
)

// Providers are the execution providers a config (and the CLI's
// --providers) may name, fastest first.
var Providers = []string{"tensorrt", "cuda", "cpu"}

// Config tunes how one model is served. Zero values take defaults.
type Config struct {
	// MaxBatchSize > 1 turns on dynamic batching for models whose first
	// input dimension is dynamic: requests are stacked along it up to this
	// many rows. 0 or 1 runs each request alone.
	MaxBatchSize int `yaml:"max_batch_size" json:"max_batch_size,omitempty"`
	// MaxQueueDelayMS is how long the first request of a batch waits for
	// company before the batch runs anyway.
	MaxQueueDelayMS float64 `yaml:"max_queue_delay_ms" json:"max_queue_delay_ms,omitempty"`
	// MaxQueueSize bounds the requests waiting for this model; a request
	// that finds it full is refused at once (HTTP 503 / ResourceExhausted).
	MaxQueueSize int `yaml:"max_queue_size" json:"max_queue_size,omitempty"`
	// Concurrency is how many executions of the model may run at once.
	Concurrency int `yaml:"concurrency" json:"concurrency,omitempty"`
	// IntraOpThreads and InterOpThreads size the runtime's thread pools.
	IntraOpThreads int `yaml:"intra_op_threads" json:"intra_op_threads,omitempty"`
	InterOpThreads int `yaml:"inter_op_threads" json:"inter_op_threads,omitempty"`
	// Providers lists execution providers by preference (tensorrt, cuda, cpu).
	Providers []string `yaml:"providers" json:"providers,omitempty"`
	// DefaultTimeoutMS applies to requests that bring no deadline; 0: none.
	DefaultTimeoutMS float64 `yaml:"default_timeout_ms" json:"default_timeout_ms,omitempty"`
	// AllowSpinning lets the runtime's threads busy-wait for work.
	AllowSpinning bool `yaml:"allow_spinning" json:"allow_spinning,omitempty"`
	// Preprocess, keyed by model input name, lets clients send that input
	// as encoded images (a BYTES tensor of shape [N] holding JPEG or PNG
	// files) which the agent decodes and turns into the model's tensor.
	// The normal tensor stays accepted too.
	Preprocess map[string]ImageInput `yaml:"preprocess" json:"preprocess,omitempty"`
}

// MaxImageSide bounds ImageInput.Width and Height.
const MaxImageSide = 8192

// DefaultImageScale is ImageInput.Scale when unset (for FP32 and FP16).
const DefaultImageScale = 1.0 / 255

// ImageInput says how to turn an encoded image into a model input tensor:
// resize (bilinear) to Width×Height, multiply the 8-bit RGB values by
// Scale, subtract Mean and divide by Std per channel, in Layout order.
// Fields the model's input shape fixes may be left out; the agent resolves
// them against the model when it loads it.
type ImageInput struct {
	// Width and Height of the tensor; 0: the model input's fixed size.
	Width  int `yaml:"width" json:"width,omitempty"`
	Height int `yaml:"height" json:"height,omitempty"`
	// Layout is NCHW or NHWC; empty: inferred from the model input's
	// shape (dimension 1 of 3: NCHW; last dimension of 3: NHWC).
	Layout string `yaml:"layout" json:"layout,omitempty"`
	// Scale multiplies channel values 0..255 first; unset: 1/255 (1 when
	// the datatype is UINT8).
	Scale *float64 `yaml:"scale" json:"scale,omitempty"`
	// Mean and Std are per RGB channel, three values each; unset: 0 and 1.
	Mean []float64 `yaml:"mean" json:"mean,omitempty"`
	Std  []float64 `yaml:"std" json:"std,omitempty"`
	// BGR feeds the channels in blue, green, red order.
	BGR bool `yaml:"bgr" json:"bgr,omitempty"`
	// DataType of the tensor: FP32, FP16 or UINT8 (values rounded and
	// clamped to 0..255); empty: the model input's datatype. It must
	// match the model input.
	DataType string `yaml:"datatype" json:"datatype,omitempty"`
}

// validate checks the fields that need no model; field prefixes names.
func (p ImageInput) validate(bad func(field, format string, a ...any) error, field string) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case p.Width < 0 || p.Width > MaxImageSide:
		return bad(field+".width", "%d is outside 0..%d", p.Width, MaxImageSide)
	case p.Height < 0 || p.Height > MaxImageSide:
		return bad(field+".height", "%d is outside 0..%d", p.Height, MaxImageSide)
	case p.Layout != "" && p.Layout != "NCHW" && p.Layout != "NHWC":
		return bad(field+".layout", "%q is not NCHW or NHWC", p.Layout)
	case p.Scale != nil && (*p.Scale == 0 || !finite(*p.Scale)):
		return bad(field+".scale", "%g must be a finite, non-zero number", *p.Scale)
	case len(p.Mean) != 0 && len(p.Mean) != 3:
		return bad(field+".mean", "has %d values, want 3 (R, G, B)", len(p.Mean))
	case len(p.Std) != 0 && len(p.Std) != 3:
		return bad(field+".std", "has %d values, want 3 (R, G, B)", len(p.Std))
	}
	for i, v := range p.Mean {
		if !finite(v) {
			return bad(fmt.Sprintf("%s.mean[%d]", field, i), "%g is not a finite number", v)
		}
	}
	for i, v := range p.Std {
		if v == 0 || !finite(v) {
			return bad(fmt.Sprintf("%s.std[%d]", field, i), "%g must be a finite, non-zero number", v)
		}
	}
	switch p.DataType {
	case "", "FP32", "FP16", "UINT8":
	default:
		return bad(field+".datatype", "%q is not FP32, FP16 or UINT8", p.DataType)
	}
	return nil
}

// DefaultConfig is what a model without config.yaml gets.
func DefaultConfig() Config {
	return Config{MaxQueueSize: 128, Concurrency: 1}
}

// WithDefaults fills the fields whose zero value is not valid (the queue
// size and the concurrency) from DefaultConfig, as config.yaml leaves
// them when it does not name them.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.MaxQueueSize == 0 {
		c.MaxQueueSize = d.MaxQueueSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	return c
}

// QueueDelay is MaxQueueDelayMS as a duration.
func (c Config) QueueDelay() time.Duration {
	return time.Duration(c.MaxQueueDelayMS * float64(time.Millisecond))
}

// DefaultTimeout is DefaultTimeoutMS as a duration.
func (c Config) DefaultTimeout() time.Duration {
	return time.Duration(c.DefaultTimeoutMS * float64(time.Millisecond))
}

// SameConfig reports whether two optional configs (an application's
// spec.serving) ask for the same: both absent, or both present with the
// same encoding (an empty list and none are the same).
func SameConfig(a, b *Config) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	bad := func(field string, format string, a ...any) error {
		return errdefs.Invalid(fmt.Sprintf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	switch {
	case c.MaxBatchSize < 0 || c.MaxBatchSize > MaxBatchSizeLimit:
		return bad("max_batch_size", "%d is outside 0..%d", c.MaxBatchSize, MaxBatchSizeLimit)
	case !(c.MaxQueueDelayMS >= 0) || c.MaxQueueDelayMS > float64(MaxQueueDelayLimit.Milliseconds()):
		return bad("max_queue_delay_ms", "%g is outside 0..%d", c.MaxQueueDelayMS, MaxQueueDelayLimit.Milliseconds())
	case c.MaxQueueSize < 1 || c.MaxQueueSize > MaxQueueSizeLimit:
		return bad("max_queue_size", "%d is outside 1..%d", c.MaxQueueSize, MaxQueueSizeLimit)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return bad("concurrency", "%d is outside 1..%d", c.Concurrency, MaxConcurrency)
	case c.IntraOpThreads < 0 || c.IntraOpThreads > MaxThreads:
		return bad("intra_op_threads", "%d is outside 0..%d", c.IntraOpThreads, MaxThreads)
	case c.InterOpThreads < 0 || c.InterOpThreads > MaxThreads:
		return bad("inter_op_threads", "%d is outside 0..%d", c.InterOpThreads, MaxThreads)
	case !(c.DefaultTimeoutMS >= 0 && c.DefaultTimeoutMS <= math.MaxFloat64):
		return bad("default_timeout_ms", "%g must be a finite number of milliseconds, 0 or more", c.DefaultTimeoutMS)
	}
	for i, p := range c.Providers {
		if !slices.Contains(Providers, p) {
			return bad(fmt.Sprintf("providers[%d]", i), "%q is not one of %s", p, strings.Join(Providers, ", "))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Preprocess)) {
		if name == "" {
			return bad("preprocess", "an entry has an empty input name")
		}
		if err := c.Preprocess[name].validate(bad, "preprocess."+name); err != nil {
			return err
		}
	}
	return nil
}

// ParseConfig reads config.yaml contents on top of the defaults. Unknown
// fields are errors, so a misspelt option is not silently ignored.
func ParseConfig(data []byte) (Config, error) {
	c := DefaultConfig()
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, errdefs.Invalid(fmt.Sprintf("%s: %s", ConfigFile, yamlx.Explain(data, err)))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	return c, nil
}

// Model is one model found in the repository.
type Model struct {
	Name string
	Dir  string
	// Versions present, ascending by number.
	Versions []string
	Config   Config
	// ConfigErr is set when config.yaml exists but is invalid; the model
	// must then not be served.
	ConfigErr error
}

// Latest is the highest version, or "" if none.
func (m Model) Latest() string {
	if len(m.Versions) == 0 {
		return ""
	}
	return m.Versions[len(m.Versions)-1]
}

// Path is the model file of a version.
func (m Model) Path(version string) string { return filepath.Join(m.Dir, version, ModelFile) }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether s may name a model.
func ValidName(s string) bool { return nameRE.MatchString(s) && s != "." && s != ".." }

// Scan lists the models under root, sorted by name. Directories that do not
// look like models (no numeric version holding model.onnx) are skipped.
func Scan(root string) ([]Model, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("model repository %s does not exist", root))
		}
		return nil, fmt.Errorf("read model repository: %w", err)
	}
	var out []Model
	for _, e := range entries {
		if !ValidName(e.Name()) || !isDir(root, e) {
			continue
		}
		m, ok, err := Read(root, e.Name())
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// isDir reports whether the entry of dir is a directory, following a
// symbolic link (a repository made of links to models kept elsewhere).
func isDir(dir string, e os.DirEntry) bool {
	if e.Type()&os.ModeSymlink == 0 {
		return e.IsDir()
	}
	fi, err := os.Stat(filepath.Join(dir, e.Name()))
	return err == nil && fi.IsDir()
}

// Read reads one model directory. ok is false when the directory holds no
// version with a model file.
func Read(root, name string) (m Model, ok bool, err error) {
	if !ValidName(name) {
		return m, false, errdefs.Invalid(fmt.Sprintf("invalid model name %q", name))
	}
	m = Model{Name: name, Dir: filepath.Join(root, name), Config: DefaultConfig()}
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return m, false, nil
		}
		return m, false, fmt.Errorf("read model %s: %w", name, err)
	}
	var versions []int64
	for _, e := range entries {
		v, perr := strconv.ParseInt(e.Name(), 10, 64)
		if perr != nil || v < 0 || !isDir(m.Dir, e) {
			continue
		}
		if _, serr := os.Stat(filepath.Join(m.Dir, e.Name(), ModelFile)); serr == nil {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		return m, false, nil
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	for _, v := range versions {
		m.Versions = append(m.Versions, strconv.FormatInt(v, 10))
	}
	data, rerr := os.ReadFile(filepath.Join(m.Dir, ConfigFile))
	switch {
	case rerr == nil:
		m.Config, m.ConfigErr = ParseConfig(data)
	case !errors.Is(rerr, os.ErrNotExist):
		m.ConfigErr = fmt.Errorf("read %s: %w", ConfigFile, rerr)
	}
	return m, true, nil
}
