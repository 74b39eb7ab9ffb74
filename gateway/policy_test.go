package gateway

import (
	"testing"
)

func TestLeastOutstanding(t *testing.T) {
	eps := func(ids ...string) []Endpoint {
		out := make([]Endpoint, len(ids))
		for i, id := range ids {
			out[i] = Endpoint{InstanceID: id, Ready: true}
		}
		return out
	}
	notReady := func(e []Endpoint, id string) []Endpoint {
		for i := range e {
			if e[i].InstanceID == id {
				e[i].Ready = false
			}
		}
		return e
	}
	for _, tc := range []struct {
		name        string
		candidates  []Endpoint
		outstanding map[string]int
		// want lists the picks of successive calls with the same inputs.
		want []string
	}{
		{name: "fewest in flight wins", candidates: eps("a", "b", "c"),
			outstanding: map[string]int{"a": 2, "b": 1, "c": 3}, want: []string{"b", "b", "b"}},
		{name: "ties rotate in instance ID order", candidates: eps("c", "a", "b"),
			want: []string{"a", "b", "c", "a", "b"}},
		{name: "ties among the least only", candidates: eps("d", "c", "b", "a"),
			outstanding: map[string]int{"a": 1, "b": 0, "c": 1, "d": 0}, want: []string{"b", "d", "b"}},
		{name: "not ready skipped even when idle", candidates: notReady(eps("a", "b"), "a"),
			outstanding: map[string]int{"b": 5}, want: []string{"b", "b"}},
		{name: "none ready", candidates: notReady(eps("a"), "a"), want: []string{""}},
		{name: "no candidates", want: []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p LeastOutstanding
			out := func(id string) int { return tc.outstanding[id] }
			for i, want := range tc.want {
				got, ok := p.Pick("app", tc.candidates, out)
				if ok != (want != "") || got.InstanceID != want {
					t.Fatalf("pick %d: %q (ok %v), want %q", i, got.InstanceID, ok, want)
				}
			}
		})
	}
}

func TestLeastOutstandingRotatesPerApp(t *testing.T) {
	var p LeastOutstanding
	none := func(string) int { return 0 }
	c := []Endpoint{{InstanceID: "a", Ready: true}, {InstanceID: "b", Ready: true}}
	var got []string
	for _, app := range []string{"x", "y", "x", "y", "x"} {
		ep, _ := p.Pick(app, c, none)
		got = append(got, app+ep.InstanceID)
	}
	want := []string{"xa", "ya", "xb", "yb", "xa"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("picks %v, want %v", got, want)
		}
	}
	p.Forget("x")
	if ep, _ := p.Pick("x", c, none); ep.InstanceID != "a" {
		t.Errorf("after Forget, pick %s, want a (rotation restarts)", ep.InstanceID)
	}
}

func TestStaticResolver(t *testing.T) {
	r := NewStaticResolver(Endpoint{InstanceID: "i1", App: "a", Ready: true}, Endpoint{InstanceID: "i2", App: "a", Ready: true})
	r.Set("b", nil)
	if got := r.Apps(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("Apps %v", got)
	}
	before, _ := r.Endpoints("a")
	if !r.SetReady("i1", false) || r.SetReady("nope", false) {
		t.Fatal("SetReady found the wrong instances")
	}
	if !before[0].Ready {
		t.Error("SetReady changed a list already handed out")
	}
	after, _ := r.Endpoints("a")
	if after[0].Ready {
		t.Error("SetReady did not take")
	}
	if !r.Remove("i2") {
		t.Fatal("Remove i2")
	}
	if eps, _ := r.Endpoints("a"); len(eps) != 1 || len(before) != 2 {
		t.Errorf("after Remove: %v (before: %v)", eps, before)
	}
	if eps, err := r.Endpoints("b"); err != nil || len(eps) != 0 {
		t.Errorf("b: %v %v", eps, err)
	}
	r.Delete("b")
	if _, err := r.Endpoints("b"); err == nil {
		t.Error("deleted app still resolves")
	}
}
