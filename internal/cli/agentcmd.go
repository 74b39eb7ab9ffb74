package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/member"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/tlsutil"
)

const agentHelp = `
Runs a node agent: joins the control plane at --join, registers this
machine's accelerators under a lease, serves the Open Inference Protocol for
the instances the control plane assigns it (pulling and verifying their
model artifacts into <data-dir>), and heartbeats its load. A restarted agent
keeps its identity (<data-dir>/agent-id) and its artifact cache.

Accelerators: --accelerator KIND:MEMORY[:COMPUTE], comma-separated, e.g.
"cpu:8GiB:4" or "gpu:80GiB:100,cpu:16GiB:8" (COMPUTE is a relative
capacity, 1 = one reference CPU core). Default: one CPU accelerator with
half of this machine's memory and its core count.`

// parseSize reads 8GiB, 512MiB, 1.5GB, 1024.
func parseSize(s string) (int64, error) {
	units := []struct {
		suf  string
		mult float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suf); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || !(f > 0) {
				return 0, fmt.Errorf("size %q: want a positive number with a unit (e.g. 8GiB)", s)
			}
			switch b := f * u.mult; {
			case b >= math.MaxInt64: // infinity too
				return 0, fmt.Errorf("size %q: too large (at most %d bytes)", s, int64(math.MaxInt64))
			case b < 1:
				return 0, fmt.Errorf("size %q: less than a byte", s)
			default:
				return int64(b), nil
			}
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with a unit (e.g. 8GiB)", s)
	}
	return n, nil
}

func totalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 8 << 30
}

func parseAccelerators(s string) ([]cluster.Accelerator, error) {
	if s == "" {
		return []cluster.Accelerator{{ID: "cpu0", Kind: "cpu", Model: runtime.GOARCH, MemoryBytes: totalMemory() / 2, Compute: float64(runtime.NumCPU())}}, nil
	}
	var out []cluster.Accelerator
	count := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("--accelerator %q: want KIND:MEMORY[:COMPUTE]", part)
		}
		mem, err := parseSize(f[1])
		if err != nil {
			return nil, fmt.Errorf("--accelerator %q: %w", part, err)
		}
		compute := 1.0
		if len(f) == 3 {
			if compute, err = strconv.ParseFloat(f[2], 64); err != nil || !(compute > 0) || compute > 1e6 {
				return nil, fmt.Errorf("--accelerator %q: compute must be a positive number up to 1e6", part)
			}
		}
		kind := f[0]
		if kind != "cpu" && kind != "gpu" && kind != "tpu" {
			return nil, fmt.Errorf("--accelerator %q: kind must be cpu, gpu or tpu", part)
		}
		out = append(out, cluster.Accelerator{ID: fmt.Sprintf("%s%d", kind, count[kind]), Kind: kind, MemoryBytes: mem, Compute: compute})
		count[kind]++
	}
	return out, nil
}

// agentID reads or creates <dataDir>/agent-id, so a restarted agent keeps
// its identity and may rejoin under its name at once.
func agentID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "agent-id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	return id, os.WriteFile(p, []byte(id+"\n"), 0o600)
}

func hostName() string {
	h, err := os.Hostname()
	if err != nil {
		return "node"
	}
	h = strings.ToLower(strings.Split(h, ".")[0])
	if cluster.ValidName(h) {
		return h
	}
	return "node"
}

// advertised turns a bound address into one others can dial.
func advertised(bound, host string) string {
	h, p, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if host != "" {
		return net.JoinHostPort(host, p)
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		if name, err := os.Hostname(); err == nil {
			return net.JoinHostPort(name, p)
		}
	}
	return bound
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", "agent --join URL [flags]", agentHelp, stderr)
	join := fs.String("join", envOr("ACCELPOOL_SERVER", ""), "control plane `URLs`, comma-separated (required)")
	token := fs.String("token", os.Getenv("ACCELPOOL_TOKEN"), "cluster `token` (default $ACCELPOOL_TOKEN)")
	name := fs.String("name", hostName(), "node `name` (DNS label)")
	tier := fs.String("tier", "edge", "`tier`: device, edge or cloud")
	site := fs.String("site", "", "`site` name (a location: a building, a region)")
	labels := fs.String("labels", "", "node `labels` k=v,k=v")
	accels := fs.String("accelerator", "", "`accelerators` KIND:MEMORY[:COMPUTE],... (see above)")
	httpAddr := fs.String("http", "127.0.0.1:0", "Open Inference Protocol REST `address` for this node's instances")
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "Open Inference Protocol gRPC `address` (the gateway forwards here)")
	advertise := fs.String("advertise-host", "", "`host` the gateway dials (default: the bound address)")
	dataDir := fs.String("data-dir", filepath.Join(defaultDataDir(), "agent"), "`dir` for the artifact cache and instance repository")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library `path`")
	providers := fs.String("providers", "cpu", "execution providers by preference (tensorrt,cuda,cpu)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file` for this node's listeners")
	tlsKey := fs.String("tls-key", "", "TLS key `file`")
	tlsCA := fs.String("tls-ca", "", "CA `file` (PEM) to trust for the control plane's https URLs")
	logLevel := fs.String("log-level", "info", "log `level`")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	tuneGC()
	provs, err := parseProviders(*providers)
	if err != nil {
		return err
	}
	if *join == "" {
		fs.Usage()
		return fmt.Errorf("--join is required")
	}
	if *token == "" {
		*token = clientToken("")
	}
	if *token == "" {
		return fmt.Errorf("no cluster token: give --token or ACCELPOOL_TOKEN (the server prints where it keeps it)")
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	lbl, err := parseLabels(*labels)
	if err != nil {
		return err
	}
	acc, err := parseAccelerators(*accels)
	if err != nil {
		return err
	}
	if !cluster.Tier(*tier).Valid() {
		return fmt.Errorf("--tier %q: want device, edge or cloud", *tier)
	}
	if !cluster.ValidName(*name) {
		return fmt.Errorf("--name %q: use lowercase letters, digits and '-'", *name)
	}
	id, err := agentID(*dataDir)
	if err != nil {
		return err
	}
	backend, err := onnx.New(onnx.Config{LibPath: *ortLib, Logger: log})
	if err != nil {
		return err
	}
	repo := member.RepositoryDir(*dataDir)
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return err
	}
	node, err := agent.StartNode(ctx, agent.NodeConfig{
		Manager:  agent.Config{Repository: repo, Backend: backend, Logger: log, Version: Version, Providers: provs},
		HTTPAddr: *httpAddr, GRPCAddr: *grpcAddr, Token: *token, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey,
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Close(sctx)
	}()
	if !auth.IsLoopback(*grpcAddr) && *tlsCert == "" {
		log.Warn("the node's inference listeners are beyond loopback without TLS; the cluster token protects them but travels in clear")
	}
	n := cluster.Node{Name: *name, Tier: cluster.Tier(*tier), Site: *site, Labels: lbl, Accelerators: acc, AgentID: id,
		HTTPAddr: advertised(node.HTTPAddr(), *advertise), GRPCAddr: advertised(node.GRPCAddr(), *advertise)}
	fmt.Fprintf(stdout, "accelpool agent %s (%s tier, %d accelerators) serving on %s, joining %s\n", n.Name, n.Tier, len(acc), n.GRPCAddr, *join)
	tcfg, err := tlsutil.ClientConfig(*tlsCA)
	if err != nil {
		return err
	}
	var hc *http.Client
	if tcfg != nil {
		hc = tlsutil.HTTPClient(tcfg, 0)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- member.Run(ctx, member.Config{Servers: strings.Split(*join, ","), Token: *token, Node: n, DataDir: *dataDir,
			Manager: node.Manager, Logger: log, HTTPClient: hc, AutoProfile: true})
	}()
	select {
	case err = <-errc:
	case err = <-node.Err():
	}
	return err
}
