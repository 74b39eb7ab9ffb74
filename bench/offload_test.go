package bench

import (
	"math"
	"testing"
	"time"
)

func TestOffloadFigures(t *testing.T) {
	ms := time.Millisecond
	// Three requests; the edge's own time scatters (100, 130, 100 ms) and
	// each answer took the same 10 ms on top of it: the paired ratio sees
	// no loss, whatever the scatter.
	m := proxyMeasure{
		took:       []time.Duration{116 * ms, 146 * ms, 116 * ms},
		pred:       []time.Duration{116 * ms, 116 * ms, 0},
		server:     []time.Duration{100 * ms, 130 * ms, 100 * ms},
		edge:       []time.Duration{102 * ms, 102 * ms, 132 * ms},
		edgeServer: []time.Duration{100 * ms, 100 * ms, 130 * ms},
		on:         map[string]int{"lan": 3},
	}
	r := OffloadRow{Local: 1000 * ms, RTT: 4 * ms, InBytes: 1000, OutBytes: 1000, UpBps: 8e6, DownBps: 8e6}
	r.figures(m)
	// wire = 4 + 1 + 1 ms; overhead 2 ms; ideal_i = 8 ms + server_i.
	if r.EdgeOverhead != 2*ms || r.IdealRemote != 108*ms || r.Remote != 102*ms || r.Achieved != 116*ms {
		t.Errorf("overhead %v ideal %v remote %v achieved %v", r.EdgeOverhead, r.IdealRemote, r.Remote, r.Achieved)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if want := 108.0 / 116; !near(r.AchievedOfIdeal, want) || !near(r.AOILow, 108.0/116) || !near(r.AOIHigh, 138.0/146) {
		t.Errorf("achieved/ideal %v (%v-%v), want %v", r.AchievedOfIdeal, r.AOILow, r.AOIHigh, want)
	}
	if !near(r.Speedup, 1000.0/116) || !near(r.Ideal, 1000.0/108) {
		t.Errorf("speedup %v ideal %v", r.Speedup, r.Ideal)
	}
	if want := (1000.0 / 116) / (1000.0 / 108); !near(r.Unpaired, want) {
		t.Errorf("unpaired %v, want %v", r.Unpaired, want)
	}
	// Errors 0 and 30/146 over two predicted requests.
	if r.Predicted != 2 || !near(r.PredErr, 15.0/146) || !near(r.PredErrMean, 15.0/146) || !near(r.PredErrP90, 30.0/146) {
		t.Errorf("pred err %d %v mean %v p90 %v", r.Predicted, r.PredErr, r.PredErrMean, r.PredErrP90)
	}
	if !near(r.EdgeSpread, 30.0/116) {
		t.Errorf("edge spread %v", r.EdgeSpread)
	}

	// A request the proxy ran locally is judged against the ideal with the
	// edge's median time alone, capped at local.
	m = proxyMeasure{took: []time.Duration{50 * ms}, pred: []time.Duration{0}, server: []time.Duration{0},
		edge: []time.Duration{100 * ms}, edgeServer: []time.Duration{98 * ms}}
	r = OffloadRow{Local: 50 * ms, RTT: 4 * ms}
	r.figures(m)
	if r.IdealRemote != 104*ms || r.Ideal != 1 || r.AchievedOfIdeal != 1 {
		t.Errorf("local row: ideal remote %v ideal %v achieved/ideal %v", r.IdealRemote, r.Ideal, r.AchievedOfIdeal)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct{ p, want float64 }{{10, 1}, {50, 3}, {90, 5}, {100, 5}} {
		if got := quantile(v, tc.p); got != tc.want {
			t.Errorf("p%v: %v, want %v", tc.p, got, tc.want)
		}
	}
	if v[0] != 5 || quantile(nil, 50) != 0 {
		t.Error("quantile changed its input or is not 0 for none")
	}
}

// TestOffloadFiguresCompressed: a request that crossed the link
// compressed is held to the ideal of the compressed bytes.
func TestOffloadFiguresCompressed(t *testing.T) {
	const ms = time.Millisecond
	m := proxyMeasure{
		took:       []time.Duration{20 * ms, 36 * ms},
		pred:       []time.Duration{0, 0},
		server:     []time.Duration{10 * ms, 10 * ms},
		edge:       []time.Duration{12 * ms, 12 * ms},
		edgeServer: []time.Duration{10 * ms, 10 * ms},
		on:         map[string]int{"edge": 2},
		compressed: []bool{true, false},
	}
	// 8 Mbit/s: 10000 bytes take 10 ms, 1000 bytes 1 ms.
	r := OffloadRow{Local: 1000 * ms, RTT: 4 * ms, InBytes: 1000, OutBytes: 10000, OutBytesZ: 1000, UpBps: 8e6, DownBps: 8e6}
	r.figures(m)
	// ideal_0 = 4 + 1 + 1 + 2 + 10 = 18 ms; ideal_1 = 4 + 1 + 10 + 2 + 10 = 27 ms.
	// Had both counted the uncompressed bytes, the first would be 27/20.
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if r.Compressed != 1 || !near(r.AOILow, 27.0/36) || !near(r.AOIHigh, 18.0/20) {
		t.Errorf("compressed %d, achieved/ideal p10 %v p90 %v; want 1, %v, %v", r.Compressed, r.AOILow, r.AOIHigh, 27.0/36, 18.0/20)
	}
}
