package member

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// Defaults.
const (
	DefaultPollWait          = 30 * time.Second
	defaultHeartbeatInterval = 5 * time.Second
	// callTimeout bounds join and heartbeat requests, per server tried.
	callTimeout = 10 * time.Second
)

// Join retry policy: waits double from joinBackoff up to maxJoinBackoff.
var (
	joinBackoff    = 100 * time.Millisecond
	maxJoinBackoff = 2 * time.Second
)

// Config configures an agent's membership.
type Config struct {
	// Servers are the control plane's base URLs ("http://10.0.0.1:7000"),
	// tried in order; a server that cannot be reached hands over to the
	// next.
	Servers []string
	// Token is the cluster token, sent as Authorization: Bearer.
	Token string
	// HTTPClient carries the requests (TLS is the caller's to configure). It
	// must not have a Timeout shorter than PollWait: requests bring their
	// own deadlines. Default: connection timeouts only.
	HTTPClient *http.Client
	// Node describes this machine; AgentID is generated when empty.
	Node cluster.Node
	// DataDir holds the blob cache (BlobDir) and the Manager's model
	// repository (RepositoryDir).
	DataDir string
	// Manager serves the instances; its repository must be
	// RepositoryDir(DataDir).
	Manager *agent.Manager
	Logger  *slog.Logger
	// PollWait is how long one assignments long poll may wait (default 30s).
	PollWait time.Duration
	// AutoProfile measures each model the registry has no profile for on
	// this accelerator kind, once it is Ready, and stores the profile.
	AutoProfile bool
	// UnloadOnExit unloads the instances' models when Run returns; by
	// default they are left loaded, as the process is exiting anyway.
	UnloadOnExit bool
}

// RepositoryDir is the model repository the Manager must serve for an agent
// whose data directory is dataDir.
func RepositoryDir(dataDir string) string { return filepath.Join(dataDir, "repository") }

// BlobDir is where verified model artifacts are cached, one file per
// sha256 digest named by its hex.
func BlobDir(dataDir string) string { return filepath.Join(dataDir, "blobs", "sha256") }

// Run joins the cluster and serves the node's assignments until ctx ends,
// when it returns nil. It returns an error when it cannot go on: an invalid
// Config, or the control plane refusing the node for good (another live
// agent holds its name, the token is wrong, the node is invalid).
func Run(ctx context.Context, cfg Config) error {
	m, err := newMember(cfg)
	if err != nil {
		return err
	}
	return m.run(ctx)
}

// member is one running membership.
type member struct {
	cfg   Config
	log   *slog.Logger
	c     *client
	blobs *blobStore
	repo  string

	kickc chan struct{} // asks for a heartbeat now

	// utilAt and utilBusy are when the last utilisation was computed and
	// the Manager's busy time then (guarded by mu).
	utilAt   time.Time
	utilBusy time.Duration
	profiled map[string]bool // "<model>/<kind>" already profiled or checked

	intervalMu sync.Mutex
	interval   time.Duration

	// runCtx is the parent of every instance's context; it ends when Run
	// returns.
	runCtx context.Context
	wg     sync.WaitGroup // instance goroutines

	mu        sync.Mutex
	instances map[string]*instance // assigned, by ID
	refs      map[string]int       // assigned instances per served name
	// stale holds served names whose installed files have not loaded yet
	// (a load failed or never ran since they changed): what the Manager
	// serves under that name, if anything, is an earlier version.
	stale map[string]bool

	names keyedMutex // serialises repository changes per served name

	ownClient bool // the HTTP client is ours to close
}

func newMember(cfg Config) (*member, error) {
	switch {
	case len(cfg.Servers) == 0:
		return nil, errdefs.Invalid("member: no control plane servers")
	case cfg.Manager == nil:
		return nil, errdefs.Invalid("member: no manager")
	case cfg.DataDir == "":
		return nil, errdefs.Invalid("member: no data directory")
	case cfg.Node.Name == "":
		return nil, errdefs.Invalid("member: the node has no name")
	}
	for _, s := range cfg.Servers {
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errdefs.Invalid(fmt.Sprintf("member: server %q is not an http(s) base URL", s))
		}
	}
	ownClient := cfg.HTTPClient == nil
	if ownClient {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = DefaultPollWait
	}
	if cfg.Node.AgentID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("member: agent id: %w", err)
		}
		cfg.Node.AgentID = hex.EncodeToString(b[:])
	}
	c := newClient(cfg.Servers, cfg.Token, cfg.HTTPClient)
	return &member{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "member", "node", cfg.Node.Name, "agent", cfg.Node.AgentID),
		c:         c,
		blobs:     &blobStore{dir: BlobDir(cfg.DataDir), c: c},
		repo:      RepositoryDir(cfg.DataDir),
		kickc:     make(chan struct{}, 1),
		profiled:  map[string]bool{},
		interval:  defaultHeartbeatInterval,
		instances: map[string]*instance{},
		refs:      map[string]int{},
		stale:     map[string]bool{},
		ownClient: ownClient,
	}, nil
}

func (m *member) run(ctx context.Context) error {
	if m.ownClient {
		defer m.cfg.HTTPClient.CloseIdleConnections()
	}
	for _, dir := range []string{m.blobs.dir, m.repo} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("member: %w", err)
		}
	}
	if err := m.join(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.runCtx = ctx
	var (
		loops sync.WaitGroup
		fatal error // set before loops.Wait returns
	)
	loops.Go(func() {
		if fatal = m.heartbeatLoop(ctx); fatal != nil {
			cancel()
		}
	})
	loops.Go(func() { m.pollLoop(ctx) })
	<-ctx.Done()
	loops.Wait()
	m.wg.Wait() // instances leave their models loaded unless UnloadOnExit
	if fatal != nil {
		m.log.Error("leaving the cluster", "err", fatal)
		return fatal
	}
	m.log.Info("left the cluster")
	return nil
}

// failLog logs a repeated failure once when it starts and once when it
// ends, not on every attempt.
type failLog struct {
	failing bool
}

func (f *failLog) fail(log *slog.Logger, msg string, err error, attrs ...any) {
	if !f.failing {
		f.failing = true
		log.Warn(msg, append(attrs, "err", err)...)
	}
}

func (f *failLog) ok(log *slog.Logger, msg string) {
	if f.failing {
		f.failing = false
		log.Info(msg)
	}
}

// join registers the node, retrying with backoff while the control plane
// is unreachable. It returns an error only when the control plane refuses
// the node for good, or ctx ends.
func (m *member) join(ctx context.Context) error {
	var flog failLog
	wait := joinBackoff
	for {
		var resp cluster.JoinResponse
		err := m.c.call(ctx, http.MethodPost, "/api/v1/agent/join", cluster.JoinRequest{Node: m.cfg.Node}, &resp, callTimeout)
		if err == nil {
			iv := resp.HeartbeatInterval
			if iv <= 0 {
				iv = defaultHeartbeatInterval
				if resp.LeaseTTL > 0 {
					iv = resp.LeaseTTL / 3
				}
			}
			m.intervalMu.Lock()
			m.interval = iv
			m.intervalMu.Unlock()
			m.log.Info("joined the cluster", "server", m.c.servers[m.c.cur.Load()], "heartbeat", iv, "lease", resp.LeaseTTL)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch statusCode(err) {
		case http.StatusConflict:
			return m.conflict(err)
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("member: join as %q refused: %w", m.cfg.Node.Name, err)
		}
		flog.fail(m.log, "cannot join the cluster; retrying", err)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, maxJoinBackoff)
	}
}

// conflict is the fatal error for a node name another live agent holds.
func (m *member) conflict(err error) error {
	return fmt.Errorf("member: node name %q is held by another live agent (this agent is %s): %w", m.cfg.Node.Name, m.cfg.Node.AgentID, err)
}

func (m *member) heartbeatInterval() time.Duration {
	m.intervalMu.Lock()
	defer m.intervalMu.Unlock()
	return m.interval
}

// kick asks for a heartbeat now.
func (m *member) kick() {
	select {
	case m.kickc <- struct{}{}:
	default:
	}
}

// heartbeatLoop renews the lease every interval and whenever an instance
// changes state. A lapsed lease (404) makes it join again; a join refused
// for good ends it with that error.
func (m *member) heartbeatLoop(ctx context.Context) error {
	var flog failLog
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kickc:
		}
		req := cluster.HeartbeatRequest{Name: m.cfg.Node.Name, AgentID: m.cfg.Node.AgentID, Status: m.status(ctx)}
		err := m.c.call(ctx, http.MethodPost, "/api/v1/agent/heartbeat", req, nil, callTimeout)
		switch {
		case err == nil:
			flog.ok(m.log, "heartbeats resumed")
		case ctx.Err() != nil:
			return nil
		case statusCode(err) == http.StatusConflict:
			return m.conflict(err)
		case statusCode(err) == http.StatusNotFound:
			m.log.Warn("lease lapsed; joining again", "err", err)
			if err := m.join(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			flog = failLog{}
			m.kick()
		default:
			flog.fail(m.log, "heartbeat failed; retrying", err)
		}
		t.Reset(m.heartbeatInterval()) // go ≥ 1.23: Reset discards a pending tick
	}
}

// status is what the next heartbeat reports.
func (m *member) status(ctx context.Context) cluster.NodeStatus {
	st := cluster.NodeStatus{Up: true, LastHeartbeat: time.Now().UTC()}
	loaded := map[string]bool{}
	if idx, err := m.cfg.Manager.RepositoryIndex(ctx, true); err == nil {
		for _, e := range idx {
			loaded[e.Name] = true
			st.LoadedModels = append(st.LoadedModels, e.Name)
			if st.QueueLength == nil {
				st.QueueLength = map[string]int{}
			}
			st.QueueLength[e.Name] = m.cfg.Manager.QueueLength(e.Name)
		}
	} else if ctx.Err() == nil {
		m.log.Warn("reading the model repository", "err", err)
	}
	used := map[string]int64{}
	m.mu.Lock()
	for id, in := range m.instances {
		s := in.get()
		if s.State == cluster.InstanceReady && !loaded[in.spec.ServedName] {
			s = cluster.InstanceStatus{State: cluster.InstanceFailed, Reason: fmt.Sprintf("model %q is no longer loaded", in.spec.ServedName)}
		}
		if st.Instances == nil {
			st.Instances = map[string]cluster.InstanceStatus{}
		}
		st.Instances[id] = s
		used[in.spec.Accelerator] += in.spec.MemoryBytes
	}
	m.mu.Unlock()
	util := m.utilisation()
	for _, a := range m.cfg.Node.Accelerators {
		if st.FreeMemoryBytes == nil {
			st.FreeMemoryBytes = map[string]int64{}
			st.Utilisation = map[string]float64{}
		}
		st.FreeMemoryBytes[a.ID] = a.MemoryBytes - used[a.ID]
		st.Utilisation[a.ID] = util
	}
	return st
}

// utilisation is the share of wall time models spent executing since the
// last heartbeat (every instance of a node runs on its one runtime, so all
// accelerators report the same figure), capped at 1.
func (m *member) utilisation() float64 {
	now, busy := time.Now(), m.cfg.Manager.Busy()
	m.mu.Lock()
	defer m.mu.Unlock()
	lastAt, lastBusy := m.utilAt, m.utilBusy
	m.utilAt, m.utilBusy = now, busy
	if lastAt.IsZero() || !now.After(lastAt) {
		return 0
	}
	return min(float64(busy-lastBusy)/float64(now.Sub(lastAt)), 1)
}

// pollLoop long-polls the node's assignments and reconciles each answer.
func (m *member) pollLoop(ctx context.Context) {
	var flog failLog
	rev := int64(0)
	first := true
	wait := joinBackoff
	for ctx.Err() == nil {
		q := url.Values{"node": {m.cfg.Node.Name}, "agent": {m.cfg.Node.AgentID},
			"after": {strconv.FormatInt(rev, 10)}, "wait": {m.cfg.PollWait.String()}}
		var a cluster.Assignments
		start := time.Now()
		err := m.c.call(ctx, http.MethodGet, "/api/v1/agent/assignments?"+q.Encode(), nil, &a, m.cfg.PollWait+callTimeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			flog.fail(m.log, "polling assignments failed; retrying", err)
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, maxJoinBackoff)
			continue
		}
		flog.ok(m.log, "polling assignments again")
		wait = joinBackoff
		changed := first || a.Revision != rev
		m.reconcile(a.Instances, first)
		first = false
		rev = a.Revision
		if !changed && time.Since(start) < m.cfg.PollWait/10 {
			// The server answered at once without news: do not spin.
			if !sleep(ctx, m.cfg.PollWait/10) {
				return
			}
		}
	}
}
