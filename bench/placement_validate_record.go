package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler/latency"
	"github.com/accelpool/accelpool/sim"
)

// ValidateRecord is every measurement of one validate-sim run on a
// machine: the profiles, and each level's latencies served alone and
// together. EvaluateValidation turns it into the comparison with the
// simulator and the analytic models without serving again, so the models
// can be checked against a machine's measurements by a test, and a
// model change can be judged on the same measurements as the one before.
type ValidateRecord struct {
	// Host names the machine (CPU, cores, Go) and Taken when it ran.
	Host  string    `json:"host"`
	Taken time.Time `json:"taken"`
	CPUs  int       `json:"cpus"`
	// Threads is each request's intra-op threads, Concurrency each
	// model's executors.
	Threads     int `json:"threads"`
	Concurrency int `json:"concurrency"`
	// Tenants is how many copies of each model were served together,
	// each sent an equal share of its rate, their latencies pooled in
	// the model's (ValidateConfig.Tenants; 0 in recordings made before
	// it existed, which served one).
	Tenants   int     `json:"tenants,omitempty"`
	WarmupS   float64 `json:"warmup_s"`
	DurationS float64 `json:"duration_s"`
	Seed      uint64  `json:"seed"`
	// SimDurationS is the virtual time simulated per level when the
	// record was evaluated live (0: the default), so a replay simulates
	// the same.
	SimDurationS float64 `json:"sim_duration_s,omitempty"`
	// Profiles has one entry per model, in the order the levels list
	// them.
	Profiles []ValidateProfile `json:"profiles"`
	Levels   []RecordedLevel   `json:"levels"`
}

// RecordedLevel is one load level's measurements.
type RecordedLevel struct {
	Level float64 `json:"level"`
	Rate  float64 `json:"rate"` // per model, req/s
	// CPUBusy is the serving process's CPU over the together phase's wall
	// time and cores; OthersBusy the rest of the machine's.
	CPUBusy    float64       `json:"cpu_busy"`
	OthersBusy float64       `json:"others_busy"`
	Apps       []RecordedApp `json:"apps"`
}

// RecordedApp is one model at one level.
type RecordedApp struct {
	Model string `json:"model"`
	// AloneMs is every latency (ms) of the model served by itself at the
	// level's rate, just before the together phase; AloneScale how much
	// more CPU the process spent per request than their mean (≥ 1).
	AloneMs    []float64 `json:"alone_ms"`
	AloneScale float64   `json:"alone_scale"`
	// AloneOthersBusy is the share of all cores the machine's other
	// processes used meanwhile; absent from recordings made before it
	// was measured.
	AloneOthersBusy *float64 `json:"alone_others_busy,omitempty"`
	// TogetherMs is every answered latency with all models served at
	// once; Sent and Failed count the measured window's requests (a
	// failed one counts as infinitely slow), LagP99Ms how late the load
	// generator sent at p99 (with several tenants: all of them pooled,
	// and the latest tenant's lag).
	TogetherMs []float64 `json:"together_ms"`
	Sent       int       `json:"sent"`
	Failed     int       `json:"failed"`
	LagP99Ms   float64   `json:"lag_p99_ms"`
}

// maxRecordRate bounds a level's rate per model (req/s): the simulator
// generates rate × duration arrivals, so a damaged rate must not make a
// replay run for hours.
const maxRecordRate = 1e5

// maxRecordBytes bounds a record file read back: a 20 s level of a few
// models is tens of kilobytes.
const maxRecordBytes = 64 << 20

// roundMs keeps latencies to the microsecond, which is all a record
// needs and keeps the file small.
func roundMs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Round(x*1e3) / 1e3
	}
	return out
}

// WriteValidateRecord writes rec to path as JSON, through a
// temporary file renamed into place, so a crash leaves the previous
// file or the new one, never half of one.
func WriteValidateRecord(path string, rec ValidateRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %s: %w", path, err)
	}
	tmp, err := tempBeside(path)
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	merr := tmp.Chmod(0o644) // a record is data to share, not a secret
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, merr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("record %s: %w", path, err)
	}
	return nil
}

// tempBeside creates a temporary file in path's directory, to be renamed
// to path; RunValidateSim also calls it first to learn early that path
// cannot be written.
func tempBeside(path string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", path, err)
	}
	return f, nil
}

// ReadValidateRecord reads and checks a record WriteValidateRecord wrote.
// An error names the file and the entry at fault.
func ReadValidateRecord(path string) (ValidateRecord, error) {
	var rec ValidateRecord
	f, err := os.Open(path)
	if err != nil {
		return rec, fmt.Errorf("record: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecordBytes+1))
	if err != nil {
		return rec, fmt.Errorf("record %s: %w", path, err)
	}
	if len(b) > maxRecordBytes {
		return rec, fmt.Errorf("record %s: larger than %d MiB", path, maxRecordBytes>>20)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("record %s: %w", path, err)
	}
	if err := rec.check(); err != nil {
		return rec, fmt.Errorf("record %s: %w", path, err)
	}
	return rec, nil
}

func positive(x float64) bool { return x > 0 && finite(x) }

func (r ValidateRecord) check() error {
	switch {
	case r.CPUs <= 0 || r.CPUs > 4096:
		return fmt.Errorf("cpus %d: want 1 to 4096", r.CPUs)
	case r.Threads <= 0 || r.Concurrency <= 0 || r.Threads > 1024 || r.Concurrency > 1024:
		return fmt.Errorf("threads %d, concurrency %d: want 1 to 1024 each", r.Threads, r.Concurrency)
	case r.Tenants < 0 || r.Tenants > MaxValidateTenants:
		return fmt.Errorf("tenants %d: want 0 or 1 (one) to %d", r.Tenants, MaxValidateTenants)
	case !(r.SimDurationS >= 0) || r.SimDurationS > 1e6:
		return fmt.Errorf("sim_duration_s %v: want 0 (the default) to 1e6", r.SimDurationS)
	case len(r.Profiles) == 0:
		return fmt.Errorf("no profiles")
	case len(r.Levels) == 0:
		return fmt.Errorf("no levels")
	}
	seen := map[string]bool{}
	for i, p := range r.Profiles {
		if seen[p.Model] {
			return fmt.Errorf("profiles[%d] (%s): the model appears twice", i, p.Model)
		}
		seen[p.Model] = true
		if p.Model == "" || !positive(p.ServiceMs) || !(p.CV >= 0) || p.CV > 10 || !positive(p.Slowdown) ||
			!(p.ServedMs >= 0) || !(p.ServedCPUMs >= 0) || math.IsInf(p.ServedMs+p.ServedCPUMs, 0) {
			return fmt.Errorf("profiles[%d] (%s): service %v ms, CV %v, slowdown %v, served %v ms, CPU %v ms: want a name, a service time and slowdown > 0, a CV from 0 to 10 and served figures >= 0",
				i, p.Model, p.ServiceMs, p.CV, p.Slowdown, p.ServedMs, p.ServedCPUMs)
		}
	}
	for li, lv := range r.Levels {
		if !positive(lv.Level) || !positive(lv.Rate) || lv.Rate > maxRecordRate || len(lv.Apps) != len(r.Profiles) {
			return fmt.Errorf("levels[%d]: level %v, rate %v req/s and %d apps: want a level > 0, a rate from 0 to %g and one app per profile (%d)",
				li, lv.Level, lv.Rate, len(lv.Apps), maxRecordRate, len(r.Profiles))
		}
		for ai, a := range lv.Apps {
			at := fmt.Sprintf("levels[%d].apps[%d] (%s)", li, ai, a.Model)
			switch {
			case a.Model != r.Profiles[ai].Model:
				return fmt.Errorf("%s: the profiles list %s here", at, r.Profiles[ai].Model)
			case len(a.AloneMs) == 0 || !(a.AloneScale >= 1) || math.IsInf(a.AloneScale, 0):
				return fmt.Errorf("%s: %d latencies alone, scale %v: want some, and a scale >= 1", at, len(a.AloneMs), a.AloneScale)
			case a.AloneOthersBusy != nil && !(*a.AloneOthersBusy >= 0 && *a.AloneOthersBusy <= 1):
				return fmt.Errorf("%s: other processes %v busy while it was served alone: want a share from 0 to 1", at, *a.AloneOthersBusy)
			case a.Failed < 0 || a.Sent != len(a.TogetherMs)+a.Failed || a.Sent == 0:
				return fmt.Errorf("%s: sent %d, failed %d, %d latencies: want sent = latencies + failed > 0", at, a.Sent, a.Failed, len(a.TogetherMs))
			}
			for _, v := range [][]float64{a.AloneMs, a.TogetherMs} {
				for k, x := range v {
					if !positive(x) {
						return fmt.Errorf("%s: latency %d is %v ms: each must be > 0", at, k, x)
					}
				}
			}
		}
	}
	return nil
}

// EvaluateOptions configures EvaluateValidation.
type EvaluateOptions struct {
	// SimDuration is the virtual time simulated per level (default
	// 600s); Seed the simulations' seed (default the record's).
	SimDuration time.Duration
	Seed        uint64
}

// EvaluateValidation compares a record's measurements with the
// simulator, three ways, and with the placement's analytic model, and
// prints the tables RunValidateSim prints. It serves nothing: given the
// same record and options it prints the same figures.
func EvaluateValidation(rec ValidateRecord, opt EvaluateOptions, out io.Writer) (ValidateReport, error) {
	rep := ValidateReport{CPUs: rec.CPUs, Profiles: rec.Profiles}
	if err := rec.check(); err != nil {
		return rep, err
	}
	if opt.SimDuration <= 0 {
		opt.SimDuration = time.Duration(rec.SimDurationS * float64(time.Second))
	}
	if opt.SimDuration <= 0 {
		opt.SimDuration = 600 * time.Second
	}
	if opt.Seed == 0 {
		opt.Seed = max(rec.Seed, 1)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MODEL\tINPUT\tPROFILE MEAN ms\tCV\tP99 ms\t%d AT ONCE (x alone)\tSERVED ALONE ms (gRPC)\tCPU ms/REQUEST\n", rec.CPUs)
	var slow []float64
	profiles := sim.Profiles{}
	for _, p := range rec.Profiles {
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.2f\t%.2f\t%.2f\t%.3f\t%.3f\n", p.Model, p.Input, p.ServiceMs, p.CV, p.P99Ms, p.Slowdown, p.ServedMs, p.ServedCPUMs)
		slow = append(slow, p.Slowdown)
		profiles.Set(p.Model, "cpu", sim.Service{MeanMs: p.ServiceMs, CV: p.CV})
	}
	tw.Flush()
	fmt.Fprintln(out)

	// The scenario as the simulator sees it: this machine as one node,
	// naively (its nominal cores, the profiles alone) and calibrated by
	// what was measured alone: the cores' effective parallelism (the
	// median slowdown of one request per core running at once) and, as
	// each request's demand, what a request served alone took: the larger
	// of its latency and the CPU time it cost this process (model, gRPC
	// client and server, garbage collection), which competes for the
	// same cores.
	rep.Parallelism = min(max(float64(rec.CPUs)/median(slow), 1), float64(rec.CPUs))
	naive := cluster.Node{Name: "local", Accelerators: []cluster.Accelerator{{ID: "cpu0", Kind: "cpu", Compute: float64(rec.CPUs * rec.Threads), MemoryBytes: 1 << 30}}}
	calibrated := naive
	calibrated.Accelerators = []cluster.Accelerator{naive.Accelerators[0]}
	calibrated.Accelerators[0].Compute = rep.Parallelism * float64(rec.Threads)
	var insts []cluster.Instance
	for _, p := range rec.Profiles {
		insts = append(insts, cluster.Instance{ID: p.Model, App: p.Model, Node: "local", Accelerator: "cpu0"})
	}
	rpcProfiles := sim.Profiles{}
	cpuDemand := map[string]float64{}
	modelLoads := make([]latency.Load, 0, len(rec.Profiles))
	for _, p := range rec.Profiles {
		d := max(p.ServedCPUMs, p.ServedMs, p.ServiceMs)
		svc := sim.Service{MeanMs: d, CV: p.CV * p.ServiceMs / d}
		rpcProfiles.Set(p.Model, "cpu", svc)
		cpuDemand[p.Model] = d
		modelLoads = append(modelLoads, latency.Load{Name: p.Model, Model: p.Model,
			Profile: latency.Profile{ServiceTimeMs: svc.MeanMs, ServiceTimeCV: svc.CV}})
	}
	analytic := latency.PS{Servers: rep.Parallelism} // requests at full speed at once, as the simulator derives from Compute
	// The placement's model given what each model costs served at a light
	// load: the latencies measured alone at the lightest level's rate (the
	// transport, hand-offs and wake-ups of a served request included) as
	// the demand, on the nominal cores (cores ÷ intra-op threads servers,
	// at least one, as latency.CPUServers counts them). This is the
	// ANALYTIC column.
	light := 0
	for i, lv := range rec.Levels {
		if lv.Rate < rec.Levels[light].Rate {
			light = i
		}
	}
	lightLoads := make([]latency.Load, len(rec.Profiles))
	for i, a := range rec.Levels[light].Apps {
		m, cv := meanCV(a.AloneMs)
		lightLoads[i] = latency.Load{Name: a.Model, Model: a.Model, Profile: latency.Profile{ServiceTimeMs: m, ServiceTimeCV: cv}}
	}
	cores := cluster.Accelerator{ID: "cpu0", Kind: "cpu", Compute: float64(rec.CPUs), MemoryBytes: 1 << 30}
	lightModel := latency.PS{Servers: latency.CPUServers(rec.Threads)(&cores)}
	// The simulator given what the analytic model is given (LIGHT SIM):
	// each model's latencies served alone at the lightest level, drawn one
	// per request as work on the nominal cores (cores ÷ intra-op threads
	// at full speed at once, as the analytic model's servers), so the
	// discrete-event queue stands where the p99 formula does. This is the
	// demand `bench placement --mode real --served-demand` places with.
	lightNode := cluster.Node{Name: "local", Accelerators: []cluster.Accelerator{cores}}
	lightProfiles := sim.Profiles{}
	for i, a := range rec.Levels[light].Apps {
		lightProfiles.Set(a.Model, "cpu", sim.Service{MeanMs: lightLoads[i].Profile.ServiceTimeMs, SamplesMs: a.AloneMs})
	}
	fmt.Fprintf(out, "calibrated: %d cores give %.2f requests' worth of full speed at once (median slowdown %.2fx with %d at once); demand = a request served alone (the larger of its latency and its CPU time)\n\n",
		rec.CPUs, rep.Parallelism, median(slow), rec.CPUs)
	var errsLight []float64
	inCI, modelInCI := 0, 0 // pairs whose light-load simulated / analytic p99 is inside the measured p99's 95 % interval
	var errs, errsRPC, errsEmp, errsModel, errsModelMean, errsDelay, errsDelayMean, errsCal, errsCalMean []float64
	for li, rl := range rec.Levels {
		lv := ValidateLevel{Level: rl.Level, Rate: rl.Rate, CPUBusy: rl.CPUBusy, OthersBusy: rl.OthersBusy}
		var apps []sim.App
		empProfiles := sim.Profiles{}
		delayLoads := make([]latency.Load, len(rl.Apps))
		alone := make([]loadResult, len(rl.Apps))
		measured := make([]loadResult, len(rl.Apps))
		for i, ra := range rl.Apps {
			apps = append(apps, sim.App{Name: ra.Model, Model: ra.Model, Rate: rl.Rate, ObjectiveMs: math.MaxFloat64})
			alone[i].summarise(ra.AloneMs, nil)
			measured[i].sent, measured[i].failed = ra.Sent, ra.Failed
			measured[i].summarise(ra.TogetherMs, nil)
			measured[i].lagP99Ms = ra.LagP99Ms
			// The empirical simulation draws the (work, delay) pairs;
			// the analytic model takes their moments.
			samples, delays := splitAlone(ra.AloneMs, ra.AloneScale, cpuDemand[ra.Model])
			wm, wcv := meanCV(samples)
			dm, dcv := meanCV(delays)
			empProfiles.Set(ra.Model, "cpu", sim.Service{MeanMs: wm + dm, SamplesMs: samples, SampleDelaysMs: delays})
			delayLoads[i] = latency.Load{Name: ra.Model, Model: ra.Model, Rate: rl.Rate,
				Profile: latency.Profile{ServiceTimeMs: wm, ServiceTimeCV: wcv, DelayMs: dm, DelayCV: dcv}}
		}
		sc := sim.Scenario{Nodes: []cluster.Node{naive}, Instances: insts, Apps: apps, Profiles: profiles,
			Duration: opt.SimDuration, Warmup: 10 * time.Second, Seed: opt.Seed + uint64(li),
			Concurrency: rec.Concurrency, JobThreads: rec.Threads}
		simRes, err := sim.Run(sc)
		if err != nil {
			return rep, err
		}
		sc.Profiles = rpcProfiles
		sc.Nodes = []cluster.Node{calibrated}
		rpcRes, err := sim.Run(sc)
		if err != nil {
			return rep, err
		}
		sc.Profiles = empProfiles
		empRes, err := sim.Run(sc)
		if err != nil {
			return rep, err
		}
		sc.Profiles = lightProfiles
		sc.Nodes = []cluster.Node{lightNode}
		lightRes, err := sim.Run(sc)
		if err != nil {
			return rep, err
		}
		for i := range modelLoads {
			modelLoads[i].Rate = rl.Rate
		}
		calPreds, err := analytic.Predict(modelLoads)
		if err != nil {
			return rep, err
		}
		for i := range lightLoads {
			lightLoads[i].Rate = rl.Rate
		}
		preds, err := lightModel.Predict(lightLoads)
		if err != nil {
			return rep, err
		}
		delayPreds, err := analytic.Predict(delayLoads)
		if err != nil {
			return rep, err
		}
		for i, ra := range rl.Apps {
			ms, rs, es := simRes.Apps[i], rpcRes.Apps[i], empRes.Apps[i]
			meas := measured[i]
			a := ValidateApp{Model: ra.Model, Rate: rl.Rate, Requests: meas.sent, Failed: meas.failed,
				MeasuredMeanMs: meas.meanMs, MeasuredP99Ms: meas.p99Ms, GeneratorLagP99Ms: meas.lagP99Ms,
				SimMeanMs: ms.MeanMs, SimP99Ms: ms.P99Ms, RPCMeanMs: rs.MeanMs, RPCP99Ms: rs.P99Ms,
				AloneMeanMs: alone[i].meanMs, AloneP99Ms: alone[i].p99Ms, EmpMeanMs: es.MeanMs, EmpP99Ms: es.P99Ms,
				ModelMeanMs: preds[i].MeanMs, ModelP99Ms: preds[i].P99Ms,
				CalModelMeanMs: calPreds[i].MeanMs, CalModelP99Ms: calPreds[i].P99Ms,
				DelayModelMeanMs: delayPreds[i].MeanMs, DelayModelP99Ms: delayPreds[i].P99Ms}
			a.ErrP99Model, a.ErrMeanModel = relErr(a.ModelP99Ms, a.MeasuredP99Ms), relErr(a.ModelMeanMs, a.MeasuredMeanMs)
			ls := lightRes.Apps[i]
			a.LightMeanMs, a.LightP99Ms = ls.MeanMs, ls.P99Ms
			a.ErrP99Light, a.ErrMeanLight = relErr(a.LightP99Ms, a.MeasuredP99Ms), relErr(a.LightMeanMs, a.MeasuredMeanMs)
			a.MeasuredP99LowMs, a.MeasuredP99HighMs = meas.p99LowMs, meas.p99HighMs
			inside := func(v float64) bool { return meas.p99HighMs > 0 && v >= meas.p99LowMs && v <= meas.p99HighMs }
			a.LightInCI, a.ModelInCI = inside(a.LightP99Ms), inside(a.ModelP99Ms)
			if a.LightInCI {
				inCI++
			}
			if a.ModelInCI {
				modelInCI++
			}
			errsLight = append(errsLight, math.Abs(a.ErrP99Light))
			errsModel, errsModelMean = append(errsModel, math.Abs(a.ErrP99Model)), append(errsModelMean, math.Abs(a.ErrMeanModel))
			errsCal = append(errsCal, math.Abs(relErr(a.CalModelP99Ms, a.MeasuredP99Ms)))
			errsCalMean = append(errsCalMean, math.Abs(relErr(a.CalModelMeanMs, a.MeasuredMeanMs)))
			errsDelay = append(errsDelay, math.Abs(relErr(a.DelayModelP99Ms, a.MeasuredP99Ms)))
			errsDelayMean = append(errsDelayMean, math.Abs(relErr(a.DelayModelMeanMs, a.MeasuredMeanMs)))
			a.ErrP99, a.ErrP99RPC, a.ErrP99Emp = relErr(a.SimP99Ms, a.MeasuredP99Ms), relErr(a.RPCP99Ms, a.MeasuredP99Ms), relErr(a.EmpP99Ms, a.MeasuredP99Ms)
			a.ErrMean, a.ErrMeanRPC, a.ErrMeanEmp = relErr(a.SimMeanMs, a.MeasuredMeanMs), relErr(a.RPCMeanMs, a.MeasuredMeanMs), relErr(a.EmpMeanMs, a.MeasuredMeanMs)
			errs, errsRPC, errsEmp = append(errs, math.Abs(a.ErrP99)), append(errsRPC, math.Abs(a.ErrP99RPC)), append(errsEmp, math.Abs(a.ErrP99Emp))
			lv.Apps = append(lv.Apps, a)
		}
		rep.Levels = append(rep.Levels, lv)
		fmt.Fprintf(out, "level %d/%d: the models' work is %.0f %% of %d cores: %.1f req/s per model (%.1f in all); CPU busy: this process %.0f %%, other processes %.0f %%\n",
			li+1, len(rec.Levels), rl.Level*100, rec.CPUs, rl.Rate, rl.Rate*float64(len(rl.Apps)), 100*lv.CPUBusy, 100*lv.OthersBusy)
		if alone, ok := aloneOthersBusy(rl); ok {
			fmt.Fprintf(out, "  while each model was served alone, other processes used up to %.0f %%\n", 100*alone)
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "MODEL\tREQUESTS\tMEASURED mean ms\tp99 ms (95 %% CI)\tALONE mean ms\tp99 ms\tNAIVE SIM p99 ms\tERR\tCALIBRATED SIM p99 ms\tERR\tEMPIRICAL SIM mean ms\tp99 ms\tERR mean\tERR p99\tANALYTIC mean ms\tp99 ms\tERR mean\tERR p99\tIN p99 CI\tLIGHT SIM mean ms\tp99 ms\tERR mean\tERR p99\tIN p99 CI\tCLIENT LAG p99 ms\n")
		for _, a := range lv.Apps {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f (%.2f–%.2f)\t%.2f\t%.2f\t%.2f\t%+.1f%%\t%.2f\t%+.1f%%\t%.2f\t%.2f\t%+.1f%%\t%+.1f%%\t%.2f\t%.2f\t%+.1f%%\t%+.1f%%\t%s\t%.2f\t%.2f\t%+.1f%%\t%+.1f%%\t%s\t%.2f\n", a.Model, a.Requests,
				a.MeasuredMeanMs, a.MeasuredP99Ms, a.MeasuredP99LowMs, a.MeasuredP99HighMs, a.AloneMeanMs, a.AloneP99Ms, a.SimP99Ms, 100*a.ErrP99,
				a.RPCP99Ms, 100*a.ErrP99RPC, a.EmpMeanMs, a.EmpP99Ms, 100*a.ErrMeanEmp, 100*a.ErrP99Emp,
				a.ModelMeanMs, a.ModelP99Ms, 100*a.ErrMeanModel, 100*a.ErrP99Model, yesNo(a.ModelInCI),
				a.LightMeanMs, a.LightP99Ms, 100*a.ErrMeanLight, 100*a.ErrP99Light, yesNo(a.LightInCI), a.GeneratorLagP99Ms)
		}
		tw.Flush()
		fmt.Fprintln(out)
	}
	rep.MeanAbsErrP99, rep.MaxAbsErrP99 = meanMax(errs)
	rep.MeanAbsErrP99RPC, rep.MaxAbsErrP99RPC = meanMax(errsRPC)
	rep.MeanAbsErrP99Emp, rep.MaxAbsErrP99Emp = meanMax(errsEmp)
	rep.MeanAbsErrP99Model, rep.MaxAbsErrP99Model = meanMax(errsModel)
	rep.MeanAbsErrMeanModel, rep.MaxAbsErrMeanModel = meanMax(errsModelMean)
	rep.MeanAbsErrP99CalModel, _ = meanMax(errsCal)
	rep.MeanAbsErrMeanCalModel, _ = meanMax(errsCalMean)
	rep.MeanAbsErrP99Light, rep.MaxAbsErrP99Light = meanMax(errsLight)
	rep.LightInCI, rep.ModelInCI, rep.Pairs = inCI, modelInCI, len(errsLight)
	rep.MeanAbsErrP99DelayModel, _ = meanMax(errsDelay)
	rep.MeanAbsErrMeanDelayModel, _ = meanMax(errsDelayMean)
	fmt.Fprintf(out, "ALONE: the model served by itself at the same rate, just before. NAIVE SIM: the nominal cores, the profiles' mean and CV. CALIBRATED SIM: the cores' effective parallelism, and the mean of sequential requests served alone as the demand. EMPIRICAL SIM: the effective parallelism, and the ALONE latencies themselves: each up to the calibrated demand is work on the cores, the rest a delay that occupies none. ANALYTIC: the placement's latency model (latency.PS, cores ÷ intra-op threads servers) with each model's demand its ALONE latencies at the lightest level (level %d). LIGHT SIM: the simulator given what ANALYTIC is given (those latencies drawn one per request as work on the same servers). IN p99 CI: whether the p99 to its left lies inside the measured p99's 95 %% confidence interval (order statistics), i.e. whether its error is within what the measurement's own sampling allows.\n", light+1)
	fmt.Fprintf(out, "analytic model (latency.PS, %g servers, demand served alone at %.1f req/s) on this machine's measurements: mean error mean %.1f %%, max %.1f %%; p99 error mean %.1f %%, max %.1f %%; target %.0f %% (with the calibrated demands and %.2f servers instead: mean error mean %.1f %%, p99 error mean %.1f %%; given each level's ALONE latencies split into work and delay: mean error mean %.1f %%, p99 error mean %.1f %%)\n",
		lightModel.Servers, rec.Levels[light].Rate, 100*rep.MeanAbsErrMeanModel, 100*rep.MaxAbsErrMeanModel, 100*rep.MeanAbsErrP99Model, 100*rep.MaxAbsErrP99Model, 100*TargetModelError,
		analytic.Servers, 100*rep.MeanAbsErrMeanCalModel, 100*rep.MeanAbsErrP99CalModel,
		100*rep.MeanAbsErrMeanDelayModel, 100*rep.MeanAbsErrP99DelayModel)
	fmt.Fprintf(out, "light-load simulation (the simulator with the analytic model's demands): p99 error mean %.1f %%, max %.1f %%; target %.0f %%. Inside the measured p99's 95 %% interval: light-load simulation in %d, analytic model in %d of %d (model, level) pairs\n",
		100*rep.MeanAbsErrP99Light, 100*rep.MaxAbsErrP99Light, 100*TargetSimP99Error, rep.LightInCI, rep.ModelInCI, rep.Pairs)
	fmt.Fprintf(out, "validate-sim: empirical p99 error mean %.1f %%, max %.1f %% (calibrated: mean %.1f %%, max %.1f %%; naive: mean %.1f %%, max %.1f %%) over %d (model, level) pairs; target %.0f %%\n",
		100*rep.MeanAbsErrP99Emp, 100*rep.MaxAbsErrP99Emp, 100*rep.MeanAbsErrP99RPC, 100*rep.MaxAbsErrP99RPC, 100*rep.MeanAbsErrP99, 100*rep.MaxAbsErrP99, len(errs), 100*TargetSimP99Error)
	return rep, nil
}

// aloneOthersBusy is the most CPU other processes used while one of the
// level's models was served alone, where the recording measured it.
func aloneOthersBusy(l RecordedLevel) (float64, bool) {
	most, ok := 0.0, false
	for _, a := range l.Apps {
		if a.AloneOthersBusy != nil {
			most, ok = max(most, *a.AloneOthersBusy), true
		}
	}
	return most, ok
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
