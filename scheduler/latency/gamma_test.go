package latency

import "math"

// gammaP is the regularised lower incomplete gamma function P(a, x): the
// probability that a Gamma(a, 1) variable is at most x. It uses the
// power series for x < a+1 and Lentz's continued fraction for the upper
// tail otherwise (the textbook split, where each converges fast).
func gammaP(a, x float64) float64 {
	if x <= 0 {
		return 0
	}
	lg, _ := math.Lgamma(a)
	pre := math.Exp(a*math.Log(x) - x - lg)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 500; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return math.Min(1, pre*sum)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 500; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Max(0, 1-pre*h)
}

// gammaQuantile is the p-quantile of a gamma distribution with the given
// mean and variance (shape mean²/var, scale var/mean), found by bisection
// on gammaP to a relative precision of 1e-6.
func gammaQuantile(mean, variance, p float64) float64 {
	if variance <= 0 {
		return mean
	}
	shape := mean * mean / variance
	scale := variance / mean
	lo, hi := 0.0, shape+10*math.Sqrt(shape)+10
	for gammaP(shape, hi) < p {
		lo, hi = hi, 2*hi
	}
	for hi-lo > 1e-7*hi {
		m := (lo + hi) / 2
		if gammaP(shape, m) < p {
			lo = m
		} else {
			hi = m
		}
	}
	return (lo + hi) / 2 * scale
}
