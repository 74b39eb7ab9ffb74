// Package cli implements accelpool's subcommands. Each command is a
// function over its arguments and output streams, so tests can run them
// in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/accelpool/accelpool/agent/repository"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "0.1.0-dev"

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"up":       {"run the whole serving stack on this machine with the demo models", runUp},
	"infer":    {"send an input (image, .npy or JSON) to a model and print the outputs", runInfer},
	"models":   {"list the models of a running server and their states", runModels},
	"load":     {"load (or reload) a model from the server's repository", runLoad},
	"unload":   {"unload a model, freeing its memory", runUnload},
	"bench":    {"run benchmarks (overhead: serving vs in-process ONNX Runtime)", runBench},
	"version":  {"print the version", runVersion},
	"serve":    {"serve a plain model repository on this machine, without a control plane", runServe},
	"server":   {"run a control-plane replica (etcd-backed registry, placement, admin API, gateway)", runServer},
	"proxy":    {"run the device proxy: serve inference locally, run each request where it finishes soonest", runProxy},
	"agent":    {"run a node agent that joins a control plane and serves its assigned instances", runAgent},
	"model":    {"push a model artifact to the control plane (model push FILE --name NAME)", runModel},
	"deploy":   {"deploy applications from a YAML file", runDeploy},
	"get":      {"list apps, nodes or models", runGet},
	"describe": {"show one application or node in detail", runDescribe},
	"delete":   {"delete an application or a model artifact", runDelete},
	"profile":  {"measure a model's load time, memory and latency on this machine (optionally store it)", runProfile},
	"explain":  {"show why an application's instances are placed where they are", runExplain},
}

// errUsage marks errors whose usage text was already printed.
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprintf(w, "accelpool %s — pools accelerators into one virtual accelerator for DNN inference.\n\n", Version)
	fmt.Fprintf(w, "Usage: accelpool <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'accelpool <command> --help' for a command's flags.\n")
}

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				_ = c.run(context.Background(), []string{"--help"}, stdout, stderr)
				return 0
			}
		}
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "accelpool: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "accelpool %s: %v\n", args[0], err)
	return 1
}

// newFlags makes a FlagSet whose usage names the command and explains it.
func newFlags(name, synopsis, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: accelpool %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(help))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, mapping a parse error to errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// parseProviders checks a --providers list: comma-separated execution
// providers the runtime knows, none twice.
func parseProviders(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case !slices.Contains(repository.Providers, p):
			return nil, fmt.Errorf("--providers %q: %q is not one of %s", s, p, strings.Join(repository.Providers, ", "))
		case slices.Contains(out, p):
			return nil, fmt.Errorf("--providers %q: %s is given twice", s, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// checkMaxBody checks --max-body-bytes: gRPC and protobuf carry messages
// below 2 GiB, and a limit below 4 KiB would refuse ordinary requests.
func checkMaxBody(n int64) error {
	if n < 4<<10 || n > math.MaxInt32 {
		return fmt.Errorf("--max-body-bytes %d: must be between 4096 and %d (2 GiB - 1, protobuf's limit)", n, math.MaxInt32)
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version", "Prints accelpool's version.", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "accelpool %s\n", Version)
	return nil
}

// envOr returns the environment variable's value or def.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
