package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// TestDeviceOverheadIsPredicted: time the device spends on a request
// outside the attempt that answered it (here 30 ms after the answer, as a
// slow device writing a large answer) is learned and predicted.
func TestDeviceOverheadIsPredicted(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 2})
	p := newProxy(t, Config{Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}}})
	waitProbed(t, p)
	const extra = 30 * time.Millisecond
	var predicted []time.Duration
	h := p.TimeREST(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := p.Infer(r.Context(), request("m"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		time.Sleep(extra)
		if us, ok := resp.Parameters[ParamPredicted].(int64); ok {
			predicted = append(predicted, time.Duration(us)*time.Microsecond)
		}
	}))
	for range 6 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	ov := p.Status().Targets[0].Models["m"].OverheadMs
	if ov < 30 || ov > 80 {
		t.Fatalf("learned device overhead %.1f ms, want about 30", ov)
	}
	if len(predicted) < 2 || predicted[len(predicted)-1] < extra {
		t.Fatalf("predictions %v do not include the %v overhead", predicted, extra)
	}
	t.Logf("overhead learned %.1f ms; predictions %v", ov, predicted)
}

// TestGRPCOverheadLearned: through the proxy's gRPC server, relayed and
// local answers both teach the device's overhead (gRPC stats time each
// call whole).
func TestGRPCOverheadLearned(t *testing.T) {
	remote := startAgent(t, map[string]int{"m": 2})
	p := newProxy(t, Config{
		Local:   localManager(t, map[string]int{"m": 40}),
		Targets: []Target{{Name: "edge", Addr: remote.GRPCAddr(), Tier: "edge"}},
	})
	waitProbed(t, p)
	conn := serveProxy(t, p, grpcsvc.Options{})
	req := wireRequest(t, "m")
	for range 4 { // the first two explore: local and edge
		if _, err := sendRaw(conn, req); err != nil {
			t.Fatal(err)
		}
	}
	st := p.Status()
	if ov := st.Targets[0].Models["m"].OverheadMs; !(ov > 0) {
		t.Errorf("relayed answers: overhead %v ms, want it measured", ov)
	}
	if ov := st.Local["m"].OverheadMs; !(ov > 0) {
		t.Errorf("local answer: overhead %v ms, want it measured", ov)
	}
}
