package cluster

import (
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

const good = `
apiVersion: accelpool.io/v1
kind: Application
metadata: {name: ocr}
spec:
  model: ocr-det
  objective: {p99Ms: 200}
  rate: 20
  replicas: {min: 2, max: 3}
  constraints: {tiers: [edge], labels: {zone: eu}, acceleratorKind: cpu}
  batching: {maxBatchSize: 8, maxQueueDelayMs: 2}
  serving: {concurrency: 2, intra_op_threads: 1, preprocess: {x: {width: 64, height: 32}}}
`

func TestParseApplications(t *testing.T) {
	apps, err := ParseApplications([]byte(good + "---\n" + strings.Replace(good, "name: ocr", "name: ocr2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(apps) != 2 || apps[0].Spec.Replicas.Min != 2 || apps[1].Metadata.Name != "ocr2" {
		t.Fatalf("parsed %+v", apps)
	}
	if sv := apps[0].Spec.Serving; sv == nil || sv.Concurrency != 2 || sv.IntraOpThreads != 1 || sv.Preprocess["x"].Height != 32 {
		t.Fatalf("spec.serving parsed as %+v", sv)
	}
	one, err := ParseApplications([]byte(strings.Replace(good, "  replicas: {min: 2, max: 3}\n", "", 1)))
	if err != nil || one[0].Spec.Replicas.Min != 1 || one[0].Spec.Replicas.Max != 1 {
		t.Fatalf("default replicas: %+v %v", one, err)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	cases := map[string]struct{ from, to, field string }{
		"api version": {"accelpool.io/v1", "v2", "apiVersion"},
		"kind":        {"kind: Application", "kind: Pod", "kind"},
		"name":        {"name: ocr", "name: OCR_1", "metadata.name"},
		"model":       {"model: ocr-det", "model: ''", "spec.model"},
		"digest":      {"model: ocr-det", "model: ocr-det@sha256:xyz", "spec.model"},
		"objective":   {"p99Ms: 200", "p99Ms: 0", "spec.objective.p99Ms"},
		"rate":        {"rate: 20", "rate: -1", "spec.rate"},
		"replicas":    {"{min: 2, max: 3}", "{min: 3, max: 2}", "spec.replicas.max"},
		"tier":        {"tiers: [edge]", "tiers: [moon]", "spec.constraints.tiers[0]"},
		"kind accel":  {"acceleratorKind: cpu", "acceleratorKind: fpga", "spec.constraints.acceleratorKind"},
		"batch":       {"maxBatchSize: 8", "maxBatchSize: 100000", "spec.batching.maxBatchSize"},
		"delay NaN":   {"maxQueueDelayMs: 2", "maxQueueDelayMs: .nan", "spec.batching.maxQueueDelayMs"},
		"delay Inf":   {"maxQueueDelayMs: 2", "maxQueueDelayMs: .inf", "spec.batching.maxQueueDelayMs"},
		"rate NaN":    {"rate: 20", "rate: .nan", "spec.rate"},
		"p99 NaN":     {"p99Ms: 200", "p99Ms: .nan", "spec.objective.p99Ms"},
		"timeout NaN": {"concurrency: 2", "default_timeout_ms: .nan", "spec.serving.default_timeout_ms"},
		"serving":     {"concurrency: 2", "concurrency: 999", "spec.serving.concurrency"},
		"serving img": {"width: 64", "width: -1", "spec.serving.preprocess.x.width"},
		"serving key": {"intra_op_threads", "intraOpThreads", "intraOpThreads"},
		"serving bat": {"concurrency: 2", "max_batch_size: 4", "spec.batching"},
		"unknown key": {"rate: 20", "rat: 20", "rat"},
		"wrong type":  {"rate: 20", "rate: fast", "rate"},
		"broken yaml": {"objective: {p99Ms: 200}", "objective: {p99Ms: [200}", "yaml"},
	}
	for name, c := range cases {
		_, err := ParseApplications([]byte(strings.Replace(good, c.from, c.to, 1)))
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: got %v, want ErrInvalid naming %q", name, err, c.field)
		}
	}
	if _, err := ParseApplications([]byte(good + "---\n" + good)); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := ParseApplications([]byte("# nothing\n")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("empty file: %v", err)
	}
	if _, err := ParseApplications(make([]byte, MaxDocumentBytes+1)); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("oversized file: %v", err)
	}
}
