package bench

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestValidateRecordReplays: a validate-sim run's record, read back and
// evaluated again, gives the figures the run printed, line for line; and
// an interrupted run keeps the levels it measured.
func TestValidateRecordReplays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.json")
	var live strings.Builder
	rep, err := RunValidateSim(context.Background(), ValidateConfig{
		Backend: echoBackend{pause: 300 * time.Microsecond}, Repository: echoRepo(t, "m1", "m2"), Models: []string{"m1", "m2"},
		Levels: []float64{0.05, 0.1}, Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond,
		ProfileRuns: 20, SimDuration: 30 * time.Second, WorkDir: t.TempDir(), Record: path,
	}, &live)
	if err != nil {
		t.Fatalf("%v\n%s", err, live.String())
	}
	rec, err := ReadValidateRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Levels) != 2 || len(rec.Levels[1].Apps) != 2 || len(rec.Levels[1].Apps[0].TogetherMs) == 0 || rec.Host == "" {
		t.Fatalf("record %+v", rec)
	}
	for _, lv := range rec.Levels {
		for _, a := range lv.Apps {
			if a.AloneOthersBusy == nil {
				t.Fatalf("level %v %s: the other processes' CPU while served alone was not recorded", lv.Level, a.Model)
			}
		}
	}
	if !strings.Contains(live.String(), "while each model was served alone, other processes used up to ") {
		t.Errorf("the alone phases' other processes are not printed:\n%s", live.String())
	}
	var again strings.Builder
	rep2, err := EvaluateValidation(rec, EvaluateOptions{}, &again)
	if err != nil {
		t.Fatal(err)
	}
	// The live run printed progress lines first; from the profile table
	// on, the replay prints the same (the record carries the seed and the
	// simulated duration).
	i, j := strings.Index(live.String(), "MODEL "), strings.Index(again.String(), "MODEL ")
	if i < 0 || j < 0 || live.String()[i:] != again.String()[j:] {
		t.Errorf("replay differs from the run:\n--- run\n%s\n--- replay\n%s", live.String(), again.String())
	}
	if rep.MeanAbsErrMeanModel != rep2.MeanAbsErrMeanModel || rep.MeanAbsErrP99Emp != rep2.MeanAbsErrP99Emp {
		t.Errorf("report: run %+v, replay %+v", rep, rep2)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("record mode %v, want 0644", fi.Mode())
	}

	// Cancelled during the second level: the file holds the first, and
	// the run still evaluates it before returning the error.
	ctx, cancel := context.WithCancel(context.Background())
	part := filepath.Join(t.TempDir(), "part.json")
	var partOut strings.Builder
	prep, err := RunValidateSim(ctx, ValidateConfig{
		Backend: echoBackend{pause: 300 * time.Microsecond}, Repository: echoRepo(t, "m1"), Models: []string{"m1"},
		Levels: []float64{0.05, 0.1}, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond,
		ProfileRuns: 20, SimDuration: 30 * time.Second, WorkDir: t.TempDir(), Record: part,
	}, writerFunc(func(p []byte) {
		partOut.Write(p)
		if strings.Contains(string(p), "level 1/2 measured") {
			cancel()
		}
	}))
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled run: err = %v", err)
	}
	if len(prep.Levels) != 1 || !strings.Contains(partOut.String(), "stopped at level 2 of 2") {
		t.Errorf("cancelled run evaluated %d levels:\n%s", len(prep.Levels), partOut.String())
	}
	got, err := ReadValidateRecord(part)
	if err != nil || len(got.Levels) != 1 {
		t.Fatalf("after cancelling: %d levels, %v", len(got.Levels), err)
	}

	// A record that cannot be written is found out before profiling.
	_, err = RunValidateSim(context.Background(), ValidateConfig{
		Backend: echoBackend{}, Repository: echoRepo(t, "m1"), Models: []string{"m1"},
		Record: filepath.Join(t.TempDir(), "no-such-dir", "r.json"),
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no-such-dir") {
		t.Errorf("unwritable record: %v", err)
	}
}

// TestValidateTenants: with several tenants per model the node serves
// every copy, each is sent its share of the rate, and the record keeps
// one entry per model with its copies' latencies pooled.
func TestValidateTenants(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.json")
	var out strings.Builder
	_, err := RunValidateSim(context.Background(), ValidateConfig{
		Backend: echoBackend{pause: 300 * time.Microsecond}, Repository: echoRepo(t, "m1", "m2"), Models: []string{"m1", "m2"},
		Levels: []float64{0.2}, Tenants: 3, Warmup: 100 * time.Millisecond, Duration: 1500 * time.Millisecond,
		ProfileRuns: 20, SimDuration: 30 * time.Second, WorkDir: t.TempDir(), Record: path,
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "3 tenants per model when served together") {
		t.Errorf("the tenants are not announced:\n%s", out.String())
	}
	rec, err := ReadValidateRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Tenants != 3 || len(rec.Profiles) != 2 || len(rec.Levels[0].Apps) != 2 {
		t.Fatalf("record: %d tenants, %d profiles, %d apps; want 3, 2, 2", rec.Tenants, len(rec.Profiles), len(rec.Levels[0].Apps))
	}
	// Each model's rate over its three copies: the pooled count is
	// Poisson with the model's mean, not a third of it, and every copy
	// answered (one not loaded would fail its requests).
	for _, a := range rec.Levels[0].Apps {
		if a.Failed != 0 {
			t.Errorf("%s: %d of %d requests failed", a.Model, a.Failed, a.Sent)
		}
		want := rec.Levels[0].Rate * 1.5
		if float64(a.Sent) < 0.6*want || float64(a.Sent) > 1.4*want {
			t.Errorf("%s: %d requests pooled over its tenants in 1.5 s at %.1f req/s; want about %.0f", a.Model, a.Sent, rec.Levels[0].Rate, want)
		}
	}

	_, err = RunValidateSim(context.Background(), ValidateConfig{
		Backend: echoBackend{}, Repository: echoRepo(t, "m1"), Models: []string{"m1"}, Tenants: MaxValidateTenants + 1,
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "tenants per model") {
		t.Errorf("too many tenants: %v", err)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// TestValidateRecordBadInput: a damaged record is refused with an error
// naming the entry, never evaluated into figures.
func TestValidateRecordBadInput(t *testing.T) {
	good := `{"host":"h","cpus":2,"threads":1,"concurrency":2,"seed":1,
 "profiles":[{"model":"a","service_ms":2,"cv":0.1,"p99_ms":3,"slowdown":1.1,"served_ms":2.5,"served_cpu_ms":2.6}],
 "levels":[{"level":0.1,"rate":50,"apps":[{"model":"a","alone_ms":[2.5,3.1],"alone_scale":1,"together_ms":[2.7,3.3],"sent":2,"failed":0}]}]}`
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := ReadValidateRecord(write("good.json", good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"not json", good, `{"host":`, "unexpected end of JSON input"},
		{"no cpus", `"cpus":2`, `"cpus":0`, "cpus 0"},
		{"no levels", `"levels":[{`, `"levels":[],"x":[{`, "no levels"},
		{"negative latency", `[2.7,3.3]`, `[2.7,-3.3]`, "levels[0].apps[0] (a): latency 1 is -3.3 ms"},
		{"wrong model", `"apps":[{"model":"a"`, `"apps":[{"model":"b"`, "levels[0].apps[0] (b): the profiles list a here"},
		{"zero service", `"service_ms":2`, `"service_ms":0`, "profiles[0] (a)"},
		{"zero threads", `"threads":1`, `"threads":0`, "threads 0"},
		{"duplicate model", `"served_cpu_ms":2.6}]`, `"served_cpu_ms":2.6},{"model":"a","service_ms":2,"slowdown":1}]`, "profiles[1] (a): the model appears twice"},
		{"an app missing", `"apps":[{"model":"a"`, `"apps":[],"x":[{"model":"a"`, "levels[0]: level 0.1, rate 50 req/s and 0 apps"},
		{"no level", `"level":0.1`, `"level":0`, "levels[0]: level 0,"},
		{"absurd rate", `"rate":50`, `"rate":1e9`, "rate 1e+09 req/s"},
		{"nothing alone", `"alone_ms":[2.5,3.1]`, `"alone_ms":[]`, "0 latencies alone"},
		{"fewer answers than sent", `"sent":2`, `"sent":5`, "sent 5, failed 0, 2 latencies"},
		{"more answers than sent", `"sent":2`, `"sent":1`, "sent 1, failed 0, 2 latencies"},
		{"scale below one", `"alone_scale":1`, `"alone_scale":0.5`, "scale 0.5"},
		{"others over all cores", `"alone_scale":1`, `"alone_scale":1,"alone_others_busy":1.5`, "other processes 1.5 busy"},
		{"others negative", `"alone_scale":1`, `"alone_scale":1,"alone_others_busy":-0.1`, "other processes -0.1 busy"},
		{"absurd tenants", `"concurrency":2`, `"concurrency":2,"tenants":99`, "tenants 99"},
		{"negative tenants", `"concurrency":2`, `"concurrency":2,"tenants":-1`, "tenants -1"},
	} {
		body := strings.Replace(good, c.from, c.to, 1)
		if c.name == "not json" {
			body = c.to
		}
		_, err := ReadValidateRecord(write(strings.ReplaceAll(c.name, " ", "-")+".json", body))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "record ") {
			t.Errorf("%s: err = %v, want it to name %q", c.name, err, c.want)
		}
	}
	if _, err := ReadValidateRecord(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file gave no error")
	}
}

// validationRecordings are recordings of `accelpool bench placement
// --mode validate-sim --record` on Machine A (docs/benchmarks.md), with
// the analytic model's errors on them when they were committed, rounded
// up to the next half point: a change to the latency model or to the
// calibration that makes its predictions of this machine's measurements
// worse fails here, and one that improves them should lower these.
var validationRecordings = []struct {
	file            string
	meanErr, p99Err float64 // mean |relative error| of the mean, of the p99
	simP99Err       float64 // the empirical simulation's mean |p99 error|
	lightP99Err     float64 // the light-load simulation's
}{
	{"machine-a-2026-11-21-levels-10-40.json", 6.0, 25.0, 38.0, 26.0},
	{"machine-a-2026-11-21-levels-15-35.json", 12.5, 45.0, 51.5, 39.5},
	// Its level 4's alone phases of ocr-rec and blazeface-back were
	// disturbed (latencies up to 1.45 s; the recording predates the
	// measure of other processes during them), which only the empirical
	// simulation reads.
	{"machine-a-2026-11-22-levels-10-40.json", 8.5, 12.0, 261.5, 26.0},
	// The same levels again the same day (tenants1), then with each model
	// served as 8 tenants at an eighth of its rate each (tenants8: the
	// same load, 24 models), and as one tenant of 16 executors (conc16).
	{"machine-a-2026-11-22-levels-10-40-tenants1.json", 8.0, 16.5, 15.0, 19.0},
	{"machine-a-2026-11-22-levels-10-40-tenants8.json", 9.5, 25.0, 32.0, 35.0},
	{"machine-a-2026-11-22-levels-10-40-conc16.json", 6.5, 25.0, 32.5, 28.0},
	// Beyond the loads above (59–84 % of the CPUs busy). The first has no
	// light level, so the analytic model's demand is each model served
	// alone at level 0.45, itself queued; the second has one. The third
	// serves four models (ocr-cls too) as 6 tenants each at one level.
	{"machine-a-2026-11-22-levels-45-55.json", 42.5, 80.5, 38.0, 34.0},
	{"machine-a-2026-11-22-levels-10-45-55.json", 32.5, 54.5, 34.5, 25.0},
	{"machine-a-2026-11-22-4models-tenants6-level-45.json", 34.5, 38.5, 36.0, 21.0},
}

// TestValidationThisMachine is the analytic latency model (and the
// simulator) against this project's own measurements of co-located models
// on this machine, at several rates: the recordings' latencies served
// together are predicted from what was measured with each model alone.
// It prints every (level, model) error, each recording's mean, the mean
// over all of them and over the levels up to validatedLevel.
// TargetModelError (10 %) is the target: five recordings of
// levels up to 0.40 meet it and one does not, and none of those beyond
// does (see docs/benchmarks.md), so what the test holds the model to is
// the figures recorded above.
func TestValidationThisMachine(t *testing.T) {
	if len(validationRecordings) == 0 {
		t.Fatal("no recordings listed")
	}
	// every (recording, level, model) pair's |mean error|, and those of
	// levels up to validatedLevel
	var pooled, upTo []float64
	for _, r := range validationRecordings {
		rec, err := ReadValidateRecord(filepath.Join("testdata", "validate-sim", r.file))
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		rep, err := EvaluateValidation(rec, EvaluateOptions{}, &out)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s, %s):\n%s", r.file, rec.Host, rec.Taken.Format(time.DateOnly), out.String())
		t.Logf("%s: analytic model mean error %.1f %% (target %.0f %%: %s), p99 error %.1f %%; simulated p99 error: empirical %.1f %%, light-load %.1f %% (target %.0f %%: %s); p99 inside the measured p99's 95 %% interval: analytic %d, light-load simulation %d of %d",
			r.file, 100*rep.MeanAbsErrMeanModel, 100*TargetModelError, metOrNot(rep.MeanAbsErrMeanModel <= TargetModelError),
			100*rep.MeanAbsErrP99Model, 100*rep.MeanAbsErrP99Emp, 100*rep.MeanAbsErrP99Light, 100*TargetSimP99Error,
			metOrNot(min(rep.MeanAbsErrP99Emp, rep.MeanAbsErrP99Light) <= TargetSimP99Error), rep.ModelInCI, rep.LightInCI, rep.Pairs)
		for _, c := range []struct {
			what      string
			got, held float64
		}{
			{"analytic mean error", rep.MeanAbsErrMeanModel, r.meanErr},
			{"analytic p99 error", rep.MeanAbsErrP99Model, r.p99Err},
			{"empirical simulation p99 error", rep.MeanAbsErrP99Emp, r.simP99Err},
			{"light-load simulation p99 error", rep.MeanAbsErrP99Light, r.lightP99Err},
		} {
			if !(c.got <= c.held/100) {
				t.Errorf("%s: %s %.1f %%, worse than the %.1f %% recorded", r.file, c.what, 100*c.got, c.held)
			}
		}
		for _, lv := range rep.Levels {
			for _, a := range lv.Apps {
				pooled = append(pooled, math.Abs(a.ErrMeanModel))
				if lv.Level <= validatedLevel {
					upTo = append(upTo, math.Abs(a.ErrMeanModel))
				}
			}
		}
	}
	m, _ := meanCV(pooled)
	t.Logf("over all %d recordings' %d (level, model) pairs: analytic model mean error %.1f %% (target %.0f %%: %s)",
		len(validationRecordings), len(pooled), 100*m, 100*TargetModelError, metOrNot(m <= TargetModelError))
	mv, _ := meanCV(upTo)
	t.Logf("over the %d pairs at levels up to %.2f: analytic model mean error %.1f %% (target %.0f %%: %s)",
		len(upTo), validatedLevel, 100*mv, 100*TargetModelError, metOrNot(mv <= TargetModelError))
	if !(m <= pooledMeanErr/100) {
		t.Errorf("pooled analytic mean error %.1f %%, worse than the %.1f %% recorded", 100*m, pooledMeanErr)
	}
	if !(mv <= pooledMeanErrValidated/100) {
		t.Errorf("pooled analytic mean error up to level %.2f: %.1f %%, worse than the %.1f %% recorded", validatedLevel, 100*mv, pooledMeanErrValidated)
	}
}

// pooledMeanErr is the analytic model's mean |error| of the mean over
// every pair of validationRecordings when the last was committed, and
// pooledMeanErrValidated over the pairs at levels up to validatedLevel
// (the loads at which this machine's measurements repeat from run to
// run), each rounded up to the next half point.
const (
	pooledMeanErr          = 15.5
	pooledMeanErrValidated = 8.0
	validatedLevel         = 0.40
)

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
