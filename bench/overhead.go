package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/tensor"
)

// Mode is one way of reaching a model.
type Mode string

// The modes RunOverhead compares: Session.Run in this process, and the
// serving node reached over gRPC (raw contents) or REST (binary tensor
// extension), client and server both in this process over loopback.
const (
	InProcess Mode = "in-process"
	GRPC      Mode = "grpc"
	REST      Mode = "rest-binary"
	// GRPCSHM is gRPC with the tensors in system shared memory (see
	// shm.go): for clients on the node's own machine.
	GRPCSHM Mode = "grpc-shm"
)

// DefaultModels are measured when OverheadConfig.Models is empty.
var DefaultModels = []string{"blazeface-back", "ocr-det"}

// DefaultBatchModel is the model of the dynamic batching phase: the
// PaddleOCR angle classifier, whose first dimension is dynamic.
const DefaultBatchModel = "ocr-cls"

// OverheadConfig configures RunOverhead. Zero values take the defaults
// given on each field.
type OverheadConfig struct {
	// Backend loads models, both for the in-process baseline and inside
	// the serving node (required).
	Backend runtime.Backend
	// Runtime describes the backend for the report header, e.g.
	// "onnxruntime 1.30.0".
	Runtime string
	// Repository is the model repository the models are read from
	// (<name>/<version>/model.onnx). Its config.yaml files are not used:
	// the benchmark writes its own into a scratch repository.
	Repository string
	// Models to measure (default DefaultModels); SkipModels measures none
	// (only the batching phase runs).
	Models     []string
	SkipModels bool
	// Duration is each measurement window (default 5s); Rounds how many
	// times every mode is measured, interleaved (default 3).
	Duration time.Duration
	Rounds   int
	// Requests, when > 0, makes each concurrency-1 measurement exactly this
	// many requests instead of lasting Duration.
	Requests int
	// Concurrency is K, the goroutines calling the session in process and
	// the executors of the served model (config.yaml concurrency). 0 picks,
	// per model, the in-process K of 1 or 2 with the best throughput.
	Concurrency int
	// ClientsPerExecutor sets the served saturation clients to this many
	// times K (default 4), enough to keep the queue non-empty.
	ClientsPerExecutor int
	// IntraOpThreads and InterOpThreads are given to every session, in
	// process and served alike (0: the runtime's default).
	IntraOpThreads int
	InterOpThreads int
	// BatchModel is the dynamic batching phase's model (default
	// DefaultBatchModel); SkipBatching leaves the phase out.
	BatchModel   string
	SkipBatching bool
	// BatchClients is how many concurrent single-row gRPC clients the
	// batching phase runs (default 32); BatchMaxSize and BatchDelay its
	// max_batch_size (default 8) and max_queue_delay_ms (default 2ms).
	BatchClients int
	BatchMaxSize int
	BatchDelay   time.Duration
	// Image feeds image inputs; nil uses SyntheticImage. ImageName
	// describes it in the report.
	Image     image.Image
	ImageName string
	// WorkDir holds the scratch model repositories; empty makes (and then
	// removes) a temporary directory.
	WorkDir string
	// Logger receives the serving node's logs; nil discards them.
	Logger *slog.Logger
	// ClientCommand, when set, runs the served modes' load generator in a
	// process of its own: the command and its first arguments (accelpool's
	// hidden "bench loadgen"), to which LoadgenConfig.Flags are added; the
	// child then runs Loadgen. Its CPU time is reported apart from the
	// server's. Without it the load generator runs in this process.
	ClientCommand []string
	// ClientCPUs, when set, says that ClientCommand pins the load
	// generator to these CPUs (a taskset list) apart from this process's:
	// the report then says so instead of "they share the same CPUs".
	ClientCPUs string
	// Floor also measures, after each model, its floor: the same requests
	// through a model that does no work and answers with as many bytes
	// (onnxtest.PrefixModel), and once a floor of 16 bytes each way. A
	// floor's added latency is the transport and serving path alone.
	Floor bool
	// Profile, if set, is called as each mode's saturation window of the
	// last round starts, and the function it returns as the window ends
	// (for CPU profiles of one mode at a time).
	Profile func(model string, mode Mode) (stop func())
}

func (c OverheadConfig) withDefaults() OverheadConfig {
	if c.SkipModels {
		c.Models = nil
	} else if len(c.Models) == 0 {
		c.Models = DefaultModels
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.ClientsPerExecutor <= 0 {
		c.ClientsPerExecutor = 4
	}
	if c.BatchModel == "" {
		c.BatchModel = DefaultBatchModel
	}
	if c.BatchClients <= 0 {
		c.BatchClients = 32
	}
	if c.BatchMaxSize <= 1 {
		c.BatchMaxSize = 8
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = 2 * time.Millisecond
	}
	if c.Image == nil {
		c.Image = SyntheticImage()
		c.ImageName = "a synthetic 640x480 gradient image with text-like bars"
	} else if c.ImageName == "" {
		c.ImageName = "the given image"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ModeStats are one mode's figures for one model, each the median over
// rounds.
type ModeStats struct {
	Mode Mode
	// Concurrency 1: latency percentiles, throughput and process CPU time
	// per request.
	P50, P99 time.Duration
	// Mean is the mean latency at concurrency 1, and Compute the part of
	// it the model's runs took (the node's compute time; in process, the
	// whole Session.Run).
	Mean, Compute time.Duration
	SeqThroughput float64
	SeqCPUPerReq  time.Duration
	SeqRequests   int // requests per round (the smallest round)
	// Saturation: throughput, its value in each round, and CPU per request.
	SatThroughput float64
	SatRounds     []float64
	SatCPUPerReq  time.Duration
	// With the load generator in a process of its own, the CPU figures
	// above are the server's and these the client's (0 otherwise).
	SeqClientCPUPerReq, SatClientCPUPerReq time.Duration
	// Workers is the goroutines (in process) or clients (served) of the
	// saturation window.
	Workers int
}

// ModelReport is one model's result.
type ModelReport struct {
	Model string
	// Input describes the tensors sent.
	Input string
	// K is the executors used; KByThroughput holds the in-process
	// saturation throughput of each K tried when K was picked (nil when it
	// was given).
	K             int
	KByThroughput map[int]float64
	// Modes lists InProcess first, then the transports.
	Modes []ModeStats
	// Floor marks a floor's report (OverheadConfig.Floor); FloorOf is the
	// model whose request and response bytes it carries, "" for the
	// 16-byte floor.
	Floor   bool
	FloorOf string
}

// Mode returns the stats of one mode.
func (r ModelReport) Mode(m Mode) (ModeStats, bool) {
	for _, s := range r.Modes {
		if s.Mode == m {
			return s, true
		}
	}
	return ModeStats{}, false
}

// SaturationRatio is the mode's saturation throughput over in-process.
func (r ModelReport) SaturationRatio(m Mode) float64 {
	s, _ := r.Mode(m)
	base, _ := r.Mode(InProcess)
	return ratio(s.SatThroughput, base.SatThroughput)
}

// AddedP50 is the mode's concurrency-1 p50 latency minus in-process.
func (r ModelReport) AddedP50(m Mode) time.Duration {
	s, _ := r.Mode(m)
	base, _ := r.Mode(InProcess)
	return s.P50 - base.P50
}

// BatchReport is the dynamic batching phase's result.
type BatchReport struct {
	Model string
	Input string
	// K is the executor count chosen in process (see chooseK); the phase
	// measures at 1 executor and, when K is not 1, at K.
	K       int
	Clients int
	// MaxBatchSize and Delay configure the batched variants.
	MaxBatchSize int
	Delay        time.Duration
	// Points holds one result per executor count, 1 first.
	Points []BatchPoint
	// Skipped, when set, says why the phase did not run.
	Skipped string
}

// BatchPoint is the batching phase at one executor count. Figures are
// medians over rounds; the Rounds fields hold each round's value.
type BatchPoint struct {
	K int
	// Rows and Stacked are ONNX Runtime alone, in process, with K
	// goroutines: rows per second run one by one and in stacked batches of
	// MaxBatchSize rows.
	Rows, Stacked             float64
	RowsRounds, StackedRounds []float64
	// Unbatched and Batched are the served saturation throughputs
	// (requests of one row per second) with max_batch_size 0 and
	// MaxBatchSize.
	Unbatched, Batched             float64
	UnbatchedRounds, BatchedRounds []float64
	// MeanBatch is the mean rows per execution with batching, from the
	// node's accelpool_inference_batch_size histogram.
	MeanBatch       float64
	MeanBatchRounds []float64
}

// Gain is the served throughput with batching over without.
func (p BatchPoint) Gain() float64 { return ratio(p.Batched, p.Unbatched) }

// RuntimeGain is what stacking alone buys in ONNX Runtime: rows per
// second in batches over one by one, in process. Served batching cannot
// gain much more than this.
func (p BatchPoint) RuntimeGain() float64 { return ratio(p.Stacked, p.Rows) }

// OverheadReport is RunOverhead's result.
type OverheadReport struct {
	Models []ModelReport
	Batch  *BatchReport
	// CPUs and GOMAXPROCS describe the machine the figures come from
	// (GOMAXPROCS the most seen while a node served: agent.GoProcs).
	CPUs, GOMAXPROCS int
}

// RunOverhead measures the serving overhead of each configured model and
// the dynamic batching gain, printing progress, the table and the summary
// lines to out.
func RunOverhead(ctx context.Context, cfg OverheadConfig, out io.Writer) (OverheadReport, error) {
	if cfg.Backend == nil {
		return OverheadReport{}, errors.New("bench: no runtime backend")
	}
	cfg = cfg.withDefaults()
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "accelpool-bench-")
		if err != nil {
			return OverheadReport{}, err
		}
		defer os.RemoveAll(dir)
		cfg.WorkDir = dir
	}
	r := &runner{cfg: cfg, out: out}
	rep := OverheadReport{CPUs: numCPU(), GOMAXPROCS: gomaxprocs()}
	r.header(rep)
	if cfg.Floor && len(cfg.Models) > 0 {
		x := tensor.FromFloat32("x", []int64{1, 4}, []float32{0.5, 1.5, 2.5, 3.5})
		fr, err := r.floor(ctx, "", []tensor.Tensor{x}, len(x.Data))
		if err != nil {
			return rep, fmt.Errorf("the 16-byte floor: %w", err)
		}
		rep.Models = append(rep.Models, fr)
	}
	for _, m := range cfg.Models {
		mr, ref, inputs, err := r.model(ctx, m)
		if err != nil {
			return rep, fmt.Errorf("model %s: %w", m, err)
		}
		rep.Models = append(rep.Models, mr)
		if cfg.Floor {
			n := 0
			for _, t := range ref {
				n += len(t.Data)
			}
			fr, err := r.floor(ctx, m, inputs, n)
			if err != nil {
				return rep, fmt.Errorf("model %s's floor: %w", m, err)
			}
			rep.Models = append(rep.Models, fr)
		}
	}
	if !cfg.SkipBatching {
		br, err := r.batching(ctx)
		if err != nil {
			return rep, fmt.Errorf("batching on %s: %w", cfg.BatchModel, err)
		}
		rep.Batch = br
	}
	if r.procs > 0 {
		rep.GOMAXPROCS = r.procs
	}
	rep.Print(out, cfg)
	return rep, nil
}

type runner struct {
	cfg   OverheadConfig
	out   io.Writer
	procs int // the most GOMAXPROCS seen with a node serving
}

func (r *runner) printf(format string, a ...any) { fmt.Fprintf(r.out, format, a...) }

func (r *runner) header(rep OverheadReport) {
	rt := r.cfg.Runtime
	if rt == "" {
		rt = r.cfg.Backend.Name()
	}
	r.printf("accelpool bench overhead: %s; %d CPUs, GOMAXPROCS %d at start (a serving node adds its executors), GOGC %d; %s\n", rt, rep.CPUs, rep.GOMAXPROCS, gcPercent(), goVersion())
	r.printf("%d rounds, modes interleaved per round; each measurement lasts %v", r.cfg.Rounds, r.cfg.Duration)
	if r.cfg.Requests > 0 {
		r.printf(" (concurrency 1: %d requests)", r.cfg.Requests)
	}
	r.printf(", saturation after a %v ramp\n", rampFor(r.cfg.Duration))
	where := "clients and server run in this process"
	if len(r.cfg.ClientCommand) > 0 {
		where = "the server runs in this process and the load generator in one of its own"
	}
	if r.cfg.ClientCPUs != "" {
		r.printf("%s, over loopback; the load generator is pinned to CPUs %s, this process to its %d CPUs\n\n", where, r.cfg.ClientCPUs, rep.CPUs)
		return
	}
	r.printf("%s, over loopback; ONNX Runtime's threads, the server and the clients share the same %d CPUs\n\n", where, rep.CPUs)
}

func (r *runner) sessionOptions() runtime.Options {
	return runtime.Options{IntraOpThreads: r.cfg.IntraOpThreads, InterOpThreads: r.cfg.InterOpThreads}
}

// modelFile is the latest version's model file of name in repo.
func modelFile(repo, name string) (string, error) {
	m, ok, err := repository.Read(repo, name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("not in the model repository %s (install the demo models with scripts/setup.sh, or give --model-repository)", repo)
	}
	p, err := filepath.Abs(m.Path(m.Latest()))
	if err != nil {
		return "", err
	}
	return p, nil
}

// modeRun is one mode ready to measure.
type modeRun struct {
	mode    Mode
	newCall func() callFunc
	workers int         // saturation goroutines or clients
	proc    *procClient // the load generator process, if it runs in one
}

// seq measures m at concurrency 1. For a served mode it also reads the
// node's compute time over the window, so that the added latency can be
// split into the runtime's (the model ran slower served) and the rest.
func (r *runner) seq(ctx context.Context, m modeRun, srv *server, model string) (seqResult, error) {
	if m.mode == InProcess {
		s, err := measureSequential(ctx, m.newCall(), r.cfg.Duration, r.cfg.Requests)
		s.Compute = s.Mean
		return s, err
	}
	sum0, n0 := histogram(srv.reg, "accelpool_inference_compute_seconds", model)
	var s seqResult
	var err error
	if m.proc != nil {
		s, err = m.proc.seq(r.cfg.Duration, r.cfg.Requests)
	} else {
		s, err = measureSequential(ctx, m.newCall(), r.cfg.Duration, r.cfg.Requests)
	}
	if sum1, n1 := histogram(srv.reg, "accelpool_inference_compute_seconds", model); err == nil && n1 > n0 {
		s.Compute = time.Duration((sum1 - sum0) / float64(n1-n0) * float64(time.Second))
	}
	return s, err
}

func (r *runner) sat(ctx context.Context, m modeRun, w window) (satResult, error) {
	if m.proc != nil {
		return m.proc.sat(m.workers, rampFor(r.cfg.Duration), r.cfg.Duration, w)
	}
	return measureSaturation(ctx, m.newCall, m.workers, rampFor(r.cfg.Duration), r.cfg.Duration, w)
}

func sessionCall(s runtime.Session, inputs []tensor.Tensor) func() callFunc {
	return func() callFunc {
		return func(ctx context.Context) error {
			_, err := s.Run(ctx, inputs, nil)
			return err
		}
	}
}

func servedCall(svc oip.Service, model string, inputs []tensor.Tensor) func() callFunc {
	return func() callFunc {
		req := &oip.InferRequest{ModelName: model}
		for _, t := range inputs {
			req.Inputs = append(req.Inputs, oip.InferInput{Tensor: t})
		}
		return func(ctx context.Context) error {
			resp, err := svc.Infer(ctx, req)
			if err != nil {
				return err
			}
			if len(resp.Outputs) == 0 {
				return errors.New("response has no outputs")
			}
			return nil
		}
	}
}

// warm makes at least 3 requests and keeps going for 300 ms.
func warm(ctx context.Context, call callFunc) error {
	start := time.Now()
	for i := 0; i < 3 || time.Since(start) < 300*time.Millisecond; i++ {
		if err := call(ctx); err != nil {
			return err
		}
	}
	return nil
}

// chooseK measures in-process saturation with 1 and 2 goroutines over the
// rounds and returns the K with the best median throughput.
func (r *runner) chooseK(ctx context.Context, model string, newCall func() callFunc) (int, map[int]float64, error) {
	if r.cfg.Concurrency > 0 {
		return r.cfg.Concurrency, nil, nil
	}
	ks := []int{1, 2}
	rounds := map[int][]float64{}
	for round := range r.cfg.Rounds {
		for _, k := range rotate(ks, round) {
			s, err := measureSaturation(ctx, newCall, k, rampFor(r.cfg.Duration), r.cfg.Duration, window{})
			if err != nil {
				return 0, nil, fmt.Errorf("in-process saturation with K=%d: %w", k, err)
			}
			rounds[k] = append(rounds[k], s.Throughput)
		}
	}
	med := map[int]float64{}
	var parts []string
	for _, k := range ks {
		med[k] = median(rounds[k])
		parts = append(parts, fmt.Sprintf("K=%d %.1f req/s %s", k, med[k], fmtRounds(rounds[k])))
	}
	k := bestK(med)
	r.printf("%s: choosing K in process: %s -> K=%d\n", model, strings.Join(parts, ", "), k)
	return k, med, nil
}

// model measures one model of the repository in every mode; it also
// returns the in-process outputs and the inputs it sent.
func (r *runner) model(ctx context.Context, name string) (ModelReport, []tensor.Tensor, []tensor.Tensor, error) {
	path, err := modelFile(r.cfg.Repository, name)
	if err != nil {
		return ModelReport{}, nil, nil, err
	}
	sess, err := r.cfg.Backend.Load(ctx, path, r.sessionOptions())
	if err != nil {
		return ModelReport{}, nil, nil, err
	}
	defer sess.Close()
	inputs, desc, err := buildInputs(name, sess.Metadata(), r.cfg.Image, r.cfg.ImageName)
	if err != nil {
		return ModelReport{}, nil, nil, err
	}
	rep, ref, err := r.measure(ctx, name, path, sess, inputs, desc)
	return rep, ref, inputs, err
}

// floor measures the floor of model of (OverheadConfig.Floor): inputs as
// sent to it, answered with outBytes through a model that does no work.
// of is "" for the 16-byte floor.
func (r *runner) floor(ctx context.Context, of string, inputs []tensor.Tensor, outBytes int) (ModelReport, error) {
	name, what := "floor-16B", "16 bytes each way"
	if of != "" {
		name, what = of+"-floor", of+"'s inputs"
	}
	var decl []onnxtest.Tensor
	src, in := 0, 0
	for i, t := range inputs {
		if t.DataType != tensor.FP32 {
			return ModelReport{}, fmt.Errorf("input %s is %s; a floor takes FP32 inputs", t.Name, t.DataType)
		}
		decl = append(decl, onnxtest.Tensor{Name: t.Name, ElemType: 1, Shape: t.Shape})
		if len(t.Data) > len(inputs[src].Data) {
			src = i
		}
		in += len(t.Data)
	}
	n := int64(max(1, (outBytes+3)/4))
	model, err := onnxtest.PrefixModel(decl, src, "floor", n)
	if err != nil {
		return ModelReport{}, err
	}
	path := filepath.Join(r.cfg.WorkDir, "floors", name+".onnx")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return ModelReport{}, err
	}
	if err := os.WriteFile(path, model, 0o644); err != nil {
		return ModelReport{}, err
	}
	sess, err := r.cfg.Backend.Load(ctx, path, r.sessionOptions())
	if err != nil {
		return ModelReport{}, err
	}
	defer sess.Close()
	desc := fmt.Sprintf("%s (%d bytes) in, %d bytes out, through a model that does no work (ONNX Flatten and Slice)", what, in, n*4)
	rep, _, err := r.measure(ctx, name, path, sess, inputs, desc)
	rep.Floor, rep.FloorOf = true, of
	return rep, err
}

// measure measures one loaded model (path is its file) with inputs,
// described by desc, in process and served; it also returns the
// in-process outputs.
func (r *runner) measure(ctx context.Context, name, path string, sess runtime.Session, inputs []tensor.Tensor, desc string) (ModelReport, []tensor.Tensor, error) {
	rep := ModelReport{Model: name, Input: desc}
	r.printf("%s: input %s\n", name, desc)
	ref, err := sess.Run(ctx, inputs, nil)
	if err != nil {
		return rep, nil, fmt.Errorf("in-process run: %w", err)
	}
	inproc := sessionCall(sess, inputs)
	if err := warm(ctx, inproc()); err != nil {
		return rep, nil, err
	}
	if rep.K, rep.KByThroughput, err = r.chooseK(ctx, name, inproc); err != nil {
		return rep, nil, err
	}
	clients := r.cfg.ClientsPerExecutor * rep.K

	dir := filepath.Join(r.cfg.WorkDir, name)
	conf := serveConfig{concurrency: rep.K, queue: max(128, 2*clients), intra: r.cfg.IntraOpThreads, inter: r.cfg.InterOpThreads}
	if err := writeRepository(dir, []repoEntry{{name: name, file: path, config: conf}}); err != nil {
		return rep, nil, err
	}
	srv, err := r.serve(ctx, dir, clients)
	if err != nil {
		return rep, nil, err
	}
	defer srv.close()

	modes := []modeRun{{mode: InProcess, newCall: inproc, workers: rep.K}}
	var grpcOut []tensor.Tensor
	for _, mode := range []Mode{GRPC, REST, GRPCSHM} {
		// The product's client gives one answer to compare with the
		// in-process one; the load generator then times the mode.
		m := modeRun{mode: mode, workers: clients}
		var out []tensor.Tensor
		if mode == GRPCSHM {
			if srv.shm, err = srv.setupSHM(ctx, name, inputs, grpcOut); err != nil {
				return rep, nil, fmt.Errorf("%s: %w", mode, err)
			}
			if out, err = srv.shm.answer(ctx, srv); err == nil {
				err = sameOutputs(mode, out, ref)
			}
		} else {
			out, err = checkSame(ctx, m, name, ref, srv.svc(mode), inputs)
		}
		if err != nil {
			return rep, nil, err
		}
		if mode == GRPC {
			grpcOut = out
		}
		if len(r.cfg.ClientCommand) > 0 {
			lc, err := srv.loadgenConfig(mode, name, inputs, outputSizes(out))
			if err != nil {
				return rep, nil, err
			}
			if m.proc, err = startProcClient(ctx, r.cfg.ClientCommand, lc, r.cfg.WorkDir); err != nil {
				return rep, nil, err
			}
			defer m.proc.close()
		} else {
			if m.newCall, err = srv.loadCall(mode, name, inputs, outputSizes(out)); err != nil {
				return rep, nil, err
			}
			if err := warm(ctx, m.newCall()); err != nil {
				return rep, nil, fmt.Errorf("%s warm-up: %w", m.mode, err)
			}
		}
		modes = append(modes, m)
	}

	seq := map[Mode][]seqResult{}
	sat := map[Mode][]satResult{}
	for round := range r.cfg.Rounds {
		order := rotate(modes, round)
		for _, m := range order {
			s, err := r.seq(ctx, m, srv, name)
			if err != nil {
				return rep, nil, fmt.Errorf("%s at concurrency 1: %w", m.mode, err)
			}
			seq[m.mode] = append(seq[m.mode], s)
		}
		for _, m := range order {
			var w window
			if r.cfg.Profile != nil && round == r.cfg.Rounds-1 {
				var stop func()
				w.start = func() { stop = r.cfg.Profile(name, m.mode) }
				w.end = func() {
					if stop != nil {
						stop()
					}
				}
			}
			s, err := r.sat(ctx, m, w)
			if err != nil {
				return rep, nil, fmt.Errorf("%s at saturation: %w", m.mode, err)
			}
			sat[m.mode] = append(sat[m.mode], s)
		}
		var p50s, sats []string
		for _, m := range modes {
			p50s = append(p50s, fmt.Sprintf("%s %s", m.mode, fmtMS(seq[m.mode][round].P50)))
			sats = append(sats, fmt.Sprintf("%s %.1f", m.mode, sat[m.mode][round].Throughput))
		}
		r.printf("%s round %d/%d: c1 p50 %s; saturation req/s %s\n", name, round+1, r.cfg.Rounds,
			strings.Join(p50s, ", "), strings.Join(sats, ", "))
	}
	for _, m := range modes {
		rep.Modes = append(rep.Modes, aggregate(m, seq[m.mode], sat[m.mode]))
	}
	r.printf("\n")
	return rep, ref, nil
}

func aggregate(m modeRun, seq []seqResult, sat []satResult) ModeStats {
	st := ModeStats{Mode: m.mode, Workers: m.workers}
	var p50, p99, mean, compute, cpu, scpu, ccpu, sccpu []time.Duration
	var tput []float64
	st.SeqRequests = math.MaxInt
	for _, s := range seq {
		p50, p99, cpu = append(p50, s.P50), append(p99, s.P99), append(cpu, s.CPUPerReq)
		mean, compute = append(mean, s.Mean), append(compute, s.Compute)
		ccpu = append(ccpu, s.ClientCPUPerReq)
		tput = append(tput, s.Throughput)
		st.SeqRequests = min(st.SeqRequests, s.Requests)
	}
	for _, s := range sat {
		st.SatRounds = append(st.SatRounds, s.Throughput)
		scpu = append(scpu, s.CPUPerReq)
		sccpu = append(sccpu, s.ClientCPUPerReq)
	}
	st.SeqClientCPUPerReq, st.SatClientCPUPerReq = medianDuration(ccpu), medianDuration(sccpu)
	st.P50, st.P99, st.SeqCPUPerReq = medianDuration(p50), medianDuration(p99), medianDuration(cpu)
	st.Mean, st.Compute = medianDuration(mean), medianDuration(compute)
	st.SeqThroughput = median(tput)
	st.SatThroughput, st.SatCPUPerReq = median(st.SatRounds), medianDuration(scpu)
	return st
}

// checkSame compares one served answer with the in-process one, so the
// benchmark cannot time a path that computes something else, and returns
// the answer's outputs.
func checkSame(ctx context.Context, m modeRun, model string, ref []tensor.Tensor, svc oip.Service, inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	req := &oip.InferRequest{ModelName: model}
	for _, t := range inputs {
		req.Inputs = append(req.Inputs, oip.InferInput{Tensor: t})
	}
	resp, err := svc.Infer(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.mode, err)
	}
	if err := sameOutputs(m.mode, resp.Outputs, ref); err != nil {
		return nil, err
	}
	return resp.Outputs, nil
}

// sameOutputs compares a served answer's outputs with the in-process ones.
func sameOutputs(mode Mode, got, ref []tensor.Tensor) error {
	if len(got) != len(ref) {
		return fmt.Errorf("%s returned %d outputs, in-process %d", mode, len(got), len(ref))
	}
	for i, o := range got {
		want := ref[i]
		if o.Name != want.Name || o.DataType != want.DataType || fmt.Sprint(o.Shape) != fmt.Sprint(want.Shape) || len(o.Data) != len(want.Data) {
			return fmt.Errorf("%s output %d is %s %s%v, in-process %s %s%v", mode, i, o.Name, o.DataType, o.Shape, want.Name, want.DataType, want.Shape)
		}
		if o.DataType == tensor.Bytes {
			continue
		}
		n := len(o.Data) / o.DataType.Size()
		for j := range n {
			a, b := o.Float64At(j), want.Float64At(j)
			if math.Abs(a-b) > 1e-4+1e-3*math.Abs(b) {
				return fmt.Errorf("%s output %s element %d is %g, in-process %g", mode, o.Name, j, a, b)
			}
		}
	}
	return nil
}

// serveConfig is the config.yaml a benchmarked model is served with.
type serveConfig struct {
	concurrency, queue, maxBatch int
	delay                        time.Duration
	intra, inter                 int
}

func (c serveConfig) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by accelpool bench\nconcurrency: %d\nmax_queue_size: %d\nmax_batch_size: %d\n", c.concurrency, c.queue, c.maxBatch)
	if c.delay > 0 {
		fmt.Fprintf(&b, "max_queue_delay_ms: %g\n", float64(c.delay)/float64(time.Millisecond))
	}
	if c.intra > 0 {
		fmt.Fprintf(&b, "intra_op_threads: %d\n", c.intra)
	}
	if c.inter > 0 {
		fmt.Fprintf(&b, "inter_op_threads: %d\n", c.inter)
	}
	return b.String()
}

type repoEntry struct {
	name   string
	file   string // the model file, linked (or copied) into the repository
	config serveConfig
}

// writeRepository makes a model repository at dir holding entries, each as
// version 1 with its config.yaml.
func writeRepository(dir string, entries []repoEntry) error {
	for _, e := range entries {
		vdir := filepath.Join(dir, e.name, "1")
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			return err
		}
		dst := filepath.Join(vdir, repository.ModelFile)
		_ = os.Remove(dst)
		if err := os.Symlink(e.file, dst); err != nil {
			if err := copyFile(e.file, dst); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, e.name, repository.ConfigFile), []byte(e.config.yaml()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// server is a running node with a client for each transport, and the
// connections the load generator uses.
type server struct {
	node *agent.Node
	reg  *prometheus.Registry
	grpc *grpcsvc.Client
	rest *rest.Client
	conn *grpc.ClientConn
	hc   *http.Client
	shm  *shmSetup // the shared memory mode's object, once set up
}

func (s *server) svc(m Mode) oip.Service {
	if m == GRPC {
		return s.grpc
	}
	return s.rest
}

// serve starts a node on loopback over repo and checks every model loaded.
// conns sizes the REST client's connection pool.
func (r *runner) serve(ctx context.Context, repo string, conns int) (*server, error) {
	reg := prometheus.NewRegistry()
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:  agent.Config{Repository: repo, Backend: r.cfg.Backend, Logger: r.cfg.Logger, Registry: reg, ServerName: "accelpool-bench"},
		HTTPAddr: "127.0.0.1:0",
		GRPCAddr: "127.0.0.1:0",
		// For the shared memory mode; the load generator is on this machine.
		AllowClientSHM: true,
	})
	if err != nil {
		return nil, err
	}
	s := &server{node: node, reg: reg}
	r.procs = max(r.procs, gomaxprocs()) // the agent sizes it for its executors
	idx, err := node.Manager.RepositoryIndex(ctx, false)
	if err != nil {
		s.close()
		return nil, err
	}
	for _, e := range idx {
		if e.State != agent.StateReady {
			s.close()
			return nil, fmt.Errorf("served model %s is %s: %s", e.Name, e.State, e.Reason)
		}
	}
	if s.grpc, err = grpcsvc.Dial(node.GRPCAddr()); err != nil {
		s.close()
		return nil, err
	}
	if s.conn, err = grpc.NewClient(node.GRPCAddr(), grpcsvc.DefaultDialOptions()...); err != nil {
		s.close()
		return nil, err
	}
	s.hc = &http.Client{Transport: restTransport(conns)}
	s.rest = rest.NewClient("http://"+node.HTTPAddr(), rest.ClientOptions{Binary: true, HTTPClient: s.hc})
	return s, nil
}

func (s *server) close() {
	if s.shm != nil && s.grpc != nil {
		s.shm.close(s)
	}
	if s.grpc != nil {
		_ = s.grpc.Close()
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.hc != nil {
		s.hc.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.node.Close(ctx)
}

// batchable reports whether every input and output has a dynamic first
// dimension (what the agent needs to batch a model).
func batchable(meta runtime.Metadata) bool {
	if len(meta.Inputs) == 0 || len(meta.Outputs) == 0 {
		return false
	}
	for _, list := range [][]runtime.IOSpec{meta.Inputs, meta.Outputs} {
		for _, s := range list {
			if len(s.Shape) == 0 || s.Shape[0] != -1 {
				return false
			}
		}
	}
	return true
}

// batchHistogram reads the node's batch size histogram for one model.
func batchHistogram(g prometheus.Gatherer, model string) (sum float64, count uint64) {
	return histogram(g, "accelpool_inference_batch_size", model)
}

// histogram reads the sum and count of one model's series of the node's
// histogram called name.
func histogram(g prometheus.Gatherer, name, model string) (sum float64, count uint64) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == model {
					return m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0, 0
}

// batching measures dynamic batching on the batch model at one executor
// and at the K chosen in process (when that is not 1). At each executor
// count it measures ONNX Runtime alone, in process, with single rows and
// with stacked batches of MaxBatchSize rows (what batching can win at
// most), and a node serving the model without batching and with it, driven
// to saturation by single-row gRPC clients. All windows are interleaved
// round by round.
func (r *runner) batching(ctx context.Context) (*BatchReport, error) {
	name := r.cfg.BatchModel
	br := &BatchReport{Model: name, Clients: r.cfg.BatchClients, MaxBatchSize: r.cfg.BatchMaxSize, Delay: r.cfg.BatchDelay}
	path, err := modelFile(r.cfg.Repository, name)
	if err != nil {
		return nil, err
	}
	sess, err := r.cfg.Backend.Load(ctx, path, r.sessionOptions())
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	meta := sess.Metadata()
	if !batchable(meta) {
		br.Skipped = fmt.Sprintf("%s cannot be batched: not every input and output has a dynamic first dimension", name)
		r.printf("batching: %s\n\n", br.Skipped)
		return br, nil
	}
	inputs, desc, err := buildInputs(name, meta, r.cfg.Image, r.cfg.ImageName)
	if err != nil {
		return nil, err
	}
	stacked, err := stackRows(inputs, r.cfg.BatchMaxSize)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", name, err)
	}
	br.Input = desc
	r.printf("%s (batching phase): input %s\n", name, desc)
	inproc, inprocStacked := sessionCall(sess, inputs), sessionCall(sess, stacked)
	if err := warm(ctx, inprocStacked()); err != nil {
		return nil, err
	}
	if err := warm(ctx, inproc()); err != nil {
		return nil, err
	}
	if br.K, _, err = r.chooseK(ctx, name, inproc); err != nil {
		return nil, err
	}
	ks := []int{1}
	if br.K != 1 {
		ks = append(ks, br.K)
	}

	queue := max(128, 2*br.Clients)
	var entries []repoEntry
	for _, k := range ks {
		base := serveConfig{concurrency: k, queue: queue, intra: r.cfg.IntraOpThreads, inter: r.cfg.InterOpThreads}
		withBatch := base
		withBatch.maxBatch, withBatch.delay = r.cfg.BatchMaxSize, r.cfg.BatchDelay
		entries = append(entries,
			repoEntry{batchVariant(name, 0, k), path, base},
			repoEntry{batchVariant(name, r.cfg.BatchMaxSize, k), path, withBatch})
	}
	dir := filepath.Join(r.cfg.WorkDir, name+"-batching")
	if err := writeRepository(dir, entries); err != nil {
		return nil, err
	}
	srv, err := r.serve(ctx, dir, 0)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	for _, e := range entries {
		if err := warm(ctx, servedCall(srv.grpc, e.name, inputs)()); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", e.name, err)
		}
	}

	br.Points = make([]BatchPoint, len(ks))
	type measurement struct {
		what string
		run  func() error
	}
	var ms []measurement
	for i, k := range ks {
		p := &br.Points[i]
		p.K = k
		ms = append(ms,
			measurement{fmt.Sprintf("in process, K=%d, 1 row", k), func() error {
				s, err := measureSaturation(ctx, inproc, k, rampFor(r.cfg.Duration), r.cfg.Duration, window{})
				p.RowsRounds = append(p.RowsRounds, s.Throughput)
				return err
			}},
			measurement{fmt.Sprintf("in process, K=%d, %d rows", k, r.cfg.BatchMaxSize), func() error {
				s, err := measureSaturation(ctx, inprocStacked, k, rampFor(r.cfg.Duration), r.cfg.Duration, window{})
				p.StackedRounds = append(p.StackedRounds, s.Throughput*float64(r.cfg.BatchMaxSize))
				return err
			}})
		for _, size := range []int{0, r.cfg.BatchMaxSize} {
			v := batchVariant(name, size, k)
			ms = append(ms, measurement{v, func() error {
				var sum0, sum1 float64
				var n0, n1 uint64
				w := window{
					start: func() { sum0, n0 = batchHistogram(srv.reg, v) },
					end:   func() { sum1, n1 = batchHistogram(srv.reg, v) },
				}
				s, err := measureSaturation(ctx, servedCall(srv.grpc, v, inputs), br.Clients, rampFor(r.cfg.Duration), r.cfg.Duration, w)
				if size == 0 {
					p.UnbatchedRounds = append(p.UnbatchedRounds, s.Throughput)
					return err
				}
				mean := 0.0
				if n1 > n0 {
					mean = (sum1 - sum0) / float64(n1-n0)
				}
				p.BatchedRounds = append(p.BatchedRounds, s.Throughput)
				p.MeanBatchRounds = append(p.MeanBatchRounds, mean)
				return err
			}})
		}
	}
	for round := range r.cfg.Rounds {
		for _, m := range rotate(ms, round) {
			if err := m.run(); err != nil {
				return nil, fmt.Errorf("%s at saturation: %w", m.what, err)
			}
		}
		for _, p := range br.Points {
			r.printf("%s batching round %d/%d, K=%d: in process %.1f rows/s one by one, %.1f in batches of %d; served max_batch_size 0 %.1f req/s, %d %.1f req/s (mean batch %.2f)\n",
				name, round+1, r.cfg.Rounds, p.K, p.RowsRounds[round], p.StackedRounds[round], r.cfg.BatchMaxSize,
				p.UnbatchedRounds[round], r.cfg.BatchMaxSize, p.BatchedRounds[round], p.MeanBatchRounds[round])
		}
	}
	for i := range br.Points {
		p := &br.Points[i]
		p.Rows, p.Stacked = median(p.RowsRounds), median(p.StackedRounds)
		p.Unbatched, p.Batched, p.MeanBatch = median(p.UnbatchedRounds), median(p.BatchedRounds), median(p.MeanBatchRounds)
	}
	r.printf("\n")
	return br, nil
}

// batchVariant names the served copy of model with max_batch_size size
// and k executors in the batching phase's repository.
func batchVariant(model string, size, k int) string {
	if size == 0 {
		return fmt.Sprintf("%s-nobatch-k%d", model, k)
	}
	return fmt.Sprintf("%s-batch%d-k%d", model, size, k)
}

// stackRows repeats each single-row input n times along its first
// dimension: the batch a batcher would form from n identical requests.
func stackRows(inputs []tensor.Tensor, n int) ([]tensor.Tensor, error) {
	out := make([]tensor.Tensor, len(inputs))
	for i, t := range inputs {
		if len(t.Shape) == 0 || t.Shape[0] != 1 {
			return nil, fmt.Errorf("input %s has shape %v, not a single row", t.Name, t.Shape)
		}
		shape := append([]int64{int64(n)}, t.Shape[1:]...)
		out[i] = tensor.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: bytes.Repeat(t.Data, n)}
	}
	return out, nil
}
