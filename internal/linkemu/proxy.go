package linkemu

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/accelpool/accelpool/errdefs"
)

// Proxy is one toxiproxy proxy: it listens on a loopback port and forwards
// each connection to its upstream through the toxics of its Link.
type Proxy struct {
	s        *Server
	name     string
	addr     string
	upstream string

	mu     sync.Mutex
	link   Link
	toxics map[string]bool // names of the toxics now on the proxy
}

// toxic is a toxic as toxiproxy's API takes it.
type toxic struct {
	Name       string           `json:"name"`
	Type       string           `json:"type"`
	Stream     string           `json:"stream"`
	Toxicity   float64          `json:"toxicity"`
	Attributes map[string]int64 `json:"attributes"`
}

// proxyState is a proxy as toxiproxy's API takes and returns it.
type proxyState struct {
	Name     string `json:"name,omitempty"`
	Listen   string `json:"listen,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	Enabled  bool   `json:"enabled"`
}

// Proxy creates a proxy named name (l.Name when name is empty) that listens
// on a free loopback port and forwards to upstream (host:port) through
// toxics realising l.
func (s *Server) Proxy(name, upstream string, l Link) (*Proxy, error) {
	if name == "" {
		name = l.Name
	}
	if !nameRE.MatchString(name) {
		return nil, invalidf("proxy name %q: want letters, digits, '.', '_' or '-' (and not empty)", name)
	}
	if upstream == "" {
		return nil, invalidf("proxy %s: empty upstream", name)
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	var got proxyState
	err := s.do(ctx, "POST", "/proxies", proxyState{
		Name: name, Listen: "127.0.0.1:0", Upstream: upstream, Enabled: true,
	}, &got)
	if err != nil {
		return nil, fmt.Errorf("linkemu: create proxy %s to %s: %w", name, upstream, err)
	}
	if got.Listen == "" {
		_ = s.do(ctx, "DELETE", "/proxies/"+url.PathEscape(name), nil, nil)
		return nil, fmt.Errorf("linkemu: create proxy %s: the server did not say where it listens", name)
	}
	p := &Proxy{s: s, name: name, addr: got.Listen, upstream: upstream, toxics: map[string]bool{}}
	if err := p.Set(l); err != nil {
		_ = p.Delete()
		return nil, err
	}
	return p, nil
}

// Name is the proxy's name on the server.
func (p *Proxy) Name() string { return p.name }

// Addr is the host:port the proxy listens on; dial it instead of the
// upstream.
func (p *Proxy) Addr() string { return p.addr }

// Upstream is the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Link is the link the proxy now emulates.
func (p *Proxy) Link() Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.link
}

// wantToxics lists the toxics realising l.
func wantToxics(l Link) map[string]toxic {
	want := map[string]toxic{}
	up, down := l.latencies()
	for _, t := range []struct {
		stream string
		ms     int64
	}{{"upstream", up}, {"downstream", down}} {
		if t.ms > 0 {
			name := "latency_" + t.stream
			want[name] = toxic{Name: name, Type: "latency", Stream: t.stream, Toxicity: 1,
				Attributes: map[string]int64{"latency": t.ms, "jitter": 0}}
		}
	}
	if rate := l.toxiRate(); rate > 0 {
		for _, stream := range []string{"upstream", "downstream"} {
			name := "bandwidth_" + stream
			want[name] = toxic{Name: name, Type: "bandwidth", Stream: stream, Toxicity: 1,
				Attributes: map[string]int64{"rate": rate}}
		}
	}
	return want
}

// Set makes the proxy emulate l from now on, changing its toxics in place
// (connections stay open), so a link can be degraded and restored while
// traffic runs. l.Name is kept as a label only.
func (p *Proxy) Set(l Link) error {
	if err := l.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx := context.Background()
	base := "/proxies/" + url.PathEscape(p.name) + "/toxics"
	want := wantToxics(l)
	var errs []error
	for name := range p.toxics {
		if _, ok := want[name]; ok {
			continue
		}
		if err := p.s.do(ctx, "DELETE", base+"/"+name, nil, nil); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		delete(p.toxics, name)
	}
	// Latency first, then bandwidth, so toxics keep one order in the chain.
	for _, name := range []string{"latency_upstream", "latency_downstream", "bandwidth_upstream", "bandwidth_downstream"} {
		t, ok := want[name]
		if !ok {
			continue
		}
		var err error
		if p.toxics[name] {
			err = p.s.do(ctx, "PATCH", base+"/"+name, t, nil)
		} else {
			err = p.s.do(ctx, "POST", base, t, nil)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.toxics[name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("linkemu: proxy %s: set link %s: %w", p.name, l, err)
	}
	p.link = l
	return nil
}

// Cut disables the proxy: its open connections are closed and new ones
// refused until Restore.
func (p *Proxy) Cut() error { return p.enable(false) }

// Restore re-enables a cut proxy on the same address with the same link.
func (p *Proxy) Restore() error { return p.enable(true) }

func (p *Proxy) enable(on bool) error {
	err := p.s.do(context.Background(), "PATCH", "/proxies/"+url.PathEscape(p.name),
		proxyState{Listen: p.addr, Upstream: p.upstream, Enabled: on}, nil)
	if err != nil {
		what := "cut"
		if on {
			what = "restore"
		}
		return fmt.Errorf("linkemu: %s proxy %s: %w", what, p.name, err)
	}
	return nil
}

// Delete removes the proxy from the server, closing its connections.
func (p *Proxy) Delete() error {
	err := p.s.do(context.Background(), "DELETE", "/proxies/"+url.PathEscape(p.name), nil, nil)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("linkemu: delete proxy %s: %w", p.name, err)
	}
	return nil
}
