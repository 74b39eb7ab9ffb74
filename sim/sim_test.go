package sim_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/sim"
)

func node(name string, accs ...cluster.Accelerator) cluster.Node {
	return cluster.Node{Name: name, Tier: cluster.TierEdge, Accelerators: accs}
}

func acc(id, kind string, compute float64) cluster.Accelerator {
	return cluster.Accelerator{ID: id, Kind: kind, MemoryBytes: 4 << 30, Compute: compute}
}

func inst(app, nodeName, accel string) cluster.Instance {
	return cluster.Instance{ID: app + "@" + nodeName + "/" + accel, App: app, Node: nodeName, Accelerator: accel}
}

func within(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*want {
		t.Errorf("%s = %.3f, want %.3f ± %.0f%%", what, got, want, rel*100)
	} else {
		t.Logf("%s = %.3f (theory %.3f)", what, got, want)
	}
}

// TestProcessorSharingMean checks M/G/1-PS: the mean response time is
// s/(1-ρ) whatever the service distribution.
func TestProcessorSharingMean(t *testing.T) {
	for _, cv := range []float64{0, 1, 1.5} {
		sc := sim.Scenario{
			Nodes:     []cluster.Node{node("n", acc("gpu0", "gpu", 1))},
			Instances: []cluster.Instance{inst("a", "n", "gpu0")},
			Apps:      []sim.App{{Name: "a", Model: "m", Rate: 60, ObjectiveMs: 100}},
			Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 10, CV: cv}},
			Duration:  2000 * time.Second, Warmup: 10 * time.Second, Seed: 1,
		}
		res, err := sim.Run(sc)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "PS mean ms (cv "+ftoa(cv)+")", res.Apps[0].MeanMs, 10/(1-0.6), 0.05)
		within(t, "utilisation", res.Utilisation["n/gpu0"], 0.6, 0.03)
	}
}

// TestEmpiricalDemand: with an empirical demand (two values)
// the M/G/1-PS mean is still s/(1-ρ) with s the samples' mean, and an
// FCFS accelerator's wait follows Pollaczek–Khinchine with their second
// moment.
func TestEmpiricalDemand(t *testing.T) {
	samples := []float64{4, 16} // mean 10 ms, E[S²] = 136 ms²
	for _, kind := range []string{"gpu", "tpu"} {
		sc := sim.Scenario{
			Nodes:     []cluster.Node{node("n", acc("x0", kind, 1))},
			Instances: []cluster.Instance{inst("a", "n", "x0")},
			Apps:      []sim.App{{Name: "a", Model: "m", Rate: 60, ObjectiveMs: 100}},
			Profiles:  sim.Profiles{{Model: "m", Kind: kind}: {MeanMs: 10, SamplesMs: samples}},
			Duration:  2000 * time.Second, Warmup: 10 * time.Second, Seed: 5,
		}
		res, err := sim.Run(sc)
		if err != nil {
			t.Fatal(err)
		}
		want := 10 / (1 - 0.6)
		if kind == "tpu" {
			want = 10 + 60*136e-3/(2*(1-0.6))
		}
		within(t, kind+" mean ms with samples {4, 16}", res.Apps[0].MeanMs, want, 0.05)
	}
	// Delays paired with the samples add to the latency without
	// occupying the GPU: the PS mean rises by their mean alone.
	delayed := sim.Scenario{
		Nodes:     []cluster.Node{node("n", acc("x0", "gpu", 1))},
		Instances: []cluster.Instance{inst("a", "n", "x0")},
		Apps:      []sim.App{{Name: "a", Model: "m", Rate: 60, ObjectiveMs: 100}},
		Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 10, SamplesMs: samples, SampleDelaysMs: []float64{1, 3}}},
		Duration:  2000 * time.Second, Warmup: 10 * time.Second, Seed: 5,
	}
	res, err := sim.Run(delayed)
	if err != nil {
		t.Fatal(err)
	}
	within(t, "gpu mean ms with samples {4, 16} and delays {1, 3}", res.Apps[0].MeanMs, 10/(1-0.6)+2, 0.05)
	within(t, "utilisation with delays", res.Utilisation["n/x0"], 0.6, 0.03)
	bad := sim.Scenario{
		Nodes:     []cluster.Node{node("n", acc("x0", "gpu", 1))},
		Instances: []cluster.Instance{inst("a", "n", "x0")},
		Apps:      []sim.App{{Name: "a", Model: "m", Rate: 1, ObjectiveMs: 100}},
		Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 1, SamplesMs: []float64{1, -2}}},
		Duration:  time.Second,
	}
	if _, err := sim.Run(bad); err == nil || !strings.Contains(err.Error(), "sample 1 is -2 ms") {
		t.Errorf("a negative sample: err = %v, want one naming sample 1", err)
	}
	bad.Profiles[sim.ProfileKey{Model: "m", Kind: "gpu"}] = sim.Service{MeanMs: 1, SamplesMs: []float64{1, 2}, SampleDelaysMs: []float64{0}}
	if _, err := sim.Run(bad); err == nil || !strings.Contains(err.Error(), "must pair") {
		t.Errorf("delays that do not pair with the samples: err = %v", err)
	}
}

// TestProcessorSharingTwoClasses: in M/G/1-PS every class sees
// s_i/(1-ρ) with ρ the total load.
func TestProcessorSharingTwoClasses(t *testing.T) {
	sc := sim.Scenario{
		Nodes:     []cluster.Node{node("n", acc("gpu0", "gpu", 1))},
		Instances: []cluster.Instance{inst("a", "n", "gpu0"), inst("b", "n", "gpu0")},
		Apps:      []sim.App{{Name: "a", Model: "small", Rate: 40, ObjectiveMs: 100}, {Name: "b", Model: "big", Rate: 10, ObjectiveMs: 100}},
		Profiles:  sim.Profiles{{Model: "small", Kind: "gpu"}: {MeanMs: 5, CV: 0.5}, {Model: "big", Kind: "gpu"}: {MeanMs: 30, CV: 0.5}},
		Duration:  2000 * time.Second, Seed: 2,
	}
	res, err := sim.Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	rho := 40*0.005 + 10*0.030
	within(t, "small mean ms", res.Apps[0].MeanMs, 5/(1-rho), 0.05)
	within(t, "big mean ms", res.Apps[1].MeanMs, 30/(1-rho), 0.05)
}

// TestFCFSPollaczekKhinchine checks M/G/1 FCFS on a TPU: the mean wait is
// λE[S²]/(2(1-ρ)).
func TestFCFSPollaczekKhinchine(t *testing.T) {
	for _, cv := range []float64{0, 1} {
		sc := sim.Scenario{
			Nodes:     []cluster.Node{node("n", acc("tpu0", "tpu", 1))},
			Instances: []cluster.Instance{inst("a", "n", "tpu0")},
			Apps:      []sim.App{{Name: "a", Model: "m", Rate: 50, ObjectiveMs: 100}},
			Profiles:  sim.Profiles{{Model: "m", Kind: "tpu"}: {MeanMs: 10, CV: cv, SwitchMs: 20}},
			Duration:  2000 * time.Second, Seed: 3,
		}
		res, err := sim.Run(sc)
		if err != nil {
			t.Fatal(err)
		}
		s := 0.010
		es2 := s * s * (1 + cv*cv)
		want := (s + 50*es2/(2*(1-0.5))) * 1e3 // one model: no switch ever
		within(t, "FCFS mean ms (cv "+ftoa(cv)+")", res.Apps[0].MeanMs, want, 0.05)
	}
}

// TestFCFSSwitchCost: two models alternating at low load pay the switch
// cost about half the time.
func TestFCFSSwitchCost(t *testing.T) {
	sc := sim.Scenario{
		Nodes:     []cluster.Node{node("n", acc("tpu0", "tpu", 1))},
		Instances: []cluster.Instance{inst("a", "n", "tpu0"), inst("b", "n", "tpu0")},
		Apps:      []sim.App{{Name: "a", Model: "x", Rate: 0.5, ObjectiveMs: 100}, {Name: "b", Model: "y", Rate: 0.5, ObjectiveMs: 100}},
		Profiles:  sim.Profiles{{Model: "x", Kind: "tpu"}: {MeanMs: 10, SwitchMs: 20}, {Model: "y", Kind: "tpu"}: {MeanMs: 10, SwitchMs: 20}},
		Duration:  20000 * time.Second, Seed: 4,
	}
	res, err := sim.Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	within(t, "mean ms with switches", res.Apps[0].MeanMs, 10+0.5*20, 0.05)
	if res.Apps[0].P50Ms != 10 && res.Apps[0].P50Ms != 30 {
		t.Errorf("p50 %v: a request takes 10 ms, or 30 with a switch", res.Apps[0].P50Ms)
	}
}

// burst sends n requests at t=1s, then none.
type burst struct{ n int }

func (b burst) Stream(float64, *rand.Rand) func() float64 {
	k := 0
	return func() float64 {
		k++
		switch {
		case k == 1:
			return 1
		case k <= b.n:
			return 0
		}
		return math.Inf(1)
	}
}

func TestParallelismAndConcurrency(t *testing.T) {
	cases := []struct {
		name        string
		compute     float64
		jobThreads  int
		concurrency int
		n           int
		want        []float64 // sorted latencies, ms (mean and p99 checked)
	}{
		// 3 requests of 1 s on 2 cores: each at 2/3 speed, all done at 1.5 s.
		{"2 cores PS", 2, 1, 0, 3, []float64{1500, 1500, 1500}},
		// Default JobThreads: a request uses every core, so 3 share 1.
		{"all cores per job", 2, 0, 0, 3, []float64{3000, 3000, 3000}},
		// Concurrency 1: one at a time, FIFO.
		{"concurrency 1", 2, 1, 1, 3, []float64{1000, 2000, 3000}},
		// Concurrency 2 on 2 cores: two at full speed, then the third.
		{"concurrency 2", 2, 1, 2, 3, []float64{1000, 1000, 2000}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := sim.Scenario{
				Nodes:       []cluster.Node{node("n", acc("cpu0", "cpu", c.compute))},
				Instances:   []cluster.Instance{inst("a", "n", "cpu0")},
				Apps:        []sim.App{{Name: "a", Model: "m", Rate: 1, ObjectiveMs: 2500, Arrivals: burst{c.n}}},
				Profiles:    sim.Profiles{{Model: "m", Kind: "cpu"}: {MeanMs: 1000}},
				Duration:    10 * time.Second,
				JobThreads:  c.jobThreads,
				Concurrency: c.concurrency,
			}
			res, err := sim.Run(sc)
			if err != nil {
				t.Fatal(err)
			}
			a := res.Apps[0]
			var mean float64
			for _, x := range c.want {
				mean += x / float64(len(c.want))
			}
			if a.Requests != c.n || math.Abs(a.MeanMs-mean) > 1e-3 || math.Abs(a.P99Ms-c.want[len(c.want)-1]) > 1e-3 {
				t.Errorf("got %d requests, mean %v, p99 %v; want %d, %v, %v", a.Requests, a.MeanMs, a.P99Ms, c.n, mean, c.want[len(c.want)-1])
			}
			if a.Violated != (c.want[len(c.want)-1] > 2500) {
				t.Errorf("violated = %v", a.Violated)
			}
		})
	}
}

// TestRoutingLeastOutstanding: two instances on two GPUs split the load,
// so each sees half the utilisation.
func TestRoutingLeastOutstanding(t *testing.T) {
	sc := sim.Scenario{
		Nodes:     []cluster.Node{node("n1", acc("gpu0", "gpu", 1)), node("n2", acc("gpu0", "gpu", 1))},
		Instances: []cluster.Instance{inst("a", "n1", "gpu0"), inst("a", "n2", "gpu0")},
		Apps:      []sim.App{{Name: "a", Model: "m", Rate: 80, ObjectiveMs: 100}},
		Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 10, CV: 1}},
		Duration:  1000 * time.Second, Seed: 5,
	}
	res, err := sim.Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	// Random splitting would give 10/(1-0.4) = 16.7 ms; joining the
	// shorter queue does better.
	if m := res.Apps[0].MeanMs; m > 10/(1-0.4) || m < 10 {
		t.Errorf("mean %.2f ms, want between 10 and 16.7", m)
	}
	u1, u2 := res.Utilisation["n1/gpu0"], res.Utilisation["n2/gpu0"]
	if math.Abs(u1-u2) > 0.05 {
		t.Errorf("utilisation %v and %v: the router does not balance", u1, u2)
	}
}

func TestDeterministic(t *testing.T) {
	sc := sim.Scenario{
		Nodes:     []cluster.Node{node("n", acc("gpu0", "gpu", 1), acc("tpu0", "tpu", 1))},
		Instances: []cluster.Instance{inst("a", "n", "gpu0"), inst("b", "n", "gpu0"), inst("c", "n", "tpu0")},
		Apps: []sim.App{{Name: "a", Model: "x", Rate: 30, ObjectiveMs: 50}, {Name: "b", Model: "x", Rate: 20, ObjectiveMs: 50},
			{Name: "c", Model: "x", Rate: 20, ObjectiveMs: 50}},
		Profiles: sim.Profiles{{Model: "x", Kind: "gpu"}: {MeanMs: 8, CV: 0.7}, {Model: "x", Kind: "tpu"}: {MeanMs: 12, CV: 0.3}},
		Duration: 60 * time.Second, Warmup: 5 * time.Second, Seed: 9, Demand: sim.Lognormal,
	}
	r1, err := sim.Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := sim.Run(sc)
	if !reflect.DeepEqual(r1, r2) {
		t.Fatalf("two runs with one seed differ:\n%+v\n%+v", r1, r2)
	}
	sc.Seed = 10
	r3, _ := sim.Run(sc)
	if reflect.DeepEqual(r1.Apps, r3.Apps) {
		t.Fatal("another seed gives the same run")
	}
	if r1.Requests < 3500 || r1.Requests > 4300 {
		t.Errorf("%d requests measured over 55 s at 70/s", r1.Requests)
	}
}

func TestInvalidScenarios(t *testing.T) {
	base := func() sim.Scenario {
		return sim.Scenario{
			Nodes:     []cluster.Node{node("n", acc("gpu0", "gpu", 1))},
			Instances: []cluster.Instance{inst("a", "n", "gpu0")},
			Apps:      []sim.App{{Name: "a", Model: "m", Rate: 1, ObjectiveMs: 10}},
			Profiles:  sim.Profiles{{Model: "m", Kind: "gpu"}: {MeanMs: 1}},
			Duration:  time.Second,
		}
	}
	cases := []struct {
		name string
		edit func(*sim.Scenario)
		want string
	}{
		{"no profile", func(s *sim.Scenario) { s.Profiles = sim.Profiles{} }, "no profile of model m on a gpu"},
		{"unknown accelerator", func(s *sim.Scenario) { s.Instances[0].Accelerator = "gpu9" }, "n/gpu9, which is not in the cluster"},
		{"unknown app", func(s *sim.Scenario) { s.Instances[0].App = "zz" }, `unknown application "zz"`},
		{"no instance", func(s *sim.Scenario) { s.Instances = nil }, `"a" has rate 1 but no instance`},
		{"negative rate", func(s *sim.Scenario) { s.Apps[0].Rate = -1 }, "has rate -1"},
		{"bad profile", func(s *sim.Scenario) { s.Profiles[sim.ProfileKey{Model: "m", Kind: "gpu"}] = sim.Service{MeanMs: 0} }, "must be > 0"},
		{"no duration", func(s *sim.Scenario) { s.Duration = 0 }, "duration"},
		{"warm-up too long", func(s *sim.Scenario) { s.Warmup = 2 * time.Second }, "warm-up"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := base()
			c.edit(&sc)
			_, err := sim.Run(sc)
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, c.want)
			}
		})
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestQuantileRanks(t *testing.T) {
	cases := []struct{ n, at, lo, hi int }{
		{0, 0, 0, 0},
		{1, 1, 1, 1},
		{100, 99, 98, 100},
		{10000, 9900, 9881, 9921},
	}
	for _, c := range cases {
		at, lo, hi := sim.QuantileRanks(c.n, 99)
		if at != c.at || lo != c.lo || hi != c.hi {
			t.Errorf("n %d: ranks %d [%d, %d], want %d [%d, %d]", c.n, at, lo, hi, c.at, c.lo, c.hi)
		}
	}
}
