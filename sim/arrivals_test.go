package sim_test

import (
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/sim"
)

func TestReadTimestampsAndTrace(t *testing.T) {
	csv := "TIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:15:46.5000000,374,44\n" +
		"2023-11-16 18:15:46.0000000,396,109\n" +
		"2023-11-16 18:15:48.0000000,879,55\n" +
		"2023-11-16 18:15:48.0000000,91,16\n"
	ts, err := sim.ReadTimestamps(strings.NewReader(csv), "timestamp")
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0, 0.5, 2, 2}; !near(ts, want) {
		t.Fatalf("timestamps %v, want %v", ts, want)
	}
	tr, err := sim.NewTrace(ts)
	if err != nil {
		t.Fatal(err)
	}
	tr.Start = 0
	// Gaps 0.5, 1.5, 0 (mean 2/3), replayed at 3 req/s: mean 1/3 s.
	next := tr.Stream(3, rand.New(rand.NewPCG(1, 1)))
	var got []float64
	for range 4 {
		got = append(got, next())
	}
	if want := []float64{0.25, 0.75, 0, 0.25}; !near(got, want) {
		t.Fatalf("gaps %v, want %v", got, want)
	}

	for _, bad := range []string{"", "A,B\n1,2\n", "TIMESTAMP\nyesterday\n"} {
		if _, err := sim.ReadTimestamps(strings.NewReader(bad), "TIMESTAMP"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := sim.NewTrace([]float64{1}); err == nil {
		t.Error("a one-point trace accepted")
	}
}

func near(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-6 {
			return false
		}
	}
	return true
}

// TestAzureTrace replays the Azure LLM inference trace (Azure Public
// Dataset, CC-BY-4.0; ../shared/data/azure-llm-2023) at a fixed rate on
// a PS GPU: the rate is kept and the burstier arrivals raise the latency
// above Poisson's.
func TestAzureTrace(t *testing.T) {
	const path = "../../shared/data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("trace not available: %v", err)
	}
	defer f.Close()
	ts, err := sim.ReadTimestamps(f, "TIMESTAMP")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := sim.NewTrace(ts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests over %.0f s, squared CV of the gaps %.2f", len(ts), ts[len(ts)-1], tr.Burstiness())
	run := func(arr sim.Arrivals) sim.AppResult {
		res, err := sim.Run(sim.Scenario{
			Nodes:     []cluster.Node{node("n", acc("gpu0", "gpu", 1))},
			Instances: []cluster.Instance{inst("a", "n", "gpu0")},
			Apps:      []sim.App{{Name: "a", Model: "m", Rate: 50, ObjectiveMs: 100, Arrivals: arr}},
			Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 10, CV: 0.3}},
			Duration:  1000 * time.Second, Seed: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		return res.Apps[0]
	}
	p, tra := run(sim.Poisson{}), run(tr)
	t.Logf("Poisson: %d requests, mean %.1f ms, p99 %.1f ms; trace: %d requests, mean %.1f ms, p99 %.1f ms",
		p.Requests, p.MeanMs, p.P99Ms, tra.Requests, tra.MeanMs, tra.P99Ms)
	if math.Abs(float64(tra.Requests)-50000) > 2500 {
		t.Errorf("trace replay sent %d requests in 1000 s at 50/s", tra.Requests)
	}
	if tra.P99Ms <= p.P99Ms {
		t.Errorf("trace p99 %.1f ms not above Poisson's %.1f ms", tra.P99Ms, p.P99Ms)
	}
}
