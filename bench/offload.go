package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/cpulimit"
	"github.com/accelpool/accelpool/internal/linkemu"
	"github.com/accelpool/accelpool/internal/zrun"
	"github.com/accelpool/accelpool/offload"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/proxy"
	"github.com/accelpool/accelpool/proxy/linkprobe"
	"github.com/accelpool/accelpool/tensor"
)

// OffloadConfig configures RunOffload.
type OffloadConfig struct {
	// Exe is the accelpool binary the emulated device runs (accelpool proxy).
	Exe    string
	ORTLib string
	// Repository holds the models (<name>/1/model.onnx); ImagesDir the
	// photographs (astronaut.png, page.png).
	Repository, ImagesDir string
	// DeviceCPU is the device's CPU share in cores (cgroup quota).
	DeviceCPU float64
	// EdgeThreads is the edge server's intra-op threads (0: all cores).
	EdgeThreads int
	Links       []linkemu.Link
	Models      []string
	// Requests are measured per model and configuration, one at a time,
	// after Warmup requests that let the proxy measure its options.
	Requests, Warmup int
	// Degrade runs the link-degradation phase (a model under load while
	// the first link's latency goes up and back down).
	Degrade bool
	// Progress receives a line per step.
	Progress io.Writer
	// ProfileDir, when set, receives the device proxy's CPU profile for
	// each configuration: device-local.pprof, device-<link>.pprof.
	ProfileDir string
}

// DefaultLinks are the links the benchmark emulates by default.
var DefaultLinks = []string{"name=lan,rtt=1ms,bw=1gbit", "name=edge,rtt=10ms,bw=100mbit", "name=cloud,rtt=40ms,bw=50mbit"}

// DefaultOffloadModels are real models with real photographs.
var DefaultOffloadModels = []string{"ocr-det", "blazeface-back", "ocr-rec"}

// OffloadRow is one model over one link.
type OffloadRow struct {
	Model, Link string
	// InBytes is the encoded image sent; OutBytes the outputs returned.
	InBytes, OutBytes int64
	// OutBytesZ is OutBytes zero-run compressed (what crosses the link
	// when the proxy sends the request compressed); Compressed counts the
	// measured requests that went so. The ideal of such a request counts
	// the compressed bytes: the bytes that had to cross.
	OutBytesZ  int64
	Compressed int
	// Local is the median latency on the device alone; Achieved the median
	// through the proxy choosing freely; RanOn where those requests ran.
	Local, Achieved time.Duration
	RanOn           string
	// The link as probed from outside the device (RTT, each direction's
	// bandwidth).
	RTT            time.Duration
	UpBps, DownBps float64
	// Remote is the edge server alone: the median latency of calls straight
	// to it from this process, one before each request (interleaved, so it
	// sees the same minutes of a shared machine); EdgeOverhead the median
	// of those calls' latency less the server time they report (gRPC and
	// loopback on the edge's side).
	Remote, EdgeOverhead time.Duration
	// IdealRemote is the median over the measured requests of each one's
	// ideal: RTT + InBytes/UpBps + OutBytes/DownBps + EdgeOverhead + the
	// server time the edge reported for that very request (Remote for a
	// request it did not serve).
	IdealRemote time.Duration
	// Speedup is Local / Achieved; Ideal is Local / min(Local, IdealRemote).
	Speedup, Ideal float64
	// AchievedOfIdeal is the median over the measured requests of
	// min(Local, ideal_i) / latency_i: each request against the ideal with
	// its own edge time, so the edge's request-to-request scatter on a
	// shared machine is in both. AOILow and AOIHigh are the 10th and 90th
	// percentiles of the same ratios.
	AchievedOfIdeal, AOILow, AOIHigh float64
	// Unpaired is the ratio of medians: Speedup / (Local / min(Local, RTT
	// + InBytes/UpBps + OutBytes/DownBps + Remote)), the edge's time a
	// median of separate calls.
	Unpaired float64
	// PredErr is the median over the measured requests of |predicted -
	// measured| / measured (the proxy's accelpool_predicted_us);
	// PredErrMean their mean and PredErrP90 their 90th percentile.
	// Predicted counts the requests with a prediction.
	PredErr, PredErrMean, PredErrP90 float64
	Predicted                        int
	// EdgeSpread is the 10th-90th percentile range of the server time the
	// edge reported over the measured requests, over the offloaded median:
	// scatter that no prediction made before a request can know.
	EdgeSpread float64
	// DeviceCPU is the device proxy's CPU time per measured request
	// (all its threads, from /proc; 0 where unavailable).
	DeviceCPU time.Duration
}

// OffloadReport is what RunOffload measured.
type OffloadReport struct {
	Host, DeviceDesc string
	EdgeDesc         string
	Rows             []OffloadRow
	// Degrade is the link-degradation phase, when run.
	Degrade *DegradeResult
}

// DegradeResult is the link-degradation phase.
type DegradeResult struct {
	Model, Link                 string
	Normal, Degraded            linkemu.Link
	ToLocal, BackToRemote       time.Duration
	Requests, Failed            int
	BeforeOn, DuringOn, AfterOn string
}

// offloadInput is one model's request: a photograph as JPEG, with the
// preprocessing the model declares.
type offloadInput struct {
	model string
	input string
	jpeg  []byte
	desc  string
	prep  imagePrep
	rank4 []int64 // the model's input shape
}

func (c *OffloadConfig) progress(format string, a ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", a...)
	}
}

// RunOffload reproduces the AVEC setting on one machine: an edge server
// (in this process, all cores), a weak device (an accelpool proxy process
// in a cgroup CPU quota) and links emulated by toxiproxy between them. For
// each model it measures the device alone, then for each link the proxy
// choosing freely, and compares with the ideal from the measured link and
// the server's own latency.
func RunOffload(ctx context.Context, cfg OffloadConfig) (OffloadReport, error) {
	rep := OffloadReport{Host: hostDesc()}
	if cfg.Requests < 1 || cfg.Warmup < 0 {
		return rep, fmt.Errorf("requests must be at least 1 and warmup not negative")
	}
	if len(cfg.Links) == 0 || len(cfg.Models) == 0 {
		return rep, fmt.Errorf("give at least one link and one model")
	}
	if err := cpulimit.Available(); err != nil {
		return rep, fmt.Errorf("the weak device is emulated with a cgroup CPU quota: %w", err)
	}
	bin, err := linkemu.Find()
	if err != nil {
		return rep, err
	}
	work, err := os.MkdirTemp("", "accelpool-offload-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(work)

	inputs, err := offloadInputs(cfg)
	if err != nil {
		return rep, err
	}
	edgeRepo, deviceRepo := filepath.Join(work, "edge"), filepath.Join(work, "device")
	for _, in := range inputs {
		if err := writeBenchModel(cfg.Repository, edgeRepo, in, cfg.EdgeThreads); err != nil {
			return rep, err
		}
		if err := writeBenchModel(cfg.Repository, deviceRepo, in, 1); err != nil {
			return rep, err
		}
	}

	// The edge server.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	backend, err := onnx.New(onnx.Config{LibPath: cfg.ORTLib, Logger: quiet})
	if err != nil {
		return rep, err
	}
	cfg.progress("starting the edge server (this process, %d cores) with %s", numCPU(), strings.Join(cfg.Models, ", "))
	edge, err := agent.StartNode(ctx, agent.NodeConfig{Manager: agent.Config{Repository: edgeRepo, Backend: backend, Logger: quiet}, GRPCAddr: "127.0.0.1:0"})
	if err != nil {
		return rep, err
	}
	defer edge.Close(context.Background())
	threads := "all cores"
	if cfg.EdgeThreads > 0 {
		threads = fmt.Sprintf("%d threads", cfg.EdgeThreads)
	}
	rep.EdgeDesc = fmt.Sprintf("accelpool agent in the benchmark process, ONNX Runtime CPU, %s of %d", threads, numCPU())
	direct, err := grpcsvc.Dial(edge.GRPCAddr())
	if err != nil {
		return rep, err
	}
	defer direct.Close()

	// The links.
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	tp, err := linkemu.Start(tctx, bin)
	cancel()
	if err != nil {
		return rep, err
	}
	defer tp.Close()
	links := make([]*linkemu.Proxy, len(cfg.Links))
	for i, l := range cfg.Links {
		if links[i], err = tp.Proxy(l.Name, edge.GRPCAddr(), l); err != nil {
			return rep, err
		}
	}

	// The device.
	group, err := cpulimit.New(fmt.Sprintf("offload-%d", os.Getpid()), cfg.DeviceCPU)
	if err != nil {
		return rep, err
	}
	defer group.Close()
	q, p := group.Quota()
	rep.DeviceDesc = fmt.Sprintf("accelpool proxy process in a cgroup CPU quota of %.2f cores (%v per %v; EMULATED weak device), ONNX Runtime 1 thread", cfg.DeviceCPU, q, p)

	// Edge server latency alone, per model, and its answers' size (the
	// ideal's compute term is measured again beside each row).
	outBytes, outBytesZ := map[string]int64{}, map[string]int64{}
	for _, in := range inputs {
		lat, out, outZ, err := measureDirect(ctx, direct, in, cfg.Warmup+2, cfg.Requests*2)
		if err != nil {
			return rep, fmt.Errorf("%s on the edge server: %w", in.model, err)
		}
		outBytes[in.model], outBytesZ[in.model] = out, outZ
		cfg.progress("edge server alone: %s median %v (%d-byte answer, %d zero-run compressed)", in.model, fmtMS(lat), out, outZ)
	}

	// The device alone.
	local := map[string]time.Duration{}
	{
		cfg.progress("starting the device proxy in local mode (loading models at %.2f cores takes a while)", cfg.DeviceCPU)
		dev, err := startDevice(ctx, cfg, group, "local", "--mode", "local", "--models", deviceRepo)
		if err != nil {
			return rep, err
		}
		for _, in := range inputs {
			ms, err := measureProxy(ctx, dev, nil, in, cfg.Warmup, cfg.Requests, cfg.progress)
			if err != nil {
				dev.stop()
				return rep, fmt.Errorf("%s on the device: %w", in.model, err)
			}
			local[in.model] = medianDuration(ms.took)
			cfg.progress("device alone: %s median %v", in.model, fmtMS(local[in.model]))
		}
		dev.stop()
	}

	// Each link, the proxy choosing.
	for li, l := range cfg.Links {
		probe, err := measureLink(ctx, links[li].Addr())
		if err != nil {
			return rep, fmt.Errorf("probing link %s: %w", l.Name, err)
		}
		cfg.progress("link %s (%s): probed rtt %v, up %.1f Mbit/s, down %.1f Mbit/s", l.Name, l, fmtMS(probe.RTT), probe.UpBps/1e6, probe.DownBps/1e6)
		dev, err := startDevice(ctx, cfg, group, l.Name, "--mode", "auto", "--models", deviceRepo, "--probe-interval", "200ms",
			"--target", fmt.Sprintf("name=%s,addr=%s,tier=edge", l.Name, links[li].Addr()))
		if err != nil {
			return rep, err
		}
		for _, in := range inputs {
			ms, err := measureProxy(ctx, dev, direct, in, cfg.Warmup, cfg.Requests, cfg.progress)
			if err != nil {
				dev.stop()
				return rep, fmt.Errorf("%s over %s: %w", in.model, l.Name, err)
			}
			row := OffloadRow{Model: in.model, Link: l.Name, InBytes: int64(len(in.jpeg)), OutBytes: outBytes[in.model], OutBytesZ: outBytesZ[in.model],
				Local: local[in.model], RanOn: ms.ranOn(), RTT: probe.RTT, UpBps: probe.UpBps, DownBps: probe.DownBps, DeviceCPU: ms.cpu}
			row.figures(ms)
			rep.Rows = append(rep.Rows, row)
			cfg.progress("%s over %s: median %v on %s, speedup %.1fx of ideal %.1fx, achieved/ideal %.2f (p10-p90 %.2f-%.2f), prediction error median %.1f%% mean %.1f%%", in.model, l.Name,
				fmtMS(row.Achieved), row.RanOn, row.Speedup, row.Ideal, row.AchievedOfIdeal, row.AOILow, row.AOIHigh, 100*row.PredErr, 100*row.PredErrMean)
			cfg.progress("  the proxy's estimates: %s", dev.describe(in.model))
		}
		if cfg.Degrade && li == 0 {
			in := inputs[0]
			for _, cand := range inputs {
				if cand.model == "blazeface-back" {
					in = cand
				}
			}
			d, err := degradePhase(ctx, cfg, dev.client, links[li], l, in, local[in.model])
			if err != nil {
				dev.stop()
				return rep, err
			}
			rep.Degrade = d
		}
		dev.stop()
		if log := strings.TrimSpace(dev.stderr.String()); log != "" {
			cfg.progress("device proxy's log over %s (warnings and errors):\n%s", l.Name, lastLines(log, 20))
		}
	}
	return rep, nil
}

// offloadInputs encodes each model's photograph as JPEG (quality 90):
// BlazeFace gets the astronaut's portrait, OCR detection the printed page,
// OCR recognition a strip of it (one line's height).
func offloadInputs(cfg OffloadConfig) ([]offloadInput, error) {
	load := func(name string) (image.Image, error) {
		f, err := os.Open(filepath.Join(cfg.ImagesDir, name))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return preprocess.Decode(f)
	}
	var out []offloadInput
	for _, m := range cfg.Models {
		prep, ok := knownPreps[m]
		if !ok {
			return nil, fmt.Errorf("model %q: the offload benchmark knows blazeface-back, blazeface-front, ocr-det, ocr-cls and ocr-rec", m)
		}
		file := "page.png"
		if strings.HasPrefix(m, "blazeface") {
			file = "astronaut.png"
		}
		img, err := load(file)
		if err != nil {
			return nil, err
		}
		desc := file
		if m == "ocr-rec" || m == "ocr-cls" {
			b := img.Bounds()
			strip := image.NewRGBA(image.Rect(0, 0, b.Dx(), min(40, b.Dy())))
			draw.Draw(strip, strip.Bounds(), img, b.Min, draw.Src)
			img, desc = strip, file+" (top 40-pixel strip)"
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
			return nil, err
		}
		out = append(out, offloadInput{model: m, jpeg: buf.Bytes(), desc: desc + " as JPEG", prep: prep})
	}
	return out, nil
}

// writeBenchModel links the model into repo with a config.yaml declaring
// its image preprocessing, so requests can carry JPEG bytes.
func writeBenchModel(src, repo string, in offloadInput, threads int) error {
	dir := filepath.Join(repo, in.model, "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	model := filepath.Join(src, in.model, "1", "model.onnx")
	if _, err := os.Stat(model); err != nil {
		return fmt.Errorf("model %s: %w (run scripts/setup.sh)", in.model, err)
	}
	if err := os.Symlink(model, filepath.Join(dir, "model.onnx")); err != nil {
		return err
	}
	input := "x"
	if strings.HasPrefix(in.model, "blazeface") {
		input = "input:0"
	}
	f3 := func(v [3]float32) string { return fmt.Sprintf("[%g, %g, %g]", v[0], v[1], v[2]) }
	b := []byte(fmt.Sprintf("max_queue_size: 64\nconcurrency: 1\nintra_op_threads: %d\npreprocess:\n  %q:\n    width: %d\n    height: %d\n    scale: %g\n    mean: %s\n    std: %s\n    bgr: %v\n",
		threads, input, in.prep.width, in.prep.height, in.prep.scale, f3(in.prep.mean), f3(in.prep.std), in.prep.bgr))
	if _, err := repository.ParseConfig(b); err != nil {
		return fmt.Errorf("benchmark config for %s: %w", in.model, err)
	}
	return os.WriteFile(filepath.Join(repo, in.model, "config.yaml"), b, 0o644)
}

func (in offloadInput) request() *oip.InferRequest {
	name := "x"
	if strings.HasPrefix(in.model, "blazeface") {
		name = "input:0"
	}
	return &oip.InferRequest{ModelName: in.model, Inputs: []oip.InferInput{{Tensor: tensor.Tensor{
		Name: name, DataType: tensor.Bytes, Shape: []int64{1}, Data: tensor.JoinBytes([][]byte{in.jpeg})}}}}
}

// measureDirect is the edge server's own median latency for in, from this
// process over loopback, and its answer's size.
func measureDirect(ctx context.Context, c *grpcsvc.Client, in offloadInput, warmup, n int) (lat time.Duration, out, outZ int64, err error) {
	var lats []time.Duration
	var last *oip.InferResponse
	for i := range warmup + n {
		start := time.Now()
		r, err := c.Infer(ctx, in.request())
		if err != nil {
			return 0, 0, 0, err
		}
		if i >= warmup {
			lats = append(lats, time.Since(start))
		}
		last = r
	}
	out = proxy.WireBytes(last.Outputs...)
	outZ = out
	for _, o := range last.Outputs {
		outZ += zrun.Size(o.Data) - int64(len(o.Data))
	}
	return medianDuration(lats), out, outZ, nil
}

// proxyMeasure is what measureProxy saw, per measured request i.
type proxyMeasure struct {
	took []time.Duration // latency through the proxy
	pred []time.Duration // the proxy's prediction (0: none)
	// server is the server time the target reported (queue, preprocessing
	// and compute; 0: ran on the device or not reported).
	server []time.Duration
	// edge and edgeServer are the call straight to the edge server before
	// request i: its latency and the server time it reported.
	edge, edgeServer []time.Duration
	on               map[string]int
	// compressed is whether request i crossed the link compressed.
	compressed []bool
	cpu        time.Duration // the device's CPU time per measured request
}

func (m proxyMeasure) ranOn() string {
	keys := make([]string, 0, len(m.on))
	for k := range m.on {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	total := 0
	for _, k := range keys {
		total += m.on[k]
	}
	for i, k := range keys {
		if m.on[k] == total {
			return k
		}
		parts[i] = fmt.Sprintf("%s %d/%d", k, m.on[k], total)
	}
	return strings.Join(parts, ", ")
}

// measureProxy sends warmup, then n measured requests one at a time through
// the device proxy. With direct, each is preceded by one straight to the
// edge server, so that the edge server's own latency (the ideal's compute
// term) is measured in the same minutes as the offloaded one: on a shared
// machine the edge's speed drifts by tens of percent over a run.
func measureProxy(ctx context.Context, dev *device, direct *grpcsvc.Client, in offloadInput, warmup, n int, progress func(string, ...any)) (proxyMeasure, error) {
	c := dev.client
	m := proxyMeasure{on: map[string]int{}}
	var cpu0 time.Duration
	for i := range warmup + n {
		if direct != nil {
			start := time.Now()
			r, err := direct.Infer(ctx, in.request())
			if err != nil {
				return m, fmt.Errorf("on the edge server alone: %w", err)
			}
			if i >= warmup {
				m.edge = append(m.edge, time.Since(start))
				m.edgeServer = append(m.edgeServer, serverTime(r.Parameters))
			}
		}
		if i == warmup {
			cpu0 = dev.cpuTime()
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		start := time.Now()
		r, err := c.Infer(rctx, in.request())
		took := time.Since(start)
		cancel()
		if err != nil {
			return m, err
		}
		if i < warmup {
			continue
		}
		target, _ := r.Parameters[proxy.ParamTarget].(string)
		m.on[target]++
		var pred, server time.Duration
		if us, ok := r.Parameters[proxy.ParamPredicted].(int64); ok {
			pred = time.Duration(us) * time.Microsecond
		}
		if target != proxy.LocalName {
			server = serverTime(r.Parameters)
		}
		m.took, m.pred, m.server = append(m.took, took), append(m.pred, pred), append(m.server, server)
		m.compressed = append(m.compressed, r.Parameters[proxy.ParamCompressed] == true)
		if took > 2*time.Second {
			// What the proxy knew just after: a slow answer where a link
			// was offered says why it ran where it did.
			att, _ := r.Parameters[proxy.ParamAttempts].(int64)
			progress("  %s request %d: %v on %s (attempt %d, predicted %v; the proxy now: %s)", in.model, i-warmup+1, fmtMS(took), target, att, fmtMS(pred), dev.describe(in.model))
		}
	}
	if cpu0 > 0 {
		m.cpu = (dev.cpuTime() - cpu0) / time.Duration(n)
	}
	return m, nil
}

// serverTime is the server time an agent reports in its answer's
// parameters: queue, preprocessing and compute (0 when it says none).
func serverTime(p oip.Parameters) time.Duration {
	var d time.Duration
	for _, k := range []string{agent.QueueParameter, agent.PreprocessParameter, agent.ComputeParameter} {
		switch v := p[k].(type) {
		case int64:
			d += time.Duration(v) * time.Microsecond
		case uint64:
			d += time.Duration(v) * time.Microsecond
		case float64:
			d += time.Duration(v * float64(time.Microsecond))
		}
	}
	return d
}

// figures fills r's latencies and ratios from its measured requests; r's
// Local, RTT, bandwidths and sizes must be set.
func (r *OffloadRow) figures(m proxyMeasure) {
	r.Achieved = medianDuration(m.took)
	r.Remote = medianDuration(m.edge)
	over := make([]time.Duration, 0, len(m.edge))
	for j := range m.edge {
		if m.edgeServer[j] > 0 {
			over = append(over, m.edge[j]-m.edgeServer[j])
		}
	}
	r.EdgeOverhead = medianDuration(over)
	plain := r.RTT + offload.WireTime(r.InBytes, r.UpBps) + offload.WireTime(r.OutBytes, r.DownBps)
	zipped := r.RTT + offload.WireTime(r.InBytes, r.UpBps) + offload.WireTime(r.OutBytesZ, r.DownBps)
	r.Compressed = 0
	var ideals []time.Duration
	var aoi, errs, servers []float64
	for i, took := range m.took {
		wire := plain
		if i < len(m.compressed) && m.compressed[i] { // (unset: none compressed)
			wire = zipped
			r.Compressed++
		}
		ideal := wire + r.Remote
		if m.server[i] > 0 && len(over) > 0 {
			ideal = wire + r.EdgeOverhead + m.server[i]
			servers = append(servers, float64(m.server[i]))
		}
		ideals = append(ideals, ideal)
		aoi = append(aoi, ratio(min(r.Local, ideal).Seconds(), took.Seconds()))
		if m.pred[i] > 0 {
			errs = append(errs, math.Abs(float64(m.pred[i]-took))/float64(took))
		}
	}
	r.IdealRemote = medianDuration(ideals)
	r.Speedup = ratio(r.Local.Seconds(), r.Achieved.Seconds())
	r.Ideal = ratio(r.Local.Seconds(), min(r.Local, r.IdealRemote).Seconds())
	r.AchievedOfIdeal, r.AOILow, r.AOIHigh = median(aoi), quantile(aoi, 10), quantile(aoi, 90)
	wire := plain
	if 2*r.Compressed > len(m.took) {
		wire = zipped
	}
	r.Unpaired = r.Speedup / ratio(r.Local.Seconds(), min(r.Local, wire+r.Remote).Seconds())
	r.Predicted = len(errs)
	if len(errs) > 0 {
		r.PredErr, r.PredErrP90 = median(errs), quantile(errs, 90)
		for _, e := range errs {
			r.PredErrMean += e / float64(len(errs))
		}
	}
	if len(servers) > 1 && r.Achieved > 0 {
		r.EdgeSpread = (quantile(servers, 90) - quantile(servers, 10)) / float64(r.Achieved)
	}
}

// quantile is the nearest-rank percentile p (0 < p ≤ 100) of v, leaving v
// unchanged; 0 for no values.
func quantile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// measureLink probes an emulated link from this (unthrottled) process: the
// smallest of five round trips, and bandwidth with 512 KiB transfers.
func measureLink(ctx context.Context, addr string) (linkprobe.Result, error) {
	conn, err := grpc.NewClient(addr, grpcsvc.DefaultDialOptions()...)
	if err != nil {
		return linkprobe.Result{}, err
	}
	defer conn.Close()
	var best linkprobe.Result
	var ups, downs []float64
	for i := range 5 {
		r, err := linkprobe.Measure(ctx, conn, 512<<10)
		if err != nil {
			return best, err
		}
		if i == 0 || r.RTT < best.RTT {
			best.RTT = r.RTT
		}
		ups, downs = append(ups, r.UpBps), append(downs, r.DownBps)
	}
	best.UpBps, best.DownBps = median(ups), median(downs)
	return best, nil
}

// device is a running accelpool proxy process in the device's cgroup.
type device struct {
	cmd    *exec.Cmd
	client *grpcsvc.Client
	stderr *lockedWriter
	done   chan error
	rest   string // REST address, for /proxy/status
}

// status fetches the proxy's view of its options.
func (d *device) status() (proxy.Status, error) {
	var st proxy.Status
	resp, err := http.Get("http://" + d.rest + "/proxy/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// describe is a one-line account of what the proxy knows about model.
func (d *device) describe(model string) string {
	st, err := d.status()
	if err != nil {
		return "status: " + err.Error()
	}
	var parts []string
	if l, ok := st.Local[model]; ok {
		parts = append(parts, fmt.Sprintf("local service %.1fms overhead %.1fms (%d samples)", l.ServiceMs, l.OverheadMs, l.Samples))
	}
	for _, t := range st.Targets {
		m := t.Models[model]
		state := ""
		if !t.Up {
			state = fmt.Sprintf(" DOWN (%s)", t.LastError)
		}
		if t.CompressionRefused {
			state += " (refused compression)"
		}
		parts = append(parts, fmt.Sprintf("%s%s rtt %.2fms up/down %.0f/%.0f Mbit/s (%d probes, %d overlapped) server %.1fms transfer %.1fms device overhead %.1fms out %dB",
			t.Name, state, t.RTTMs, t.UpMbps, t.DownMbps, t.BandwidthSamples, t.Overlapped, m.ServerMs, m.TransferMs, m.OverheadMs, m.OutBytes))
		if z, ok := t.Models[model+proxy.CompressedSuffix]; ok {
			parts = append(parts, fmt.Sprintf("compressed: server %.1fms transfer %.1fms device overhead %.1fms (%d samples)", z.ServerMs, z.TransferMs, z.OverheadMs, z.Samples))
		}
	}
	return strings.Join(parts, "; ")
}

var (
	grpcLine = regexp.MustCompile(`gRPC (\S+)`)
	restLine = regexp.MustCompile(`REST http://(\S+)/v2`)
)

// startDevice runs accelpool proxy with args in group and waits (up to 5
// minutes: loading models at a tenth of a core is slow) until it serves.
// label names the configuration (its CPU profile, with cfg.ProfileDir).
func startDevice(ctx context.Context, cfg OffloadConfig, group *cpulimit.Group, label string, args ...string) (*device, error) {
	args = append([]string{"proxy", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--log-level", "warn"}, args...)
	if cfg.ProfileDir != "" {
		args = append(args, "--cpuprofile", filepath.Join(cfg.ProfileDir, "device-"+label+".pprof"))
	}
	if cfg.ORTLib != "" {
		args = append(args, "--ort-lib", cfg.ORTLib)
	}
	cmd := exec.Command(cfg.Exe, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	d := &device{cmd: cmd, stderr: &lockedWriter{}, done: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the device proxy: %w", err)
	}
	if err := group.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if m := grpcLine.FindStringSubmatch(sc.Text()); m != nil && !sent {
				if r := restLine.FindStringSubmatch(sc.Text()); r != nil {
					d.rest = r[1]
				}
				addr <- m[1]
				sent = true
			}
		}
		d.done <- cmd.Wait()
	}()
	select {
	case a := <-addr:
		if d.client, err = grpcsvc.Dial(a); err != nil {
			d.stop()
			return nil, err
		}
		return d, nil
	case err := <-d.done:
		return nil, fmt.Errorf("the device proxy exited (%v): %s", err, lastLines(d.stderr.String(), 10))
	case <-time.After(5 * time.Minute):
		d.stop()
		return nil, errors.New("the device proxy did not start within 5 minutes")
	case <-ctx.Done():
		d.stop()
		return nil, ctx.Err()
	}
}

// cpuTime is the CPU time the device process has used so far, over all
// its threads (the first field of /proc/PID/task/*/schedstat, in ns); 0
// where /proc does not say.
func (d *device) cpuTime() time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err == nil {
			total += time.Duration(ns)
		}
	}
	return total
}

func (d *device) stop() {
	if d.client != nil {
		d.client.Close()
	}
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// lockedWriter collects a child's stderr.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
