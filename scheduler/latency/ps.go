package latency

import (
	"math"
	"slices"
)

// PS models an accelerator that runs co-located models concurrently and
// shares itself among the requests in progress (a GPU or CPU running
// several models at once): an open multi-class M/G/1 processor-sharing
// queue. With Poisson arrivals λ_i (per ms), mean service times s_i
// alone, and ρ = Σ λ_i·s_i < 1, the mean response of class i is
// T_i = s_i/(1−ρ), whatever the service-time distributions. The p99 is an
// approximation; see doc.go and psP99With.
//
// Servers > 1 models an accelerator that runs that many requests at full
// speed at once and shares itself beyond (a CPU of C cores whose requests
// each use t intra-op threads: C/t servers; each of n requests progresses
// at min(1, Servers/n)): an M/G/c processor-sharing queue, whose number
// in system is that of M/M/c (the queue is symmetric, so insensitive to
// the service distribution). Utilisation is then Σ λ_i·s_i / Servers, a
// request's mean response s_i·(1 + C(c, a)/(c(1−ρ))) with C Erlang's
// waiting probability, and the p99 that of the single processor-sharing
// server with the same mean slowdown (psShape). Servers ≤ 1 is the single
// server.
type PS struct {
	Servers float64
}

// Name is "ps".
func (PS) Name() string { return "ps" }

// Predict implements Model.
func (ps PS) Predict(apps []Load) ([]Prediction, error) {
	lam, err := validate("ps", apps)
	if err != nil {
		return nil, err
	}
	out := make([]Prediction, len(apps))
	total, rho := 0.0, 0.0
	for i, a := range apps {
		total += lam[i]
		rho += lam[i] * a.Profile.ServiceTimeMs
	}
	sh := psShape(rho, total, ps.Servers)
	share := func(i int) float64 { return lam[i] * apps[i].Profile.ServiceTimeMs / sh.servers }
	if sh.util >= 1 {
		return unstable(apps, out, sh.util, share), nil
	}
	for i, a := range apps {
		x, cv := a.Profile.ServiceTimeMs, a.Profile.ServiceTimeCV
		out[i] = Prediction{
			Name:        a.Name,
			MeanMs:      a.Profile.DelayMs + sh.mean(x),
			P99Ms:       psP99Delay(psOwn(x, cv), x, cv, a.Profile.DelayMs, a.Profile.DelayCV, sh.rho, sh.lam, sh.meanS),
			Utilisation: sh.util,
			Share:       share(i),
			Stable:      true,
		}
	}
	return out, nil
}

// shape is what the processor-sharing formulas need of an accelerator's
// load: its utilisation per server, and the single-server utilisation
// rho, arrival rate lam (per ms) and mean size meanS that psP99With is given.
type shape struct {
	servers, util  float64
	rho, lam       float64
	meanS, slowdwn float64 // slowdwn: mean response ÷ size
}

func (sh shape) mean(x float64) float64 {
	if sh.servers <= 1 {
		return x / (1 - sh.rho)
	}
	return x * sh.slowdwn
}

// psShape describes a load of total work rho = Σ λ_i·s_i and total rate
// lam (per ms) on servers servers. One server (or fewer) is the M/G/1-PS
// queue itself. With c > 1 the mean slowdown is f = 1 + C(c, rho)/(c(1−u)),
// u = rho/c, and the p99 is taken from the single server whose slowdown
// 1/(1−ρ') is f: ρ' = 1 − 1/f, at the same mean size (λ' = ρ'/meanS). So a
// lightly loaded multi-core CPU looks nearly idle to the tail formula, as
// its requests rarely wait for a core.
func psShape(rho, lam, servers float64) shape {
	sh := shape{servers: 1, util: rho, rho: rho, lam: lam}
	if lam > 0 {
		sh.meanS = rho / lam
	}
	if servers <= 1 || rho <= 0 {
		if servers > 1 {
			sh.servers, sh.util = servers, rho/servers
		}
		if rho < 1 {
			sh.slowdwn = 1 / (1 - rho)
		}
		return sh
	}
	sh.servers = servers
	sh.util = rho / servers
	if sh.util >= 1 {
		return sh
	}
	sh.slowdwn = 1 + erlangC(servers, rho)/(servers*(1-sh.util))
	sh.rho = 1 - 1/sh.slowdwn
	sh.lam = sh.rho / sh.meanS
	return sh
}

// erlangC is the probability that an arrival waits in an M/M/c queue
// with offered load a = λ·s (a < c); a fractional c interpolates linearly
// between the integers around it.
func erlangC(c, a float64) float64 {
	lo := math.Floor(c)
	if c == lo {
		return erlangCInt(int(lo), a)
	}
	hi := lo + 1
	w := c - lo
	cl := 1.0 // a floor(c)-server queue may be overloaded: it always waits
	if a < lo {
		cl = erlangCInt(int(lo), a)
	}
	return (1-w)*cl + w*erlangCInt(int(hi), a)
}

// erlangCInt is Erlang's C formula for c servers and load a < c, by the
// stable recurrence on Erlang's B: B(0) = 1, B(k) = a·B(k−1)/(k + a·B(k−1)),
// C = B(c)/(1 − (a/c)(1 − B(c))).
func erlangCInt(c int, a float64) float64 {
	b := 1.0
	for k := 1; k <= c; k++ {
		b = a * b / (float64(k) + a*b)
	}
	return b / (1 - a/float64(c)*(1-b))
}

// psOwn is the p99 of a job's own size alone: x when deterministic, else
// the gamma quantile of mean x and coefficient of variation cv.
func psOwn(x, cv float64) float64 {
	if cv > 0 {
		return whQuantile(x, cv*cv*x*x, 0.99)
	}
	return x
}

// psP99With approximates the 99th percentile of the response time V of a
// job of mean size x (coefficient of variation cv) in an M/G/1-PS queue
// at utilisation rho, total arrival rate lam (per ms) and mean job size
// meanS over all classes.
//
// V = x + E, where the excess E (the service given to other jobs while
// this one is present) is 0 exactly when the job finds the server empty
// and no job arrives during its x: P(E = 0) = π0 = (1−ρ)·e^{−λx}. E's
// mean is T − x with T = x/(1−ρ) exact; its variance is that of V, taken
// from the M/M/1-PS result of Coffman, Muntz and Trotter (1970) for a job
// of size x with mean background size meanS,
//
//	Var V(x) = 2ρ·(e^{−a} − 1 + a)/(μ²(1−ρ)⁴),  a = μ(1−ρ)x, μ = 1/meanS,
//
// plus (cv·x)²/(1−ρ)² for the job's own size. Given E > 0, E is taken to
// be gamma distributed with those conditional moments, so the p99 of V is
// x plus the gamma's quantile at 1 − 0.01/(1−π0), computed with the
// Wilson–Hilferty approximation. Against a discrete-event simulation of
// deterministic-size mixes (latency tests) it is within ±6 % at
// ρ = 0.3…0.9. own is psOwn(x, cv), which depends on the job alone: the
// latency checker computes it once per tenant.
func psP99With(own, x, cv, rho, lam, meanS float64) float64 {
	busy, m1, vc := psExcess(x, cv, rho, lam, meanS)
	if busy <= 0.01 {
		return own
	}
	q := x + whQuantile(m1, vc, 1-0.01/busy)
	return math.Max(q, own)
}

// psExcess describes the excess E of a job of mean size x (see psP99With): it
// is positive with probability busy, and then has mean m1 and variance vc.
func psExcess(x, cv, rho, lam, meanS float64) (busy, m1, vc float64) {
	if rho <= 0 || lam <= 0 {
		return 0, 0, 0
	}
	t := x / (1 - rho)
	pi0 := (1 - rho) * math.Exp(-lam*x)
	busy = 1 - pi0
	if busy <= 0 {
		return 0, 0, 0
	}
	mu := 1 / meanS
	a := mu * (1 - rho) * x
	omr := 1 - rho
	v := 2 * rho * (math.Expm1(-a) + a) / (mu * mu * omr * omr * omr * omr)
	v += cv * cv * x * x / (omr * omr)
	ex := t - x
	m1 = ex / busy
	m2 := (v + ex*ex) / busy
	return busy, m1, m2 - m1*m1
}

// psP99Delay is the p99 of D + V: V the processor-sharing response of
// psP99With and D an independent delay of mean dm and coefficient of
// variation dcv that occupies no accelerator (Profile.DelayMs). With
// dm = 0 it is psP99With. Otherwise V − x = E is 0 with probability
// 1 − busy and else gamma (psExcess), D is gamma, the job's own size
// varies about x as psOwn assumes, and D + E given E > 0 is taken to be
// gamma with the summed moments; the tail
//
//	P(D + E > y) = (1−busy)·P(D' > y) + busy·P(D' + E' > y)
//
// (D' = D plus the own size's variation, where E does not carry it) is
// solved for 0.01 on the Wilson–Hilferty tails.
func psP99Delay(own, x, cv, dm, dcv, rho, lam, meanS float64) float64 {
	if dm <= 0 {
		return psP99With(own, x, cv, rho, lam, meanS)
	}
	busy, m1, vc := psExcess(x, cv, rho, lam, meanS)
	dv := dcv * dcv * dm * dm
	idle := dv + cv*cv*x*x // D' with the own size's variation
	tail := func(y float64) float64 {
		p := (1 - busy) * whTail(dm, idle, y)
		if busy > 0 {
			p += busy * whTail(dm+m1, dv+vc, y)
		}
		return p
	}
	// The root of tail(y) = 0.01, to a part in a million (far finer than
	// the model's own error), by regula falsi with the Illinois rule on
	// the tail's logarithm, which is near linear in y. It starts from the
	// two parts' own p99s, which bracket the mixture's: a few evaluations
	// of the tail where 60 bisections from 0 were taken before. The bracket is kept
	// throughout, and hi is always a y the tail is at or under 0.01 at.
	f := func(y float64) float64 { return math.Log(max(tail(y), 1e-300)) - math.Log(0.01) }
	qIdle, qBusy := whQuantile(dm, idle, 0.99), whQuantile(dm+m1, dv+vc, 0.99)
	lo, hi := min(qIdle, qBusy), max(qIdle, qBusy, dm+m1+1)
	fhi := f(hi)
	for fhi > 0 {
		hi *= 2
		fhi = f(hi)
	}
	flo := f(lo)
	if !(flo > 0) || lo >= hi {
		lo = 0
		flo = f(lo)
	}
	for side, i := 0, 0; hi-lo > 1e-6*hi && i < 200; i++ {
		mid := (lo*fhi - hi*flo) / (fhi - flo)
		if !(mid > lo && mid < hi) {
			mid = (lo + hi) / 2
		}
		if fm := f(mid); fm > 0 {
			lo, flo = mid, fm
			if side < 0 {
				fhi /= 2
			}
			side = -1
		} else {
			hi, fhi = mid, fm
			if side > 0 {
				flo /= 2
			}
			side = 1
		}
	}
	return math.Max(x+hi, own+dm)
}

// whTail is P(G > y) for G gamma with the given mean and variance, by the
// Wilson–Hilferty approximation whQuantile inverts; a variance of 0 is a
// constant.
func whTail(mean, variance, y float64) float64 {
	if variance <= 0 || mean <= 0 {
		if y < mean {
			return 1
		}
		return 0
	}
	if y <= 0 {
		return 1
	}
	k := mean * mean / variance
	s := math.Sqrt(1 / (9 * k))
	z := (math.Cbrt(y/mean) - (1 - 1/(9*k))) / s
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// whQuantile is the p-quantile of a gamma distribution with the given
// mean and variance by the Wilson–Hilferty cube-root normal
// approximation: shape k = mean²/var, q = mean·(1 − 1/(9k) + z·√(1/(9k)))³
// with z the standard normal p-quantile. Within 3 % of the exact quantile
// for k ≥ 0.5 and p ≤ 0.999 (TestWilsonHilferty: within 3.5 %); never negative.
func whQuantile(mean, variance, p float64) float64 {
	if variance <= 0 || mean <= 0 {
		return math.Max(mean, 0)
	}
	if p <= 0 {
		return 0
	}
	k := mean * mean / variance
	z := math.Sqrt2 * math.Erfinv(2*p-1)
	c := 1 - 1/(9*k) + z*math.Sqrt(1/(9*k))
	if c <= 0 {
		return 0
	}
	return mean * c * c * c
}

// PSConcurrent predicts the response times in the closed view of
// processor sharing that the Ibis GPU validation measures: n requests of
// every profile start together on an idle accelerator that shares itself
// equally among the requests in progress, and nothing else arrives. It
// returns, per profile, the time its requests complete (ms).
//
// Sorting the m = n·len(profiles) jobs by service time x_(1) ≤ … ≤ x_(m),
// the k-th completes at C_k = C_{k−1} + (m−k+1)·(x_(k) − x_(k−1)): while k−1
// jobs are done, each of the m−k+1 left gets 1/(m−k+1) of the accelerator.
// So n equal jobs each take n times as long as alone, and a short job
// beside long ones is slowed by about the number of jobs running.
func PSConcurrent(profiles []Profile, n int) []float64 {
	if n < 1 {
		n = 1
	}
	order := make([]int, len(profiles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return compareFloat(profiles[a].ServiceTimeMs, profiles[b].ServiceTimeMs)
	})
	out := make([]float64, len(profiles))
	m := n * len(profiles)
	done, prev, now := 0, 0.0, 0.0
	for _, i := range order {
		x := profiles[i].ServiceTimeMs
		now += float64(m-done) * (x - prev)
		prev = x
		done += n
		out[i] = now
	}
	return out
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
