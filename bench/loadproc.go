package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// The load generator in a process of its own: the parent starts one per
// served mode (OverheadConfig.ClientCommand), hands it the encoded request,
// and asks it for one measurement at a time over its stdin and stdout.
// Both processes share the machine's CPUs, but each counts its own CPU
// time: the parent's is the server's (the in-process session is idle
// meanwhile), the child's the client's.

// LoadgenConfig is what a load generator process needs.
type LoadgenConfig struct {
	Mode  Mode   // GRPC, GRPCSHM or REST
	Addr  string // host:port of the node's gRPC or HTTP listener
	Model string
	// Body is the request as sent: ModelInferRequests, each after its
	// length as a uvarint (gRPC; callers take them in turn), or a
	// binary-extension body whose JSON header is HeaderLen bytes (REST).
	Body      []byte
	HeaderLen int
	// Want is the byte count of each output of a checked answer.
	Want []int
}

// Flags gives cfg as the load generator command's flags, the body written
// to bodyFile.
func (cfg LoadgenConfig) Flags(bodyFile string) []string {
	want := make([]string, len(cfg.Want))
	for i, n := range cfg.Want {
		want[i] = strconv.Itoa(n)
	}
	return []string{"--mode", string(cfg.Mode), "--addr", cfg.Addr, "--model", cfg.Model,
		"--body", bodyFile, "--header-len", strconv.Itoa(cfg.HeaderLen), "--want", strings.Join(want, ",")}
}

// LoadgenFlags registers on fs the flags Flags writes and returns what
// reads them back after fs.Parse: the config, its body read from its file.
func LoadgenFlags(fs *flag.FlagSet) func() (LoadgenConfig, error) {
	mode := fs.String("mode", "", "grpc, grpc-shm or rest-binary")
	addr := fs.String("addr", "", "the node's gRPC or HTTP `host:port`")
	model := fs.String("model", "", "model `name`")
	body := fs.String("body", "", "`file` holding the encoded request")
	headerLen := fs.Int("header-len", 0, "REST: length of the body's JSON header")
	want := fs.String("want", "", "comma-separated byte counts of the answer's outputs")
	return func() (LoadgenConfig, error) {
		cfg := LoadgenConfig{Mode: Mode(*mode), Addr: *addr, Model: *model, HeaderLen: *headerLen}
		var err error
		if cfg.Body, err = os.ReadFile(*body); err != nil {
			return cfg, err
		}
		for _, w := range strings.Split(*want, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil {
				return cfg, fmt.Errorf("--want %q: %w", *want, err)
			}
			cfg.Want = append(cfg.Want, n)
		}
		return cfg, nil
	}
}

// loadRequest is one measurement the parent asks for.
type loadRequest struct {
	Op       string        `json:"op"` // "seq" or "sat"
	Duration time.Duration `json:"duration"`
	Requests int           `json:"requests,omitempty"`
	Workers  int           `json:"workers,omitempty"`
	Ramp     time.Duration `json:"ramp,omitempty"`
}

// loadAnswer is the child's answer to a loadRequest.
type loadAnswer struct {
	Seq   seqResult `json:"seq"`
	Sat   satResult `json:"sat"`
	Error string    `json:"error,omitempty"`
}

// Window markers the child prints as a measurement's counted part starts
// and ends.
const (
	markStart = "start"
	markEnd   = "end"
)

// Loadgen runs a load generator process: it warms up, then reads loadJobs
// from in, one JSON object a line, and answers each on out with the window
// markers and a loadAnswer line, until in ends.
func Loadgen(ctx context.Context, cfg LoadgenConfig, in io.Reader, out io.Writer) error {
	var newCall func() callFunc
	switch cfg.Mode {
	case GRPC, GRPCSHM:
		reqs, err := splitRequests(cfg.Body)
		if err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		conn, err := grpc.NewClient(cfg.Addr, grpcsvc.DefaultDialOptions()...)
		if err != nil {
			return err
		}
		defer conn.Close()
		newCall = (&grpcLoad{conn: conn, reqs: reqs, want: cfg.Want}).call
	case REST:
		hc := &http.Client{Transport: restTransport(64)}
		defer hc.CloseIdleConnections()
		l := &restLoad{hc: hc, url: "http://" + cfg.Addr + "/v2/models/" + cfg.Model + "/infer", body: cfg.Body,
			headerLen: strconv.Itoa(cfg.HeaderLen)}
		for _, n := range cfg.Want {
			l.want += n
		}
		newCall = l.call
	default:
		return fmt.Errorf("loadgen: no mode %q (want %s, %s or %s)", cfg.Mode, GRPC, GRPCSHM, REST)
	}
	if err := warm(ctx, newCall()); err != nil {
		return fmt.Errorf("loadgen warm-up: %w", err)
	}
	var mu sync.Mutex // out is written from the window hooks too
	say := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, line)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var job loadRequest
		var res loadAnswer
		var err error
		if err = json.Unmarshal(sc.Bytes(), &job); err == nil {
			switch job.Op {
			case "seq":
				say(markStart)
				res.Seq, err = measureSequential(ctx, newCall(), job.Duration, job.Requests)
				say(markEnd)
			case "sat":
				w := window{start: func() { say(markStart) }, end: func() { say(markEnd) }}
				res.Sat, err = measureSaturation(ctx, newCall, job.Workers, job.Ramp, job.Duration, w)
			default:
				err = fmt.Errorf("unknown op %q", job.Op)
			}
		}
		if err != nil {
			res.Error = err.Error()
		}
		b, _ := json.Marshal(res)
		say(string(b))
	}
	return sc.Err()
}

// restTransport is the REST load generator's transport: connections that
// buffer like gRPC's (grpcsvc.DefaultBufferSize), since net/http's 4 KiB
// would send a tensor in hundreds of system calls.
func restTransport(conns int) *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: conns + 4, DisableCompression: true,
		WriteBufferSize: grpcsvc.DefaultBufferSize, ReadBufferSize: grpcsvc.DefaultBufferSize}
}

// procClient is a running load generator process.
type procClient struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *strings.Builder
}

// startProcClient starts command with cfg's flags, the body in dir.
func startProcClient(ctx context.Context, command []string, cfg LoadgenConfig, dir string) (*procClient, error) {
	body := filepath.Join(dir, fmt.Sprintf("%s-%s.body", cfg.Model, cfg.Mode))
	if err := os.WriteFile(body, cfg.Body, 0o600); err != nil {
		return nil, err
	}
	args := append(append([]string(nil), command[1:]...), cfg.Flags(body)...)
	cmd := exec.CommandContext(ctx, command[0], args...)
	p := &procClient{cmd: cmd, stderr: &strings.Builder{}}
	cmd.Stderr = p.stderr
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(make([]byte, 64<<10), 16<<20)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	return p, nil
}

// run sends job and reads the answer, calling w's hooks at the child's
// window markers.
func (p *procClient) run(job loadRequest, w window) (loadAnswer, error) {
	b, _ := json.Marshal(job)
	if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
		return loadAnswer{}, p.failed(err)
	}
	for p.out.Scan() {
		switch line := p.out.Text(); line {
		case markStart:
			if w.start != nil {
				w.start()
			}
		case markEnd:
			if w.end != nil {
				w.end()
			}
		default:
			var res loadAnswer
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return res, fmt.Errorf("load generator said %q", line)
			}
			if res.Error != "" {
				return res, errors.New(res.Error)
			}
			return res, nil
		}
	}
	return loadAnswer{}, p.failed(p.out.Err())
}

func (p *procClient) failed(err error) error {
	_ = p.in.Close()
	_ = p.cmd.Wait()
	msg := strings.TrimSpace(p.stderr.String())
	if msg == "" && err != nil {
		msg = err.Error()
	}
	return fmt.Errorf("load generator exited: %s", msg)
}

// seq measures at concurrency 1; CPUPerReq is this process's (the server's)
// and ClientCPUPerReq the child's.
func (p *procClient) seq(d time.Duration, n int) (seqResult, error) {
	var cpu0, cpu1 time.Duration
	res, err := p.run(loadRequest{Op: "seq", Duration: d, Requests: n},
		window{start: func() { cpu0, _ = processCPU() }, end: func() { cpu1, _ = processCPU() }})
	if err != nil {
		return seqResult{}, err
	}
	s := res.Seq
	s.ClientCPUPerReq, s.CPUPerReq = s.CPUPerReq, 0
	if cpu1 > cpu0 && s.Requests > 0 {
		s.CPUPerReq = (cpu1 - cpu0) / time.Duration(s.Requests)
	}
	return s, nil
}

// sat measures at saturation; the window hooks w run at the child's
// markers, as with measureSaturation.
func (p *procClient) sat(workers int, ramp, d time.Duration, w window) (satResult, error) {
	var cpu0, cpu1 time.Duration
	hooks := window{
		start: func() {
			if w.start != nil {
				w.start()
			}
			cpu0, _ = processCPU()
		},
		end: func() {
			cpu1, _ = processCPU()
			if w.end != nil {
				w.end()
			}
		},
	}
	res, err := p.run(loadRequest{Op: "sat", Workers: workers, Ramp: ramp, Duration: d}, hooks)
	if err != nil {
		return satResult{}, err
	}
	s := res.Sat
	s.ClientCPUPerReq, s.CPUPerReq = s.CPUPerReq, 0
	if cpu1 > cpu0 && s.Requests > 0 {
		s.CPUPerReq = time.Duration(float64(cpu1-cpu0) / s.Requests)
	}
	return s, nil
}

// close ends the child (its stdin closes) and waits for it.
func (p *procClient) close() error {
	_ = p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-done
	}
}
