package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/accelpool/accelpool/agent/profile"
	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/internal/cache"
)

const profileHelp = `
Measures a model on this machine's ONNX Runtime: load time, memory taken
once loaded, service time by batch size (mean, p99, variability) and mean
latency with n requests running at once. With --push the profile is stored
in the control plane's registry, where the placement's latency models use
it. MODEL is a file, or a model name of the --model-repository.`

func parseInts(s, flagName string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("%s %q: want positive integers, comma-separated", flagName, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseShapes reads name=1x3x640x640;other=1x8.
func parseShapes(s string) (map[string][]int64, error) {
	out := map[string][]int64{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ";") {
		name, dims, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--shape %q: want NAME=DxDxD", part)
		}
		for _, d := range strings.Split(dims, "x") {
			v, err := strconv.ParseInt(d, 10, 64)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("--shape %q: dimensions must be positive integers", part)
			}
			out[name] = append(out[name], v)
		}
	}
	return out, nil
}

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("profile", "profile [flags] MODEL", profileHelp, stderr)
	af := addAdminFlags(fs)
	repo := fs.String("model-repository", cache.ModelRepository(), "repository `dir` for model names")
	name := fs.String("name", "", "profile under this model `name` (default: the model's name)")
	batches := fs.String("batch", "1,2,4,8", "batch `sizes` to time (only for models with a dynamic first dimension)")
	conc := fs.String("concurrency", "1,2,4", "concurrent request `counts` to time")
	iters := fs.Int("iterations", 30, "timed runs per measurement")
	shapes := fs.String("shape", "", "input `shapes` NAME=1x3x640x640;NAME2=... (other dynamic dims: 224)")
	threads := fs.Int("intra-op-threads", 0, "ONNX Runtime intra-op `threads` (0: its default)")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path`")
	push := fs.Bool("push", false, "store the profile in the control plane (--server)")
	asJSON := fs.Bool("json", false, "print the profile as JSON")
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	bs, err := parseInts(*batches, "--batch")
	if err != nil {
		return err
	}
	cs, err := parseInts(*conc, "--concurrency")
	if err != nil {
		return err
	}
	sh, err := parseShapes(*shapes)
	if err != nil {
		return err
	}
	path, model := fs.Arg(0), filepath.Base(fs.Arg(0))
	if _, err := os.Stat(path); err != nil {
		m, ok, rerr := repository.Read(*repo, fs.Arg(0))
		if rerr != nil || !ok {
			return fmt.Errorf("%s is neither a file nor a model of %s", fs.Arg(0), *repo)
		}
		path, model = m.Path(m.Latest()), m.Name
	}
	if *name != "" {
		model = *name
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "profiling %s (%s) on this machine's CPU\n", model, path)
	p, err := profile.Run(ctx, backend, path, model, profile.Options{BatchSizes: bs, Concurrency: cs, Iterations: *iters, Shapes: sh,
		Runtime: runtime.Options{IntraOpThreads: *threads}}, func(s string) { fmt.Fprintln(stderr, "  "+s) })
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "model %s on %s (%s): load %.1f ms, memory %.1f MiB, cv %.2f\n", p.Model, p.AcceleratorKind, p.Host, p.LoadMs, float64(p.MemoryBytes)/(1<<20), p.ServiceCV)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BATCH\tMEAN ms\tP99 ms\tPER ITEM ms")
		keys := make([]int, 0, len(p.ServiceMs))
		for k := range p.ServiceMs {
			keys = append(keys, k)
		}
		sort.Ints(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f\n", k, p.ServiceMs[k], p.ServiceP99Ms[k], p.ServiceMs[k]/float64(k))
		}
		fmt.Fprintln(tw, "\nCONCURRENT\tMEAN ms\tx ALONE\t")
		keys = keys[:0]
		for k := range p.ConcurrentMs {
			keys = append(keys, k)
		}
		sort.Ints(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t\n", k, p.ConcurrentMs[k], p.ConcurrentMs[k]/p.ServiceMs[1])
		}
		_ = tw.Flush()
	}
	if *push {
		cctx, cancel := context.WithTimeout(ctx, *af.timeout)
		defer cancel()
		if err := af.client().PutProfile(cctx, p); err != nil {
			return fmt.Errorf("push profile: %w", err)
		}
		fmt.Fprintf(stderr, "stored profile %s/%s in the control plane\n", p.Model, p.AcceleratorKind)
	}
	return nil
}
