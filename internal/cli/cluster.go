package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/internal/tlsutil"
	"github.com/accelpool/accelpool/scheduler"
)

// adminFlags connect a command to the control plane's admin API.
type adminFlags struct {
	server, token, tlsCA *string
	timeout              *time.Duration
}

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		server:  fs.String("server", envOr("ACCELPOOL_SERVER", defaultServerURL), "control plane `URLs`, comma-separated (default $ACCELPOOL_SERVER)"),
		token:   fs.String("token", "", "admin `token` (default $ACCELPOOL_TOKEN, else the local data dir's token file)"),
		tlsCA:   fs.String("tls-ca", "", "CA `file` (PEM) to trust for https server URLs"),
		timeout: fs.Duration("timeout", 2*time.Minute, "give up after this `duration`"),
	}
}

func (a adminFlags) client() *client.Client {
	var hc *http.Client
	cfg, err := tlsutil.ClientConfig(*a.tlsCA)
	if err != nil {
		return client.Broken(err)
	}
	if cfg != nil {
		hc = tlsutil.HTTPClient(cfg, 10*time.Minute)
	}
	return client.New(strings.Split(*a.server, ","), clientToken(*a.token), hc)
}

func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "push" && args[0] != "list") {
		fmt.Fprintf(stderr, "Usage: accelpool model push FILE --name NAME\n       accelpool model list\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	if args[0] == "list" {
		return runGet(ctx, append([]string{"models"}, args[1:]...), stdout, stderr)
	}
	fs := newFlags("model push", "model push FILE --name NAME [flags]",
		"Uploads an ONNX model file to the control plane as a content-addressed artifact (sha256).\nApplications refer to it by NAME; agents pull it when they are assigned an instance.\nPushing a new file under a NAME in use rolls every application that names it without a digest\nto the new version, make-before-break; pin one with model: NAME@sha256:<hex>.", stderr)
	af := addAdminFlags(fs)
	name := fs.String("name", "", "artifact `name` (required)")
	if err := parse(fs, reorder(args[1:])); err != nil {
		return err
	}
	if fs.NArg() != 1 || *name == "" {
		fs.Usage()
		return errUsage
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	art, err := af.client().PushModel(ctx, *name, data)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pushed %s %s (%d bytes)\n", art.Name, art.Digest, art.Size)
	return nil
}

// reorder moves flags before positional arguments, so "push FILE --name X"
// parses like "push --name X FILE".
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func isBoolFlag(a string) bool {
	switch strings.TrimLeft(a, "-") {
	case "replace", "allow-pending", "h", "help", "insecure":
		return true
	}
	return false
}

func runDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("deploy", "deploy -f FILE [flags]", `
Creates the applications declared in a YAML file (several documents
separated by ---), all or none. An application names a pushed model, a
latency objective, replicas and placement constraints:

  apiVersion: accelpool.io/v1
  kind: Application
  metadata: {name: ocr}
  spec:
    model: ocr-det                 # or ocr-det@sha256:<hex>
    objective: {p99Ms: 200}
    rate: 20                       # expected requests/s
    replicas: {min: 2, max: 4}
    constraints: {tiers: [edge], labels: {zone: eu}, acceleratorKind: cpu}
    batching: {maxBatchSize: 8, maxQueueDelayMs: 2}
    serving: {concurrency: 2, intra_op_threads: 1}   # config.yaml's keys`, stderr)
	af := addAdminFlags(fs)
	file := fs.String("f", "", "application YAML `file` (- for stdin)")
	replace := fs.Bool("replace", false, "update applications that exist: instances whose model, batching, serving, memory or\nconstraints changed are replaced make-before-break (watch with: accelpool get app NAME)")
	pending := fs.Bool("allow-pending", false, "accept applications no registered node can run yet")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		fs.Usage()
		return errUsage
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, cluster.MaxDocumentBytes+1))
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	// Validate locally first: errors name the field without a round trip.
	if _, err := cluster.ParseApplications(data); err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	apps, err := af.client().Deploy(ctx, data, client.DeployOptions{Replace: *replace, AllowPending: *pending})
	if err != nil {
		return err
	}
	for _, a := range apps {
		fmt.Fprintf(stdout, "application %s deployed (model %s, p99 %gms, replicas %d-%d)\n", a.Metadata.Name, a.Spec.Model,
			a.Spec.Objective.P99Ms, a.Spec.Replicas.Min, a.Spec.Replicas.Max)
	}
	return nil
}

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("get", "get apps|nodes|models [-o table|json]", "Lists applications, nodes or model artifacts.", stderr)
	af := addAdminFlags(fs)
	out := fs.String("o", "table", "output `format`: table or json")
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	c := af.client()
	var v any
	var err error
	kind := strings.TrimSuffix(fs.Arg(0), "s")
	switch kind {
	case "app", "application":
		v, err = c.Apps(ctx)
	case "node":
		v, err = c.Nodes(ctx)
	case "model":
		v, err = c.Models(ctx)
	default:
		return fmt.Errorf("unknown kind %q: want apps, nodes or models", fs.Arg(0))
	}
	if err != nil {
		return err
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	} else if *out != "table" {
		return fmt.Errorf("-o %q: want table or json", *out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	switch list := v.(type) {
	case []cluster.AppView:
		fmt.Fprintln(tw, "NAME\tMODEL\tREADY\tP99 OBJECTIVE\tNODES\tMESSAGE")
		for _, a := range list {
			var nodes []string
			for _, in := range a.Status.Instances {
				nodes = append(nodes, in.Node)
			}
			ready := fmt.Sprintf("%d/%d", a.Status.Ready, a.Status.Desired)
			if a.Status.Outdated > 0 {
				ready += fmt.Sprintf(" (+%d outdated)", a.Status.Outdated)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%gms\t%s\t%s\n", a.Metadata.Name, a.Spec.Model, ready,
				a.Spec.Objective.P99Ms, strings.Join(nodes, ","), a.Status.Message)
		}
	case []cluster.NodeView:
		fmt.Fprintln(tw, "NAME\tSTATUS\tTIER\tSITE\tACCELERATORS\tINSTANCES\tLAST HEARTBEAT")
		for _, n := range list {
			st := "Down"
			if n.Up {
				st = "Up"
			}
			var accs []string
			for _, a := range n.Accelerators {
				accs = append(accs, fmt.Sprintf("%s(%s %s, %s reserved)", a.ID, a.Kind, scheduler.FormatBytes(a.MemoryBytes), scheduler.FormatBytes(n.ReservedMemoryBytes[a.ID])))
			}
			hb := "-"
			if !n.Status.LastHeartbeat.IsZero() {
				hb = time.Since(n.Status.LastHeartbeat).Round(100*time.Millisecond).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Name, st, n.Tier, n.Site, strings.Join(accs, " "), len(n.Instances), hb)
		}
	case []cluster.ModelArtifact:
		fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE\tPUSHED")
		for _, m := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Digest, scheduler.FormatBytes(m.Size), m.Created.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func runDescribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("describe", "describe app|node NAME", "Shows one application (with its instances and their states) or one node in detail.", stderr)
	af := addAdminFlags(fs)
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	c := af.client()
	switch strings.TrimSuffix(fs.Arg(0), "s") {
	case "app", "application":
		a, err := c.App(ctx, fs.Arg(1))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Name:        %s\nModel:       %s\nObjective:   p99 %gms at %g req/s\nReplicas:    %d ready of %d desired (max %d)\n",
			a.Metadata.Name, a.Spec.Model, a.Spec.Objective.P99Ms, a.Spec.Rate, a.Status.Ready, a.Status.Desired, a.Spec.Replicas.Max)
		if c := a.Spec.Constraints; len(c.Tiers)+len(c.Sites)+len(c.Labels) > 0 || c.AcceleratorKind != "" {
			fmt.Fprintf(stdout, "Constraints: tiers %v sites %v labels %v accelerator %q\n", c.Tiers, c.Sites, c.Labels, c.AcceleratorKind)
		}
		if a.Status.Message != "" {
			fmt.Fprintf(stdout, "Message:     %s\n", a.Status.Message)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nINSTANCE\tNODE\tACCELERATOR\tSTATE\tREASON")
		for _, in := range a.Status.Instances {
			reason := in.Reason
			if in.Outdated != "" {
				reason = strings.TrimPrefix(reason+"; ", "; ") + "outdated: " + in.Outdated
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", in.ID, in.Node, in.Accelerator, in.State, reason)
		}
		return tw.Flush()
	case "node":
		n, err := c.Node(ctx, fs.Arg(1))
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(n, "", "  ")
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	return fmt.Errorf("unknown kind %q: want app or node", fs.Arg(0))
}

func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("delete", "delete app|model NAME", "Deletes an application (its instances are removed) or a model artifact no application uses.", stderr)
	af := addAdminFlags(fs)
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	var err error
	switch strings.TrimSuffix(fs.Arg(0), "s") {
	case "app", "application":
		err = af.client().DeleteApp(ctx, fs.Arg(1))
	case "model":
		err = af.client().DeleteModel(ctx, fs.Arg(1))
	default:
		return fmt.Errorf("unknown kind %q: want app or model", fs.Arg(0))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted %s %s\n", fs.Arg(0), fs.Arg(1))
	return nil
}

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("explain", "explain APP", "Shows why an application's instances are where they are: every node rejected\nwith the checker and reason, the ranked candidates with their scores, and the choice.", stderr)
	af := addAdminFlags(fs)
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	ev, err := af.client().Explain(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if ev.Last != "" {
		fmt.Fprintf(stdout, "Last placement decision:\n%s\n", ev.Last)
	}
	fmt.Fprintf(stdout, "Where one more instance would go now:\n%s", ev.DryRun)
	return nil
}

// parseLabels reads k=v,k=v.
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
