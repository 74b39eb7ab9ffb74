package proxy

import (
	"testing"
	"time"
)

func TestLearnedTransferScales(t *testing.T) {
	var ms remoteStats
	ms.transfer.Add(float64(10 * time.Millisecond))
	ms.inBytes.Add(1000)
	ms.outBytes.Add(1000)
	ms.bwRef.Add(100e6)
	for _, tc := range []struct {
		in   int64
		bw   float64
		want time.Duration
	}{
		{1000, 100e6, 10 * time.Millisecond},
		{3000, 100e6, 20 * time.Millisecond}, // twice the bytes
		{1000, 60e6, 10 * time.Millisecond},  // within probe scatter: ignored
		{1000, 25e6, 40 * time.Millisecond},  // a quarter of the bandwidth
		{1000, 0, 10 * time.Millisecond},     // unknown bandwidth
	} {
		if got := ms.learnedTransfer(tc.in, tc.bw); got != tc.want {
			t.Errorf("in %d bw %g: %v, want %v", tc.in, tc.bw, got, tc.want)
		}
	}
}

func TestOutlierNotLearnedUntilItPersists(t *testing.T) {
	tg := &target{models: map[string]*remoteStats{}, probeNow: make(chan struct{}, 1)}
	server := time.Millisecond
	tg.learn("m", server, 100, 0, 5*time.Millisecond, 0) // seeds: transfer 4ms
	for i := range 2 {
		tg.learn("m", server, 100, 0, 100*time.Millisecond, 5*time.Millisecond)
		if got := tg.models["m"].transfer.Duration(); got != 4*time.Millisecond {
			t.Fatalf("outlier %d learned: transfer %v", i+1, got)
		}
	}
	select {
	case <-tg.probeNow:
	default:
		t.Error("an outlier did not ask for a probe")
	}
	tg.learn("m", server, 100, 0, 100*time.Millisecond, 5*time.Millisecond)
	if got := tg.models["m"].transfer.Duration(); got <= 4*time.Millisecond {
		t.Fatalf("the third slow answer in a row was not learned: transfer %v", got)
	}
}

func TestMinWindow(t *testing.T) {
	var w minWindow
	if w.Value() != 0 {
		t.Fatal("empty window not 0")
	}
	for i, tc := range []struct{ add, want float64 }{{5, 5}, {9, 5}, {7, 5}, {8, 7}, {20, 7}, {30, 8}, {30, 20}} {
		w.Add(tc.add)
		if got := w.Value(); got != tc.want {
			t.Errorf("after sample %d (%v): %v, want %v", i+1, tc.add, got, tc.want)
		}
	}
}
