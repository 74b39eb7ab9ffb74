package latency

import "testing"

// The models' cost per prediction: PS and FCFS run in the placement
// checker once per candidate accelerator; Batch is for one slice.

func benchLoads(n int) []Load {
	loads := make([]Load, n)
	for i := range loads {
		loads[i] = Load{Name: "a", Model: string(rune('a' + i)), Rate: 5, Profile: Profile{ServiceTimeMs: 10 + float64(i), SwitchCostMs: 8}}
	}
	return loads
}

func BenchmarkPS5(b *testing.B) {
	loads := benchLoads(5)
	for b.Loop() {
		if _, err := (PS{}).Predict(loads); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFCFS5(b *testing.B) {
	loads := benchLoads(5)
	for b.Loop() {
		if _, err := (FCFS{}).Predict(loads); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBatch8(b *testing.B) {
	loads := []Load{{Name: "a", Rate: 200, Profile: Profile{ServiceTimeMs: 10, BatchServiceMs: map[int]float64{2: 12, 4: 16, 8: 24}}}}
	for b.Loop() {
		if _, err := (Batch{MaxBatch: 8, MaxDelayMs: 5}).Predict(loads); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPS5Delay is BenchmarkPS5 with profiles that carry a delay (as
// validate-sim's served-alone profiles do): each p99 is then the root of
// a mixed tail.
func BenchmarkPS5Delay(b *testing.B) {
	loads := benchLoads(5)
	for i := range loads {
		loads[i].Profile.DelayMs, loads[i].Profile.DelayCV = 1.5, 0.8
	}
	for b.Loop() {
		if _, err := (PS{}).Predict(loads); err != nil {
			b.Fatal(err)
		}
	}
}
