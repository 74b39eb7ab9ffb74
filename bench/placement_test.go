package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/sim"
)

const testWorkload = `
source: test
kind: gpu
nodes:
  - name: small
    share: 0.5
    accelerators: [{kind: gpu, memoryMiB: 2048, compute: 1}]
  - name: big
    share: 0.5
    accelerators: [{kind: gpu, memoryMiB: 4096, compute: 1}, {kind: cpu, memoryMiB: 1024, compute: 4}]
models:
  - {name: m1, serviceMs: 10, cv: 0.1, memoryMiB: 1000}
  - {name: m2, serviceMs: 20, memoryMiB: 500}
apps:
  - {name: a, model: m1, rate: 10, objectiveMs: 100}
  - {name: b, model: m2, rate: 5, objectiveMs: 150, memoryMiB: 700}
`

func TestParseWorkload(t *testing.T) {
	w, err := ParseWorkload([]byte(testWorkload))
	if err != nil {
		t.Fatal(err)
	}
	apps := w.Expand(5)
	var names []string
	for _, a := range apps {
		names = append(names, a.Metadata.Name)
	}
	if got := strings.Join(names, " "); got != "a-0 b-0 a-1 b-1 a-2" {
		t.Errorf("expanded names %q", got)
	}
	if m := apps[1].Spec.MemoryBytes; m != 700<<20 {
		t.Errorf("b's memory %d, want its own 700 MiB", m)
	}
	if k := apps[0].Spec.Constraints.AcceleratorKind; k != "gpu" {
		t.Errorf("apps constrained to %q", k)
	}
	for _, a := range apps {
		a.Normalize()
		if err := a.Validate(); err != nil {
			t.Errorf("%s: %v", a.Metadata.Name, err)
		}
	}
	nodes := w.Cluster(5, 1)
	count := map[string]int{}
	for _, n := range nodes {
		count[n.Accelerators[0].Model]++
	}
	if count["small"]+count["big"] != 5 || count["small"] < 2 || count["big"] < 2 {
		t.Errorf("shapes %v", count)
	}
	if got := capacityBound(w, nodes); got < 5 {
		t.Errorf("capacity bound %d", got)
	}
}

// TestWorkloadBadInput: each bad entry is named in the error.
func TestWorkloadBadInput(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown model", "model: m1, rate: 10", "model: nope, rate: 10", `apps[0] (a): unknown model "nope" (the workload's models are m1, m2)`},
		{"negative rate", "rate: 10, objectiveMs: 100}", "rate: -3, objectiveMs: 100}", "apps[0] (a): rate -3 must be between 0 and 1e6 requests/s"},
		{"objective below service", "rate: 10, objectiveMs: 100}", "rate: 10, objectiveMs: 5}", "apps[0] (a): objectiveMs 5 is below m1's own service time 10 ms: no placement can meet it"},
		{"bad model", "serviceMs: 10,", "serviceMs: -1,", "models[0] (m1): serviceMs -1 must be > 0"},
		{"unknown field", "cv: 0.1,", "speed: 2,", "field speed not found"},
		{"bad model kind", "{name: m2,", "{name: m2, kind: fpga,", `models[1] (m2): kind "fpga" is not one of cpu, gpu, tpu`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := strings.Replace(testWorkload, c.from, c.to, 1)
			if data == testWorkload {
				t.Fatal("edit did not apply")
			}
			_, err := ParseWorkload([]byte(data))
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, c.want)
			}
		})
	}
	// The file name leads the message; a model missing from the
	// repository is named for --mode real.
	dir := t.TempDir()
	path := filepath.Join(dir, "w.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(testWorkload, "rate: 5,", "rate: -5,", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadWorkload(path); err == nil || !strings.HasPrefix(err.Error(), "workload "+path+": apps[1] (b): rate -5") {
		t.Errorf("err = %v", err)
	}
	w, _ := ParseWorkload([]byte(testWorkload))
	if err := w.CheckRepository(dir); err == nil || !strings.Contains(err.Error(), `apps[0] (a): model "m1": not in the model repository`) {
		t.Errorf("repository check: %v", err)
	}
}

// TestShippedWorkloads parses the workloads in bench/workloads.
func TestShippedWorkloads(t *testing.T) {
	files, _ := filepath.Glob("workloads/*.yaml")
	if len(files) == 0 {
		t.Fatal("no workloads shipped")
	}
	for _, f := range files {
		if _, err := ReadWorkload(f); err != nil {
			t.Error(err)
		}
	}
}

// TestPlacementSimSmoke runs the sim mode end to end on a small cluster.
func TestPlacementSimSmoke(t *testing.T) {
	w, err := ParseWorkload([]byte(testWorkload))
	if err != nil {
		t.Fatal(err)
	}
	pols, err := Policies("all", w)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep, err := RunPlacement(context.Background(), PlacementConfig{Workload: w, Mode: PlacementSim, Nodes: 6, Policies: pols, SimDuration: 20e9}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if len(rep.Results) != len(pols) {
		t.Fatalf("%d results for %d policies", len(rep.Results), len(pols))
	}
	for _, r := range rep.Results {
		if r.Hosted == 0 || r.Requests == 0 {
			t.Errorf("%s hosted %d apps, measured %d requests", r.Policy, r.Hosted, r.Requests)
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if rep.ModelDriven != nil && !strings.HasPrefix(last, fmt.Sprintf("placement: model-driven %d apps, best knapsack", rep.ModelDriven.Hosted)) {
		t.Errorf("last line %q", last)
	}
}

// echoRepo makes a repository holding the named models for echoBackend.
func echoRepo(t *testing.T, models ...string) string {
	t.Helper()
	repo := t.TempDir()
	for _, m := range models {
		dir := filepath.Join(repo, m, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("not read"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

const echoWorkload = `
source: echo
kind: cpu
threads: 1
concurrency: 2
nodes:
  - name: here
    share: 1
    accelerators: [{kind: cpu, memoryMiB: 64, compute: 2}]
models:
  - {name: tiny, serviceMs: 0.5, cv: 0.1, memoryMiB: 16}
apps:
  - {name: a, model: tiny, rate: 20, objectiveMs: 500}
  - {name: b, model: tiny, rate: 10, objectiveMs: 500}
`

func TestViolatedApps(t *testing.T) {
	apps := []sim.AppResult{
		{App: "ok", Requests: 150, P99Ms: 20, P99LowMs: 18, P99HighMs: 22, ObjectiveMs: 25},
		{App: "near", Requests: 150, P99Ms: 26, P99LowMs: 21, P99HighMs: 30, ObjectiveMs: 25, Violated: true},
		{App: "far", Requests: 300, P99Ms: 97.2, P99LowMs: 80, P99HighMs: 120, ObjectiveMs: 60, Violated: true, Significant: true},
		{App: "refused", Requests: 10, P99Ms: math.Inf(1), P99LowMs: math.Inf(1), P99HighMs: math.Inf(1), ObjectiveMs: 150, Violated: true, Significant: true},
	}
	want := []string{
		"refused p99 +Inf ms (95 % CI +Inf–+Inf) over its 150 ms objective (+Infx), 10 requests, 95 % sure",
		"far p99 97.2 ms (95 % CI 80.0–120.0) over its 60 ms objective (1.62x), 300 requests, 95 % sure",
		"near p99 26.0 ms (95 % CI 21.0–30.0) over its 25 ms objective (1.04x), 150 requests",
	}
	if got := violatedApps(apps); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := violatedApps(apps[:1]); len(got) != 0 {
		t.Errorf("no violation listed %q", got)
	}
}

// TestPlacementRealEndToEnd places on this machine and serves the placed
// applications on a real node over gRPC, with the pure-Go echo backend.
func TestPlacementRealEndToEnd(t *testing.T) {
	w, err := ParseWorkload([]byte(echoWorkload))
	if err != nil {
		t.Fatal(err)
	}
	pols, err := Policies("model-driven,knapsack-first", w)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep, err := RunPlacement(context.Background(), PlacementConfig{
		Workload: w, Mode: PlacementReal, Policies: pols, Backend: echoBackend{pause: 500 * time.Microsecond},
		Repository: echoRepo(t, "tiny"), Warmup: 200 * time.Millisecond, Duration: time.Second, WorkDir: t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, r := range rep.Results {
		// 64 MiB holds four 16 MiB instances; the load is light.
		if r.Hosted != 4 || r.Requests < 40 || r.Violations != 0 {
			t.Errorf("%s: hosted %d, %d requests, %d violations", r.Policy, r.Hosted, r.Requests, r.Violations)
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; last != "placement: model-driven 4 apps, best knapsack 4 apps (1.00x), violations 0" {
		t.Errorf("last line %q", last)
	}
	// A model the repository lacks is named with its application.
	_, err = RunPlacement(context.Background(), PlacementConfig{Workload: w, Mode: PlacementReal, Policies: pols,
		Backend: echoBackend{}, Repository: t.TempDir()}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `apps[0] (a): model "tiny": not in the model repository`) {
		t.Errorf("missing model: %v", err)
	}
}

// TestValidateSimEndToEnd runs the simulator's validation against real
// serving with the echo backend (the figures mean nothing; the plumbing
// is what is tested).
func TestValidateSimEndToEnd(t *testing.T) {
	var out strings.Builder
	rep, err := RunValidateSim(context.Background(), ValidateConfig{
		Backend: echoBackend{pause: 300 * time.Microsecond}, Repository: echoRepo(t, "m1", "m2"), Models: []string{"m1", "m2"},
		Levels: []float64{0.05, 0.1}, Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond,
		ProfileRuns: 20, SimDuration: 30 * time.Second, WorkDir: t.TempDir(),
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	if len(rep.Levels) != 2 || len(rep.Levels[0].Apps) != 2 || rep.Levels[1].Apps[1].Requests == 0 || rep.Levels[1].Apps[1].SimP99Ms <= 0 ||
		rep.Levels[1].Apps[1].AloneP99Ms <= 0 || rep.Levels[1].Apps[1].EmpP99Ms < rep.Levels[1].Apps[1].AloneMeanMs {
		t.Errorf("report %+v", rep)
	}
	if !regexp.MustCompile(`(?m)^validate-sim: empirical p99 error mean \d+\.\d %, max \d+\.\d % \(calibrated: .*; naive: .*\) over 4 \(model, level\) pairs; target 15 %$`).MatchString(out.String()) {
		t.Errorf("summary line missing:\n%s", out.String())
	}
	// The analytic model's prediction: a processor-sharing mean is at
	// least the demand served alone, and its p99 above its mean.
	for _, lv := range rep.Levels {
		for _, a := range lv.Apps {
			if !(a.ModelMeanMs > 0.3 && a.ModelP99Ms > a.ModelMeanMs) || math.IsNaN(a.ErrP99Model) {
				t.Errorf("level %.2f %s: analytic mean %.3f ms, p99 %.3f ms (error %v)", lv.Level, a.Model, a.ModelMeanMs, a.ModelP99Ms, a.ErrP99Model)
			}
			// With the delays: at least the mean served alone at the rate.
			if !(a.DelayModelMeanMs >= 0.99*a.AloneMeanMs && a.DelayModelP99Ms > a.DelayModelMeanMs) {
				t.Errorf("level %.2f %s: analytic with delays mean %.3f ms (alone %.3f), p99 %.3f ms", lv.Level, a.Model, a.DelayModelMeanMs, a.AloneMeanMs, a.DelayModelP99Ms)
			}
		}
	}
	if !regexp.MustCompile(`(?m)^analytic model \(latency\.PS, \d+ servers, demand served alone at \d+\.\d req/s\) on this machine's measurements: mean error mean \d+\.\d %, max \d+\.\d %; p99 error mean \d+\.\d %, max \d+\.\d %; target 10 % \(with the calibrated demands and \d+\.\d\d servers instead: mean error mean \d+\.\d %, p99 error mean \d+\.\d %; given each level's ALONE latencies split into work and delay: mean error mean \d+\.\d %, p99 error mean \d+\.\d %\)$`).MatchString(out.String()) {
		t.Errorf("analytic model's line missing:\n%s", out.String())
	}
}

// TestServedDemand: each model's demand is measured served at its
// applications' lowest rate (at least the echo backend's pause per
// request), replaces the profile, and makes the model-driven policy count
// the cores; the ceiling, whose model does not, is then not printed.
func TestServedDemand(t *testing.T) {
	w, err := ParseWorkload([]byte(echoWorkload))
	if err != nil {
		t.Fatal(err)
	}
	const pause = 2 * time.Millisecond
	var out strings.Builder
	cfg := PlacementConfig{Backend: echoBackend{pause: pause}, Repository: echoRepo(t, "tiny"), WorkDir: t.TempDir(),
		Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, DemandRequests: 15}
	if err := ServedDemand(context.Background(), w, cfg, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	if got := w.Models[0].ServiceMs; got < 2 || got > 50 {
		t.Fatalf("served demand %.3f ms for a model that pauses %v per request", got, pause)
	}
	// Open-loop at the lower of the two applications' rates (10 req/s),
	// for 15 requests at least: each of the 3 windows is stretched to
	// 1.5 s. The served mean and CV printed are the median round's, and
	// what replaced the profile's.
	row := regexp.MustCompile(`(?m)^tiny\s+0\.500 \(0\.10\)\s+10\.00\s+(\S+) (\S+) (\S+)\s+(\d+)\s+(\S+) \((\S+)\)`).FindStringSubmatch(out.String())
	if row == nil {
		t.Fatalf("no row for tiny at 10 req/s with 3 rounds:\n%s", out.String())
	}
	if n, _ := strconv.Atoi(row[4]); n < 5 || n > 40 {
		t.Fatalf("%d requests measured at 10 req/s over 1.5 s", n)
	}
	var chosen []string
	for _, m := range row[1:4] {
		if v, ok := strings.CutSuffix(m, "*"); ok {
			chosen = append(chosen, v)
		}
	}
	if len(chosen) != 1 || chosen[0] != row[5] {
		t.Fatalf("round means %v: want one marked, the mean printed (%s)", row[1:4], row[5])
	}
	if got := fmt.Sprintf("%.3f (%.2f)", w.Models[0].ServiceMs, w.Models[0].CV); got != row[5]+" ("+row[6]+")" {
		t.Fatalf("the model's demand is %s, the table printed %s (%s)", got, row[5], row[6])
	}
	if !w.countCores {
		t.Fatal("the model-driven policy was not told to count cores")
	}
	if _, ok := PlacementCeiling(w, []cluster.Node{{Name: "n", Accelerators: []cluster.Accelerator{{ID: "cpu0", Kind: "cpu", MemoryBytes: 64 << 20, Compute: 2}}}}); ok {
		t.Fatal("a ceiling under the one-server model was computed for a policy that counts cores")
	}
	if err := ServedDemand(context.Background(), w, PlacementConfig{Backend: echoBackend{}, Repository: t.TempDir()}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "tiny") {
		t.Fatalf("a model missing from the repository: %v", err)
	}
}

// TestMedianRound: the demand is the round with the median mean, so one
// disturbed window, slow or fast, is not it; an even count takes the
// lower middle.
func TestMedianRound(t *testing.T) {
	for _, c := range []struct {
		means []float64
		want  int
	}{
		{[]float64{3.1}, 0},
		{[]float64{3.1, 9.7, 3.3}, 2},
		{[]float64{9.7, 3.1, 3.3}, 2},
		{[]float64{0.5, 3.3, 3.1}, 2},
		{[]float64{3.3, 3.1, 9.7, 3.2}, 3},
	} {
		rounds := make([]demandRound, len(c.means))
		for i, m := range c.means {
			rounds[i].mean = m
		}
		if got := medianRound(rounds); got != c.want {
			t.Errorf("medianRound(%v) = %d, want %d", c.means, got, c.want)
		}
	}
	if got := roundMeans([]demandRound{{mean: 3.1}, {mean: 9.7}}, 0); got != "3.100* 9.700" {
		t.Errorf("roundMeans = %q", got)
	}
}

// TestLightRates: a model's light rate is the lowest positive rate of its
// applications; a model none sends requests to gets none.
func TestLightRates(t *testing.T) {
	w := &Workload{Apps: []WorkloadApp{
		{Model: "a", Rate: 5}, {Model: "a", Rate: 0}, {Model: "a", Rate: 2},
		{Model: "b", Rate: 0}, {Model: "c", Rate: 7},
	}}
	got := lightRates(w)
	want := map[string]float64{"a": 2, "c": 7}
	if len(got) != len(want) || got["a"] != 2 || got["c"] != 7 {
		t.Fatalf("lightRates = %v, want %v", got, want)
	}
}

// TestRealModeNeedsCPUProfiles: --mode real serves on this machine's CPU,
// so a workload with GPU or TPU profiles is refused, naming its kinds.
func TestRealModeNeedsCPUProfiles(t *testing.T) {
	w, err := ReadWorkload("workloads/ibis-heter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.localNode(1 << 30)
	if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "profiles are for gpu and tpu (run it with --mode sim)") {
		t.Fatalf("err = %v", err)
	}
	cpu, err := ReadWorkload("workloads/demo-cpu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := cpu.localNode(0)
	if err != nil || len(n.Accelerators) != 1 || n.Accelerators[0].Kind != "cpu" || n.Accelerators[0].MemoryBytes <= 0 {
		t.Fatalf("demo-cpu local node %+v, %v", n, err)
	}
}

// TestModelMaxUtilisation: with served demands the model-driven policy
// stops at the utilisation bound it is given, however loose the
// objectives, and refuses a bound outside (0, 1].
func TestModelMaxUtilisation(t *testing.T) {
	const wl = `
source: bound
kind: cpu
threads: 1
nodes:
  - name: here
    share: 1
    accelerators: [{kind: cpu, memoryMiB: 1024, compute: 2}]
models:
  - {name: m, serviceMs: 50, cv: 0.1, memoryMiB: 16}
apps:
  - {name: a, model: m, rate: 10, objectiveMs: 100000}
`
	hosted := func(bound float64) (int, string) {
		t.Helper()
		w, err := ParseWorkload([]byte(wl))
		if err != nil {
			t.Fatal(err)
		}
		w.countCores = true // as ServedDemand leaves it
		if bound > 0 {
			if err := w.SetModelMaxUtilisation(bound); err != nil {
				t.Fatal(err)
			}
		}
		pols, err := Policies("model-driven", w)
		if err != nil {
			t.Fatal(err)
		}
		nodes := w.Cluster(1, 1)
		res, _, _, err := fill(nodes, w.Expand(10), pols[0])
		if err != nil {
			t.Fatal(err)
		}
		return res.Hosted, res.Reason
	}
	// Each application is 0.5 s of work per second on 2 servers: 0.25.
	for _, c := range []struct {
		bound float64
		want  int
	}{{0, 3}, {0.5, 2}, {0.3, 1}} {
		if got, why := hosted(c.bound); got != c.want || !strings.Contains(why, "utilisation") {
			t.Errorf("bound %v: %d hosted (%s), want %d stopped by utilisation", c.bound, got, why, c.want)
		}
	}
	w, _ := ParseWorkload([]byte(wl))
	for _, bad := range []float64{0, -0.1, 1.01, math.NaN()} {
		if err := w.SetModelMaxUtilisation(bad); err == nil || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("bound %v: %v, want an invalid-argument error", bad, err)
		}
	}
}
