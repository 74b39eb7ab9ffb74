package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/memory"
)

func instanceEvent(t *testing.T, node, id string, rev int64) store.Event {
	t.Helper()
	val, err := json.Marshal(cluster.Instance{ID: id, App: "app", Node: node})
	if err != nil {
		t.Fatal(err)
	}
	return store.Event{Type: store.EventPut, KV: store.KV{Key: instanceKey(node, id), Value: val, Rev: rev}}
}

// syncedState is a mirror whose every prefix was listed (empty) at rev.
func syncedState(t *testing.T, rev int64) *state {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	s := newState(st, quiet())
	for _, p := range watchedPrefixes {
		s.replace(p, nil, rev)
	}
	return s
}

// A reader woken by a change sees the whole revision: two instances placed
// on a node in one transaction arrive together. (Applied one event at a
// time, an agent's long poll could answer with the first only, stamped with
// the transaction's revision, and then wait a whole poll for the second.)
func TestMirrorAppliesARevisionAtOnce(t *testing.T) {
	s := syncedState(t, 5)
	ch := s.changes()
	seen := make(chan int)
	go func() {
		<-ch
		seen <- len(s.snapshot().instancesOn("n"))
	}()
	s.apply(prefixInstances, []store.Event{instanceEvent(t, "n", "a", 7), instanceEvent(t, "n", "b", 7)})
	if n := <-seen; n != 2 {
		t.Fatalf("woken with %d of the 2 instances of revision 7", n)
	}
}

// The assignments answer carries the revision of the instances the mirror
// has, not the highest revision of any prefix: an instance change that is
// older than a status update but not yet applied must still wake the
// agent's next poll.
func TestAssignmentsRevisionIsTheInstancesRevision(t *testing.T) {
	s := syncedState(t, 5)
	srv := &Server{state: s, log: quiet()}
	status, _ := json.Marshal(cluster.NodeStatus{Up: true})
	s.apply(prefixStatus, []store.Event{{Type: store.EventPut, KV: store.KV{Key: statusKey("n"), Value: status, Rev: 9}}})

	poll := func(after string) cluster.Assignments {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/api/v1/agent/assignments?node=n&wait=50ms&after="+after, nil)
		if err := srv.handleAssignments(rec, req); err != nil {
			t.Fatal(err)
		}
		var a cluster.Assignments
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := poll("0")
	if a.Revision != 5 {
		t.Fatalf("revision %d, want the instances revision 5 (the status prefix is at 9)", a.Revision)
	}
	// The instance written at revision 8 reaches the mirror after the
	// status update of revision 9.
	s.apply(prefixInstances, []store.Event{instanceEvent(t, "n", "late", 8)})
	if b := poll("5"); len(b.Instances) != 1 || b.Revision != 8 {
		t.Fatalf("poll after revision 5: %+v, want the instance of revision 8", b)
	}
}

// failingGet is a store whose reads fail with err.
type failingGet struct {
	store.Store
	err error
}

func (f failingGet) Get(context.Context, string) (store.KV, error) { return store.KV{}, f.err }

// TestCheckDeployableStoreErrors: a deploy whose model the mirror lacks
// asks the store; a store that cannot answer is reported as such (503,
// 504), and only a model the store does not hold is an unknown model (404).
func TestCheckDeployableStoreErrors(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	app := &cluster.Application{Metadata: cluster.Metadata{Name: "a"}, Spec: cluster.AppSpec{Model: "ghost"}}
	for _, c := range []struct {
		name   string
		store  store.Store
		status int
		want   string
	}{
		{"missing", st, http.StatusNotFound, `unknown model "ghost"`},
		{"unavailable", failingGet{st, errdefs.New(errdefs.ErrUnavailable, "etcd: no leader")}, http.StatusServiceUnavailable, "etcd: no leader"},
		{"deadline", failingGet{st, context.DeadlineExceeded}, http.StatusGatewayTimeout, "looking up model"},
	} {
		s := &Server{store: c.store}
		err := s.checkDeployable(context.Background(), view{}, app, true)
		if got := errdefs.HTTPStatus(err); got != c.status || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (HTTP %d), want HTTP %d naming %q", c.name, err, got, c.status, c.want)
		}
	}
	// A record the store holds but cannot be decoded is an internal error.
	if _, err := st.Put(context.Background(), modelKey("ghost"), []byte("{not json"), 0); err != nil {
		t.Fatal(err)
	}
	err := (&Server{store: st}).checkDeployable(context.Background(), view{}, app, true)
	if got := errdefs.HTTPStatus(err); got != http.StatusInternalServerError || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("corrupt record: %v (HTTP %d)", err, got)
	}
}

// TestUnsyncedReplicaRefusesReads: before its mirror is loaded a replica
// answers reads with 503, not with the empty mirror: an agent told it has
// no instances would unload them, a client told an application is
// unknown would give up.
func TestUnsyncedReplicaRefusesReads(t *testing.T) {
	srv, err := New(Config{Store: memory.New(), AdvertiseURL: "http://127.0.0.1:1", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.APIHandler()
	for _, path := range []string{"/api/v1/agent/assignments?node=n1&after=17&wait=10ms", "/api/v1/apps", "/api/v1/nodes", "/api/v1/apps/a/explain"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not loaded yet") {
			t.Errorf("%s: %d %s, want 503 (state not loaded)", path, rec.Code, rec.Body.String())
		}
	}
	if _, err := srv.Resolver().Endpoints("a"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("resolver before sync: %v, want ErrUnavailable", err)
	}
	// Once synced, the same reads answer.
	srv.state = syncedState(t, 1)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/apps", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("after sync: %d %s", rec.Code, rec.Body.String())
	}
}
