package scheduler_test

import (
	"slices"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

func TestChooseRemovals(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := func(id, node, accel string, mem int64, age int) cluster.Instance {
		return cluster.Instance{ID: id, App: "x", Node: node, Accelerator: accel, MemoryBytes: mem, Created: t0.Add(time.Duration(-age) * time.Hour)}
	}
	// x runs: a on down n1; b, c on n2 (together); d on busy n3; e on
	// quiet n4; f on a node that left; g on an accelerator n4 lacks.
	a := inst("a", "n1", "gpu0", gib, 1)
	b := inst("b", "n2", "gpu0", gib, 5)
	c := inst("c", "n2", "gpu1", gib, 1)
	d := inst("d", "n3", "gpu0", gib, 3)
	e := inst("e", "n4", "gpu0", gib, 3)
	f := inst("f", "gone", "gpu0", gib, 9)
	g := inst("g", "n4", "gpu7", gib, 9)
	addAll := func(n scheduler.NodeState, ins ...cluster.Instance) scheduler.NodeState {
		n.Instances = append(n.Instances, ins...)
		return n
	}
	s, err := scheduler.Prepare(scheduler.Snapshot{Nodes: []scheduler.NodeState{
		down(addAll(node("n1", gpu("gpu0", 8*gib)), a)),
		addAll(node("n2", gpu("gpu0", 8*gib), gpu("gpu1", 8*gib)), b, c),
		running(addAll(node("n3", gpu("gpu0", 8*gib)), d), "other", "gpu0", 5*gib),
		addAll(node("n4", gpu("gpu0", 8*gib)), e, g),
	}})
	if err != nil {
		t.Fatal(err)
	}
	all := []cluster.Instance{a, b, c, d, e, f, g}
	tests := []struct {
		target int
		want   []string
	}{
		{7, nil},
		{10, nil},
		{6, []string{"a"}},                     // cannot serve; the newest of those first
		{4, []string{"a", "g", "f"}},           // f and g tie on Created: greatest ID
		{3, []string{"a", "g", "f", "c"}},      // n2 runs two: the newer goes
		{2, []string{"a", "g", "f", "c", "d"}}, // n3 is 75 % reserved
		{0, []string{"a", "g", "f", "c", "d", "e", "b"}}, // equal load: the newer first
		{-1, []string{"a", "g", "f", "c", "d", "e", "b"}},
	}
	for _, tc := range tests {
		rs := s.ChooseRemovals(all, tc.target)
		var got []string
		for _, r := range rs {
			got = append(got, r.Instance.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("target %d: removes %v, want %v", tc.target, got, tc.want)
		}
	}
	reasons := map[string]string{}
	for _, r := range s.ChooseRemovals(all, 0) {
		reasons[r.Instance.ID] = r.Reason
	}
	for id, want := range map[string]string{
		"a": "node n1 is down",
		"f": "node gone is not in the cluster",
		"g": "node n4 has no accelerator gpu7",
		"c": "node n2 runs 2 instances of x",
		"d": "accelerator n3/gpu0 is the most loaded, 75% of its memory reserved",
	} {
		if reasons[id] != want {
			t.Errorf("%s: reason %q, want %q", id, reasons[id], want)
		}
	}
}
