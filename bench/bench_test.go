package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 99, 5 * time.Millisecond},
		{ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}

func TestMedianSpreadRatio(t *testing.T) {
	for _, tc := range []struct {
		in             []float64
		median, spread float64
	}{
		{nil, 0, 0},
		{[]float64{3}, 3, 0},
		{[]float64{3, 1, 2}, 2, 1},
		{[]float64{4, 1, 3, 2}, 2.5, 1.2},
	} {
		if got := median(tc.in); got != tc.median {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.median)
		}
		if got := spread(tc.in); got != tc.spread {
			t.Errorf("spread(%v) = %v, want %v", tc.in, got, tc.spread)
		}
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Errorf("median reordered its argument: %v", in)
	}
	if ratio(1, 0) != 0 || ratio(3, 4) != 0.75 {
		t.Error("ratio")
	}
	if got := medianDuration([]time.Duration{3, 1, 2}); got != 2 {
		t.Errorf("medianDuration = %v", got)
	}
}

func TestRotateAndBestK(t *testing.T) {
	v := []string{"a", "b", "c"}
	for k, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := strings.Join(rotate(v, k), ""); got != want {
			t.Errorf("rotate(%v, %d) = %s, want %s", v, k, got, want)
		}
	}
	if strings.Join(v, "") != "abc" {
		t.Errorf("rotate changed its argument: %v", v)
	}
	for _, tc := range []struct {
		in   map[int]float64
		want int
	}{
		{map[int]float64{}, 0},
		{map[int]float64{1: 10, 2: 12}, 2},
		{map[int]float64{1: 12, 2: 10}, 1},
		{map[int]float64{1: 10, 2: 10}, 1},
	} {
		if got := bestK(tc.in); got != tc.want {
			t.Errorf("bestK(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestCredit(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	t0, t1 := at(100), at(200)
	for _, tc := range []struct {
		name  string
		spans []span
		want  float64
	}{
		{"inside", []span{{at(110), at(120)}, {at(150), at(190)}}, 2},
		{"outside", []span{{at(0), at(100)}, {at(200), at(300)}}, 0},
		{"straddles start", []span{{at(80), at(120)}}, 0.5},
		{"straddles end", []span{{at(190), at(230)}}, 0.25},
		{"covers window", []span{{at(0), at(400)}}, 0.25},
		{"empty span", []span{{at(150), at(150)}}, 0},
	} {
		if got := credit(tc.spans, t0, t1); got != tc.want {
			t.Errorf("%s: credit = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMeasureSaturationCountsWork(t *testing.T) {
	// Two workers whose calls each take about 2 ms: about 1000 req/s.
	var calls atomic.Int64
	newCall := func() callFunc {
		return func(ctx context.Context) error {
			calls.Add(1)
			time.Sleep(2 * time.Millisecond)
			return nil
		}
	}
	var started, ended bool
	r, err := measureSaturation(context.Background(), newCall, 2, 20*time.Millisecond, 200*time.Millisecond,
		window{start: func() { started = true }, end: func() { ended = true }})
	if err != nil {
		t.Fatal(err)
	}
	if !started || !ended {
		t.Error("window callbacks not called")
	}
	if r.Throughput <= 0 || r.Throughput > 1000*1.05 {
		t.Errorf("throughput %v req/s, want (0, 1050] for two 2 ms workers", r.Throughput)
	}
	if r.Requests > float64(calls.Load()) {
		t.Errorf("credited %v requests, only %d made", r.Requests, calls.Load())
	}
}

func TestMeasureSaturationStopsOnError(t *testing.T) {
	var n atomic.Int64
	newCall := func() callFunc {
		return func(ctx context.Context) error {
			if n.Add(1) == 10 {
				return errdefs.Invalid("boom")
			}
			return nil
		}
	}
	_, err := measureSaturation(context.Background(), newCall, 3, 10*time.Millisecond, time.Hour, window{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestMeasureSequential(t *testing.T) {
	n := 0
	call := func(ctx context.Context) error { n++; return nil }
	r, err := measureSequential(context.Background(), call, time.Hour, 25)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 25 || n != 25 {
		t.Errorf("made %d requests (reported %d), want 25", n, r.Requests)
	}
	if r.P50 > r.P99 {
		t.Errorf("p50 %v > p99 %v", r.P50, r.P99)
	}
}

func TestImageInputSpec(t *testing.T) {
	prep := knownPreps["ocr-det"]
	for _, tc := range []struct {
		shape  []int64
		ok     bool
		layout string
		h, w   int
	}{
		{[]int64{1, 256, 256, 3}, true, "NHWC", 256, 256},
		{[]int64{-1, 3, -1, -1}, true, "NCHW", 640, 640},
		{[]int64{-1, 3, 48, -1}, true, "NCHW", 48, 640},
		{[]int64{4, 3, 32, 32}, false, "", 0, 0},
		{[]int64{1, 2, 32, 32}, false, "", 0, 0},
		{[]int64{1, 3, 32}, false, "", 0, 0},
	} {
		spec, ok := imageInputSpec(tc.shape, prep)
		if ok != tc.ok {
			t.Errorf("%v: ok = %v, want %v", tc.shape, ok, tc.ok)
			continue
		}
		if ok && (string(spec.Layout) != tc.layout || spec.Height != tc.h || spec.Width != tc.w) {
			t.Errorf("%v: %s %dx%d, want %s %dx%d", tc.shape, spec.Layout, spec.Height, spec.Width, tc.layout, tc.h, tc.w)
		}
	}
}

func TestBuildInputsDeterministic(t *testing.T) {
	meta := runtime.Metadata{Inputs: []runtime.IOSpec{
		{Name: "image", DataType: tensor.FP32, Shape: []int64{-1, 3, -1, -1}},
		{Name: "aux", DataType: tensor.FP32, Shape: []int64{-1, 4}},
	}}
	a, desc, err := buildInputs("ocr-det", meta, SyntheticImage(), "synthetic")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := buildInputs("ocr-det", meta, SyntheticImage(), "synthetic")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a[0].Shape) != "[1 3 640 640]" || fmt.Sprint(a[1].Shape) != "[1 4]" {
		t.Errorf("shapes %v %v", a[0].Shape, a[1].Shape)
	}
	for i := range a {
		if !bytes.Equal(a[i].Data, b[i].Data) {
			t.Errorf("input %d differs between builds", i)
		}
	}
	if !strings.Contains(desc, "image FP32[1 3 640 640] from synthetic via preprocess (NCHW") || !strings.Contains(desc, "aux FP32[1 4] from fixed ramp") {
		t.Errorf("description %q", desc)
	}
	if _, _, err := buildInputs("x", runtime.Metadata{Inputs: []runtime.IOSpec{{Name: "s", DataType: tensor.Bytes, Shape: []int64{1}}}}, SyntheticImage(), ""); err == nil {
		t.Error("BYTES input accepted")
	}
}

func TestServeConfigIsValidYAML(t *testing.T) {
	c := serveConfig{concurrency: 2, queue: 256, maxBatch: 8, delay: 2 * time.Millisecond, intra: 1}
	got, err := repository.ParseConfig([]byte(c.yaml()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Concurrency != 2 || got.MaxQueueSize != 256 || got.MaxBatchSize != 8 || got.QueueDelay() != 2*time.Millisecond || got.IntraOpThreads != 1 {
		t.Errorf("parsed %+v from\n%s", got, c.yaml())
	}
}

// echoBackend is a pure-Go runtime.Backend: every model takes x FP32
// [-1,4] and returns y = x after a short pause, like a tiny model.
type echoBackend struct{ pause time.Duration }

func (echoBackend) Name() string { return "echo" }

func (b echoBackend) Load(ctx context.Context, path string, _ runtime.Options) (runtime.Session, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return echoSession(b), nil
}

type echoSession echoBackend

func (echoSession) Metadata() runtime.Metadata {
	return runtime.Metadata{
		Inputs:  []runtime.IOSpec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 4}}},
		Outputs: []runtime.IOSpec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1, 4}}},
	}
}
func (echoSession) Provider() string { return "cpu" }
func (echoSession) Close() error     { return nil }
func (s echoSession) Run(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
	time.Sleep(s.pause)
	out := in[0].Clone()
	out.Name = "y"
	return []tensor.Tensor{out}, nil
}

// loadgenChild, set in the environment, makes the test binary a load
// generator process (OverheadConfig.ClientCommand) instead of running tests.
const loadgenChild = "ACCELPOOL_BENCH_TEST_LOADGEN"

func TestMain(m *testing.M) {
	if os.Getenv(loadgenChild) == "" {
		os.Exit(m.Run())
	}
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	config := LoadgenFlags(fs)
	_ = fs.Parse(os.Args[1:])
	cfg, err := config()
	if err == nil {
		err = Loadgen(context.Background(), cfg, os.Stdin, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestRunOverheadEndToEnd drives the whole benchmark, real node and every
// transport (shared memory in /dev/shm included), over the pure-Go backend, with the load generator
// in this process and in processes of its own.
func TestRunOverheadEndToEnd(t *testing.T) {
	t.Run("in-process", func(t *testing.T) { runOverheadEndToEnd(t, nil, "") })
	t.Run("process", func(t *testing.T) {
		t.Setenv(loadgenChild, "1")
		runOverheadEndToEnd(t, []string{os.Args[0]}, "")
	})
	// --client-cpus: the load generator under taskset (util-linux), on
	// CPU 0, which every machine has.
	t.Run("pinned", func(t *testing.T) {
		taskset, err := exec.LookPath("taskset")
		if err != nil {
			t.Fatalf("taskset (Debian package util-linux) is needed: %v", err)
		}
		t.Setenv(loadgenChild, "1")
		runOverheadEndToEnd(t, []string{taskset, "-c", "0", os.Args[0]}, "0")
	})
}

func runOverheadEndToEnd(t *testing.T, client []string, cpus string) {
	repo := t.TempDir()
	for _, m := range []string{"tiny", "tiny-batch"} {
		dir := filepath.Join(repo, m, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, repository.ModelFile), []byte("not read"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	rep, err := RunOverhead(context.Background(), OverheadConfig{
		Backend: echoBackend{pause: 200 * time.Microsecond}, Repository: repo,
		Models: []string{"tiny"}, BatchModel: "tiny-batch", BatchClients: 8,
		Duration: 60 * time.Millisecond, Rounds: 2, WorkDir: t.TempDir(), ClientCommand: client, ClientCPUs: cpus, Floor: true,
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// The 16-byte floor, the model, then its floor.
	if len(rep.Models) != 3 || !rep.Models[0].Floor || rep.Models[0].FloorOf != "" || rep.Models[1].Floor ||
		rep.Models[2].Model != "tiny-floor" || rep.Models[2].FloorOf != "tiny" {
		t.Fatalf("report %+v", rep)
	}
	for _, fr := range []ModelReport{rep.Models[0], rep.Models[2]} {
		if len(fr.Modes) != 4 {
			t.Fatalf("floor %s: modes %+v", fr.Model, fr.Modes)
		}
	}
	mr := rep.Models[1]
	if len(mr.Modes) != 4 {
		t.Fatalf("report %+v", rep)
	}
	if mr.K != 1 && mr.K != 2 {
		t.Errorf("K = %d", mr.K)
	}
	for _, m := range []Mode{InProcess, GRPC, REST, GRPCSHM} {
		s, ok := mr.Mode(m)
		if !ok || s.SatThroughput <= 0 || s.P50 <= 0 || len(s.SatRounds) != 2 {
			t.Errorf("%s: %+v", m, s)
		}
		if remote := client != nil && m != InProcess; remote != (s.SatClientCPUPerReq > 0) {
			t.Errorf("%s: client CPU %v with load generator %q", m, s.SatClientCPUPerReq, client)
		}
		// The echo model pauses 200 µs per run: the node's compute time
		// sees at least that, and never more than the whole request.
		if s.Compute < 200*time.Microsecond || s.Compute > s.Mean || (m == InProcess && s.Compute != s.Mean) {
			t.Errorf("%s: c1 compute %v, mean %v", m, s.Compute, s.Mean)
		}
	}
	if b := rep.Batch; b == nil || b.Skipped != "" || len(b.Points) == 0 || b.Points[0].K != 1 ||
		len(b.Points) != map[bool]int{true: 1, false: 2}[b.K == 1] {
		t.Errorf("batch report %+v", rep.Batch)
	} else {
		for _, p := range b.Points {
			// Stacked in-process rows, served requests with and without
			// batching, and the batch size each round saw.
			if p.Rows <= 0 || p.Stacked <= 0 || p.Unbatched <= 0 || p.Batched <= 0 || p.MeanBatch < 1 ||
				len(p.RowsRounds) != 2 || len(p.StackedRounds) != 2 || len(p.BatchedRounds) != 2 || len(p.MeanBatchRounds) != 2 {
				t.Errorf("batch point %+v", p)
			}
		}
	}
	text := out.String()
	// Floors have no summary lines of their own.
	if strings.Contains(text, "overhead: tiny-floor") || strings.Contains(text, "overhead: floor-16B") {
		t.Errorf("a floor has a summary line:\n%s", text)
	}
	for _, re := range []string{
		`(?m)^overhead: tiny grpc saturation ratio \d+\.\d\d, added p50 -?\d+\.\d\dms$`,
		`(?m)^overhead: tiny rest-binary saturation ratio \d+\.\d\d, added p50 -?\d+\.\d\dms$`,
		`(?m)^overhead: tiny grpc-shm saturation ratio \d+\.\d\d, added p50 -?\d+\.\d\dms$`,
		`(?m)^    tiny grpc-shm: mean [+-]\d+\.\d\dms over in-process, of which the runtime [+-]\d+\.\d\dms and transport and serving [+-]\d+\.\d\dms$`,
		`(?m)^    tiny rest-binary: latency [+-]\d+\.\d\dms, its floor [+-]\d+\.\d\dms \(16 bytes: [+-]\d+\.\d\dms\), the rest [+-]\d+\.\d\dms; server CPU [+-]\d+\.\d\dms, its floor [+-]\d+\.\d\dms$`,
		`(?m)^== floor-16B .*\n   input 16 bytes each way \(16 bytes\) in, 16 bytes out, through a model that does no work`,
		`(?m)^batching: tiny-batch gain \d+\.\d\dx with 1 executor \(mean batch \d+\.\d; ONNX Runtime alone \d+\.\d\dx\)(, \d+\.\d\dx with 2 executors \(mean batch \d+\.\d; ONNX Runtime alone \d+\.\d\dx\))?\n\z`,
		`(?m)^== dynamic batching: tiny-batch, in process and over gRPC with 8 concurrent single-row clients; max_batch_size 8, max_queue_delay_ms 2$`,
		`over loopback`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	pinned := strings.Contains(text, "the load generator ran pinned to CPUs "+cpus+" and this process")
	if pinned != (cpus != "") || strings.Contains(text, "compete for them") == (cpus != "") {
		t.Errorf("client CPUs %q: the notes say otherwise:\n%s", cpus, text)
	}
}

func TestRunOverheadNothingToDo(t *testing.T) {
	var out bytes.Buffer
	rep, err := RunOverhead(context.Background(), OverheadConfig{Backend: echoBackend{}, SkipModels: true, SkipBatching: true}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Models) != 0 || rep.Batch != nil {
		t.Errorf("report %+v", rep)
	}
	if _, err := RunOverhead(context.Background(), OverheadConfig{}, &out); err == nil {
		t.Error("no backend accepted")
	}
}
