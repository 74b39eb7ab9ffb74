package linkemu

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

func TestParseLink(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Link
		str  string // String() of the result
	}{
		{"name=edge,rtt=10ms,bw=100mbit", Link{"edge", 10 * time.Millisecond, 100e6}, "name=edge,rtt=10ms,bw=100mbit"},
		{"rtt=10ms,bw=100mbit", Link{"", 10 * time.Millisecond, 100e6}, "rtt=10ms,bw=100mbit"},
		{"rtt=40ms", Link{RTT: 40 * time.Millisecond}, "rtt=40ms,bw=0"},
		{"bw=8mbit", Link{Bandwidth: 8e6}, "rtt=0,bw=8mbit"},
		{" bw = 1.5Gbit , rtt = 1.5s ", Link{RTT: 1500 * time.Millisecond, Bandwidth: 1.5e9}, "rtt=1.5s,bw=1500mbit"},
		{"bw=512kbit", Link{Bandwidth: 512e3}, "rtt=0,bw=512kbit"},
		{"bw=2000000", Link{Bandwidth: 2e6}, "rtt=0,bw=2mbit"},
		{"bw=123456bit", Link{Bandwidth: 123456}, "rtt=0,bw=123456bit"},
		{"bandwidth=8000", Link{Bandwidth: 8000}, "rtt=0,bw=8kbit"},
		{"rtt=0,bw=0", Link{}, "rtt=0,bw=0"},
		{"rtt=0s", Link{}, "rtt=0,bw=0"},
		{"name=lte-4G_1.b", Link{Name: "lte-4G_1.b"}, "name=lte-4G_1.b,rtt=0,bw=0"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseLink(tc.in)
			if err != nil {
				t.Fatalf("ParseLink(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseLink(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
			back, err := ParseLink(got.String())
			if err != nil || back != got {
				t.Errorf("ParseLink(String()) = %+v, %v; want %+v", back, err, got)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseLinkErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a substring of the error
	}{
		{"", "empty"},
		{"  ", "empty"},
		{"rtt", `field "rtt" is not key=value`},
		{"=10ms", "not key=value"},
		{"rtt=10ms,", `field "" is not key=value`},
		{"rtt=10ms,rtt=20ms", "rtt given twice"},
		{"loss=1%", `unknown field "loss"`},
		{"rtt=ten", `rtt "ten": not a duration`},
		{"rtt=10", `rtt "10": not a duration`},
		{"rtt=-5ms", `rtt "-5ms": negative`},
		{"rtt=500us", "not whole milliseconds"},
		{"rtt=10.5ms", "not whole milliseconds"},
		{"bw=fast", `bw "fast": want a number`},
		{"bw=10mbps", `bw "10mbps": want a number`},
		{"bw=-1mbit", "negative"},
		{"bw=4kbit", "below 8000 bit/s"},
		{"bw=0.0000000001bit", "rounds to 0"},
		{"bw=NaN", "want a number"},
		{"bw=1e30gbit", "too large"},
		{"name=", "name"},
		{"name=a b", `name "a b"`},
		{"name=/etc", `name "/etc"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			l, err := ParseLink(tc.in)
			if err == nil {
				t.Fatalf("ParseLink(%q) = %+v, want an error", tc.in, l)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseLink(%q) error %q does not contain %q", tc.in, err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("ParseLink(%q) error %v is not ErrInvalid", tc.in, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, l := range []Link{
		{RTT: -time.Millisecond},
		{RTT: 1500 * time.Microsecond},
		{Bandwidth: -1},
		{Bandwidth: MinBandwidth - 1},
		{Name: "a/b"},
	} {
		if err := l.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%+v: Validate() = %v, want ErrInvalid", l, err)
		}
	}
}

func TestToxics(t *testing.T) {
	got := wantToxics(Link{RTT: 41 * time.Millisecond, Bandwidth: 100e6})
	for name, want := range map[string]map[string]int64{
		"latency_upstream":     {"latency": 20, "jitter": 0},
		"latency_downstream":   {"latency": 21, "jitter": 0},
		"bandwidth_upstream":   {"rate": 12500},
		"bandwidth_downstream": {"rate": 12500},
	} {
		tx, ok := got[name]
		if !ok {
			t.Errorf("no toxic %s", name)
			continue
		}
		for k, v := range want {
			if tx.Attributes[k] != v {
				t.Errorf("%s: %s = %d, want %d", name, k, tx.Attributes[k], v)
			}
		}
	}
	if n := len(wantToxics(Link{})); n != 0 {
		t.Errorf("zero link has %d toxics, want none", n)
	}
	if got := wantToxics(Link{RTT: time.Millisecond}); len(got) != 1 || got["latency_downstream"].Attributes["latency"] != 1 {
		t.Errorf("rtt=1ms toxics = %+v, want 1 ms downstream only", got)
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("ACCELPOOL_CACHE", dir)
	t.Setenv("PATH", dir) // nothing there

	t.Setenv(EnvBinary, "")
	_, err := Find()
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Find() with nothing installed = %v, want ErrNotFound", err)
	}
	for _, s := range []string{filepath.Join(dir, "bin", BinaryName), "PATH", EnvBinary, "scripts/setup.sh --test"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Find() error %q does not mention %q", err, s)
		}
	}

	// The cache's copy is found.
	bin := filepath.Join(dir, "bin", BinaryName)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Find(); err != nil || got != bin {
		t.Errorf("Find() = %q, %v; want %q", got, err, bin)
	}

	// An explicit binary wins, and a wrong one is an error, not a fallback.
	t.Setenv(EnvBinary, bin)
	if got, err := Find(); err != nil || got != bin {
		t.Errorf("Find() with %s set = %q, %v; want %q", EnvBinary, got, err, bin)
	}
	t.Setenv(EnvBinary, filepath.Join(dir, "nope"))
	if _, err := Find(); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Find() with a missing %s = %v, want an error naming it", EnvBinary, err)
	}
}

// startServer starts the real toxiproxy-server. Without one it skips, or
// fails when CI=true.
func startServer(t *testing.T) *Server {
	t.Helper()
	bin, err := Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Start(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("toxiproxy-server log:\n%s", s.Log())
		}
	})
	return s
}

// serve runs handle for every connection to a new loopback listener until
// the test ends.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrips sends n small messages one after another and returns each
// round trip's duration, sorted.
func roundTrips(t *testing.T, c net.Conn, n int) []time.Duration {
	t.Helper()
	msg := []byte("ping")
	buf := make([]byte, len(msg))
	var out []time.Duration
	for range n {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
		if !bytes.Equal(buf, msg) {
			t.Fatalf("echo returned %q, want %q", buf, msg)
		}
	}
	slices.Sort(out)
	return out
}

func TestLatency(t *testing.T) {
	s := startServer(t)
	if v, err := s.Version(context.Background()); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("toxiproxy-server version %s at %s", v, s.API())
	}
	up := serve(t, echo)
	const rtt = 40 * time.Millisecond
	p, err := s.Proxy("", up, Link{Name: "edge", RTT: rtt})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "edge" || p.Link().RTT != rtt {
		t.Errorf("proxy %s link %v, want edge with rtt %v", p.Name(), p.Link(), rtt)
	}
	c := dial(t, p.Addr())

	// Every round trip pays the whole RTT; the median not much more. The
	// slack allows for the race detector on a loaded two-core machine.
	const slack = 30 * time.Millisecond
	rt := roundTrips(t, c, 9)
	t.Logf("rtt=%v: round trips min %v median %v max %v", rtt, rt[0], rt[len(rt)/2], rt[len(rt)-1])
	if rt[0] < rtt {
		t.Errorf("fastest round trip %v, want at least %v", rt[0], rtt)
	}
	if med := rt[len(rt)/2]; med >= rtt+slack {
		t.Errorf("median round trip %v, want under %v", med, rtt+slack)
	}

	// Set changes the link under the open connection.
	if err := p.Set(Link{}); err != nil {
		t.Fatal(err)
	}
	rt = roundTrips(t, c, 9)
	t.Logf("rtt=0: round trips min %v median %v max %v", rt[0], rt[len(rt)/2], rt[len(rt)-1])
	if med := rt[len(rt)/2]; med >= 15*time.Millisecond {
		t.Errorf("median round trip %v after Set(rtt=0), want under 15ms", med)
	}

	// And back.
	if err := p.Set(Link{RTT: rtt}); err != nil {
		t.Fatal(err)
	}
	if rt = roundTrips(t, c, 3); rt[0] < rtt {
		t.Errorf("fastest round trip %v after restoring rtt, want at least %v", rt[0], rtt)
	}

	// A second proxy with the same name is refused.
	if _, err := s.Proxy("edge", up, Link{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second proxy named edge: %v, want ErrAlreadyExists", err)
	}
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Errorf("dial %s after Delete succeeded", p.Addr())
	}
}

func TestBandwidth(t *testing.T) {
	s := startServer(t)
	const size = 1 << 20
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	// source writes size bytes and closes; sink reads size bytes and answers
	// one byte.
	source := serve(t, func(c net.Conn) { _, _ = c.Write(payload) })
	sink := serve(t, func(c net.Conn) {
		if _, err := io.CopyN(io.Discard, c, size); err == nil {
			_, _ = c.Write([]byte{1})
		}
	})
	link := Link{Bandwidth: 8e6} // 1 MB/s
	for _, tc := range []struct {
		dir, upstream string
		run           func(c net.Conn) error
	}{
		{"down", source, func(c net.Conn) error {
			n, err := io.Copy(io.Discard, c)
			if err == nil && n != size {
				err = io.ErrUnexpectedEOF
			}
			return err
		}},
		{"up", sink, func(c net.Conn) error {
			if _, err := c.Write(payload); err != nil {
				return err
			}
			_, err := io.ReadFull(c, make([]byte, 1))
			return err
		}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			p, err := s.Proxy("bw-"+tc.dir, tc.upstream, link)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Delete()
			start := time.Now()
			c := dial(t, p.Addr())
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.run(c); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			t.Logf("%s: %d bytes over %v in %v (%.2f Mbit/s)", tc.dir, size, link, d, float64(size)*8/d.Seconds()/1e6)
			if d < 600*time.Millisecond || d > 2*time.Second {
				t.Errorf("%d bytes over %v took %v, want about 1.05s (0.6s to 2s)", size, link, d)
			}
		})
	}
}

func TestCut(t *testing.T) {
	s := startServer(t)
	up := serve(t, echo)
	p, err := s.Proxy("cut", up, Link{RTT: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	roundTrips(t, c, 1)

	// A read blocked on the connection fails when the link is cut.
	readErr := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	if err := p.Cut(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-readErr:
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("in-flight read after Cut returned %v, want the connection closed", err)
		}
		t.Logf("in-flight read failed %v after Cut: %v", time.Since(start), err)
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight read did not fail within 10s of Cut")
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatalf("dial %s after Cut succeeded", p.Addr())
	} else {
		t.Logf("dial after Cut: %v", err)
	}

	// Restore listens on the same address again, with the same link.
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	rt := roundTrips(t, dial(t, p.Addr()), 3)
	if rt[0] < 2*time.Millisecond {
		t.Errorf("round trip %v after Restore, want at least 2ms", rt[0])
	}
}

func TestProxyInvalid(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		name, upstream string
		link           Link
	}{
		{"", "127.0.0.1:1", Link{}},
		{"bad name", "127.0.0.1:1", Link{}},
		{"ok", "", Link{}},
		{"ok", "127.0.0.1:1", Link{RTT: -time.Millisecond}},
		{"ok", "127.0.0.1:1", Link{Bandwidth: 1}},
	} {
		if p, err := s.Proxy(tc.name, tc.upstream, tc.link); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Proxy(%q, %q, %+v) = %v, %v; want ErrInvalid", tc.name, tc.upstream, tc.link, p, err)
		}
	}
	// Nothing was left behind: the name is free.
	p, err := s.Proxy("ok", "127.0.0.1:1", Link{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(Link{Bandwidth: 1}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Set(bw=1) = %v, want ErrInvalid", err)
	}
}

func TestStartFails(t *testing.T) {
	// A program that exits at once: Start says so and shows its output.
	bin := filepath.Join(t.TempDir(), "fake")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'no such flag' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), bin)
	if err == nil || !strings.Contains(err.Error(), "no such flag") {
		t.Fatalf("Start(fake) = %v, want an error with its output", err)
	}
}
