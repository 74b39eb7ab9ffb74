package member

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// Pull retry policy: a download that fails for good reasons (a digest
// mismatch, a 4xx answer) is retried at most pullAttempts times in all;
// transient failures (the network, 5xx) are retried for as long as the
// instance stays assigned. Waits double from pullBackoff up to
// maxPullBackoff.
var (
	pullAttempts   = 3
	pullBackoff    = 100 * time.Millisecond
	maxPullBackoff = 10 * time.Second
	// pullIdleTimeout aborts a download that makes no progress for this long.
	pullIdleTimeout = time.Minute
)

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// parseDigest returns the hex of a "sha256:<hex>" digest.
func parseDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !hexRE.MatchString(h) {
		return "", errdefs.Invalid(fmt.Sprintf("invalid model digest %q (want sha256:<64 lowercase hex>)", digest))
	}
	return h, nil
}

// mismatchError is a download whose bytes do not hash to the digest asked.
type mismatchError struct{ got, want string }

func (e *mismatchError) Error() string {
	return fmt.Sprintf("digest mismatch: got sha256:%s, want sha256:%s", e.got, e.want)
}

// permanent reports whether retrying err right away is pointless: the
// answer will not change by itself.
func permanent(err error) bool {
	var me *mismatchError
	if errors.As(err, &me) || errors.Is(err, errdefs.ErrInvalid) {
		return true
	}
	code := statusCode(err)
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}

// blobStore is the content-addressed model cache: <dir>/<hex> exists only
// once its bytes have been verified against the digest, so its presence is
// a cache hit; downloads in progress live in <hex>.partial.
type blobStore struct {
	dir   string
	c     *client
	locks keyedMutex
}

func (b *blobStore) path(h string) string { return filepath.Join(b.dir, h) }

// ensure returns the path of the verified blob for digest, downloading it
// when absent. onRetry is told about each failure that will be retried.
func (b *blobStore) ensure(ctx context.Context, digest string, log *slog.Logger, onRetry func(error)) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	unlock, err := b.locks.lock(ctx, "blob:"+h)
	if err != nil {
		return "", err
	}
	defer unlock()
	final := b.path(h)
	if _, err := os.Stat(final); err == nil {
		log.Debug("blob cache hit", "digest", digest)
		return final, nil
	}
	failures := 0
	wait := pullBackoff
	lastErr := ""
	for {
		start := time.Now()
		n, err := b.download(ctx, h, log)
		if err == nil {
			log.Info("blob pulled", "digest", digest, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
			return final, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if permanent(err) {
			if failures++; failures >= pullAttempts {
				return "", err
			}
		}
		// Warn when the failure is new, not on every retry of the same one.
		level := slog.LevelDebug
		if msg := err.Error(); msg != lastErr {
			level, lastErr = slog.LevelWarn, msg
		}
		log.Log(ctx, level, "pull failed; retrying", "digest", digest, "err", err, "in", wait)
		onRetry(err)
		if !sleep(ctx, wait) {
			return "", ctx.Err()
		}
		wait = min(2*wait, maxPullBackoff)
	}
}

// download fetches one blob into <hex>.partial, resuming what is there, and
// renames it into place once its digest checks out. A partial that turns
// out wrong is deleted. It returns the blob's size.
func (b *blobStore) download(ctx context.Context, h string, log *slog.Logger) (int64, error) {
	final := b.path(h)
	partial := final + ".partial"
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", partial, err)
	}
	defer f.Close()
	sum := sha256.New()
	have, err := io.Copy(sum, f) // hashes what is there and leaves the offset at its end
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", partial, err)
	}
	restart := func() error {
		sum.Reset()
		have = 0
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	hdr := http.Header{}
	if have > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := b.c.do(dctx, http.MethodGet, "/api/v1/blobs/sha256:"+h, nil, hdr, 0)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != have {
			// Not the range asked for: start over on the next attempt.
			if err := restart(); err != nil {
				return 0, fmt.Errorf("truncate %s: %w", partial, err)
			}
			return 0, fmt.Errorf("server answered Content-Range %q to Range bytes=%d-", resp.Header.Get("Content-Range"), have)
		}
		log.Info("resuming pull", "digest", "sha256:"+h, "from", have)
	case http.StatusOK:
		if have > 0 {
			log.Info("server ignored Range; pulling from the start", "digest", "sha256:"+h, "had", have)
			if err := restart(); err != nil {
				return 0, fmt.Errorf("truncate %s: %w", partial, err)
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if have == 0 {
			return 0, readStatusError(resp)
		}
		// Perhaps the partial is already whole; the digest decides below.
		resp.Body.Close()
		resp.Body = http.NoBody
	default:
		return 0, readStatusError(resp)
	}

	idle := time.AfterFunc(pullIdleTimeout, cancel)
	defer idle.Stop()
	n, err := io.Copy(io.MultiWriter(f, sum), progressReader{resp.Body, func() { idle.Reset(pullIdleTimeout) }})
	have += n
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("pull interrupted after %d bytes (kept for resuming): %w", have, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		f.Close()
		if err := os.Remove(partial); err != nil {
			log.Warn("removing bad partial blob", "path", partial, "err", err)
		}
		return 0, &mismatchError{got: got, want: h}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", partial, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return 0, fmt.Errorf("chmod %s: %w", partial, err)
	}
	if err := os.Rename(partial, final); err != nil {
		return 0, fmt.Errorf("rename %s: %w", partial, err)
	}
	syncDir(b.dir)
	return have, nil
}

// contentRangeStart parses the first byte of "bytes N-M/T".
func contentRangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	return n, err == nil && n >= 0
}

type progressReader struct {
	r        io.Reader
	progress func()
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}

// syncDir makes a rename in dir durable; best effort.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// keyedMutex is a set of mutexes by name whose Lock honours a context.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]chan struct{}{}
	}
	ch := k.m[key]
	if ch == nil {
		ch = make(chan struct{}, 1)
		k.m[key] = ch
	}
	k.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
