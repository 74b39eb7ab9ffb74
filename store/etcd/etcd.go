package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
	"github.com/accelpool/accelpool/store/internal/txncheck"
)

// Defaults for Config.
const (
	DefaultPrefix         = "/accelpool"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultElectionTTL    = 5 * time.Second
)

// Config says how to reach etcd.
type Config struct {
	// Endpoints are the client URLs of the etcd members, e.g.
	// "http://127.0.0.1:2379".
	Endpoints []string
	// DialTimeout bounds how long an operation waits for a connection to
	// etcd before failing with errdefs.ErrUnavailable. 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds one unary request (Get, Put, Txn, ...) when
	// the caller's context has no sooner deadline; a request cut off by it
	// fails with errdefs.ErrUnavailable. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Username and Password enable etcd authentication (optional).
	Username, Password string
	// TLS enables TLS to etcd (optional).
	TLS *tls.Config
	// Prefix is prepended verbatim to every key, so that several
	// accelpool clusters (or tests) can share one etcd; keys conventionally
	// begin with "/". Elections live under Prefix+"/election/<name>", so
	// keys must not start with "/election/". "" means DefaultPrefix.
	Prefix string
	// ElectionTTL is the TTL of a campaign's session: a leader that stops
	// reaching etcd loses leadership (Lost closes) after about this long.
	// Rounded up to whole seconds. 0 means DefaultElectionTTL.
	ElectionTTL time.Duration
	// Logger receives the etcd client's errors. nil means slog.Default().
	Logger *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Store is a store.Store backed by etcd through clientv3. It is safe for
// concurrent use.
type Store struct {
	cfg    Config
	cli    *clientv3.Client
	prefix string
	eps    string // for messages: "[http://a:2379 http://b:2379]"
	log    *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	leaders map[*leadership]struct{}
	// conn is cancelled once the connection to etcd has been down for
	// DialTimeout, failing the requests waiting on it; a new one replaces
	// it when the connection is back (see monitor).
	conn       context.Context
	connCancel context.CancelCauseFunc
	wg         sync.WaitGroup
}

// New creates a client for the etcd cluster at cfg.Endpoints. It does not
// wait for etcd to be reachable (unless authentication is configured,
// which needs a token first): operations fail with errdefs.ErrUnavailable
// while it is not, and work again once it is.
func New(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errdefs.Invalid("etcd store: no endpoints")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ElectionTTL <= 0 {
		cfg.ElectionTTL = DefaultElectionTTL
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "store/etcd")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:     cfg,
		prefix:  cfg.Prefix,
		eps:     fmt.Sprint(cfg.Endpoints),
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		leaders: make(map[*leadership]struct{}),
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             cfg.Username,
		Password:             cfg.Password,
		TLS:                  cfg.TLS,
		Context:              ctx,
		Logger:               zapToSlog(log, zapcore.ErrorLevel, nil),
		// Reconnect quickly after etcd restarts: gRPC's default backoff
		// grows to two minutes between attempts.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		cancel()
		return nil, s.unavailable("connect", err)
	}
	s.cli = cli
	s.conn, s.connCancel = context.WithCancelCause(context.Background())
	s.wg.Add(1)
	go s.monitor()
	return s, nil
}

// monitor follows the connection's state. Once it has not been ready for
// DialTimeout it cancels s.conn, so that requests blocked waiting for a
// connection (clientv3 waits for ready) fail with ErrUnavailable instead of
// hanging until RequestTimeout; when the connection is ready again, requests
// get a fresh s.conn.
func (s *Store) monitor() {
	defer s.wg.Done()
	conn := s.cli.ActiveConnection()
	var downAt time.Time // zero while ready
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			downAt = time.Time{}
			s.connUp()
		case connectivity.Shutdown:
			return
		default:
			if st == connectivity.Idle {
				conn.Connect()
			}
			if downAt.IsZero() {
				downAt = time.Now()
			}
		}
		ctx, cancel := s.ctx, context.CancelFunc(func() {})
		if !downAt.IsZero() && s.connCtx().Err() == nil {
			ctx, cancel = context.WithDeadline(s.ctx, downAt.Add(s.cfg.DialTimeout))
		}
		changed := conn.WaitForStateChange(ctx, st)
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		if !changed {
			s.mu.Lock()
			s.connCancel(fmt.Errorf("no connection for %v (state %v)", s.cfg.DialTimeout, st))
			s.mu.Unlock()
		}
	}
}

func (s *Store) connUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn.Err() != nil {
		s.conn, s.connCancel = context.WithCancelCause(context.Background())
	}
}

func (s *Store) connCtx() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// Client is the underlying etcd client, for what the store.Store
// interface does not cover (keys it returns are not namespaced).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the namespace prepended to every key.
func (s *Store) Prefix() string { return s.prefix }

// Endpoints are the configured endpoints.
func (s *Store) Endpoints() []string { return s.cfg.Endpoints }

func (s *Store) key(k string) string { return s.prefix + k }

func (s *Store) unkey(k []byte) string { return strings.TrimPrefix(string(k), s.prefix) }

var errClosed = errdefs.New(errdefs.ErrUnavailable, "etcd store closed")

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// kindError wraps both a sentinel and the underlying cause.
type kindError struct {
	msg         string
	kind, cause error
}

func (e *kindError) Error() string   { return e.msg }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.cause} }

func (s *Store) unavailable(what string, cause error) error {
	return &kindError{
		msg:   fmt.Sprintf("etcd at %s unreachable: %s: %v", s.eps, what, cause),
		kind:  errdefs.ErrUnavailable,
		cause: cause,
	}
}

func (s *Store) connected() bool {
	return s.cli.ActiveConnection().GetState() == connectivity.Ready
}

// waitConn waits until the client has a ready connection, for at most
// DialTimeout; the error wraps errdefs.ErrUnavailable (and ctx's error if
// ctx ended first).
func (s *Store) waitConn(ctx context.Context, what string) error {
	if s.isClosed() {
		return fmt.Errorf("%s: %w", what, errClosed)
	}
	conn := s.cli.ActiveConnection()
	st := conn.GetState()
	if st == connectivity.Ready {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	for {
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			conn.Connect()
		case connectivity.TransientFailure:
			conn.ResetConnectBackoff() // someone wants it now: try at once
		case connectivity.Shutdown:
			return fmt.Errorf("%s: %w", what, errClosed)
		}
		if !conn.WaitForStateChange(wctx, st) {
			if s.isClosed() {
				return fmt.Errorf("%s: %w", what, errClosed)
			}
			cause := wctx.Err()
			if ctx.Err() == nil {
				cause = fmt.Errorf("no connection within %v (last state %v)", s.cfg.DialTimeout, st)
			}
			return s.unavailable(what, cause)
		}
		st = conn.GetState()
	}
}

// do runs one unary request: it waits for a connection, bounds the request
// by RequestTimeout and maps the error.
func (s *Store) do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	if err := s.waitConn(ctx, what); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	conn := s.connCtx()
	stop := context.AfterFunc(conn, cancel)
	defer stop()
	err := f(rctx)
	if err != nil && conn.Err() != nil && ctx.Err() == nil && !s.isClosed() {
		return s.unavailable(what, context.Cause(conn))
	}
	return s.mapErr(ctx, what, err)
}

// mapErr translates a clientv3 error into one wrapping an errdefs
// sentinel; ctx is the caller's context.
func (s *Store) mapErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if s.isClosed() {
		return fmt.Errorf("%s: %w", what, errClosed)
	}
	wrap := func(kind error) error {
		return &kindError{msg: fmt.Sprintf("%s: %v", what, err), kind: kind, cause: err}
	}
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return wrap(errdefs.ErrNotFound)
	case errors.Is(err, rpctypes.ErrDuplicateKey), errors.Is(err, rpctypes.ErrTooManyOps),
		errors.Is(err, rpctypes.ErrEmptyKey), errors.Is(err, rpctypes.ErrLeaseTTLTooLarge),
		errors.Is(err, rpctypes.ErrKeyNotFound):
		return wrap(errdefs.ErrInvalid)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return wrap(errdefs.ErrTooLarge)
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrAuthFailed),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrAuthOldRevision),
		errors.Is(err, rpctypes.ErrUserEmpty):
		return wrap(errdefs.ErrUnauthenticated)
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrNotCapable),
		errors.Is(err, rpctypes.ErrStopped), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrUnhealthy), errors.Is(err, rpctypes.ErrLeaderChanged),
		errors.Is(err, rpctypes.ErrGRPCNoLeader):
		return s.unavailable(what, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if ctx.Err() == nil || !s.connected() {
			// Our RequestTimeout, or the caller's deadline while etcd
			// cannot be reached: either way etcd did not answer.
			return s.unavailable(what, err)
		}
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return s.unavailable(what, err)
		case codes.Canceled:
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", what, ctx.Err())
			}
			return s.unavailable(what, err)
		case codes.ResourceExhausted:
			return wrap(errdefs.ErrResourceExhausted)
		case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
			return wrap(errdefs.ErrInvalid)
		}
	}
	return wrap(errdefs.ErrInternal)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	var (
		kv    store.KV
		found bool
	)
	err := s.do(ctx, fmt.Sprintf("get %q", key), func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.key(key))
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			found = true
			kv = store.KV{Key: key, Value: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}
		}
		return nil
	})
	if err != nil {
		return store.KV{}, err
	}
	if !found {
		return store.KV{}, fmt.Errorf("key %q: %w", key, errdefs.ErrNotFound)
	}
	return kv, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	var (
		kvs []store.KV
		rev int64
	)
	err := s.do(ctx, fmt.Sprintf("list %q", prefix), func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.key(prefix), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return err
		}
		kvs = make([]store.KV, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			kvs = append(kvs, store.KV{Key: s.unkey(kv.Key), Value: kv.Value, Rev: kv.ModRevision})
		}
		rev = resp.Header.Revision
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return kvs, rev, nil
}

// Put implements store.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, lease store.LeaseID) (int64, error) {
	var rev int64
	err := s.do(ctx, fmt.Sprintf("put %q", key), func(ctx context.Context) error {
		var opts []clientv3.OpOption
		if lease != store.NoLease {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(lease)))
		}
		resp, err := s.cli.Put(ctx, s.key(key), string(value), opts...)
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
		return nil
	})
	return rev, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, fmt.Sprintf("delete %q", key), func(ctx context.Context) error {
		_, err := s.cli.Delete(ctx, s.key(key))
		return err
	})
}

// Txn implements store.Store. The conditions become etcd compares
// (CreateOnly: CreateRevision == 0; PrevRev: ModRevision == PrevRev;
// MustExist: CreateRevision > 0); the else branch reads the conditioned
// keys in the same transaction, so the error names the first op whose
// condition failed as of that very revision.
func (s *Store) Txn(ctx context.Context, ops []store.Op) (int64, error) {
	return s.txn(ctx, ops, "", 0)
}

// txn is Txn, also conditioned, when fenceKey is not "", on that etcd key
// (not under the prefix: an election's leader key) existing with create
// revision fenceRev; a failed fence is errFenced.
func (s *Store) txn(ctx context.Context, ops []store.Op, fenceKey string, fenceRev int64) (int64, error) {
	if err := txncheck.Validate(ops); err != nil {
		return 0, err
	}
	var (
		cmps    []clientv3.Cmp
		thens   []clientv3.Op
		elses   []clientv3.Op
		checked []int
	)
	if fenceKey != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(fenceKey), "=", fenceRev))
		elses = append(elses, clientv3.OpGet(fenceKey, clientv3.WithKeysOnly()))
	}
	for i, op := range ops {
		k := s.key(op.Key)
		if op.CreateOnly {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		}
		if op.PrevRev > 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", op.PrevRev))
		}
		if op.MustExist {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), ">", 0))
		}
		if txncheck.Conditional(op) {
			elses = append(elses, clientv3.OpGet(k, clientv3.WithKeysOnly()))
			checked = append(checked, i)
		}
		if op.Delete {
			thens = append(thens, clientv3.OpDelete(k))
			continue
		}
		var opts []clientv3.OpOption
		if op.Lease != store.NoLease {
			opts = append(opts, clientv3.WithLease(clientv3.LeaseID(op.Lease)))
		}
		thens = append(thens, clientv3.OpPut(k, string(op.Value), opts...))
	}
	var (
		rev     int64
		condErr error
	)
	what := "txn"
	if len(ops) > 0 {
		what = fmt.Sprintf("txn on %q (%d ops)", ops[0].Key, len(ops))
	}
	err := s.do(ctx, what, func(ctx context.Context) error {
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			rev = resp.Header.Revision
			return nil
		}
		first := 0
		if fenceKey != "" {
			first = 1
			if rr := resp.Responses[0].GetResponseRange(); rr == nil || len(rr.Kvs) == 0 || rr.Kvs[0].CreateRevision != fenceRev {
				condErr = fmt.Errorf("%s: %w", what, errFenced)
				return nil
			}
		}
		for j, i := range checked {
			rr := resp.Responses[first+j].GetResponseRange()
			exists, mod := false, int64(0)
			if rr != nil && len(rr.Kvs) > 0 {
				exists, mod = true, rr.Kvs[0].ModRevision
			}
			if condErr = txncheck.Check(ops[i], exists, mod); condErr != nil {
				return nil
			}
		}
		condErr = fmt.Errorf("%s: a condition failed: %w", what, errdefs.ErrConflict)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if condErr != nil {
		return 0, condErr
	}
	return rev, nil
}

// Grant implements store.Store. etcd leases have whole-second TTLs: ttl
// is rounded up, and etcd may raise it to its minimum (about 1.5 election
// timeouts, 2 s with default timings).
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (store.LeaseID, error) {
	if ttl <= 0 {
		return 0, errdefs.Invalid(fmt.Sprintf("grant: ttl %v must be positive", ttl))
	}
	secs := int64(math.Ceil(ttl.Seconds()))
	var id store.LeaseID
	err := s.do(ctx, "grant lease", func(ctx context.Context) error {
		resp, err := s.cli.Grant(ctx, secs)
		if err != nil {
			return err
		}
		id = store.LeaseID(resp.ID)
		return nil
	})
	return id, err
}

// KeepAlive implements store.Store.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	return s.do(ctx, fmt.Sprintf("keepalive lease %x", int64(id)), func(ctx context.Context) error {
		_, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(id))
		return err
	})
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	return s.do(ctx, fmt.Sprintf("revoke lease %x", int64(id)), func(ctx context.Context) error {
		_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
		return err
	})
}

// Close implements store.Store: it resigns every leadership this store
// holds (so another candidate takes over at once rather than after the
// session TTL), closes watch channels and the client. Closing twice is a
// no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	held := make([]*leadership, 0, len(s.leaders))
	for l := range s.leaders {
		held = append(held, l)
	}
	s.mu.Unlock()
	for _, l := range held {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := l.Resign(ctx); err != nil {
			s.log.Debug("resign at close", "err", err)
		}
		cancel()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.connCancel(errClosed)
	err := s.cli.Close()
	s.wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}
