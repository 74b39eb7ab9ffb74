package gateway

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// pool caches one gRPC connection per agent address. Connections are
// reference counted: dropping one removes it from the cache at once and
// closes it when the last request using it is done, so that requests in
// flight are never cut by a drop.
type pool struct {
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*conn
	closed bool
}

type conn struct {
	addr   string
	cc     *grpc.ClientConn
	client *grpcsvc.Client
	// Guarded by pool.mu.
	refs    int
	dropped bool
}

// keepaliveOption pings an agent whose connection has requests in flight
// and has been silent for 10 s (the shortest interval agents accept,
// grpcsvc.DefaultKeepaliveMinTime), and fails those requests when 5 s
// more pass without an answer: an agent that froze (SIGSTOP, a hung
// kernel, a cable pulled without a reset) would otherwise hold them
// until their deadlines, or for ever when they have none. They are then
// retried elsewhere like any other unreachable instance.
var keepaliveOption = grpc.WithKeepaliveParams(keepalive.ClientParameters{
	Time:    grpcsvc.DefaultKeepaliveMinTime,
	Timeout: 5 * time.Second,
})

// newPool dials with grpcsvc.Dial's defaults (plaintext, message limits of
// grpcsvc.DefaultMaxMsgSize) followed by opts, which override them. It
// dials itself rather than through grpcsvc.Dial to see the connection's
// state.
func newPool(opts []grpc.DialOption) *pool {
	all := append(grpcsvc.DefaultDialOptions(), keepaliveOption)
	all = append(all, opts...)
	return &pool{opts: all, conns: map[string]*conn{}}
}

// acquire returns the connection to addr, creating it (lazily connected)
// if needed; release it when done.
func (p *pool) acquire(addr string) (*conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errdefs.New(errdefs.ErrUnavailable, "gateway is closed")
	}
	c := p.conns[addr]
	if c == nil {
		cc, err := grpc.NewClient(addr, p.opts...)
		if err != nil {
			return nil, errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("agent address %q: %v", addr, err))
		}
		c = &conn{addr: addr, cc: cc, client: grpcsvc.NewClient(cc)}
		p.conns[addr] = c
	}
	c.refs++
	return c, nil
}

func (p *pool) release(c *conn) {
	p.mu.Lock()
	c.refs--
	last := c.dropped && c.refs == 0
	p.mu.Unlock()
	if last {
		_ = c.cc.Close()
	}
}

// dropIfBroken drops c unless its connection is up: called after an
// attempt failed with ErrUnavailable, it tells a dead or unreachable agent
// (drop and redial later) from one that answered "not ready" (keep).
func (p *pool) dropIfBroken(c *conn) bool {
	if c.cc.GetState() == connectivity.Ready {
		return false
	}
	p.mu.Lock()
	last := p.dropLocked(c)
	p.mu.Unlock()
	if last {
		_ = c.cc.Close()
	}
	return true
}

// dropLocked removes c from the cache and reports whether the caller must
// close it now (nobody is using it).
func (p *pool) dropLocked(c *conn) bool {
	if c.dropped {
		return false
	}
	c.dropped = true
	if p.conns[c.addr] == c {
		delete(p.conns, c.addr)
	}
	return c.refs == 0
}

// retain drops the connections to addresses not in keep.
func (p *pool) retain(keep map[string]bool) {
	p.mu.Lock()
	var closing []*conn
	for addr, c := range p.conns {
		if !keep[addr] && p.dropLocked(c) {
			closing = append(closing, c)
		}
	}
	p.mu.Unlock()
	for _, c := range closing {
		_ = c.cc.Close()
	}
}

// close drops every connection and refuses new ones.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.retain(nil)
}

// addrs lists the cached addresses, for tests.
func (p *pool) addrs() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]bool, len(p.conns))
	for addr := range p.conns {
		out[addr] = true
	}
	return out
}
