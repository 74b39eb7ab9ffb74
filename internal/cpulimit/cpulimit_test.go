package cpulimit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// childEnv makes the test binary a busy child instead of running tests:
// it waits for a line on stdin, spins one goroutine for spinFor of wall
// time, prints the CPU time it used meanwhile, and exits when stdin closes.
const childEnv = "ACCELPOOL_CPULIMIT_CHILD"

const spinFor = time.Second

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "spin" {
		spinChild()
		return
	}
	os.Exit(m.Run())
}

func spinChild() {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(2)
	}
	before, start := cpuTime(), time.Now()
	n := 0
	for time.Since(start) < spinFor {
		for range 10000 {
			n++
		}
	}
	used, wall := cpuTime()-before, time.Since(start)
	fmt.Printf("cpu %d wall %d n %d\n", used.Nanoseconds(), wall.Nanoseconds(), n)
	_, _ = io.Copy(io.Discard, in)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// child is a running spinChild.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=spin")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(c.stop)
	return c
}

// spin lets the child spin and returns the cores it used on average.
func (c *child) spin(t *testing.T) float64 {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var cpu, wall, n int64
	if _, err := fmt.Sscanf(line, "cpu %d wall %d n %d", &cpu, &wall, &n); err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	return float64(cpu) / float64(wall)
}

func (c *child) stop() {
	c.stdin.Close()
	_ = c.cmd.Wait()
}

// requireAvailable skips, saying why, when cgroups cannot be used here
// (not root, no writable cpu controller): only the offload benchmark needs
// them, and a CI runner in a container may not grant them.
func requireAvailable(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("cgroup CPU quotas unavailable here: %v", err)
	}
}

func TestLimit(t *testing.T) {
	requireAvailable(t)

	free := startChild(t).spin(t)
	t.Logf("unlimited: %.3f cores over %v", free, spinFor)

	const cores = 0.2
	g, err := New(fmt.Sprintf("test-%d", os.Getpid()), cores)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	q, p := g.Quota()
	t.Logf("group %s: quota %v per %v", g.Path(), q, p)
	if q != 2*time.Millisecond || p != 10*time.Millisecond {
		t.Errorf("quota %v per %v, want 2ms per 10ms", q, p)
	}
	checkFiles(t, g)

	c := startChild(t)
	pid := c.cmd.Process.Pid
	from, err := cgroupDir(g.ctl, strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Add(pid); err != nil {
		t.Fatal(err)
	}
	if dir, _ := cgroupDir(g.ctl, strconv.Itoa(pid)); dir != g.Path() {
		t.Fatalf("child is in %s after Add, want %s", dir, g.Path())
	}
	used := c.spin(t)
	t.Logf("limited to %v: %.3f cores over %v", cores, used, spinFor)
	if used > 0.3 || used <= 0.05 {
		t.Errorf("child limited to %v cores used %.3f, want over 0.05 and at most 0.3", cores, used)
	}
	// Relative to the same child unlimited, so a busy machine (tests run in
	// parallel) does not fail it.
	if free < 2*used {
		t.Errorf("unlimited the child used %.3f cores, limited %.3f: the limit did not bite", free, used)
	}

	// Close moves the child, still running, back and removes the group.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if dir, _ := cgroupDir(g.ctl, strconv.Itoa(pid)); dir != from {
		t.Errorf("child is in %s after Close, want %s", dir, from)
	}
	if _, err := os.Stat(g.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("group directory after Close: %v, want it gone", err)
	}
	if err := g.Add(pid); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Add after Close = %v, want ErrInvalid", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// checkFiles reads the limit back from the kernel.
func checkFiles(t *testing.T, g *Group) {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(g.Path(), name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if g.v2 {
		if got := read("cpu.max"); got != "2000 10000" {
			t.Errorf("cpu.max = %q, want \"2000 10000\"", got)
		}
		return
	}
	if got := read("cpu.cfs_period_us"); got != "10000" {
		t.Errorf("cpu.cfs_period_us = %s, want 10000", got)
	}
	if got := read("cpu.cfs_quota_us"); got != "2000" {
		t.Errorf("cpu.cfs_quota_us = %s, want 2000", got)
	}
}

func TestAddMissing(t *testing.T) {
	requireAvailable(t)
	g, err := New(fmt.Sprintf("test-missing-%d", os.Getpid()), 0.5)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Reap a child so its pid is surely gone.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	if err := g.Add(cmd.Process.Pid); err == nil {
		t.Errorf("Add(exited pid %d) succeeded", cmd.Process.Pid)
	}
}

func TestNewInvalid(t *testing.T) {
	n := float64(runtime.NumCPU())
	for _, tc := range []struct {
		name  string
		cores float64
	}{
		{"x", 0},
		{"x", -1},
		{"x", MinCores / 2},
		{"x", n + 0.5},
		{"x", math.NaN()},
		{"x", math.Inf(1)},
		{"", 0.5},
		{"a/b", 0.5},
		{"../x", 0.5},
	} {
		if g, err := New(tc.name, tc.cores); !errors.Is(err, errdefs.ErrInvalid) {
			if g != nil {
				g.Close()
			}
			t.Errorf("New(%q, %v) = %v, want ErrInvalid", tc.name, tc.cores, err)
		}
	}
}

func TestCFS(t *testing.T) {
	for _, tc := range []struct {
		cores         float64
		period, quota int64
	}{
		{0.2, 10000, 2000},
		{1, 10000, 10000},
		{2, 10000, 20000},
		{0.1, 10000, 1000},
		{0.05, 20000, 1000},
		{0.0015, 666667, 1000},
		{MinCores, 1000000, 1000},
	} {
		p, q := cfs(tc.cores)
		if p != tc.period || q != tc.quota {
			t.Errorf("cfs(%v) = period %d quota %d, want %d %d", tc.cores, p, q, tc.period, tc.quota)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup/cpu`: "/sys/fs/cgroup/cpu",
		`/mnt/a\040b`:        "/mnt/a b",
		`/mnt/tab\011x\134y`: "/mnt/tab\tx\\y",
		`/mnt/trailing\04`:   `/mnt/trailing\04`,
		`/mnt/notoctal\09x`:  `/mnt/notoctal\09x`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	const hybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	const unified = `22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
`
	const container = `900 800 0:29 /docker/abc /sys/fs/cgroup/cpu ro,relatime master:9 - cgroup cgroup rw,cpu
`
	for _, tc := range []struct {
		name    string
		info    string
		v1      *controller
		v2      int
		cgroup  string // a /proc/<pid>/cgroup
		ctl     *controller
		wantDir string
	}{
		{"hybrid", hybrid, &controller{mount: "/sys/fs/cgroup/cpu,cpuacct", root: "/"}, 1,
			"12:cpuset:/\n4:cpu,cpuacct:/a/b\n0::/user.slice\n", nil, "/sys/fs/cgroup/cpu,cpuacct/a/b"},
		{"unified", unified, nil, 1,
			"0::/user.slice/session-1.scope\n", &controller{v2: true, mount: "/sys/fs/cgroup", root: "/"},
			"/sys/fs/cgroup/user.slice/session-1.scope"},
		{"container", container, &controller{mount: "/sys/fs/cgroup/cpu", root: "/docker/abc"}, 0,
			"3:cpu:/docker/abc/sub\n", nil, "/sys/fs/cgroup/cpu/sub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v1, v2, err := parseMountinfo(strings.NewReader(tc.info))
			if err != nil {
				t.Fatal(err)
			}
			if (v1 == nil) != (tc.v1 == nil) || v1 != nil && *v1 != *tc.v1 {
				t.Errorf("v1 = %+v, want %+v", v1, tc.v1)
			}
			if len(v2) != tc.v2 {
				t.Errorf("%d v2 mounts, want %d", len(v2), tc.v2)
			}
			ctl := tc.ctl
			if ctl == nil {
				ctl = v1
			}
			if dir, ok := ctl.dirOf(tc.cgroup); !ok || dir != tc.wantDir {
				t.Errorf("dirOf = %q, %v; want %q", dir, ok, tc.wantDir)
			}
		})
	}
	if _, ok := (&controller{v2: true, mount: "/x", root: "/"}).dirOf("4:cpu:/a\n"); ok {
		t.Error("v2 dirOf found a cgroup in a v1-only file")
	}
}

// TestCreateV2Files runs the cgroup v2 path against a directory that looks
// like a cgroup2 mount, since the machine the tests run on may have the cpu
// controller on v1 only.
func TestCreateV2Files(t *testing.T) {
	mount := t.TempDir()
	dir := filepath.Join(mount, "accelpool-fake")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		filepath.Join(mount, "cgroup.controllers"):     "cpuset cpu io memory pids\n",
		filepath.Join(mount, "cgroup.subtree_control"): "\n",
		filepath.Join(dir, "cpu.max"):                  "max 100000\n",
	} {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctl := &controller{v2: true, mount: mount, root: "/"}
	if _, ok := ctl.dirOf(mustRead(t, "/proc/self/cgroup")); !ok {
		t.Skip("this process has no cgroup v2 entry in /proc/self/cgroup")
	}
	g, err := create(ctl, "fake", 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if g.Path() != dir {
		t.Errorf("Path() = %s, want %s", g.Path(), dir)
	}
	if got := mustRead(t, filepath.Join(mount, "cgroup.subtree_control")); !strings.HasPrefix(got, "+cpu") {
		t.Errorf("subtree_control = %q, want +cpu written", got)
	}
	if got := mustRead(t, filepath.Join(dir, "cpu.max")); !strings.HasPrefix(got, "2500 10000") {
		t.Errorf("cpu.max = %q, want 2500 10000 written", got)
	}

	// No cpu controller offered: a clear error.
	if err := os.WriteFile(filepath.Join(mount, "cgroup.controllers"), []byte("memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := create(ctl, "fake", 0.25); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "cpu controller is not available") {
		t.Errorf("create without cpu = %v, want ErrUnavailable naming the cpu controller", err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
