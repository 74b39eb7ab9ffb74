package etcdtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdBinary is the etcd server StartProcess runs: Debian's etcd-server
// package installs etcd 3.4 there. The ACCELPOOL_ETCD environment variable
// overrides it.
const EtcdBinary = "/usr/bin/etcd"

// InstallHint is the command that installs EtcdBinary.
const InstallHint = "apt-get install -y etcd-server"

// StartProcess runs an etcd server as a separate process with its data in
// dir, listening on free loopback ports, and waits until it reports
// healthy. stop ends it (SIGTERM, then SIGKILL after 10 s) and may be
// called more than once; restart stops it if running and starts it again
// on the same dir and ports, waiting until healthy. The process is stopped
// when the test ends. A missing binary fails the test (it never skips).
func StartProcess(t testing.TB, dir string) (endpoints []string, stop func(), restart func()) {
	t.Helper()
	bin := os.Getenv("ACCELPOOL_ETCD")
	if bin == "" {
		bin = EtcdBinary
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("etcd server binary %s not found (%v): install it with `%s` (as root)", bin, err, InstallHint)
	}
	p := &process{t: t, bin: bin, dir: dir, clientPort: freePort(t), peerPort: freePort(t)}
	p.start()
	t.Cleanup(p.stop)
	return []string{p.clientURL()}, p.stop, func() { t.Helper(); p.stop(); p.start() }
}

type process struct {
	t                    testing.TB
	bin, dir             string
	clientPort, peerPort int

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
	out  *lockedBuffer
}

func (p *process) clientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.clientPort) }
func (p *process) peerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", p.peerPort) }

func (p *process) start() {
	p.t.Helper()
	name := "accelpool-test"
	cmd := exec.Command(p.bin,
		"--name", name,
		"--data-dir", p.dir,
		"--listen-client-urls", p.clientURL(),
		"--advertise-client-urls", p.clientURL(),
		"--listen-peer-urls", p.peerURL(),
		"--initial-advertise-peer-urls", p.peerURL(),
		"--initial-cluster", name+"="+p.peerURL(),
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--log-level", "warn",
	)
	// Settings in the environment would override the flags.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.bin, err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	p.mu.Lock()
	p.cmd, p.exit, p.out = cmd, exit, out
	p.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exit:
			p.t.Fatalf("%s exited during startup (%v); output:\n%s", p.bin, cmd.ProcessState, out.tail())
		default:
		}
		if healthy(client, p.clientURL()) {
			return
		}
		if time.Now().After(deadline) {
			p.stop()
			p.t.Fatalf("%s on %s not healthy after 30s; output:\n%s", p.bin, p.clientURL(), out.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func healthy(c *http.Client, url string) bool {
	resp, err := c.Get(url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`))
}

func (p *process) stop() {
	p.mu.Lock()
	cmd, exit, out := p.cmd, p.exit, p.out
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
	if p.t.Failed() {
		p.t.Logf("%s output:\n%s", p.bin, out.tail())
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail is the last 8 KiB of output.
func (b *lockedBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 8<<10 {
		s = "..." + s[len(s)-8<<10:]
	}
	return s
}
