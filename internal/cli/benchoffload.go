package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/accelpool/accelpool/bench"
	"github.com/accelpool/accelpool/internal/cache"
	"github.com/accelpool/accelpool/internal/linkemu"
)

const benchOffloadHelp = `
Reproduces the AVEC setting on this machine: an application on a weak
device calls the device proxy on localhost, which runs each request on the
device or offloads it to an edge server over a link.

  - the edge server is an accelpool agent in this process (ONNX Runtime on
    all cores unless --edge-threads);
  - the weak device is EMULATED: 'accelpool proxy' runs as a child process
    in a cgroup CPU quota of --device-cpu cores (0.1 = a tenth of a core),
    with ONNX Runtime on one thread;
  - links are EMULATED with toxiproxy (scripts/setup.sh --bench installs
    it): --link name=NAME,rtt=DURATION,bw=RATE, repeatable;
  - inputs are real photographs (scripts/setup.sh --bench) sent as JPEG and
    preprocessed beside the model: OCR detection on a printed page,
    BlazeFace on a portrait, OCR recognition on a strip of the page.

For each model it measures the device alone (the proxy in local mode), the
edge server alone (one direct call before each measured request), and for
each link the proxy choosing freely. Each request's ideal is probed rtt +
transfer at the probed bandwidth + the edge's own time for that request (the
server time it reported, plus the gRPC overhead of a direct call);
achieved/ideal is the median over requests of min(local, ideal) / latency,
printed with its 10th-90th percentiles, and the prediction error is the
median over requests of |predicted - measured| / measured (mean and p90
too). The notes under the table say how each column is computed. With --degrade it then runs BlazeFace under
load over the first link while the link's round trip goes up by 200 ms and
back, and reports how long the proxy takes to move to local and back.

Needs root (cgroups). The last line reads:
  offload: best speedup X.Xx, worst achieved/ideal Y.YY`

// linkFlags is the repeatable --link flag.
type linkFlags []linkemu.Link

func (l *linkFlags) String() string { return fmt.Sprint(len(*l)) }

func (l *linkFlags) Set(s string) error {
	k, err := linkemu.ParseLink(s)
	if err != nil {
		return err
	}
	if k.Name == "" {
		k.Name = fmt.Sprintf("link%d", len(*l)+1)
	}
	*l = append(*l, k)
	return nil
}

func runBenchOffload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench offload", "bench offload [flags]", benchOffloadHelp, stderr)
	deviceCPU := fs.Float64("device-cpu", 0.1, "the emulated device's CPU share in `cores`")
	var links linkFlags
	fs.Var(&links, "link", "an emulated `link` name=NAME,rtt=10ms,bw=100mbit (repeatable; default lan, edge and cloud)")
	models := fs.String("models", strings.Join(bench.DefaultOffloadModels, ","), "`models`, comma-separated")
	requests := fs.Int("requests", 7, "measured `requests` per model and configuration")
	warmup := fs.Int("warmup", 3, "warm-up `requests` per model and configuration (the proxy measures its options)")
	edgeThreads := fs.Int("edge-threads", 0, "the edge server's intra-op `threads` (0: all cores)")
	degrade := fs.Bool("degrade", true, "run the link-degradation phase")
	plot := fs.String("plot", "offload.svg", "write the speedup plot (SVG) to `file` (\"\" for none)")
	repo := fs.String("model-repository", cache.ModelRepository(), "where the models are")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path`")
	profDir := fs.String("cpuprofile", "", "write the device proxy's CPU profile per configuration into `dir` (device-local.pprof, device-<link>.pprof)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	if *deviceCPU <= 0 || *deviceCPU > 1 {
		return fmt.Errorf("--device-cpu %g: want a share of one core in (0, 1]", *deviceCPU)
	}
	if len(links) == 0 {
		for _, s := range bench.DefaultLinks {
			if err := links.Set(s); err != nil {
				return err
			}
		}
	}
	images, err := cache.ImagesDir()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.OffloadConfig{Exe: exe, ORTLib: *ortLib, Repository: *repo, ImagesDir: images, DeviceCPU: *deviceCPU,
		EdgeThreads: *edgeThreads, Links: links, Models: strings.Split(*models, ","), Requests: *requests, Warmup: *warmup,
		Degrade: *degrade, Progress: stderr, ProfileDir: *profDir}
	rep, err := bench.RunOffload(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Print(stdout, cfg)
	if *plot != "" {
		f, err := os.Create(*plot)
		if err != nil {
			return err
		}
		if err := rep.SVG(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plot: %s\n", *plot)
	}
	return nil
}
