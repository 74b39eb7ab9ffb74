package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The accelpool binary the cluster tests run, built once per test binary
// and removed by TestMain.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// clusterBinary builds ./cmd/accelpool from the module root (once) and
// returns its path.
func clusterBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			binErr = err
			return
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			binErr = fmt.Errorf("module root not found from the package directory: %w", err)
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if binDir, err = os.MkdirTemp("", "accelpool-e2e-bin-"); err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(binDir, "accelpool")
		cmd := exec.Command(goBin, "build", "-o", binPath, "./cmd/accelpool")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/accelpool: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("building the accelpool binary: %v", binErr)
	}
	return binPath
}

func removeClusterBinary() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// freePort returns a loopback port nobody listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// childEnv is this process's environment without the settings that would
// override the flags the tests give their children.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "ACCELPOOL_TOKEN=") || strings.HasPrefix(kv, "ACCELPOOL_SERVER=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// proc is a long-running child process (a server replica or an agent) in
// its own process group, its output appended to a log file. It can be
// killed and started again with the same command line.
type proc struct {
	t    testing.TB
	name string
	bin  string
	args []string
	log  string // log file path

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been reaped
	starts int
}

// procSet owns every child of one test: it kills them all when the test
// ends, and prints their log tails when it failed. With
// ACCELPOOL_E2E_LOGS=DIR the logs are also copied to DIR/<test name>/.
type procSet struct {
	t      testing.TB
	bin    string
	logDir string

	mu    sync.Mutex
	procs []*proc
}

func newProcSet(t testing.TB, bin string) *procSet {
	ps := &procSet{t: t, bin: bin, logDir: filepath.Join(t.TempDir(), "logs")}
	if err := os.MkdirAll(ps.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ps.mu.Lock()
		procs := append([]*proc(nil), ps.procs...)
		ps.mu.Unlock()
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s (%s), last lines:\n%s", p.name, p.log, tailFile(p.log, 40))
			}
		}
		if keep := os.Getenv("ACCELPOOL_E2E_LOGS"); keep != "" {
			dst := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Logf("keeping the logs: %v", err)
				return
			}
			for _, p := range procs {
				if b, err := os.ReadFile(p.log); err == nil {
					_ = os.WriteFile(filepath.Join(dst, filepath.Base(p.log)), b, 0o644)
				}
			}
			t.Logf("process logs kept in %s", dst)
		}
	})
	return ps
}

// start runs bin with args as a child named name.
func (ps *procSet) start(name string, args ...string) *proc {
	ps.t.Helper()
	p := &proc{t: ps.t, name: name, bin: ps.bin, args: args, log: filepath.Join(ps.logDir, name+".log")}
	ps.mu.Lock()
	ps.procs = append(ps.procs, p)
	ps.mu.Unlock()
	p.start()
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s: started twice", p.name)
	}
	p.starts++
	fmt.Fprintf(f, "=== start %d at %s: %s %s\n", p.starts, time.Now().Format(time.RFC3339Nano), filepath.Base(p.bin), strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so the group can be killed at once; and
	// killed by the kernel if this test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
}

// signal sends sig to the process group and waits for the process to be
// reaped (up to wait; then it is killed).
func (p *proc) signal(sig syscall.Signal, wait time.Duration) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
	case <-time.After(wait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// kill is kill -9 of the process group; it returns once the process is
// reaped (its sockets are closed by then).
func (p *proc) kill() { p.signal(syscall.SIGKILL, 0) }

// restart starts the same command line again (after kill).
func (p *proc) restart() {
	p.t.Helper()
	p.kill()
	p.start()
}

// running reports whether the process is started and has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// runCLI runs a one-shot accelpool command and returns its output.
func runCLI(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("accelpool %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// waitHTTP200 polls url until it answers 200 or timeout passes.
func waitHTTP200(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %v", url, timeout, last)
}

// tailFile is the last n lines of a file.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
