package member

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accelpool/accelpool/cluster"
)

// fakeCP is a small in-memory control plane speaking the agent protocol.
type fakeCP struct {
	srv   *httptest.Server
	token string

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced when assignments change
	rev       int64
	instances map[string]cluster.Instance
	blobs     map[string][]byte // by hex
	wrong     map[string]bool   // serve corrupted bytes
	cutAfter  map[string]int    // the next request cuts the connection after N bytes
	noRange   map[string]bool   // ignore Range, always 200
	hold      map[string]chan struct{}
	holders   map[string]string // node name → agent ID holding it live
	lapse     int               // heartbeats to answer 404

	joins      []cluster.JoinRequest
	heartbeats []cluster.HeartbeatRequest
	blobReqs   []blobReq
}

type blobReq struct {
	hex, rng string
}

func newFakeCP(t *testing.T) *fakeCP { return newFakeCPOn(t, nil) }

// newFakeCPOn serves on ln (nil: a fresh loopback port).
func newFakeCPOn(t *testing.T, ln net.Listener) *fakeCP {
	f := &fakeCP{token: "secret", changed: make(chan struct{}), instances: map[string]cluster.Instance{},
		blobs: map[string][]byte{}, wrong: map[string]bool{}, cutAfter: map[string]int{}, noRange: map[string]bool{},
		hold: map[string]chan struct{}{}, holders: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agent/join", f.join)
	mux.HandleFunc("POST /api/v1/agent/heartbeat", f.heartbeat)
	mux.HandleFunc("GET /api/v1/agent/assignments", f.assignments)
	mux.HandleFunc("GET /api/v1/blobs/{digest}", f.blob)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	if ln != nil {
		f.srv.Listener.Close()
		f.srv.Listener = ln
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeCP) join(w http.ResponseWriter, r *http.Request) {
	var req cluster.JoinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.holders[req.Node.Name]; h != "" && h != req.Node.AgentID {
		writeErr(w, http.StatusConflict, fmt.Sprintf("node %q is held by agent %s", req.Node.Name, h))
		return
	}
	f.joins = append(f.joins, req)
	writeJSON(w, cluster.JoinResponse{HeartbeatInterval: 50 * time.Millisecond, LeaseTTL: time.Second})
}

func (f *fakeCP) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req cluster.HeartbeatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.holders[req.Name]; h != "" && h != req.AgentID && f.lapse == 0 {
		writeErr(w, http.StatusConflict, fmt.Sprintf("node %q is held by agent %s", req.Name, h))
		return
	}
	if f.lapse > 0 {
		f.lapse--
		writeErr(w, http.StatusNotFound, "no lease for node "+req.Name)
		return
	}
	f.heartbeats = append(f.heartbeats, req)
	writeJSON(w, cluster.HeartbeatResponse{OK: true})
}

func (f *fakeCP) assignments(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "bad wait")
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	f.mu.Lock()
	for timedOut := false; f.rev <= after && !timedOut; {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			timedOut = true
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	a := cluster.Assignments{Revision: f.rev}
	for _, in := range f.instances {
		a.Instances = append(a.Instances, in)
	}
	f.mu.Unlock()
	sort.Slice(a.Instances, func(i, j int) bool { return a.Instances[i].ID < a.Instances[j].ID })
	writeJSON(w, a)
}

func (f *fakeCP) blob(w http.ResponseWriter, r *http.Request) {
	h, ok := strings.CutPrefix(r.PathValue("digest"), "sha256:")
	rng := r.Header.Get("Range")
	f.mu.Lock()
	f.blobReqs = append(f.blobReqs, blobReq{hex: h, rng: rng})
	data, found := f.blobs[h]
	if f.wrong[h] {
		data = append([]byte("corrupted "), data...)
	}
	cut := f.cutAfter[h]
	delete(f.cutAfter, h)
	noRange := f.noRange[h]
	hold := f.hold[h]
	f.mu.Unlock()
	if !ok || !found {
		writeErr(w, http.StatusNotFound, "no blob "+r.PathValue("digest"))
		return
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	start := 0
	if rest, ok := strings.CutPrefix(rng, "bytes="); ok && !noRange {
		first, _, _ := strings.Cut(rest, "-")
		n, err := strconv.Atoi(first)
		if err != nil || n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			writeErr(w, http.StatusRequestedRangeNotSatisfiable, "bad range")
			return
		}
		start = n
	}
	body := data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/octet-stream")
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.WriteHeader(http.StatusPartialContent)
	}
	if cut > 0 && cut < len(body) {
		_, _ = w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	_, _ = w.Write(body)
}

// addBlob stores data and returns its digest.
func (f *fakeCP) addBlob(data []byte) string {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	f.mu.Lock()
	f.blobs[h] = data
	f.mu.Unlock()
	return "sha256:" + h
}

func (f *fakeCP) bump() {
	f.rev++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCP) assign(in cluster.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[in.ID] = in
	f.bump()
}

func (f *fakeCP) unassign(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.instances, id)
	f.bump()
}

func (f *fakeCP) with(fn func(f *fakeCP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// lastHeartbeat returns the newest heartbeat, if any.
func (f *fakeCP) lastHeartbeat() (cluster.HeartbeatRequest, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.heartbeats) == 0 {
		return cluster.HeartbeatRequest{}, false
	}
	return f.heartbeats[len(f.heartbeats)-1], true
}

func (f *fakeCP) blobRequests() []blobReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]blobReq(nil), f.blobReqs...)
}

func (f *fakeCP) joinRequests() []cluster.JoinRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cluster.JoinRequest(nil), f.joins...)
}
