package gateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// freezer relays TCP to target until frozen, then keeps every connection
// open and moves no more bytes: a peer stopped with SIGSTOP, as the
// gateway sees it.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, thaw: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); close(f.thaw) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pump(c, b)
			go f.pump(b, c)
		}
	}()
	return f
}

func (f *freezer) pump(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			<-f.thaw // hold the connection, deliver nothing
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

// TestFrozenAgentFailsRequests: a request in flight to an agent that
// stops answering (its connection open, no byte moving) fails once the
// keepalive gives up on the connection, instead of hanging until a
// deadline it may not have.
func TestFrozenAgentFailsRequests(t *testing.T) {
	n := startNode(t, "app", "a", vec)
	f := startFreezer(t, n.GRPCAddr())
	r := &StaticResolver{}
	ep := n.ep
	ep.GRPCAddr = f.ln.Addr().String()
	r.Add(ep)
	g, _ := newGateway(t, r, nil)
	if _, err := g.Infer(context.Background(), smallReq("app")); err != nil {
		t.Fatalf("through the relay before freezing: %v", err)
	}
	f.freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := g.Infer(ctx, smallReq("app"))
	took := time.Since(start)
	t.Logf("frozen agent: %v after %v", err, took.Round(time.Millisecond))
	if err == nil || errors.Is(err, errdefs.ErrDeadline) || took > 30*time.Second {
		t.Fatalf("request to a frozen agent: %v after %v, want a failure within the keepalive's 10 s + 5 s", err, took)
	}
}
