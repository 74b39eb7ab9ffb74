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
// GOMAXPROCS, closing the manager gives the runtime's default back.
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
	if got := goruntime.GOMAXPROCS(0); !userSet && got != procs.base {
		t.Fatalf("after Close: GOMAXPROCS %d, want the default %d", got, procs.base)
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
