package agent

import (
	"context"
	goruntime "runtime"
	"testing"

	"github.com/accelpool/accelpool/agent/runtime/fake"
)

func TestGoProcs(t *testing.T) {
	for _, tc := range []struct{ base, executors, want int }{
		{2, 0, 2}, {2, 6, 8}, {2, 8, 10}, {2, 80, 10}, // capped at base+8 on small machines
		{16, 6, 22}, {16, 100, 64}, // and at 4×base on large ones
		{0, 3, 4}, {4, -1, 4},
	} {
		if got := GoProcs(tc.base, tc.executors); got != tc.want {
			t.Errorf("GoProcs(%d, %d) = %d, want %d", tc.base, tc.executors, got, tc.want)
		}
	}
}

// TestManagerSizesGOMAXPROCS: loading models adds their executors to
// GOMAXPROCS, closing the manager gives back what was in force (under
// go test -cpu N, a value the program set).
func TestManagerSizesGOMAXPROCS(t *testing.T) {
	before := goruntime.GOMAXPROCS(0)
	m, _, _ := newManager(t, writeRepo(t, map[string]repoModel{"a": {vec, "concurrency: 3\n"}, "b": {vec, "concurrency: 2\n"}}))
	procs.mu.Lock()
	userSet := procs.userSet // GOMAXPROCS in the environment wins
	procs.mu.Unlock()
	got := goruntime.GOMAXPROCS(0)
	switch {
	case userSet && got != before:
		t.Fatalf("GOMAXPROCS set by the environment changed from %d to %d", before, got)
	case !userSet && got != GoProcs(procs.base, 5):
		t.Fatalf("with 5 executors loaded: GOMAXPROCS %d, want %d", got, GoProcs(procs.base, 5))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := goruntime.GOMAXPROCS(0); got != before {
		t.Fatalf("after Close: GOMAXPROCS %d, want %d as before", got, before)
	}
}

// TestProgramGOMAXPROCSKept: a GOMAXPROCS the program set itself is the
// base executors add to, and comes back when they go.
func TestProgramGOMAXPROCSKept(t *testing.T) {
	prev := goruntime.GOMAXPROCS(0)
	defer goruntime.GOMAXPROCS(prev)
	set := goruntime.NumCPU() + 3 // not the runtime's default
	goruntime.GOMAXPROCS(set)
	m, _, _ := newManager(t, writeRepo(t, map[string]repoModel{"a": {vec, "concurrency: 2\n"}}))
	procs.mu.Lock()
	userSet := procs.userSet
	procs.mu.Unlock()
	want := GoProcs(set, 2)
	if userSet { // GOMAXPROCS in the environment: executors leave it alone
		want = set
	}
	if got := goruntime.GOMAXPROCS(0); got != want {
		t.Errorf("with 2 executors over a set %d: GOMAXPROCS %d, want %d", set, got, want)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := goruntime.GOMAXPROCS(0); got != set {
		t.Errorf("after Close: GOMAXPROCS %d, want the %d the program set", got, set)
	}
}

// TestKeepGOMAXPROCS: a manager told to keep GOMAXPROCS does not size it.
func TestKeepGOMAXPROCS(t *testing.T) {
	before := goruntime.GOMAXPROCS(0)
	m, err := NewManager(Config{Repository: writeRepo(t, map[string]repoModel{"a": {vec, "concurrency: 7\n"}}), Backend: fake.New(), KeepGOMAXPROCS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.LoadAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := goruntime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS %d, was %d", got, before)
	}
}
