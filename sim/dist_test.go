package sim

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSamplerMoments(t *testing.T) {
	for _, d := range []Demand{Gamma, Lognormal} {
		for _, cv := range []float64{0, 0.3, 1, 2} {
			s := newSampler(0.01, cv, d, nil, nil)
			r := rand.New(rand.NewPCG(1, 2))
			const n = 400000
			var sum, sq float64
			for range n {
				x, _ := s.drawDelay(r)
				if !(x >= 0) {
					t.Fatalf("%v cv %v: drew %v", d, cv, x)
				}
				sum += x
				sq += x * x
			}
			mean := sum / n
			sd := math.Sqrt(max(sq/n-mean*mean, 0))
			if math.Abs(mean-0.01) > 0.01*0.02 || math.Abs(sd/mean-cv) > 0.05*max(cv, 0.1) {
				t.Errorf("%v cv %v: mean %.5f cv %.3f", d, cv, mean, sd/mean)
			}
		}
	}
}

// TestSamplerEmpirical: an empirical distribution draws only its own
// values, each about equally often, whatever the mean and CV say.
func TestSamplerEmpirical(t *testing.T) {
	s := newSampler(1, 5, Gamma, []float64{1, 3, 8}, nil)
	r := rand.New(rand.NewPCG(3, 4))
	seen := map[float64]int{}
	const n = 30000
	for range n {
		x, delay := s.drawDelay(r)
		if delay != 0 {
			t.Fatalf("delay %v without delays", delay)
		}
		seen[x]++
	}
	if len(seen) != 3 {
		t.Fatalf("drew %d distinct values, want the 3 samples: %v", len(seen), seen)
	}
	for _, v := range []float64{0.001, 0.003, 0.008} {
		if c := seen[v]; math.Abs(float64(c)-n/3) > 0.05*n/3 {
			t.Errorf("sample %v s drawn %d times of %d, want about %d", v, c, n, n/3)
		}
	}
}
