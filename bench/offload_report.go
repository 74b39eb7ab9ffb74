package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/internal/linkemu"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/proxy"
)

// hostDesc names the CPU and core count of this machine.
func hostDesc() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s", model, numCPU(), goVersion())
}

// degradePhase runs in.model under load (two clients back to back)
// through the device proxy over link lp; after the proxy settles, the
// link's round trip goes up by max(200 ms, 3 × the local latency), then back. It
// measures how long the proxy takes to move to local and back to the link,
// and counts failed requests.
func degradePhase(ctx context.Context, cfg OffloadConfig, c *grpcsvc.Client, lp *linkemu.Proxy, normal linkemu.Link, in offloadInput, local time.Duration) (*DegradeResult, error) {
	degraded := normal
	// Enough that running remotely is clearly slower than running locally,
	// even with the local queue two deep.
	degraded.RTT += max(200*time.Millisecond, (3 * local).Round(time.Millisecond))
	res := &DegradeResult{Model: in.model, Link: normal.Name, Normal: normal, Degraded: degraded}
	type ev struct {
		at     time.Time
		target string
	}
	var (
		mu      sync.Mutex
		events  []ev
		failed  []error
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped.Load() {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := c.Infer(rctx, in.request())
				cancel()
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					t, _ := r.Parameters[proxy.ParamTarget].(string)
					events = append(events, ev{time.Now(), t})
				}
				mu.Unlock()
			}
		}()
	}
	defer func() { stopped.Store(true); wg.Wait() }()
	// settled waits for 5 answers in a row from want after since.
	settled := func(since time.Time, want string, limit time.Duration) (time.Duration, string, bool) {
		end := time.Now().Add(limit)
		for time.Now().Before(end) {
			mu.Lock()
			run, first := 0, time.Time{}
			on := map[string]int{}
			for _, e := range events {
				if e.at.Before(since) {
					continue
				}
				on[e.target]++
				if e.target != want {
					run = 0
					continue
				}
				if run == 0 {
					first = e.at
				}
				if run++; run == 5 {
					mu.Unlock()
					return first.Sub(since), want, true
				}
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		return 0, "", false
	}
	cfg.progress("degrade phase: %s under load over %s", in.model, normal.Name)
	start := time.Now()
	if _, on, ok := settled(start, normal.Name, 60*time.Second); ok {
		res.BeforeOn = on
	} else {
		return nil, fmt.Errorf("degrade phase: %s did not settle on link %s within 60s (does offloading it pay at all?)", in.model, normal.Name)
	}
	t0 := time.Now()
	if err := lp.Set(degraded); err != nil {
		return nil, err
	}
	d, on, ok := settled(t0, proxy.LocalName, 60*time.Second)
	if !ok {
		return nil, fmt.Errorf("degrade phase: the proxy did not move to local within 60s of the link going to %s", degraded)
	}
	res.ToLocal, res.DuringOn = d, on
	cfg.progress("  link %s → %s: on local after %v", normal, degraded, fmtMS(d))
	t1 := time.Now()
	if err := lp.Set(normal); err != nil {
		return nil, err
	}
	d, on, ok = settled(t1, normal.Name, 60*time.Second)
	if !ok {
		return nil, fmt.Errorf("degrade phase: the proxy did not return to %s within 60s of the link recovering", normal.Name)
	}
	res.BackToRemote, res.AfterOn = d, on
	cfg.progress("  link restored: back on %s after %v", normal.Name, fmtMS(d))
	stopped.Store(true)
	wg.Wait()
	mu.Lock()
	res.Requests, res.Failed = len(events)+len(failed), len(failed)
	mu.Unlock()
	return res, nil
}

// Print writes the table, the notes and the summary line.
func (rep OffloadReport) Print(w io.Writer, cfg OffloadConfig) {
	fmt.Fprintf(w, "machine: %s\n", rep.Host)
	fmt.Fprintf(w, "device:  %s\n", rep.DeviceDesc)
	fmt.Fprintf(w, "edge:    %s\n", rep.EdgeDesc)
	fmt.Fprintf(w, "links:   emulated with toxiproxy on loopback (latency split over both directions, bandwidth toxic each way)\n")
	fmt.Fprintf(w, "requests: %d measured one at a time per row after %d warm-up, each after one call straight to the edge; JPEG images preprocessed beside the model\n\n", cfg.Requests, cfg.Warmup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tlink\tin\tout\tout zrun\tcompressed\tlocal\toffloaded\tran on\tspeedup\tprobed rtt\tup/down Mbit/s\tedge alone\tideal remote\tideal speedup\tachieved/ideal\tp10-p90\tunpaired\tpred err\tmean\tp90\tedge spread\tdevice CPU/req\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%.1fx\t%s\t%.0f/%.0f\t%s\t%s\t%.1fx\t%.2f\t%.2f-%.2f\t%.2f\t%.1f%%\t%.1f%%\t%.1f%%\t%.0f%%\t%s\t\n", r.Model, r.Link, kb(r.InBytes), kb(r.OutBytes), kb(r.OutBytesZ), r.Compressed, cfg.Requests,
			fmtMS(r.Local), fmtMS(r.Achieved), r.RanOn, r.Speedup, fmtMS(r.RTT), r.UpBps/1e6, r.DownBps/1e6, fmtMS(r.Remote), fmtMS(r.IdealRemote),
			r.Ideal, r.AchievedOfIdeal, r.AOILow, r.AOIHigh, r.Unpaired, 100*r.PredErr, 100*r.PredErrMean, 100*r.PredErrP90, 100*r.EdgeSpread, fmtMS(r.DeviceCPU))
	}
	_ = tw.Flush()
	for _, line := range offloadNotes {
		fmt.Fprintln(w, line)
	}
	if d := rep.Degrade; d != nil {
		fmt.Fprintf(w, "\nlink degradation under load (%s, 2 clients back to back): link %s → %s → %s\n", d.Model, d.Normal, d.Degraded, d.Normal)
		fmt.Fprintf(w, "  settled on %s; moved to local %v after the link degraded; back on %s %v after it recovered; %d requests, %d failed\n",
			d.BeforeOn, fmtMS(d.ToLocal), d.AfterOn, fmtMS(d.BackToRemote), d.Requests, d.Failed)
	}
	best, worst, worstErr := 0.0, 0.0, 0.0
	for i, r := range rep.Rows {
		best = max(best, r.Speedup)
		worstErr = max(worstErr, r.PredErr)
		if i == 0 || r.AchievedOfIdeal < worst {
			worst = r.AchievedOfIdeal
		}
	}
	fmt.Fprintf(w, "\nworst prediction error (median per request) %.1f%%\n", 100*worstErr)
	fmt.Fprintf(w, "offload: best speedup %.1fx, worst achieved/ideal %.2f\n", best, worst)
}

// offloadNotes say how each figure of the table is computed.
var offloadNotes = []string{
	"",
	"local, offloaded = medians of the measured requests (device alone; through the proxy choosing freely); speedup = local / offloaded;",
	"probed rtt, up/down = the link probed from this process, outside the device's quota (smallest of 5 round trips, median of 5 512 KiB transfers);",
	"edge alone = median latency of the calls straight to the edge server from this process, one before each measured request;",
	"out zrun = the answer zero-run compressed; compressed = measured requests the proxy sent compressed (it learns per link and model which way is faster);",
	"ideal_i = probed rtt + in/up + out/down + edge overhead + the server time the edge reported for request i (queue + preprocess + compute),",
	"  out being the compressed size for a request that went compressed (the bytes that had to cross);",
	"  edge overhead = median of (edge alone - its reported server time) per call; ideal remote = median of ideal_i;",
	"ideal speedup = local / min(local, ideal remote);",
	"achieved/ideal = median over requests of min(local, ideal_i) / offloaded_i; p10-p90 = the 10th and 90th percentiles of those ratios;",
	"unpaired = speedup / (local / min(local, probed rtt + in/up + out/down + edge alone)), a ratio of medians of separate calls;",
	"pred err = median over requests of |predicted - measured| / measured (the proxy's accelpool_predicted_us); mean and p90 of the same;",
	"edge spread = p10-p90 range of the edge's reported server time over the row's requests, relative to offloaded (unforeseeable per request);",
	"device CPU/req = the device proxy's CPU time (all threads, probes included) per measured request",
}

func kb(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0fkB", float64(n)/(1<<10))
}

// SVG draws, per model and link, the achieved and the ideal speedup.
func (rep OffloadReport) SVG(w io.Writer) error {
	const (
		barW, gap, groupGap = 18, 4, 22
		left, top, height   = 60, 40, 260
	)
	maxS := 1.0
	for _, r := range rep.Rows {
		maxS = max(maxS, r.Speedup, r.Ideal)
	}
	maxS = float64(int(maxS) + 1)
	width := left + len(rep.Rows)*(2*barW+gap+groupGap) + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, top+height+110)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">Offload speedup over the device alone (emulated device: %s)</text>`+"\n", left, escape(beforeParen(rep.DeviceDesc)))
	y := func(s float64) float64 { return top + height - s/maxS*height }
	for s := 0.0; s <= maxS; s++ {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%gx</text>`+"\n", left, width-20, y(s), y(s), left-6, y(s)+4, s)
	}
	x := left + 10
	for _, r := range rep.Rows {
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#2b6cb0"><title>achieved %.2fx</title></rect>`+"\n", x, y(r.Speedup), barW, top+height-y(r.Speedup), r.Speedup)
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#a0aec0"><title>ideal %.2fx</title></rect>`+"\n", x+barW+gap, y(r.Ideal), barW, top+height-y(r.Ideal), r.Ideal)
		cx := x + barW
		fmt.Fprintf(&b, `<text transform="translate(%d,%d) rotate(45)">%s / %s</text>`+"\n", cx-10, top+height+14, escape(r.Model), escape(r.Link))
		x += 2*barW + gap + groupGap
	}
	fmt.Fprintf(&b, `<rect x="%d" y="28" width="10" height="10" fill="#2b6cb0"/><text x="%d" y="37">achieved (median, through the proxy)</text>`+"\n", width-330, width-315)
	fmt.Fprintf(&b, `<rect x="%d" y="28" width="10" height="10" fill="#a0aec0"/><text x="%d" y="37">ideal</text>`+"\n", width-100, width-85)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func beforeParen(s string) string {
	if i := strings.Index(s, " ("); i > 0 {
		return s[:i]
	}
	return s
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
