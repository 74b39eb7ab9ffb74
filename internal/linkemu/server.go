package linkemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/cache"
)

// EnvBinary names an explicit toxiproxy-server binary for Find.
const EnvBinary = "ACCELPOOL_TOXIPROXY"

// BinaryName is the name scripts/setup.sh gives toxiproxy's server.
const BinaryName = "toxiproxy-server"

// Find locates the toxiproxy-server binary: $ACCELPOOL_TOXIPROXY when set
// (and then only there), else BinaryName in the cache's bin directory
// (where scripts/setup.sh --bench builds it), else on PATH. The error names
// every place it looked.
func Find() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := executable(p); err != nil {
			return "", errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("linkemu: %s=%s: %v", EnvBinary, p, err))
		}
		return p, nil
	}
	cached := filepath.Join(cache.BinDir(), BinaryName)
	cacheErr := executable(cached)
	if cacheErr == nil {
		return cached, nil
	}
	if p, err := exec.LookPath(BinaryName); err == nil {
		return p, nil
	}
	return "", errdefs.New(errdefs.ErrNotFound, fmt.Sprintf(
		"linkemu: no %s: %s unset, tried %s (%v), %s on PATH (not found); run scripts/setup.sh --test (or --bench) to build it",
		BinaryName, EnvBinary, cached, cacheErr, BinaryName))
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case fi.IsDir():
		return errors.New("is a directory")
	case fi.Mode()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}

// StartTimeout bounds how long Start waits for the API to answer.
const StartTimeout = 10 * time.Second

// requestTimeout bounds each API call.
const requestTimeout = 10 * time.Second

// Server is a running toxiproxy-server.
type Server struct {
	api    string // http://127.0.0.1:port
	client *http.Client
	cmd    *exec.Cmd
	log    *logBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // the process's exit status, set before exited closes

	closeOnce sync.Once
	closeErr  error
}

// Start runs bin (see Find) with its API on a free loopback port and waits,
// up to StartTimeout or ctx's deadline, until the API answers. ctx bounds
// only the start: the server runs until Close.
func Start(ctx context.Context, bin string) (*Server, error) {
	var lastErr error
	// The port is picked by listening and closing, so another process may
	// take it first; the server then exits at once and Start tries again.
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errExited) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

var errExited = errors.New("exited")

func start(ctx context.Context, bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("linkemu: pick a port: %w", err)
	}
	s := &Server{
		api:    "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		client: &http.Client{Timeout: requestTimeout},
		log:    &logBuffer{},
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("linkemu: start %s: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.get(ctx, "/version", nil)
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("linkemu: %s %w before its API answered (%v); its log:\n%s", bin, errExited, s.err, s.log.tail())
		case <-ctx.Done():
			s.Close()
			return nil, errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf(
				"linkemu: %s: API at %s did not answer within %v (%v); its log:\n%s", bin, s.api, StartTimeout, err, s.log.tail()))
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// API is the base URL of the server's HTTP API.
func (s *Server) API() string { return s.api }

// Version asks the server for its version ("2.12.0"; "git" when built
// without one stamped in).
func (s *Server) Version(ctx context.Context) (string, error) {
	var raw json.RawMessage
	if err := s.get(ctx, "/version", &raw); err != nil {
		return "", err
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("linkemu: GET /version: decode answer: %w", err)
	}
	return v.Version, nil
}

// Log is what the server has written to stdout and stderr (the last 64 KiB).
func (s *Server) Log() string { return s.log.String() }

// Close stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it
// to exit. Its proxies go with it.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			s.closeErr = fmt.Errorf("linkemu: toxiproxy-server ignored SIGTERM for 5s and was killed")
		}
	})
	return s.closeErr
}

// apiError is toxiproxy's error body.
type apiError struct {
	Message string `json:"error"`
	Status  int    `json:"status"`
}

func (s *Server) get(ctx context.Context, path string, out any) error {
	return s.do(ctx, http.MethodGet, path, nil, out)
}

// do sends one API request with body as JSON and decodes the answer into
// out unless out is nil.
func (s *Server) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.api+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("linkemu: %s %s: %v", method, path, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("linkemu: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		var ae apiError
		if json.Unmarshal(data, &ae) == nil && ae.Message != "" {
			msg = ae.Message
		}
		kind := errdefs.ErrInternal
		switch resp.StatusCode {
		case http.StatusNotFound:
			kind = errdefs.ErrNotFound
		case http.StatusConflict:
			kind = errdefs.ErrAlreadyExists
		case http.StatusBadRequest:
			kind = errdefs.ErrInvalid
		}
		return errdefs.New(kind, fmt.Sprintf("linkemu: %s %s: %s: %s", method, path, resp.Status, msg))
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("linkemu: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// logBuffer keeps the last logMax bytes written to it.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const logMax = 64 << 10

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - logMax; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// tail is the last few lines, for error messages.
func (b *logBuffer) tail() string {
	s := strings.TrimRight(b.String(), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
