package cpulimit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// Period is the CFS period a Group uses unless its quota would fall below
// the kernel's 1 ms minimum. It is short so that a throttled process stalls
// for at most a few milliseconds at a time, as a slow core would, rather
// than running flat out and then stopping for most of 100 ms.
const Period = 10 * time.Millisecond

// The kernel refuses a CFS quota below 1 ms and a period above 1 s.
const (
	minQuotaUS  = 1000
	maxPeriodUS = 1000000
)

// MinCores is the smallest limit New accepts: a 1 ms quota every 1 s.
const MinCores = float64(minQuotaUS) / maxPeriodUS

// Group is a cgroup whose processes share a CPU limit.
type Group struct {
	name     string
	dir      string
	parent   string
	v2       bool
	cores    float64
	periodUS int64
	quotaUS  int64
	ctl      *controller

	mu     sync.Mutex
	origin map[int]string // pid → cgroup directory it was in before Add
	closed bool
}

// controller is where the cpu controller is mounted.
type controller struct {
	v2    bool
	mount string // mount point
	root  string // the mount's root within the hierarchy (mountinfo field 4)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// New creates the cgroup accelpool-<name> limited to cores CPUs (0.2 is a
// fifth of one core), with a CFS period of Period. Under cgroup v1 it is a
// child of the cpu hierarchy's root; under v2 a child of this process's
// cgroup or else of the root, with the cpu controller enabled for children
// there when it is not yet. A group left by an earlier run under the same
// name is reused. Close removes it.
func New(name string, cores float64) (*Group, error) {
	if !nameRE.MatchString(name) {
		return nil, errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("cpulimit: group name %q: want letters, digits, '.', '_' or '-'", name))
	}
	if n := runtime.NumCPU(); math.IsNaN(cores) || cores < MinCores || cores > float64(n) {
		return nil, errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("cpulimit: %v cores: want %v to %d (this machine's CPUs)", cores, MinCores, n))
	}
	ctl, err := findController()
	if err != nil {
		return nil, err
	}
	return create(ctl, name, cores)
}

// create makes the group under ctl; name and cores are valid.
func create(ctl *controller, name string, cores float64) (*Group, error) {
	period, quota := cfs(cores)
	g := &Group{name: name, v2: ctl.v2, cores: cores, periodUS: period, quotaUS: quota, ctl: ctl, origin: map[int]string{}}
	var err error
	if ctl.v2 {
		err = g.createV2()
	} else {
		err = g.createV1()
	}
	if err != nil {
		return nil, err
	}
	return g, nil
}

// cfs is the period and quota, in µs, for cores.
func cfs(cores float64) (period, quota int64) {
	period = Period.Microseconds()
	if q := cores * float64(period); q < minQuotaUS {
		period = min(int64(math.Ceil(minQuotaUS/cores)), maxPeriodUS)
	}
	quota = max(int64(math.Round(cores*float64(period))), minQuotaUS)
	return period, quota
}

func (g *Group) createV1() error {
	g.parent = g.ctl.mount
	g.dir = filepath.Join(g.parent, "accelpool-"+g.name)
	if err := mkdir(g.dir); err != nil {
		return err
	}
	// The quota first goes to unlimited so a reused group takes any period.
	for _, w := range [][2]string{
		{"cpu.cfs_quota_us", "-1"},
		{"cpu.cfs_period_us", strconv.FormatInt(g.periodUS, 10)},
		{"cpu.cfs_quota_us", strconv.FormatInt(g.quotaUS, 10)},
	} {
		if err := write(filepath.Join(g.dir, w[0]), w[1]); err != nil {
			_ = os.Remove(g.dir)
			return err
		}
	}
	return nil
}

func (g *Group) createV2() error {
	parents := []string{g.ctl.mount}
	if cur, err := cgroupDir(g.ctl, "self"); err == nil && cur != g.ctl.mount {
		parents = []string{cur, g.ctl.mount}
	}
	var errs []error
	for _, parent := range parents {
		if err := enableCPU(parent); err != nil {
			errs = append(errs, err)
			continue
		}
		dir := filepath.Join(parent, "accelpool-"+g.name)
		if err := mkdir(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		val := fmt.Sprintf("%d %d", g.quotaUS, g.periodUS)
		if err := write(filepath.Join(dir, "cpu.max"), val); err != nil {
			_ = os.Remove(dir)
			errs = append(errs, err)
			continue
		}
		g.parent, g.dir = parent, dir
		return nil
	}
	return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("cpulimit: no cgroup v2 parent takes a cpu-limited child: %v", errors.Join(errs...)))
}

// enableCPU makes sure dir's children get the cpu controller.
func enableCPU(dir string) error {
	ctls, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cpulimit: %w", err)
	}
	if !hasWord(string(ctls), "cpu") {
		return fmt.Errorf("cpulimit: %s: the cpu controller is not available there (cgroup.controllers: %q)", dir, strings.TrimSpace(string(ctls)))
	}
	sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cpulimit: %w", err)
	}
	if hasWord(string(sub), "cpu") {
		return nil
	}
	if err := write(filepath.Join(dir, "cgroup.subtree_control"), "+cpu"); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("%w (a cgroup other than the root that holds processes cannot enable controllers for children)", err)
		}
		return err
	}
	return nil
}

// Name is the name New was given.
func (g *Group) Name() string { return g.name }

// Path is the group's cgroup directory.
func (g *Group) Path() string { return g.dir }

// Cores is the group's limit in CPUs.
func (g *Group) Cores() float64 { return g.cores }

// Quota is the CFS quota and period the kernel enforces.
func (g *Group) Quota() (quota, period time.Duration) {
	return time.Duration(g.quotaUS) * time.Microsecond, time.Duration(g.periodUS) * time.Microsecond
}

// Add moves process pid, with all its threads, into the group; processes it
// starts afterwards are born in it. Start a process and Add it at once: it
// runs unlimited in between.
func (g *Group) Add(pid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errdefs.New(errdefs.ErrInvalid, fmt.Sprintf("cpulimit: group %s is closed", g.name))
	}
	from, err := cgroupDir(g.ctl, strconv.Itoa(pid))
	if err != nil {
		return err
	}
	if err := write(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("cpulimit: add process %d to %s: %w", pid, g.name, err)
	}
	if from != g.dir {
		g.origin[pid] = from
	}
	return nil
}

// Close moves the processes still in the group back where Add found them
// (its parent for ones they started since) and removes the group.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	var errs []error
	// Processes can fork while we move them; a few rounds catch them.
	for range 5 {
		pids, err := g.procs()
		if err != nil {
			errs = append(errs, err)
			break
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			to := g.origin[pid]
			if to == "" {
				to = g.parent
			}
			err := write(filepath.Join(to, "cgroup.procs"), strconv.Itoa(pid))
			if err != nil && to != g.ctl.mount {
				err = write(filepath.Join(g.ctl.mount, "cgroup.procs"), strconv.Itoa(pid))
			}
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("cpulimit: move process %d out of %s: %w", pid, g.name, err))
			}
		}
	}
	// A process that has just exited can hold the group busy briefly.
	var err error
	for i := range 50 {
		if err = os.Remove(g.dir); err == nil || !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cpulimit: remove %s: %w", g.dir, err))
	}
	g.closed = true
	return errors.Join(errs...)
}

func (g *Group) procs() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cpulimit: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Available says why New cannot work here, or nil when it can: it finds
// the cpu controller and creates and removes a probe group.
func Available() error {
	if _, err := findController(); err != nil {
		return err
	}
	g, err := New(fmt.Sprintf("probe-%d", os.Getpid()), min(1, float64(runtime.NumCPU())))
	if err != nil {
		if os.Geteuid() != 0 {
			return errdefs.New(errdefs.ErrUnavailable, "cpulimit: not root: "+strings.TrimPrefix(err.Error(), "cpulimit: "))
		}
		return err
	}
	return g.Close()
}

// findController locates the cpu controller: a cgroup v1 hierarchy with
// it, else a cgroup v2 one whose root offers it.
func findController() (*controller, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("cpulimit: no cgroups: %v", err))
	}
	defer f.Close()
	v1, v2, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("cpulimit: read /proc/self/mountinfo: %w", err)
	}
	if v1 != nil {
		return v1, nil
	}
	var seen []string
	for _, c := range v2 {
		ctls, err := os.ReadFile(filepath.Join(c.mount, "cgroup.controllers"))
		if err == nil && hasWord(string(ctls), "cpu") {
			return c, nil
		}
		seen = append(seen, fmt.Sprintf("%s offers %q", c.mount, strings.TrimSpace(string(ctls))))
	}
	msg := "cpulimit: no cpu controller: no cgroup v1 hierarchy has it"
	if len(seen) > 0 {
		msg += " and " + strings.Join(seen, ", ")
	} else {
		msg += " and no cgroup v2 is mounted"
	}
	return nil, errdefs.New(errdefs.ErrUnavailable, msg)
}

// parseMountinfo finds the cgroup v1 hierarchy with the cpu controller, if
// any, and every cgroup v2 mount.
func parseMountinfo(r io.Reader) (v1 *controller, v2 []*controller, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 3 {
			continue
		}
		c := &controller{root: unescape(a[3]), mount: unescape(a[4])}
		switch b[0] {
		case "cgroup":
			if v1 == nil && hasWord(strings.ReplaceAll(b[2], ",", " "), "cpu") {
				v1 = c
			}
		case "cgroup2":
			c.v2 = true
			v2 = append(v2, c)
		}
	}
	return v1, v2, sc.Err()
}

// cgroupDir is the directory of the cgroup that process pid ("self" for
// this one) is in for ctl's hierarchy.
func cgroupDir(ctl *controller, pid string) (string, error) {
	data, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", errdefs.New(errdefs.ErrNotFound, fmt.Sprintf("cpulimit: no process %s", pid))
		}
		return "", fmt.Errorf("cpulimit: %w", err)
	}
	if dir, ok := ctl.dirOf(string(data)); ok {
		return dir, nil
	}
	return "", fmt.Errorf("cpulimit: /proc/%s/cgroup names no cgroup for the cpu controller", pid)
}

// dirOf finds, in the text of a /proc/<pid>/cgroup file, the directory of
// the process's cgroup in ctl's hierarchy.
func (ctl *controller) dirOf(procCgroup string) (string, bool) {
	for _, line := range strings.Split(procCgroup, "\n") {
		// 4:cpu,cpuacct:/a/b (v1) or 0::/a/b (v2)
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if ctl.v2 && parts[0] == "0" && parts[1] == "" ||
			!ctl.v2 && hasWord(strings.ReplaceAll(parts[1], ",", " "), "cpu") {
			rel := parts[2]
			if ctl.root != "/" {
				rel = strings.TrimPrefix(rel, ctl.root)
			}
			return filepath.Join(ctl.mount, rel), true
		}
	}
	return "", false
}

func mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		if errors.Is(err, os.ErrPermission) {
			return errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("cpulimit: create cgroup %s: permission denied (needs root or a delegated cgroup)", dir))
		}
		return fmt.Errorf("cpulimit: create cgroup: %w", err)
	}
	return nil
}

// write writes one value to a cgroup file, as echo does.
func write(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cpulimit: %w", err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cpulimit: write %q to %s: %w", value, path, err)
	}
	return nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
