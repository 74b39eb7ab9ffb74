package proxy

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Status is a snapshot of what the proxy knows: GET /proxy/status.
type Status struct {
	Mode    string                   `json:"mode"`
	Local   map[string]LocalEstimate `json:"local,omitempty"`
	Targets []TargetStatus           `json:"targets"`
}

// LocalEstimate is what is known about running a model on the device.
type LocalEstimate struct {
	ServiceMs float64 `json:"serviceMs"`
	// OverheadMs is the device's own time around a run (reading the
	// request, writing the answer), median of recent requests.
	OverheadMs float64 `json:"overheadMs"`
	Samples    int     `json:"samples"`
	InFlight   int64   `json:"inFlight"`
}

// TargetStatus is one target, its link and its models.
type TargetStatus struct {
	Name      string    `json:"name"`
	Addr      string    `json:"addr"`
	Tier      string    `json:"tier,omitempty"`
	Site      string    `json:"site,omitempty"`
	Up        bool      `json:"up"`
	LastError string    `json:"lastError,omitempty"`
	Probed    time.Time `json:"probed"`
	RTTMs     float64   `json:"rttMs"`
	UpMbps    float64   `json:"upMbps"`
	DownMbps  float64   `json:"downMbps"`
	// BandwidthSamples is the bandwidth probes recorded; Overlapped those
	// discarded because a request overlapped them.
	BandwidthSamples int   `json:"bandwidthSamples"`
	Overlapped       int   `json:"overlappedProbes"`
	InFlight         int64 `json:"inFlight"`
	// CompressionRefused is true once the target refused a compressed
	// request (it has no zero-run decompressor): it is sent plain only.
	CompressionRefused bool `json:"compressionRefused,omitempty"`
	// Models is what is known of each model there; the statistics of its
	// compressed requests are under the model's name and CompressedSuffix.
	Models map[string]RemoteEstimate `json:"models,omitempty"`
}

// RemoteEstimate is what is known about a model on a target.
type RemoteEstimate struct {
	ServerMs   float64 `json:"serverMs"`
	TransferMs float64 `json:"transferMs"`
	// OverheadMs is the device's own time around an attempt (reading the
	// application's request, relaying, writing the answer back).
	OverheadMs float64 `json:"overheadMs"`
	OutBytes   int64   `json:"outBytes"`
	Samples    int     `json:"samples"`
	// Shrink is a sampled answer's zero-run compressed size over its size
	// (0: not sampled); compression is offered under 0.8.
	Shrink float64 `json:"shrink,omitempty"`
}

func ms(ns float64) float64 { return ns / 1e6 }

// Status returns the current snapshot.
func (p *Proxy) Status() Status {
	st := Status{Mode: p.cfg.Mode, Local: map[string]LocalEstimate{}}
	p.mu.RLock()
	defer p.mu.RUnlock()
	for name, ls := range p.local {
		ls.mu.Lock()
		st.Local[name] = LocalEstimate{ServiceMs: ms(ls.service.Value()), OverheadMs: ms(ls.overhead.Value()), Samples: ls.service.N(), InFlight: ls.inflight.Load()}
		ls.mu.Unlock()
	}
	for _, t := range p.targets {
		t.mu.Lock()
		ts := TargetStatus{Name: t.spec.Name, Addr: t.spec.Addr, Tier: t.spec.Tier, Site: t.spec.Site,
			Up: !t.link.failed && !t.link.probed.IsZero(), LastError: t.link.lastErr, Probed: t.link.probed,
			RTTMs: ms(t.link.rtt.Value()), UpMbps: t.link.up.Value() / 1e6, DownMbps: t.link.down.Value() / 1e6,
			BandwidthSamples: t.link.down.N(), Overlapped: t.link.overlapped,
			InFlight: t.inflight.Load(), CompressionRefused: t.noCompress, Models: map[string]RemoteEstimate{}}
		for m, rs := range t.models {
			ts.Models[m] = RemoteEstimate{ServerMs: ms(rs.server.Value()), TransferMs: ms(rs.transfer.Value()), OverheadMs: ms(rs.overhead.Value()),
				OutBytes: int64(rs.outBytes.Value()), Samples: rs.server.N(), Shrink: rs.shrink}
		}
		t.mu.Unlock()
		st.Targets = append(st.Targets, ts)
	}
	slices.SortFunc(st.Targets, func(a, b TargetStatus) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// StatusHandler serves Status as JSON.
func (p *Proxy) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.Status())
	})
}
