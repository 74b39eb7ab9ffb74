package sim

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSamplerMoments(t *testing.T) {
	for _, d := range []Demand{Gamma, Lognormal} {
		for _, cv := range []float64{0, 0.3, 1, 2} {
			s := newSampler(0.01, cv, d)
			r := rand.New(rand.NewPCG(1, 2))
			const n = 400000
			var sum, sq float64
			for range n {
				x := s.draw(r)
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
