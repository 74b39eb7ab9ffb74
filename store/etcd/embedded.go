package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/accelpool/accelpool/errdefs"
)

// Defaults for EmbeddedConfig.
const (
	DefaultClientURL    = "http://127.0.0.1:2379"
	DefaultPeerURL      = "http://127.0.0.1:2380"
	DefaultEmbeddedName = "accelpool"
	DefaultStartTimeout = time.Minute
	// DefaultCompactionRetention keeps ten minutes of history.
	DefaultCompactionRetention = 10 * time.Minute
)

// EmbeddedConfig configures a single-member etcd run inside this process.
type EmbeddedConfig struct {
	// Dir holds etcd's data; it persists across restarts. Required.
	Dir string
	// ClientURL is where clients connect. "" means DefaultClientURL; port
	// 0 ("http://127.0.0.1:0") picks a free port (see ClientEndpoints).
	ClientURL string
	// PeerURL is the raft peer URL (unused by a single member, but etcd
	// listens on it). "" means DefaultPeerURL; port 0 picks a free port.
	PeerURL string
	// Name is the member name. "" means DefaultEmbeddedName.
	Name string
	// StartTimeout bounds the wait for the member to be ready to serve.
	// 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// MaxRequestBytes is the largest request etcd accepts; 0 keeps etcd's
	// default (1.5 MiB).
	MaxRequestBytes uint
	// CompactionRetention is how much history etcd keeps (periodic
	// auto-compaction): watches that fall further behind get
	// store.ErrCompacted and relist. 0 means DefaultCompactionRetention;
	// negative turns auto-compaction off (the database then grows until
	// its quota).
	CompactionRetention time.Duration
	// QuotaBackendBytes is the database size at which etcd refuses
	// writes; 0 keeps etcd's default (2 GiB).
	QuotaBackendBytes int64
	// UnsafeNoFsync skips fsync: faster, and a crash may lose data. Tests
	// only.
	UnsafeNoFsync bool
	// Logger receives etcd's own errors (etcd's info and warnings are
	// dropped so that they never reach the terminal). nil means
	// slog.Default().
	Logger *slog.Logger
}

// Embedded is a running single-member etcd.
type Embedded struct {
	etcd      *embed.Etcd
	clientURL string
	peerURL   string
	mute      *atomic.Bool
	closeOnce sync.Once
	lock      *os.File // Dir's lock, held while the member runs
}

// StartEmbedded starts etcd in this process and waits until it serves
// clients (or StartTimeout passes, or ctx ends, or startup fails).
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errdefs.Invalid("embedded etcd: no data dir")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultEmbeddedName
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	curl, err := resolveURL(cfg.ClientURL, DefaultClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client URL: %w", err)
	}
	purl, err := resolveURL(cfg.PeerURL, DefaultPeerURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: peer URL: %w", err)
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if cfg.MaxRequestBytes > 0 {
		ec.MaxRequestBytes = cfg.MaxRequestBytes
	}
	if cfg.QuotaBackendBytes > 0 {
		ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	}
	if cfg.CompactionRetention == 0 {
		cfg.CompactionRetention = DefaultCompactionRetention
	}
	if cfg.CompactionRetention > 0 {
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = cfg.CompactionRetention.String()
	}
	ec.Logger = "zap"
	ec.LogLevel = "error"
	// etcd reports its listeners closing as errors: mute it once Close
	// (or a failed start) begins.
	mute := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(
		zapToSlog(cfg.Logger.With("component", "etcd"), zapcore.ErrorLevel, mute))

	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			_ = lock.Close()
		}
	}()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s on %s: %w", cfg.Dir, curl, err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		mute.Store(true)
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s on %s: %w", cfg.Dir, curl, err)
	case <-timer.C:
		mute.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s on %s not ready after %v: %w",
			cfg.Dir, curl, cfg.StartTimeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		mute.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", cfg.Dir, ctx.Err())
	}
	started = true
	return &Embedded{etcd: e, clientURL: curl.String(), peerURL: purl.String(), mute: mute, lock: lock}, nil
}

// lockDir takes an exclusive lock on dir (a file beside it, dir.lock) so
// that a second process given the same directory is told at once rather
// than waiting for ever on etcd's own database lock. The lock file holds
// the holder's process id, for the message.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	path := dir + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		who := "another process"
		if pid := strings.TrimSpace(string(holder)); pid != "" {
			who = "process " + pid
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errdefs.New(errdefs.ErrConflict, fmt.Sprintf("embedded etcd: %s is in use by %s (another accelpool with the same --data-dir?): stop it, or give another --data-dir", dir, who))
		}
		return nil, fmt.Errorf("embedded etcd: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// resolveURL parses raw (or def when raw is empty) and replaces port 0 by
// a free port on the same host.
func resolveURL(raw, def string) (*url.URL, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Port() != "0" {
		return u, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(u.Hostname(), "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port on %s: %w", u.Hostname(), err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return nil, err
	}
	u.Host = net.JoinHostPort(u.Hostname(), fmt.Sprint(port))
	return u, nil
}

// ClientEndpoints are the URLs clients connect to (Config.Endpoints).
func (e *Embedded) ClientEndpoints() []string { return []string{e.clientURL} }

// ClientURL is the client URL with its port resolved; pass it back as
// EmbeddedConfig.ClientURL to restart on the same address.
func (e *Embedded) ClientURL() string { return e.clientURL }

// PeerURL is the peer URL with its port resolved.
func (e *Embedded) PeerURL() string { return e.peerURL }

// Err reports a fatal error of the running member (its servers stopped).
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Done is closed once the member has stopped (after Close, or by itself).
func (e *Embedded) Done() <-chan struct{} { return e.etcd.Server.StopNotify() }

// Close stops the member and waits until it has; the data stays in Dir.
// Clients' open watch streams keep etcd's gRPC server from stopping
// gracefully, and etcd gives them its request timeout (7 s with default
// timings) before cutting them: close the store clients first for a quick
// stop. Closing twice is a no-op.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		e.mute.Store(true)
		e.etcd.Close()
		<-e.etcd.Server.StopNotify()
		if e.lock != nil {
			_ = e.lock.Close()
		}
	})
}
