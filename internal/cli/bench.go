package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/bench"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/preprocess"
)

const benchHelp = `
Runs a benchmark. Subcommands:

  overhead   serving overhead against in-process ONNX Runtime
  placement  applications hosted and SLO violations per placement policy
  offload    a weak device offloading to an edge server over emulated links

Run 'accelpool bench overhead --help' for its flags.`

const benchOverheadHelp = `
Measures what serving adds on top of calling ONNX Runtime directly. For each
model it loads an in-process session and starts a real serving node on
loopback in this process, then interleaves, round by round, Session.Run,
gRPC (raw contents), REST (binary tensor extension) and gRPC with the
tensors in system shared memory (grpc-shm: Triton's extension, for
clients on the node's machine; the node copies inputs out of the region
and outputs into it, and requests carry no tensor bytes):

  - concurrency 1: sequential requests, p50/p99 latency and throughput;
  - saturation: K goroutines on the session against K executors
    (config.yaml concurrency) fed by 4K concurrent clients; K is the
    in-process K of 1 or 2 with the best throughput unless --concurrency
    is given.

The served modes are timed with a load generator that, like Triton's
perf_analyzer, encodes the request once and resends its bytes, and checks
each answer's output byte counts against one answer that accelpool's own
clients fetched and that was compared, element by element, with the
in-process outputs. With --client process (the default) it runs in a
process of its own, and the table shows the server's CPU per request
(cpu/req) apart from the client's (client cpu/req); both share the same
CPUs unless --client-cpus pins the load generator apart: with
'taskset -c 0 accelpool bench overhead --client-cpus 1 --intra-op-threads 1'
the model, the server and the in-process runs get CPU 0 and the client CPU
1, like a client on another machine (ONNX Runtime's default thread pool
sets its own threads' affinity, so give --intra-op-threads). Serving
commands, this one included, run with GOGC 400 unless GOGC is set.

It prints each figure as the median over rounds, the served/in-process
throughput ratio at saturation and the p50 latency serving adds, then
compares dynamic batching (max_batch_size 8, 2 ms delay) with none on
--batch-model over gRPC, at 1 executor and at the chosen K, beside ONNX
Runtime alone running 8 stacked rows at a time over one row at a time
(about the most batching can win). Inputs are deterministic: --image, or a synthetic
gradient image, through the same preprocessing as 'accelpool infer'.

With --floor it also measures, after each model, its floor: the same
requests through a generated model that does no work (ONNX Flatten and
Slice) and answers with as many bytes, and once a floor of 16 bytes each
way. What a floor adds over in-process is the transport and serving path
alone, and the notes split each model's added latency and server CPU with
it. Floors have no summary lines.

The last lines read:
  overhead: <model> <transport> saturation ratio R.RR, added p50 X.XXms
  batching: <model> gain G.GGx with 1 executor (mean batch B.B; ONNX Runtime alone R.RRx)[, G.GGx with K executors (...)]`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "overhead" {
		return runBenchOverhead(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "placement" {
		return runBenchPlacement(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "offload" {
		return runBenchOffload(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "loadgen" {
		return runBenchLoadgen(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	fs := newFlags("bench", "bench <benchmark> [flags]", benchHelp, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fs.Usage()
	if fs.NArg() == 0 {
		return fmt.Errorf("name a benchmark: overhead, placement or offload")
	}
	return fmt.Errorf("unknown benchmark %q (want overhead, placement or offload)", fs.Arg(0))
}

func runBenchOverhead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench overhead", "bench overhead [flags]", benchOverheadHelp, stderr)
	models := fs.String("models", strings.Join(bench.DefaultModels, ","), "comma-separated model `names`; \"none\" runs only the batching phase")
	duration := fs.Duration("duration", 5*time.Second, "length of each measurement")
	rounds := fs.Int("rounds", 3, "interleaved `rounds`; figures are medians over them")
	requests := fs.Int("requests", 0, "concurrency 1: `N` requests per round instead of --duration")
	concurrency := fs.Int("concurrency", 0, "K, in-process goroutines and served executors (0: the better of 1 and 2 in process)")
	clientsPer := fs.Int("clients-per-executor", 4, "served saturation clients per executor")
	intra := fs.Int("intra-op-threads", 0, "ONNX Runtime intra-op `threads` for every session (0: its default)")
	batchModel := fs.String("batch-model", bench.DefaultBatchModel, "model for the dynamic batching phase; \"none\" skips it")
	batchClients := fs.Int("batch-clients", 32, "concurrent single-row gRPC clients in the batching phase")
	image := fs.String("image", "", "image `file` (JPEG/PNG) for image inputs (default: a synthetic gradient image)")
	repo := fs.String("model-repository", cache.ModelRepository(), "model repository `dir` the models are read from")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path` (default: $ACCELPOOL_ORT_LIB, the cache, then the system)")
	floor := fs.Bool("floor", false, "also measure each model's floor: the same requests through a model that does no work and answers with as many bytes, and once 16 bytes each way; the notes split each model's added latency and server CPU with it")
	profDir := fs.String("cpuprofile", "", "write a CPU profile of each mode's last saturation window into `dir`")
	client := fs.String("client", "process", "where the load generator runs: \"process\" (a process of its own; server and client CPU reported apart) or \"in-process\"")
	clientCPUs := fs.String("client-cpus", "", "--client process: pin the load generator to these CPUs (a taskset `list`, e.g. 1 or 2-3), apart from this process's own (run it under taskset to choose those)")
	logLevel := fs.String("log-level", "warn", "serving node log `level`: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	tuneGC()
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	var pin []string // the load generator's command prefix
	if *clientCPUs != "" {
		if *client != "process" {
			return fmt.Errorf("--client-cpus needs --client process")
		}
		var err error
		if pin, err = pinCommand(*clientCPUs); err != nil {
			return err
		}
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
	if err != nil {
		return err
	}
	libPath, libVersion, _, _ := onnx.LibraryInfo()
	cfg := bench.OverheadConfig{
		Floor:              *floor,
		Backend:            backend,
		Runtime:            fmt.Sprintf("onnxruntime %s (%s)", libVersion, libPath),
		Repository:         *repo,
		Duration:           *duration,
		Rounds:             *rounds,
		Requests:           *requests,
		Concurrency:        *concurrency,
		ClientsPerExecutor: *clientsPer,
		IntraOpThreads:     *intra,
		BatchModel:         *batchModel,
		SkipBatching:       *batchModel == "none",
		BatchClients:       *batchClients,
		Logger:             log,
	}
	if *models == "none" {
		cfg.SkipModels = true
	}
	switch *client {
	case "process":
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--client process: %w", err)
		}
		cfg.ClientCommand = append(pin, exe, "bench", "loadgen")
		cfg.ClientCPUs = *clientCPUs
	case "in-process":
	default:
		return fmt.Errorf("--client %q: want process or in-process", *client)
	}
	for _, m := range strings.Split(*models, ",") {
		if m = strings.TrimSpace(m); m != "" && m != "none" {
			cfg.Models = append(cfg.Models, m)
		}
	}
	if *image != "" {
		f, err := os.Open(*image)
		if err != nil {
			return err
		}
		img, err := preprocess.Decode(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--image: %w", err)
		}
		cfg.Image, cfg.ImageName = img, filepath.Base(*image)
	}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		cfg.Profile = cpuProfiler(*profDir, stderr)
	}
	_, err = bench.RunOverhead(ctx, cfg, stdout)
	return err
}

// pinCommand is the command prefix that runs a program on the CPUs of a
// taskset list ("1", "0,2", "2-3"): taskset from util-linux.
func pinCommand(list string) ([]string, error) {
	if !cpuList.MatchString(list) {
		return nil, fmt.Errorf("--client-cpus %q: want a CPU list such as 1, 0,2 or 2-3", list)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("--client-cpus needs taskset (Debian package util-linux): %w", err)
	}
	return []string{taskset, "-c", list}, nil
}

var cpuList = regexp.MustCompile(`^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$`)

const benchLoadgenHelp = `
The load generator process of 'accelpool bench overhead --client process'
(not meant to be run by hand). It sends the request in --body, as it is,
to a serving node, checks that each answer carries outputs of the --want
byte counts, and takes measurements one at a time: each a JSON line on
stdin, answered on stdout.`

func runBenchLoadgen(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("bench loadgen", "bench loadgen [flags]", benchLoadgenHelp, stderr)
	config := bench.LoadgenFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	tuneGC()
	cfg, err := config()
	if err != nil {
		return err
	}
	return bench.Loadgen(ctx, cfg, stdin, stdout)
}

// cpuProfiler writes DIR/<model>-<mode>.pprof for each profiled window.
func cpuProfiler(dir string, stderr io.Writer) func(model string, mode bench.Mode) func() {
	return func(model string, mode bench.Mode) func() {
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.pprof", model, mode))
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(stderr, "cpuprofile: %v\n", err)
			return nil
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "cpuprofile: %v\n", err)
			f.Close()
			return nil
		}
		return func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
}
