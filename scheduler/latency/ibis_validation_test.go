package latency_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/scheduler/latency/ibis"
)

// The validation against the Ibis measurements. Run with -v to see the
// tables; they are also printed when a test fails.
//
// In both files a "Sequential" sample is one request with the
// accelerator otherwise idle, the models taking turns; a "Concurrent"
// round issues one request of every model at the same instant. The
// models take only the Sequential means as input (the profile: nothing
// is fitted to the Concurrent samples) and predict the Concurrent ones.
// The first round of each (a cold start: Yolo4-tiny's first request takes
// 78 ms, then 25.5) is dropped as warm-up.

// maxMeanError is the target of capability C6: a model's mean absolute
// percentage error over the validation cases.
const maxMeanError = 10.0

type stats struct {
	mean float64
	n    int
}

// means returns, per model, the mean response of a process type's rounds
// 1.. (round 0 dropped), and the models in file order.
func means(samples []ibis.Sample, process string) (map[string]stats, []string) {
	out := map[string]stats{}
	var order []string
	for _, s := range samples {
		if s.Process != process || s.Round == 0 {
			continue
		}
		st, ok := out[s.Model]
		if !ok {
			order = append(order, s.Model)
		}
		st.mean += s.ResponseMs
		st.n++
		out[s.Model] = st
	}
	for k, st := range out {
		st.mean /= float64(st.n)
		out[k] = st
	}
	return out, order
}

func ibisData(t *testing.T, file string) []ibis.Sample {
	t.Helper()
	d := ibis.DirForTest(t)
	s, err := ibis.ReadValidationFile(d, file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pct(pred, meas float64) float64 { return 100 * (pred - meas) / meas }

// perRequest is the mean absolute percentage error of pred[model] against
// every Concurrent sample (rounds 1..).
func perRequest(samples []ibis.Sample, pred map[string]float64) float64 {
	sum, n := 0.0, 0
	for _, s := range samples {
		if s.Process != "Concurrent" || s.Round == 0 {
			continue
		}
		sum += math.Abs(pct(pred[s.Model], s.ResponseMs))
		n++
	}
	return sum / float64(n)
}

// TestValidationGPUProcessSharing checks PSConcurrent against
// trt_ps_validation.csv: YOLOv4-tiny, ResNet50 and EfficientNet-B3 under
// TensorRT on a Jetson Nano GPU, alone and three at once.
func TestValidationGPUProcessSharing(t *testing.T) {
	samples := ibisData(t, ibis.GPUValidation)
	seq, order := means(samples, "Sequential")
	conc, _ := means(samples, "Concurrent")
	profiles := make([]latency.Profile, len(order))
	for i, m := range order {
		profiles[i] = latency.Profile{ServiceTimeMs: seq[m].mean}
	}
	pred := latency.PSConcurrent(profiles, 1)
	n := len(order)

	var b strings.Builder
	fmt.Fprintf(&b, "GPU processor sharing (Jetson Nano, TensorRT; %s): %d models at once, one request each\n", ibis.GPUValidation, n)
	fmt.Fprintf(&b, "%-16s %9s %10s %10s %8s   %10s %8s\n", "model", "alone ms", "measured", "PS model", "error", "n×alone", "error")
	sum, naive := 0.0, 0.0
	byModel := map[string]float64{}
	for i, m := range order {
		e := pct(pred[i], conc[m].mean)
		ne := pct(float64(n)*seq[m].mean, conc[m].mean)
		sum += math.Abs(e)
		naive += math.Abs(ne)
		byModel[m] = pred[i]
		fmt.Fprintf(&b, "%-16s %9.2f %10.2f %10.2f %+7.1f%%   %10.2f %+7.1f%%\n", m, seq[m].mean, conc[m].mean, pred[i], e, float64(n)*seq[m].mean, ne)
	}
	mean := sum / float64(n)
	fmt.Fprintf(&b, "mean absolute error: PS model %.1f%% (per request %.1f%%); n×alone %.1f%%\n", mean, perRequest(samples, byModel), naive/float64(n))
	t.Log("\n" + b.String())
	if mean > maxMeanError {
		t.Errorf("PS mean error %.1f%% > %.0f%%", mean, maxMeanError)
	}
}

// TestValidationEdgeTPUFCFS checks FCFSConcurrent against
// edgetpu_fcfs_validation.csv: five models on one Edge TPU, alone and
// five at once, served first come first served.
//
// Every Sequential request follows a request of another model (the
// models take turns), so its mean is the model's service time plus its
// switch cost, s+c: the profile. The data cannot split the two, and need
// not: in a Concurrent round every request also follows another model.
// gpu/edgetpu-workload1.yaml does split them for efficientnet-S
// (1000/98.43 = 10.16 ms + 17.31 ms switch = 27.47 ms), which the test
// compares with the measured ENets-S sequential mean as a cross-check of
// the switch cost.
func TestValidationEdgeTPUFCFS(t *testing.T) {
	samples := ibisData(t, ibis.EdgeTPUValidation)
	seq, order := means(samples, "Sequential")
	conc, _ := means(samples, "Concurrent")
	// The order in which a round's requests reach the Edge TPU: the order
	// of the round's rows, which their response times confirm.
	for i := 1; i < len(order); i++ {
		if conc[order[i]].mean <= conc[order[i-1]].mean {
			t.Fatalf("concurrent means do not increase in file order at %s", order[i])
		}
	}
	jobs := make([]latency.Load, len(order))
	for i, m := range order {
		jobs[i] = latency.Load{Name: m, Model: m, Profile: latency.Profile{ServiceTimeMs: seq[m].mean}}
	}
	pred := latency.FCFSConcurrent(jobs, order[len(order)-1])
	// What processor sharing would predict instead, as a contrast.
	profiles := make([]latency.Profile, len(order))
	for i, j := range jobs {
		profiles[i] = j.Profile
	}
	ps := latency.PSConcurrent(profiles, 1)

	var b strings.Builder
	fmt.Fprintf(&b, "Edge TPU FCFS with model switches (%s): %d models at once, one request each, in this order\n", ibis.EdgeTPUValidation, len(order))
	fmt.Fprintf(&b, "%-17s %12s %10s %10s %8s   %10s %8s\n", "model", "s+c alone ms", "measured", "FCFS model", "error", "if PS", "error")
	sum, psSum := 0.0, 0.0
	byModel := map[string]float64{}
	for i, m := range order {
		e := pct(pred[i], conc[m].mean)
		sum += math.Abs(e)
		byModel[m] = pred[i]
		pe := pct(ps[i], conc[m].mean)
		psSum += math.Abs(pe)
		fmt.Fprintf(&b, "%-17s %12.2f %10.2f %10.2f %+7.1f%%   %10.2f %+7.1f%%\n", m, seq[m].mean, conc[m].mean, pred[i], e, ps[i], pe)
	}
	mean := sum / float64(len(order))
	fmt.Fprintf(&b, "mean absolute error: FCFS model %.1f%% (per request %.1f%%); processor sharing %.1f%%\n", mean, perRequest(samples, byModel), psSum/float64(len(order)))

	d, _ := ibis.Dir()
	w, err := ibis.ReadWorkloadFile(d, ibis.EdgeTPUWorkload)
	if err != nil {
		t.Fatal(err)
	}
	s := w.Models[0]
	yaml := s.ServiceTimeMs() + s.SwitchOverheadMs
	fmt.Fprintf(&b, "cross-check: %s in %s: %.2f ms service + %.2f ms switch = %.2f ms vs ENets-S sequential %.2f ms (%+.1f%%); without the switch %+.1f%%\n",
		s.Name, ibis.EdgeTPUWorkload, s.ServiceTimeMs(), s.SwitchOverheadMs, yaml, seq["ENets-S"].mean, pct(yaml, seq["ENets-S"].mean), pct(s.ServiceTimeMs(), seq["ENets-S"].mean))
	t.Log("\n" + b.String())
	if mean > maxMeanError {
		t.Errorf("FCFS mean error %.1f%% > %.0f%%", mean, maxMeanError)
	}
}
