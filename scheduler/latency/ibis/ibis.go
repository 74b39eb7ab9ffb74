// Package ibis reads the measurements and workloads published with Ibis
// (Q. Liang, W. A. Hanafy, A. Ali-Eldin, P. Shenoy, "Model-driven cluster
// resource management for AI workloads in edge clouds", ACM TAAS 18(1),
// 2023; data under the MIT licence, UMass LASS), against which the
// latency models are validated and from which the placement comparison
// takes its application mix. The files stay where they are shared
// (../shared/data/ibis from the repository root, or $ACCELPOOL_IBIS_DATA);
// this package only parses them.
//
// The files:
//
//   - trt_ps_validation.csv, edgetpu_fcfs_validation.csv: columns model,
//     process_type, response_time (ms). "Sequential" rows are requests
//     issued one at a time, rotating over the models; "Concurrent" rows
//     come in rounds in which every model issues one request at the same
//     instant (the rows of a round are consecutive, and a round's rows
//     are the k-th Concurrent row of each model).
//   - gpu-workload1.yaml, edgetpu-workload1.yaml: a list of models with
//     input_rate and service_rate (requests/s), switch_overhead (ms, Edge
//     TPU), frontend_memory and backend_memory (MB) and sla (ms).
package ibis

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/accelpool/accelpool/errdefs"
)

// The files' names in the data directory.
const (
	GPUValidation     = "trt_ps_validation.csv"
	EdgeTPUValidation = "edgetpu_fcfs_validation.csv"
	GPUWorkload       = "gpu-workload1.yaml"
	EdgeTPUWorkload   = "edgetpu-workload1.yaml"
)

// EnvDir names the environment variable that overrides Dir.
const EnvDir = "ACCELPOOL_IBIS_DATA"

// Dir finds the data directory: $ACCELPOOL_IBIS_DATA, else
// shared/data/ibis in the working directory or the nearest parent that
// has one (the repository's sibling ../shared when run from a checkout).
// The error, wrapping errdefs.ErrNotFound, says where it looked.
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		if _, err := os.Stat(filepath.Join(d, GPUValidation)); err != nil {
			return "", fmt.Errorf("ibis data: $%s=%s: %v: %w", EnvDir, d, err, errdefs.ErrNotFound)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		d := filepath.Join(dir, "shared", "data", "ibis")
		if _, err := os.Stat(filepath.Join(d, GPUValidation)); err == nil {
			return d, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("ibis data: no shared/data/ibis/%s in %s or its parents; set $%s: %w", GPUValidation, wd, EnvDir, errdefs.ErrNotFound)
}

// Sample is one measured request.
type Sample struct {
	Model string
	// Process is "Sequential" or "Concurrent".
	Process    string
	ResponseMs float64
	// Round is the sample's index among those of its model and process,
	// from 0: the Concurrent samples of one round share it.
	Round int
}

// ReadValidation parses a validation CSV (model,process_type,response_time).
func ReadValidation(r io.Reader) ([]Sample, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	head, err := cr.Read()
	if err != nil {
		return nil, errdefs.Invalid("validation csv: " + err.Error())
	}
	if strings.Join(head, ",") != "model,process_type,response_time" {
		return nil, errdefs.Invalid(fmt.Sprintf("validation csv: header %q, want model,process_type,response_time", strings.Join(head, ",")))
	}
	var out []Sample
	seen := map[[2]string]int{}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errdefs.Invalid("validation csv: " + err.Error())
		}
		v, err := strconv.ParseFloat(rec[2], 64)
		if err != nil || !(v > 0) {
			return nil, errdefs.Invalid(fmt.Sprintf("validation csv line %d: response_time %q is not a positive number", line, rec[2]))
		}
		k := [2]string{rec[0], rec[1]}
		out = append(out, Sample{Model: rec[0], Process: rec[1], ResponseMs: v, Round: seen[k]})
		seen[k]++
	}
	return out, nil
}

// ReadValidationFile parses the named validation CSV in dir.
func ReadValidationFile(dir, name string) ([]Sample, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	s, err := ReadValidation(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// Workload is a workload file: the applications of an experiment.
type Workload struct {
	Models []WorkloadModel `yaml:"models"`
}

// WorkloadModel is one application of a workload. Fields the latency
// models do not use (images, input shapes) are ignored.
type WorkloadModel struct {
	// Name is model_name (GPU) or model_filename without its extension
	// (Edge TPU).
	Name     string `yaml:"model_name"`
	Filename string `yaml:"model_filename"`
	Type     string `yaml:"model_type"`
	// InputRate is the application's request rate (requests/s).
	InputRate float64 `yaml:"input_rate"`
	// ServiceRate is the model's throughput alone (requests/s); its
	// service time is 1000/ServiceRate ms.
	ServiceRate float64 `yaml:"service_rate"`
	// SwitchOverheadMs is the Edge TPU model-switch cost.
	SwitchOverheadMs float64 `yaml:"switch_overhead"`
	FrontendMemoryMB float64 `yaml:"frontend_memory"`
	BackendMemoryMB  float64 `yaml:"backend_memory"`
	// SLAMs is the latency objective.
	SLAMs float64 `yaml:"sla"`
}

// ServiceTimeMs is 1000/ServiceRate.
func (m WorkloadModel) ServiceTimeMs() float64 { return 1000 / m.ServiceRate }

// ReadWorkload parses a workload YAML file and checks each entry: a
// name, positive service rate and SLA, a non-negative input rate.
func ReadWorkload(r io.Reader) (Workload, error) {
	var w Workload
	if err := yaml.NewDecoder(r).Decode(&w); err != nil {
		return w, errdefs.Invalid("workload: " + err.Error())
	}
	if len(w.Models) == 0 {
		return w, errdefs.Invalid("workload: no models")
	}
	for i := range w.Models {
		m := &w.Models[i]
		if m.Name == "" {
			m.Name = strings.TrimSuffix(m.Filename, filepath.Ext(m.Filename))
		}
		switch {
		case m.Name == "":
			return w, errdefs.Invalid(fmt.Sprintf("workload: models[%d] has no model_name or model_filename", i))
		case !(m.ServiceRate > 0):
			return w, errdefs.Invalid(fmt.Sprintf("workload: models[%d] (%s): service_rate %v must be > 0", i, m.Name, m.ServiceRate))
		case !(m.SLAMs > 0):
			return w, errdefs.Invalid(fmt.Sprintf("workload: models[%d] (%s): sla %v must be > 0", i, m.Name, m.SLAMs))
		case !(m.InputRate >= 0):
			return w, errdefs.Invalid(fmt.Sprintf("workload: models[%d] (%s): input_rate %v must be >= 0", i, m.Name, m.InputRate))
		case m.SwitchOverheadMs < 0 || m.BackendMemoryMB < 0 || m.FrontendMemoryMB < 0:
			return w, errdefs.Invalid(fmt.Sprintf("workload: models[%d] (%s): negative switch_overhead or memory", i, m.Name))
		}
	}
	return w, nil
}

// ReadWorkloadFile parses the named workload file in dir.
func ReadWorkloadFile(dir, name string) (Workload, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return Workload{}, err
	}
	w, err := ReadWorkload(bytes.NewReader(b))
	if err != nil {
		return w, fmt.Errorf("%s: %w", name, err)
	}
	return w, nil
}

// EnvRequire names the environment variable that makes DirForTest fail,
// rather than skip, when the data is absent (`make test` sets it when the
// shared data sits beside the checkout).
const EnvRequire = "ACCELPOOL_REQUIRE_SHARED_DATA"

// TB is the part of testing.TB DirForTest needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// DirForTest returns Dir for a test. The Ibis data is not part of the
// repository (it is read from the shared data folder beside the
// checkout): where it is absent the test is skipped, saying where it
// looked and how to point at the data — unless $ACCELPOOL_REQUIRE_SHARED_DATA
// is set, when it fails.
func DirForTest(t TB) string {
	t.Helper()
	d, err := Dir()
	if err == nil {
		return d
	}
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("the Ibis data is required ($%s is set) but missing: %v", EnvRequire, err)
	}
	t.Skipf("SKIPPED: the Ibis data is not beside this checkout (%v); set $%s to its directory to run this test", err, EnvDir)
	return ""
}
