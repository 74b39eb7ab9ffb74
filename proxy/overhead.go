package proxy

import (
	"context"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/stats"
)

// The device's own cost of a request — reading the application's request,
// choosing, relaying or decoding, writing the answer back — is outside
// what a remote attempt or a local run times, and on a throttled device it
// is milliseconds (a tenth of a core runs 1 ms in every 10). The layer
// around the proxy (gRPC stats for the gRPC server, a wrapper for REST)
// times each request whole; the attempt that answered says what it timed;
// the difference is learned per option and model as the prediction's
// residual (offload.Option.Residual).

// served is one request's record: the option that answered and the time
// that option's own attempt took.
type served struct {
	mu    sync.Mutex
	t     *target
	ls    *localStats
	model string
	inner time.Duration
}

type servedKey struct{}

// withServed gives ctx a record for the request's handling to fill in.
func withServed(ctx context.Context) (context.Context, *served) {
	s := &served{}
	return context.WithValue(ctx, servedKey{}, s), s
}

// noteRemote records that t answered model in took.
func noteRemote(ctx context.Context, t *target, model string, took time.Duration) {
	if s, ok := ctx.Value(servedKey{}).(*served); ok {
		s.mu.Lock()
		s.t, s.ls, s.model, s.inner = t, nil, model, took
		s.mu.Unlock()
	}
}

// noteLocal records that the device answered in took.
func noteLocal(ctx context.Context, ls *localStats, took time.Duration) {
	if s, ok := ctx.Value(servedKey{}).(*served); ok {
		s.mu.Lock()
		s.t, s.ls, s.model, s.inner = nil, ls, "", took
		s.mu.Unlock()
	}
}

// noteNone forgets what was noted: the request's time is not one
// option's overhead (an attempt failed before another answered).
func noteNone(ctx context.Context) {
	if s, ok := ctx.Value(servedKey{}).(*served); ok {
		s.mu.Lock()
		s.t, s.ls = nil, nil
		s.mu.Unlock()
	}
}

// finish learns the overhead of a request that spent total in the proxy.
func (s *served) finish(total time.Duration) {
	s.mu.Lock()
	t, ls, model, inner := s.t, s.ls, s.model, s.inner
	s.mu.Unlock()
	over := float64(max(total-inner, 0))
	switch {
	case t != nil:
		t.mu.Lock()
		if ms := t.models[model]; ms != nil {
			ms.overhead.Add(over)
		}
		t.mu.Unlock()
	case ls != nil:
		ls.mu.Lock()
		ls.overhead.Add(over)
		ls.mu.Unlock()
	}
}

// StatsHandler times each gRPC call from its headers' arrival to its
// status's departure; NewGRPCServer installs it.
func (p *Proxy) StatsHandler() stats.Handler { return overheadStats{} }

type overheadStats struct{}

func (overheadStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	ctx, _ = withServed(ctx)
	return ctx
}

func (overheadStats) HandleRPC(ctx context.Context, st stats.RPCStats) {
	end, ok := st.(*stats.End)
	if !ok || end.Error != nil {
		return
	}
	if s, ok := ctx.Value(servedKey{}).(*served); ok {
		s.finish(end.EndTime.Sub(end.BeginTime))
	}
}

func (overheadStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (overheadStats) HandleConn(context.Context, stats.ConnStats) {}

// TimeREST wraps the proxy's REST handler so that each request's whole
// time in it — reading the body, running, writing the answer — teaches
// the proxy its overhead, as StatsHandler does for gRPC.
func (p *Proxy) TimeREST(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, s := withServed(r.Context())
		h.ServeHTTP(w, r.WithContext(ctx))
		s.finish(time.Since(start))
	})
}
