package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/agent/runtime/onnx"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/auth"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/preprocess"
	"github.com/accelpool/accelpool/tensor"
)

// requestTimeout is every inference request's deadline. A request that
// reaches it has hung: the cluster must answer well within it.
const requestTimeout = 5 * time.Second

// workload is what the cluster tests send: per demo model one input and the
// outputs ONNX Runtime gives for it in this process.
type workload struct {
	inputs map[string]tensor.Tensor   // model → input
	want   map[string][]tensor.Tensor // model → expected outputs
}

func newWorkload(t *testing.T, b *onnx.Backend, repo string) *workload {
	t.Helper()
	face := preprocess.Spec{Width: 128, Height: 128, Scale: 1.0 / 127.5, Mean: [3]float32{1, 1, 1}, Std: [3]float32{1, 1, 1}, Layout: preprocess.NHWC}
	paddle := preprocess.Spec{Width: 192, Height: 48, Scale: 1.0 / 255, Mean: [3]float32{0.5, 0.5, 0.5}, Std: [3]float32{0.5, 0.5, 0.5}}
	w := &workload{inputs: map[string]tensor.Tensor{}, want: map[string][]tensor.Tensor{}}
	for _, c := range []struct {
		model, input string
		spec         preprocess.Spec
	}{{"blazeface-front", "input:0", face}, {"ocr-cls", "x", paddle}} {
		in, err := preprocess.ToTensor(c.input, scene(c.spec.Width*2, c.spec.Height*2), c.spec)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		sess, err := b.Load(ctx, filepath.Join(repo, c.model, "1", "model.onnx"), runtime.Options{})
		if err != nil {
			t.Fatalf("load %s in-process: %v", c.model, err)
		}
		want, err := sess.Run(ctx, []tensor.Tensor{in}, nil)
		sess.Close()
		if err != nil {
			t.Fatalf("run %s in-process: %v", c.model, err)
		}
		w.inputs[c.model], w.want[c.model] = in, want
	}
	return w
}

// target is one server replica's gateway as the load sees it: its REST and
// gRPC clients, and whether the test has killed it. Clients are made anew
// each time the replica comes back, so no connection state outlives a
// process.
type target struct {
	name, httpBase, grpcAddr, token string

	mu    sync.Mutex
	down  bool
	epoch int // bumped on every kill and every restart
	rest  *rest.Client
	hc    *http.Client
	grpc  *grpcsvc.Client
}

func newTarget(name, httpBase, grpcAddr, token string) *target {
	g := &target{name: name, httpBase: httpBase, grpcAddr: grpcAddr, token: token, down: true}
	g.markUp()
	return g
}

type bearer struct {
	tok string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

// markDown records that the replica is about to be killed: from now on,
// connection failures to it are expected.
func (g *target) markDown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = true
	g.epoch++
}

// markUp makes fresh clients for a replica that is serving (again).
func (g *target) markUp() {
	hc := &http.Client{Transport: bearer{g.token, &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}}}
	gc, err := grpcsvc.Dial(g.grpcAddr,
		grpc.WithPerRPCCredentials(auth.Credentials{Token: g.token}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		panic(err) // grpc.NewClient fails only on bad options
	}
	g.mu.Lock()
	oldHC, oldGC := g.hc, g.grpc
	g.hc, g.grpc = hc, gc
	g.rest = rest.NewClient(g.httpBase, rest.ClientOptions{Binary: true, HTTPClient: hc})
	g.down = false
	g.epoch++
	g.mu.Unlock()
	if oldHC != nil {
		oldHC.CloseIdleConnections()
	}
	if oldGC != nil {
		_ = oldGC.Close()
	}
}

func (g *target) isDown() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.down
}

func (g *target) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hc != nil {
		g.hc.CloseIdleConnections()
	}
	if g.grpc != nil {
		_ = g.grpc.Close()
	}
}

// The outcomes of one request.
const (
	outOK      = "ok"      // a correct answer
	outWrong   = "wrong"   // an answer with wrong outputs
	outErr     = "err"     // an error response from the gateway
	outRefused = "refused" // no connection: the replica was killed
	outCut     = "cut"     // the connection broke mid-request: the replica was killed
	outLost    = "lost"    // neither an answer nor an error: a hang past the deadline, or a connection failure to a live replica
)

// stats counts outcomes; error responses are kept by app, transport and code
// with a few sample messages.
type stats struct {
	mu      sync.Mutex
	slowest map[string]time.Duration // outcome → longest request
	n       map[string]int
	errs    map[string]int
	samples map[string][]string // outcome or error label → first messages
}

func newStats() *stats {
	return &stats{n: map[string]int{}, errs: map[string]int{}, samples: map[string][]string{}, slowest: map[string]time.Duration{}}
}

func (s *stats) add(out, label, msg string, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[out]++
	s.slowest[out] = max(s.slowest[out], took)
	key := out
	if out == outErr {
		s.errs[label]++
		key = label
	}
	if out != outOK && len(s.samples[key]) < 3 {
		s.samples[key] = append(s.samples[key], msg)
	}
}

// counts is a snapshot of the outcome counters.
type counts map[string]int

func (s *stats) snapshot() counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := counts{}
	for k, v := range s.n {
		c[k] = v
	}
	for k, v := range s.errs {
		c[errPrefix+k] = v
	}
	return c
}

// errPrefix marks the per-label error counts in counts.
const errPrefix = "err: "

func (c counts) minus(o counts) counts {
	d := counts{}
	for k, v := range c {
		d[k] = v - o[k]
	}
	return d
}

func (c counts) String() string {
	s := fmt.Sprintf("ok=%d err=%d refused=%d cut=%d lost=%d wrong=%d", c[outOK], c[outErr], c[outRefused], c[outCut], c[outLost], c[outWrong])
	var errs []string
	for k, v := range c {
		if label, ok := strings.CutPrefix(k, errPrefix); ok && v > 0 {
			errs = append(errs, fmt.Sprintf("%s: %d", label, v))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		s += " (" + strings.Join(errs, ", ") + ")"
	}
	return s
}

// slowestReport is the longest request per outcome.
func (s *stats) slowestReport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, out := range []string{outOK, outErr, outRefused, outCut, outLost, outWrong} {
		if d, ok := s.slowest[out]; ok {
			parts = append(parts, fmt.Sprintf("%s %v", out, d.Round(time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// errorReport lists the error responses by label, with samples.
func (s *stats) errorReport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.samples {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		n := s.errs[k]
		if n == 0 {
			n = s.n[k]
		}
		fmt.Fprintf(&b, "  %-28s %5d  e.g. %s\n", k, n, strings.Join(s.samples[k], " | "))
	}
	return b.String()
}

// send makes one inference request for app (served by model) through g
// over transport ("rest" or "grpc") and classifies the outcome.
func (w *workload) send(ctx context.Context, g *target, transport, app, model string) (out, label, msg string, took time.Duration) {
	g.mu.Lock()
	rc, gc, downAtStart, epoch := g.rest, g.grpc, g.down, g.epoch
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req := &oip.InferRequest{ModelName: app, Inputs: []oip.InferInput{{Tensor: w.inputs[model]}}}
	start := time.Now()
	var resp *oip.InferResponse
	var err error
	if transport == "grpc" {
		resp, err = gc.Infer(ctx, req)
	} else {
		resp, err = rc.Infer(ctx, req)
	}
	took = time.Since(start)
	g.mu.Lock()
	killed := downAtStart || g.down || g.epoch != epoch
	g.mu.Unlock()
	where := fmt.Sprintf("%s %s via %s", app, transport, g.name)
	switch {
	case err == nil:
		if cerr := onnxtest.CheckOutputs(resp.Outputs, w.want[model]); cerr != nil {
			return outWrong, "", fmt.Sprintf("%s: %v", where, cerr), took
		}
		return outOK, "", "", took
	case ctx.Err() != nil && took >= requestTimeout-50*time.Millisecond:
		return outLost, "", fmt.Sprintf("%s: no answer within %v: %v", where, requestTimeout, err), took
	}
	if local, refused := transportFailure(transport, err); local {
		if !killed {
			return outLost, "", fmt.Sprintf("%s: connection failure to a live replica: %v", where, err), took
		}
		if refused {
			return outRefused, "", fmt.Sprintf("%s: %v", where, err), took
		}
		return outCut, "", fmt.Sprintf("%s: %v", where, err), took
	}
	if transport == "grpc" {
		label = fmt.Sprintf("%s grpc %v", app, errdefs.GRPCCode(err))
	} else {
		label = fmt.Sprintf("%s rest %d", app, errdefs.HTTPStatus(err))
	}
	return outErr, label, fmt.Sprintf("%s: %v", where, err), took
}

// transportFailure reports whether err is the client's own failure to talk
// to the replica (no answer came from it), and whether the connection was
// refused (rather than broken mid-request).
func transportFailure(transport string, err error) (local, refused bool) {
	if transport == "rest" {
		var ue *url.Error
		if !errors.As(err, &ue) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
			return false, false
		}
		return true, errors.Is(err, syscall.ECONNREFUSED)
	}
	// gRPC: the messages grpc-go gives to failures of its own transport.
	// An error the gateway answers starts with its own context
	// ("application ...", "unknown application ...").
	msg := err.Error()
	for _, p := range []string{"connection error", "error reading from server", "transport is closing", "transport: ",
		"the connection is draining", "stream terminated by RST_STREAM", "closing transport", "EOF", "unexpected EOF"} {
		if strings.HasPrefix(msg, p) {
			return true, strings.Contains(msg, "connection refused")
		}
	}
	return false, false
}

// load sends requests for apps through every target over both transports
// from one goroutine per (target, transport) until stop.
type load struct {
	w       *workload
	st      *stats
	apps    map[string]string // app → model
	order   []string
	targets []*target

	stopc chan struct{}
	wg    sync.WaitGroup
}

func startLoad(w *workload, st *stats, apps map[string]string, targets []*target) *load {
	l := &load{w: w, st: st, apps: apps, targets: targets, stopc: make(chan struct{})}
	for a := range apps {
		l.order = append(l.order, a)
	}
	sort.Strings(l.order)
	for _, g := range targets {
		for _, tr := range []string{"rest", "grpc"} {
			l.wg.Add(1)
			go l.worker(g, tr)
		}
	}
	return l
}

func (l *load) worker(g *target, transport string) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stopc:
			return
		default:
		}
		app := l.order[i%len(l.order)]
		out, label, msg, took := l.w.send(context.Background(), g, transport, app, l.apps[app])
		l.st.add(out, label, msg, took)
		pause := 30 * time.Millisecond
		if out == outRefused || out == outCut {
			pause = 200 * time.Millisecond // a killed replica: do not spin
		}
		select {
		case <-l.stopc:
			return
		case <-time.After(pause):
		}
	}
}

// stop ends the load. A worker that does not return within a request's
// deadline (plus slack) is stuck in a request that ignores its deadline:
// that counts as lost.
func (l *load) stop() {
	close(l.stopc)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(requestTimeout + 5*time.Second):
		l.st.add(outLost, "", "a load worker is stuck in a request past its deadline", requestTimeout)
	}
}

// probe sends one request per app through every live target and reports
// whether all of them answered correctly. Probes count in st like the load.
func (w *workload) probe(st *stats, apps map[string]string, targets []*target) bool {
	ok := true
	for _, g := range targets {
		if g.isDown() {
			continue
		}
		for app, model := range apps {
			out, label, msg, took := w.send(context.Background(), g, "rest", app, model)
			st.add(out, label, msg, took)
			ok = ok && out == outOK
		}
	}
	return ok
}
