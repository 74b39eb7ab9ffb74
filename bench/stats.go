package bench

import (
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of d, which it
// sorts in place. It is 0 for no samples.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	rank := int(math.Ceil(p / 100 * float64(len(d))))
	rank = min(max(rank, 1), len(d))
	return d[rank-1]
}

// median is the median of v (the mean of the two middle values for an even
// count), leaving v unchanged. It is 0 for no values.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianDuration is median over durations.
func medianDuration(d []time.Duration) time.Duration {
	v := make([]float64, len(d))
	for i, x := range d {
		v[i] = float64(x)
	}
	return time.Duration(math.Round(median(v)))
}

// spread is (max-min)/median of v, a rough noise figure across rounds; 0
// when there are fewer than two values or the median is 0.
func spread(v []float64) float64 {
	m := median(v)
	if len(v) < 2 || m == 0 {
		return 0
	}
	return (slices.Max(v) - slices.Min(v)) / m
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// rotate returns v rotated left by k, so that the mode measured first
// changes from round to round and no mode always runs right after another.
func rotate[T any](v []T, k int) []T {
	if len(v) == 0 {
		return nil
	}
	k %= len(v)
	return append(slices.Clone(v[k:]), v[:k]...)
}

// bestK is the key with the highest value, preferring the smaller key on a
// tie (fewer executors for the same throughput). It is 0 for an empty map.
func bestK(tput map[int]float64) int {
	best := 0
	for k, v := range tput {
		if best == 0 || v > tput[best] || (v == tput[best] && k < best) {
			best = k
		}
	}
	return best
}

// meanCV is the mean and coefficient of variation of v (0, 0 when empty).
func meanCV(v []float64) (mean, cv float64) {
	if len(v) == 0 {
		return 0, 0
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if mean <= 0 {
		return mean, 0
	}
	ss := 0.0
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss/float64(len(v))) / mean
}
