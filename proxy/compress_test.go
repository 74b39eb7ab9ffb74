package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// encodingKey holds, in a server call's context, where encodingStats
// writes the call's grpc-encoding.
type encodingKey struct{}

// encodingStats notes each incoming call's grpc-encoding for its handler
// (see encodingOf): grpc-go keeps that header out of the metadata.
type encodingStats struct{}

func (encodingStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, encodingKey{}, new(string))
}

func (encodingStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		if enc, ok := ctx.Value(encodingKey{}).(*string); ok {
			*enc = h.Compression
		}
	}
}

func (encodingStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (encodingStats) HandleConn(context.Context, stats.ConnStats)                       {}

// encodingOf is the grpc-encoding of the call whose context ctx is, on a
// server with encodingStats ("" for none).
func encodingOf(ctx context.Context) string {
	if enc, ok := ctx.Value(encodingKey{}).(*string); ok {
		return *enc
	}
	return ""
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRefusedCompressionGoesPlain: a target without the zero-run
// decompressor (a Triton server, an older accelpool) answers a compressed
// request with Unimplemented. That is no failure of the target: the same
// request goes to it plain (not to the slower device), and from then on
// its requests go plain at once, whether compression was asked for always
// or offered because its answers shrink, through the decoding transport
// and through the relay.
func TestRefusedCompressionGoesPlain(t *testing.T) {
	for _, mode := range []struct {
		compress string
		// zeros makes the target's answers shrink, so that CompressAuto
		// offers compression once it has sampled one.
		zeros bool
		want  []answer
		// encodings are those the target sees, the refused one included.
		encodings []string
	}{
		{CompressAlways, false,
			[]answer{{LocalName, 1}, {"edge", 2}, {"edge", 1}},
			[]string{grpcsvc.ZeroRun, "", ""}},
		{CompressAuto, true,
			[]answer{{LocalName, 1}, {"edge", 1}, {"edge", 2}, {"edge", 1}},
			[]string{"", grpcsvc.ZeroRun, "", ""}},
	} {
		for _, path := range []string{"decoded", "relayed"} {
			t.Run(mode.compress+"/"+path, func(t *testing.T) {
				rec := startRecorder(t)
				rec.setRefuse(grpcsvc.ZeroRun)
				if mode.zeros {
					rec.mu.Lock()
					rec.resp.Outputs[0].Shape = []int64{1, 1024}
					rec.resp.RawOutputContents = [][]byte{make([]byte, 4096)}
					rec.mu.Unlock()
				}
				var logs syncBuffer
				p := newProxy(t, Config{
					Local:    localManager(t, map[string]int{"m": 20}),
					Targets:  []Target{{Name: "edge", Addr: rec.addr, Tier: "edge"}},
					Compress: mode.compress,
					Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
				})
				waitProbed(t, p)
				send := p.Infer
				if path == "relayed" {
					send = grpcsvc.NewClient(serveProxy(t, p, grpcsvc.Options{})).Infer
				}
				// The first request explores the device (the nearer tier),
				// the next ones the target.
				for i, want := range mode.want {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					r, err := send(ctx, request("m"))
					cancel()
					if err != nil {
						t.Fatalf("request %d: %v", i+1, err)
					}
					got := answer{targetOf(r), attempt(r)}
					if got != want || r.Parameters[ParamCompressed] != nil {
						t.Fatalf("request %d answered by %q after %d attempts (compressed: %v), want %q after %d, plain; the target saw encodings %q",
							i+1, got.target, got.attempts, r.Parameters[ParamCompressed], want.target, want.attempts, rec.requestEncodings())
					}
				}
				if got := rec.requestEncodings(); !slices.Equal(got, mode.encodings) {
					t.Errorf("the target saw requests with encodings %q, want %q", got, mode.encodings)
				}
				if st := p.Status().Targets[0]; !st.CompressionRefused {
					t.Errorf("status does not say the target refused compression: %+v", st)
				}
				if n := strings.Count(logs.String(), "refused a compressed request"); n != 1 || !strings.Contains(logs.String(), "target=edge") {
					t.Errorf("want one warning naming the target, logged:\n%s", logs.String())
				}
			})
		}
	}
}

// TestUnimplementedPlainToo: a target that answers Unimplemented sent
// plain as well lacks something else than the decompressor: the request
// falls back to the device and the target is not marked as refusing
// compression.
func TestUnimplementedPlainToo(t *testing.T) {
	rec := startRecorder(t)
	rec.setRefuse(grpcsvc.ZeroRun)
	rec.setFail(status.Error(codes.Unimplemented, "no such service"))
	var logs syncBuffer
	p := newProxy(t, Config{
		Local:    localManager(t, map[string]int{"m": 20}),
		Targets:  []Target{{Name: "edge", Addr: rec.addr, Tier: "edge"}},
		Compress: CompressAlways,
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	waitProbed(t, p)
	// The first request explores the device, the second the target:
	// compressed, then plain, then back to the device.
	for i, want := range []answer{{LocalName, 1}, {LocalName, 3}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := p.Infer(ctx, request("m"))
		cancel()
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if got := (answer{targetOf(r), attempt(r)}); got != want {
			t.Fatalf("request %d answered by %q after %d attempts, want %q after %d; the target saw encodings %q", i+1, got.target, got.attempts, want.target, want.attempts, rec.requestEncodings())
		}
	}
	if got, want := rec.requestEncodings(), []string{grpcsvc.ZeroRun, ""}; !slices.Equal(got, want) {
		t.Errorf("the target saw requests with encodings %q, want %q", got, want)
	}
	if st := p.Status().Targets[0]; st.CompressionRefused {
		t.Errorf("status says the target refused compression: %+v", st)
	}
	if strings.Contains(logs.String(), "refused a compressed request") {
		t.Errorf("warned of a refused compression:\n%s", logs.String())
	}
}

// answer is who answered a request and after how many attempts.
type answer struct {
	target   string
	attempts int64
}

// attempt is an answer's ParamAttempts (0 when missing).
func attempt(r *oip.InferResponse) int64 { n, _ := r.Parameters[ParamAttempts].(int64); return n }

func TestProbeBackoff(t *testing.T) {
	for _, c := range []struct{ discards, every, want int }{
		{1, 5, 1}, {2, 5, 2}, {3, 5, 4}, {4, 5, 5}, {40, 5, 5},
		{1, 1, 1}, {3, 1, 1}, {4, 16, 8}, {5, 16, 16}, {6, 16, 16},
	} {
		if got := probeBackoff(c.discards, c.every); got != c.want {
			t.Errorf("probeBackoff(%d, %d) = %d, want %d", c.discards, c.every, got, c.want)
		}
	}
}

// TestBandwidthSchedule: the ticks at which bandwidth probes are sent
// when some are discarded as overlapped, and while requests are in the
// proxy.
func TestBandwidthSchedule(t *testing.T) {
	ticks := func(from, to int) map[int]bool {
		m := map[int]bool{}
		for i := from; i <= to; i++ {
			m[i] = true
		}
		return m
	}
	var each []int // every tick simulated
	for i := range 30 {
		each = append(each, i)
	}
	for _, c := range []struct {
		name  string
		every int
		busy  map[int]bool // ticks with requests in the proxy
		kept  map[int]bool // ticks whose probe, if sent, is kept
		want  []int
	}{
		{"all kept", 4, nil, ticks(0, 40), []int{0, 4, 8, 12, 16, 20, 24, 28}},
		{"all discarded: 1, 2, 4 ticks, then every", 4, nil, nil, []int{0, 1, 3, 7, 11, 15, 19, 23, 27}},
		{"a kept probe resets the backoff", 8, nil, map[int]bool{7: true}, []int{0, 1, 3, 7, 15, 16, 18, 22}},
		{"a due probe waits while busy", 8, ticks(1, 2), nil, []int{0, 3, 5, 9, 17, 25}},
		{"every tick", 1, nil, map[int]bool{2: true}, each},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := bandwidthSchedule{every: c.every}
			var sent []int
			for i := range len(each) {
				if s.due(i, c.busy[i]) {
					sent = append(sent, i)
					s.sent(i, !c.kept[i])
				}
			}
			if !slices.Equal(sent, c.want) {
				t.Fatalf("probes sent at ticks %v, want %v", sent, c.want)
			}
		})
	}
}
