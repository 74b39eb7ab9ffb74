package bench

import (
	"fmt"
	"strings"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/scheduler"
)

// Policies resolves --policy: "all" or a comma-separated list of names.
func Policies(names string, w *Workload) ([]PlacementPolicy, error) {
	all := []PlacementPolicy{
		{Name: "binpack", Knapsack: true, Policy: scheduler.BinPackPolicy()},
	}
	if names == "" || names == "all" {
		return all, nil
	}
	var out []PlacementPolicy
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, p := range all {
			if p.Name == n {
				out = append(out, p)
				found = true
			}
		}
		if !found {
			return nil, errdefs.Invalid(fmt.Sprintf("--policy: unknown policy %q", n))
		}
	}
	return out, nil
}
