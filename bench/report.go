package bench

import (
	"fmt"
	"io"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets the serving path is held to.
const (
	// TargetSaturationRatio is the least served/in-process throughput.
	TargetSaturationRatio = 0.95
	// TargetAddedP50 is the most p50 latency serving may add at
	// concurrency 1, for BlazeFace.
	TargetAddedP50 = 500 * time.Microsecond
	// NoisySpread is the round-to-round spread of saturation throughput
	// above which the report warns that the machine was not quiet.
	NoisySpread = 0.15
)

func numCPU() int { return goruntime.NumCPU() }

// gcPercent is the garbage collector's current target (GOGC).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}
func gomaxprocs() int { return goruntime.GOMAXPROCS(0) }
func goVersion() string {
	return fmt.Sprintf("%s %s/%s", goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
}

// fmtMS prints a duration in milliseconds with two decimals.
func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// fmtSigned prints a duration in milliseconds with its sign.
func fmtSigned(d time.Duration) string {
	return fmt.Sprintf("%+.2fms", float64(d)/float64(time.Millisecond))
}

// fmtRounds prints per-round values, e.g. "[210.1 212.4 209.9]".
func fmtRounds(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Print writes the tables, notes and summary lines. cfg supplies the
// settings shown in the notes.
func (rep OverheadReport) Print(w io.Writer, cfg OverheadConfig) {
	for _, mr := range rep.Models {
		fmt.Fprintf(w, "== %s (K=%d", mr.Model, mr.K)
		if mr.KByThroughput != nil {
			fmt.Fprintf(w, ", the better in-process K of 1 (%.1f req/s) and 2 (%.1f req/s)", mr.KByThroughput[1], mr.KByThroughput[2])
		} else {
			fmt.Fprintf(w, ", as given")
		}
		fmt.Fprintf(w, ")\n   input %s\n", mr.Input)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "mode\tc1 p50\tc1 p99\tc1 mean\tc1 compute\tc1 req/s\tc1 cpu/req\tsat workers\tsat req/s\tsat spread\tsat cpu/req\tclient cpu/req\tsat ratio\tadded p50\t")
		for _, s := range mr.Modes {
			added, sr, client := "-", "1.00", "-"
			if s.Mode != InProcess {
				added = fmtSigned(mr.AddedP50(s.Mode))
				sr = fmt.Sprintf("%.2f", mr.SaturationRatio(s.Mode))
				client = "in cpu/req"
				if len(cfg.ClientCommand) > 0 {
					client = fmtMS(s.SatClientCPUPerReq)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%d\t%.1f\t%.0f%%\t%s\t%s\t%s\t%s\t\n", s.Mode, fmtMS(s.P50), fmtMS(s.P99),
				fmtMS(s.Mean), fmtMS(s.Compute), s.SeqThroughput,
				fmtMS(s.SeqCPUPerReq), s.Workers, s.SatThroughput, 100*spread(s.SatRounds), fmtMS(s.SatCPUPerReq), client, sr, added)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if b := rep.Batch; b != nil && b.Skipped == "" {
		fmt.Fprintf(w, "== dynamic batching: %s, in process and over gRPC with %d concurrent single-row clients; max_batch_size %d, max_queue_delay_ms %g\n   input %s\n",
			b.Model, b.Clients, b.MaxBatchSize, float64(b.Delay)/float64(time.Millisecond), b.Input)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "executors\tin-process rows/s, 1 row\t%d rows\truntime gain\tserved req/s, no batching\tbatching\tmean batch\tgain\tsat spread\t\n", b.MaxBatchSize)
		for _, p := range b.Points {
			fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.2fx\t%.1f\t%.1f\t%.2f\t%.2fx\t%.0f%% / %.0f%%\t\n", p.K, p.Rows, p.Stacked, p.RuntimeGain(),
				p.Unbatched, p.Batched, p.MeanBatch, p.Gain(), 100*spread(p.UnbatchedRounds), 100*spread(p.BatchedRounds))
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "notes:")
	if len(cfg.ClientCommand) > 0 {
		fmt.Fprintf(w, "  - the load generator runs in a process of its own (one per served mode) and talks to the node over loopback\n")
		fmt.Fprintf(w, "    (127.0.0.1); cpu/req is this process's CPU time (all threads: the server, ONNX Runtime's pools) per request,\n")
		fmt.Fprintf(w, "    client cpu/req the load generator's (at saturation)\n")
	} else {
		fmt.Fprintf(w, "  - the load generator runs in this process and talks to the node over loopback (127.0.0.1); cpu/req is\n")
		fmt.Fprintf(w, "    process CPU time (all threads) per request, the client's included\n")
	}
	fmt.Fprintf(w, "  - the load generator encodes each request once and resends its bytes; it checks each answer's output byte counts\n")
	fmt.Fprintf(w, "    against one answer compared element by element with the in-process outputs through accelpool's own clients\n")
	fmt.Fprintf(w, "  - in-process is Session.Run on a separate session loaded with the same options; figures are medians over\n")
	fmt.Fprintf(w, "    %d interleaved rounds\n", cfg.Rounds)
	if cfg.ClientCPUs != "" {
		fmt.Fprintf(w, "  - the load generator ran pinned to CPUs %s and this process (in-process runs, server, ONNX Runtime) to its %d\n", cfg.ClientCPUs, rep.CPUs)
		fmt.Fprintf(w, "    CPUs (GOMAXPROCS %d while serving): the client's work is off the model's CPUs, as a client on another machine\n", rep.GOMAXPROCS)
		fmt.Fprintf(w, "    would be, and kernel loopback work lands on either side; the two sets must not overlap (see --help)\n")
		if cfg.IntraOpThreads == 0 {
			fmt.Fprintf(w, "  - WARNING: with --intra-op-threads 0 ONNX Runtime sets its own pool threads' CPU affinity, which can take them\n")
			fmt.Fprintf(w, "    off this process's CPUs onto the client's; give --intra-op-threads for a clean split\n")
		}
	} else {
		fmt.Fprintf(w, "  - %d CPUs (GOMAXPROCS %d while serving): ONNX Runtime's intra-op threads, the Go server and the client compete for them,\n", rep.CPUs, rep.GOMAXPROCS)
		fmt.Fprintf(w, "    so every CPU cycle the transport spends, the client's included, is taken from the model\n")
	}
	for _, mr := range rep.Models {
		if s, ok := mr.Mode(InProcess); ok && !mr.Floor && s.P50 > 0 && float64(s.SeqCPUPerReq) > 1.3*float64(s.P50) {
			fmt.Fprintf(w, "  - %s in process burns %s of CPU per %s request at concurrency 1: the runtime's intra-op threads\n",
				mr.Model, fmtMS(s.SeqCPUPerReq), fmtMS(s.P50))
			fmt.Fprintf(w, "    work or spin on every core, leaving none spare for serving; compare --intra-op-threads 1\n")
		}
	}
	fmt.Fprintf(w, "  - c1 compute is the mean time of the model's runs per request at concurrency 1: the node's compute histogram\n")
	fmt.Fprintf(w, "    for a served mode, the whole Session.Run in process; so of the added mean latency, compute minus in-process\n")
	fmt.Fprintf(w, "    compute is the runtime running slower when served, and the rest is the transport and the serving path:\n")
	for _, mr := range rep.Models {
		in, ok := mr.Mode(InProcess)
		if !ok || mr.Floor {
			continue
		}
		for _, s := range mr.Modes {
			if s.Mode == InProcess || s.Compute == 0 {
				continue
			}
			fmt.Fprintf(w, "    %s %s: mean %s over in-process, of which the runtime %s and transport and serving %s\n", mr.Model, s.Mode,
				fmtSigned(s.Mean-in.Mean), fmtSigned(s.Compute-in.Compute), fmtSigned(s.Mean-s.Compute))
		}
	}
	rep.printFloors(w)
	fmt.Fprintf(w, "  - sat spread is (max-min)/median of the rounds' saturation throughput; p99 of a round with few requests is near its maximum\n")
	if b := rep.Batch; b != nil && b.Skipped == "" {
		fmt.Fprintf(w, "  - batching: runtime gain is ONNX Runtime alone, in process with as many goroutines as executors, running %d stacked rows\n"+
			"    at a time over one row at a time: about the most the node's batching can win (a little more where batching also\n"+
			"    spreads the node's per-request costs); where one row at a time already keeps every core busy, there is little to win\n", b.MaxBatchSize)
	}
	var noisy []string
	for _, mr := range rep.Models {
		for _, s := range mr.Modes {
			if spread(s.SatRounds) > NoisySpread {
				noisy = append(noisy, fmt.Sprintf("%s %s", mr.Model, s.Mode))
			}
		}
	}
	if b := rep.Batch; b != nil {
		for _, p := range b.Points {
			if spread(p.UnbatchedRounds) > NoisySpread || spread(p.BatchedRounds) > NoisySpread {
				noisy = append(noisy, fmt.Sprintf("%s batching at K=%d", b.Model, p.K))
			}
		}
	}
	if len(noisy) > 0 {
		fmt.Fprintf(w, "  - WARNING: saturation rounds spread over %.0f%% for %s: something else used the CPUs; rerun on a quiet machine\n",
			100*NoisySpread, strings.Join(noisy, ", "))
	}
	for _, mr := range rep.Models {
		for _, s := range mr.Modes {
			if s.Mode == InProcess || mr.Floor {
				continue
			}
			sr := mr.SaturationRatio(s.Mode)
			verdict := "meets"
			if sr < TargetSaturationRatio {
				verdict = "misses"
			}
			line := fmt.Sprintf("  - %s %s: saturation ratio %.2f %s the %.2f target", mr.Model, s.Mode, sr, verdict, TargetSaturationRatio)
			if strings.HasPrefix(mr.Model, "blazeface") {
				a := mr.AddedP50(s.Mode)
				v := "meets"
				if a > TargetAddedP50 {
					v = "misses"
				}
				line += fmt.Sprintf("; added p50 %s %s the %s target", fmtMS(a), v, fmtMS(TargetAddedP50))
			}
			fmt.Fprintln(w, line)
		}
	}
	fmt.Fprintln(w)
	for _, mr := range rep.Models {
		for _, s := range mr.Modes {
			if s.Mode == InProcess || mr.Floor {
				continue
			}
			fmt.Fprintf(w, "overhead: %s %s saturation ratio %.2f, added p50 %s\n", mr.Model, s.Mode, mr.SaturationRatio(s.Mode), fmtMS(mr.AddedP50(s.Mode)))
		}
	}
	if b := rep.Batch; b != nil {
		if b.Skipped != "" {
			fmt.Fprintf(w, "batching: %s skipped (%s)\n", b.Model, b.Skipped)
		} else {
			var parts []string
			for _, p := range b.Points {
				parts = append(parts, fmt.Sprintf("%.2fx with %d executor%s (mean batch %.1f; ONNX Runtime alone %.2fx)",
					p.Gain(), p.K, plural(p.K), p.MeanBatch, p.RuntimeGain()))
			}
			fmt.Fprintf(w, "batching: %s gain %s\n", b.Model, strings.Join(parts, ", "))
		}
	}
}

// printFloors splits each model's added latency and server CPU with its
// floor (OverheadConfig.Floor), when the run measured floors.
func (rep OverheadReport) printFloors(w io.Writer) {
	floors := map[string]ModelReport{}
	for _, mr := range rep.Models {
		if mr.Floor {
			floors[mr.FloorOf] = mr
		}
	}
	if len(floors) == 0 {
		return
	}
	// added is a mode's mean latency and server CPU per request at
	// saturation over in-process, for one report.
	added := func(mr ModelReport, m Mode) (lat, cpu time.Duration, ok bool) {
		in, ok1 := mr.Mode(InProcess)
		s, ok2 := mr.Mode(m)
		return s.Mean - in.Mean, s.SatCPUPerReq - in.SatCPUPerReq, ok1 && ok2
	}
	fmt.Fprintf(w, "  - a floor is the same requests through a model that does no work and answers with as many bytes (ONNX\n")
	fmt.Fprintf(w, "    Flatten and Slice), so what it adds over in-process is the transport and the serving path alone; floor-16B\n")
	fmt.Fprintf(w, "    sends 16 bytes each way (the path's fixed cost). Each model's added mean latency and server CPU per request\n")
	fmt.Fprintf(w, "    at saturation, against its floor's:\n")
	null, haveNull := floors[""]
	for _, mr := range rep.Models {
		f, ok := floors[mr.Model]
		if mr.Floor || !ok {
			continue
		}
		for _, s := range mr.Modes {
			if s.Mode == InProcess {
				continue
			}
			lat, cpu, ok1 := added(mr, s.Mode)
			flat, fcpu, ok2 := added(f, s.Mode)
			if !ok1 || !ok2 {
				continue
			}
			fixed := ""
			if nlat, _, ok := added(null, s.Mode); haveNull && ok {
				fixed = fmt.Sprintf(" (16 bytes: %s)", fmtSigned(nlat))
			}
			fmt.Fprintf(w, "    %s %s: latency %s, its floor %s%s, the rest %s; server CPU %s, its floor %s\n", mr.Model, s.Mode,
				fmtSigned(lat), fmtSigned(flat), fixed, fmtSigned(lat-flat), fmtSigned(cpu), fmtSigned(fcpu))
		}
	}
}

// plural is "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
