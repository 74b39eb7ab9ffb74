package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
	etcdstore "github.com/accelpool/accelpool/store/etcd"
	"github.com/accelpool/accelpool/store/etcd/etcdtest"
)

// TestClusterFaults runs a whole cluster as separate processes on loopback
// — etcd, two control-plane replicas, three agents serving through ONNX
// Runtime — deploys three applications with the CLI, keeps inference
// flowing through both replicas' gateways over REST and gRPC, and then
// kills an agent, kills the leader and restarts etcd, measuring how long
// each takes to heal. Every request must end in a correct answer or an
// error response; connection failures are allowed only to a process the
// test killed; nothing may hang. Two variants differ in where etcd runs:
//
//   - embedded: etcd is embedded in replica r1 (`accelpool server
//     --etcd-listen`), r2 uses it with --etcd-endpoints. r1 always wins the
//     first election, and killing r1 would take etcd down with it, so
//     before the leader kill the test hands leadership to r2 by revoking
//     r1's election-session lease in etcd (what `etcdctl lease revoke`
//     does): r1 steps down and campaigns again behind r2. The leader
//     killed is then r2. "Restarting etcd" in this variant means crashing
//     r1, the process hosting it (kill -9), and starting the same command
//     line again on the same data directory and ports.
//   - debian-etcd: Debian's etcd-server (/usr/bin/etcd, etcd 3.4) runs as
//     its own process (etcdtest.StartProcess); both replicas use
//     --etcd-endpoints. etcd is restarted with SIGTERM and started again on
//     the same data directory and ports. Without /usr/bin/etcd this variant
//     fails, naming `apt-get install -y etcd-server`.
//
// A killed replica is restarted once its replacement has been measured, as
// a supervisor would, so each step starts with both replicas serving.
func TestClusterFaults(t *testing.T) {
	repo := requireDemoModels(t)
	w := newWorkload(t, requireORT(t), repo)
	bin := clusterBinary(t)
	var summary []string
	for _, variant := range []string{"embedded", "debian-etcd"} {
		t.Run(variant, func(t *testing.T) {
			start := time.Now()
			line := runClusterFaults(t, variant, bin, repo, w)
			line += fmt.Sprintf(" [variant took %.0fs]", time.Since(start).Seconds())
			summary = append(summary, line)
		})
	}
	t.Logf("summary:\n%s", strings.Join(summary, "\n"))
}

const clusterToken = "cluster-faults-test-token"

// variantBudget bounds one variant: every wait is capped so that the
// variant fails rather than overrun it. A healthy run takes about 20s.
const variantBudget = 3 * time.Minute

// replica is one `accelpool server` process and its gateway as the load
// sees it.
type replica struct {
	name, url string
	p         *proc
	g         *target
}

// clusterApps are the applications deployed at the start, by name, with
// the model each serves.
var clusterApps = map[string]string{"face": "blazeface-front", "cls": "ocr-cls", "face-solo": "blazeface-front"}

const clusterAppsYAML = `apiVersion: accelpool.io/v1
kind: Application
metadata: {name: face}
spec:
  model: blazeface-front
  objective: {p99Ms: 1000}
  replicas: {min: 2, max: 2}
  constraints: {tiers: [edge]}
  memoryBytes: 268435456
---
apiVersion: accelpool.io/v1
kind: Application
metadata: {name: cls}
spec:
  model: ocr-cls
  objective: {p99Ms: 1000}
  replicas: {min: 1, max: 1}
  batching: {maxBatchSize: 8, maxQueueDelayMs: 2}
  memoryBytes: 268435456
---
apiVersion: accelpool.io/v1
kind: Application
metadata: {name: face-solo}
spec:
  model: blazeface-front
  objective: {p99Ms: 1000}
  replicas: {min: 1, max: 1}
  memoryBytes: 268435456
`

func oneAppYAML(name, model string) string {
	return fmt.Sprintf("apiVersion: accelpool.io/v1\nkind: Application\nmetadata: {name: %s}\nspec:\n  model: %s\n"+
		"  objective: {p99Ms: 1000}\n  replicas: {min: 1, max: 1}\n  memoryBytes: 268435456\n", name, model)
}

// faultReport is what one variant measured.
type faultReport struct {
	variant string
	// Step 1: an agent hosting an instance is killed.
	agentKilled            string
	agentAnswer, agentRepl time.Duration
	// Step 2: the leader is killed.
	handover     time.Duration // embedded only: r1 → r2 by lease revoke
	leaderKilled string
	newLeader    time.Duration
	deployTook   time.Duration // the deploy command through the survivor
	deployReady  time.Duration // from the deploy until the new app answered
	rejoin       time.Duration // the killed replica restarted until ready
	// Step 3: etcd restarts.
	etcdBack      time.Duration // etcd (and, embedded, its host replica) serving again
	etcdRecovered time.Duration // a deploy accepted and every app answering
	etcdReady     time.Duration // the app deployed after the restart answering
	nodeFlaps     int           // polls that saw a live agent reported down during step 3
	phases        []string
}

func (r faultReport) line(c counts) string {
	s := fmt.Sprintf("cluster[%s]: agent kill → all apps answer after %.1fs (re-placed+ready %.1fs); ", r.variant,
		r.agentAnswer.Seconds(), r.agentRepl.Seconds())
	if r.handover > 0 {
		s += fmt.Sprintf("handover r1→r2 %.1fs; ", r.handover.Seconds())
	}
	s += fmt.Sprintf("leader kill (%s) → new leader %.1fs, deploy ok (%.1fs, app answering %.1fs later; %s restarted and ready in %.1fs); ",
		r.leaderKilled, r.newLeader.Seconds(), r.deployTook.Seconds(), r.deployReady.Seconds(), r.leaderKilled, r.rejoin.Seconds())
	s += fmt.Sprintf("etcd restart → etcd back %.1fs, recovered %.1fs (new app answering %.1fs", r.etcdBack.Seconds(),
		r.etcdRecovered.Seconds(), r.etcdReady.Seconds())
	if r.nodeFlaps > 0 {
		s += fmt.Sprintf(", live agents seen down %d times", r.nodeFlaps)
	}
	s += "); "
	s += fmt.Sprintf("requests ok=%d err=%d refused=%d cut=%d lost=%d wrong=%d", c[outOK], c[outErr], c[outRefused], c[outCut], c[outLost], c[outWrong])
	return s
}

// faultCluster is one variant's running cluster and what it measured.
type faultCluster struct {
	t                  *testing.T
	variant, bin, repo string
	dir                string
	w                  *workload
	began, deadline    time.Time

	ps           *procSet
	etcdEndpoint string
	restartEtcd  func() // debian-etcd: SIGTERM etcd, start it again, wait until healthy
	r1, r2       *replica
	replicas     []*replica
	targets      []*target
	servers      string // both replicas' URLs, comma-separated, for --join and --server
	cl           *client.Client
	agents       map[string]*proc

	st, probes *stats // the steady load's outcomes; the probes' (waiting for recovery)
	ld         *load
	loadDone   bool
	mark       counts
	apps       map[string]string // every app deployed so far → model
	rep        faultReport
}

func runClusterFaults(t *testing.T, variant, bin, repo string, w *workload) string {
	c := &faultCluster{t: t, variant: variant, bin: bin, repo: repo, dir: t.TempDir(), w: w,
		began: time.Now(), apps: withApps(clusterApps, nil), rep: faultReport{variant: variant}}
	c.deadline = c.began.Add(variantBudget)
	c.start()
	c.killAgent()
	c.killLeader()
	c.restartEtcdStep()
	return c.finish()
}

// within caps a wait by the variant's budget, so that a cluster that does
// not heal fails the test within it.
func (c *faultCluster) within(d time.Duration) time.Duration {
	return min(d, max(time.Until(c.deadline), time.Second))
}

func (c *faultCluster) progress(what string) {
	c.t.Logf("%5.1fs %s", time.Since(c.began).Seconds(), what)
}

// phase closes a row of the per-phase request table.
func (c *faultCluster) phase(name string) {
	now := c.st.snapshot()
	c.rep.phases = append(c.rep.phases, fmt.Sprintf("  %5.1fs %-24s %s", time.Since(c.began).Seconds(), name, now.minus(c.mark)))
	c.mark = now
}

// cli runs an accelpool command against the cluster's admin API.
func (c *faultCluster) cli(args ...string) (string, error) {
	return runCLI(context.Background(), c.bin, append(args, "--token", clusterToken)...)
}

// deploy writes doc to a file and deploys it with `accelpool deploy -f`
// through servers.
func (c *faultCluster) deploy(name, doc, servers string, extra ...string) (string, error) {
	file := filepath.Join(c.dir, name+".yaml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return c.cli(append([]string{"deploy", "-f", file, "--server", servers}, extra...)...)
}

// start runs etcd, the replicas and the agents, pushes the models, deploys
// the applications and starts the steady load.
func (c *faultCluster) start() {
	t := c.t
	replicaArgs := func(name string) (args []string, url string, grpcAddr string) {
		listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		grpcAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		return []string{"server", "--data-dir", filepath.Join(c.dir, name), "--listen", listen, "--grpc", grpcAddr,
			"--token", clusterToken, "--lease-ttl", "3s", "--election-ttl", "3s"}, "http://" + listen, grpcAddr
	}
	r1Args, r1URL, r1GRPC := replicaArgs("r1")
	r2Args, r2URL, r2GRPC := replicaArgs("r2")
	switch c.variant {
	case "debian-etcd":
		bin := os.Getenv("ACCELPOOL_ETCD")
		if bin == "" {
			bin = etcdtest.EtcdBinary
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("the debian-etcd variant needs Debian's etcd server at %s (%v): install it with `%s` (as root)", bin, err, etcdtest.InstallHint)
		}
		// Started before the process set, so that the set's cleanup —
		// killing the replicas and agents — runs before etcd stops.
		eps, _, restart := etcdtest.StartProcess(t, filepath.Join(c.dir, "etcd"))
		c.etcdEndpoint, c.restartEtcd = eps[0], restart
		r1Args = append(r1Args, "--etcd-endpoints", c.etcdEndpoint)
	case "embedded":
		etcdListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c.etcdEndpoint = "http://" + etcdListen
		r1Args = append(r1Args, "--etcd-listen", etcdListen)
	default:
		t.Fatalf("unknown variant %q", c.variant)
	}
	r2Args = append(r2Args, "--etcd-endpoints", c.etcdEndpoint)
	c.ps = newProcSet(t, c.bin)

	startReplica := func(name, url, grpcAddr string, args []string) *replica {
		p := c.ps.start(name, args...)
		if err := waitHTTP200(url+"/readyz", c.within(60*time.Second)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return &replica{name: name, url: url, p: p, g: newTarget(name, url, grpcAddr, clusterToken)}
	}
	c.r1 = startReplica("r1", r1URL, r1GRPC, r1Args)
	c.r2 = startReplica("r2", r2URL, r2GRPC, r2Args)
	c.replicas = []*replica{c.r1, c.r2}
	c.targets = []*target{c.r1.g, c.r2.g}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.g.close()
		}
	})
	c.progress("etcd and both replicas serving")
	c.servers = c.r1.url + "," + c.r2.url
	c.cl = client.New([]string{c.r1.url, c.r2.url}, clusterToken, &http.Client{Timeout: 10 * time.Second})

	c.agents = map[string]*proc{}
	for _, name := range []string{"a1", "a2", "a3"} {
		c.agents[name] = c.ps.start(name, "agent", "--join", c.servers, "--token", clusterToken, "--name", name, "--tier", "edge",
			"--site", "lab", "--accelerator", "cpu:2GiB:1", "--data-dir", filepath.Join(c.dir, name))
	}
	waitUntil(t, "three agents up", c.within(60*time.Second), func() bool { return nodesUp(c.cl) == 3 })
	c.progress("three agents up")

	for _, m := range []string{"blazeface-front", "ocr-cls"} {
		if _, err := c.cli("model", "push", filepath.Join(c.repo, m, "1", "model.onnx"), "--name", m, "--server", c.servers); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.deploy("apps", clusterAppsYAML, c.servers)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy:\n%s", strings.TrimSpace(out))
	waitReady(t, c.cl, c.within(90*time.Second))
	c.progress("models pushed, applications deployed and ready")
	if out, err = c.cli("get", "apps", "-o", "json", "--server", c.servers); err != nil {
		t.Fatal(err)
	}
	var views []cluster.AppView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("get apps -o json: %v\n%s", err, out)
	}
	for _, v := range views {
		t.Logf("app %s: %d/%d ready on %s", v.Metadata.Name, v.Status.Ready, v.Status.Desired, strings.Join(instanceNodes(v), ","))
	}
	if !c.w.probe(newStats(), clusterApps, c.targets) {
		t.Fatal("the applications do not answer through both gateways after deploy")
	}

	// Steady inference through both gateways, over REST and gRPC.
	c.st, c.probes = newStats(), newStats()
	c.ld = startLoad(c.w, c.st, clusterApps, c.targets)
	t.Cleanup(c.stopLoad)
	c.mark = c.st.snapshot()
	time.Sleep(2 * time.Second)
	c.phase("steady")
}

func (c *faultCluster) stopLoad() {
	if !c.loadDone {
		c.loadDone = true
		c.ld.stop()
	}
}

// killAgent is step 1: kill -9 the agent serving cls, whose only instance
// is there, so that one app at least cannot answer until placed again.
func (c *faultCluster) killAgent() {
	cls, err := c.cl.App(context.Background(), "cls")
	if err != nil || len(cls.Status.Instances) == 0 {
		c.t.Fatalf("cls has no instance: %v %+v", err, cls.Status)
	}
	victim := cls.Status.Instances[0].Node
	c.rep.agentKilled = victim
	killedAt := time.Now()
	c.agents[victim].kill()
	var answered, replaced bool
	waitUntil(c.t, "apps answering and re-placed after the agent kill", c.within(60*time.Second), func() bool {
		if !answered && c.w.probe(c.probes, c.apps, c.targets) {
			answered, c.rep.agentAnswer = true, time.Since(killedAt)
		}
		if !replaced && replacedOff(c.cl, victim) {
			replaced, c.rep.agentRepl = true, time.Since(killedAt)
		}
		return answered && replaced
	})
	time.Sleep(time.Second)
	c.phase("1 agent kill " + victim)
}

// killLeader is step 2: kill -9 the leader, measure the takeover, deploy a
// new app through the survivor, and restart the killed replica.
func (c *faultCluster) killLeader() {
	t := c.t
	lv, err := c.cl.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	leader := replicaByURL(c.replicas, lv.Leader)
	if leader == nil {
		t.Fatalf("leader %q is neither replica", lv.Leader)
	}
	if c.variant == "embedded" && leader == c.r1 {
		// Killing r1 would take etcd with it: hand leadership to r2.
		start := time.Now()
		if err := revokeLeaderSession(context.Background(), c.etcdEndpoint, c.r1.url); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "r2 leading after the handover", c.within(30*time.Second), func() bool { return leads(c.r2) })
		c.rep.handover = time.Since(start)
		leader = c.r2
		c.phase("2a handover r1→r2")
	}
	survivor := c.r1
	if leader == c.r1 {
		survivor = c.r2
	}
	c.rep.leaderKilled = leader.name
	leader.g.markDown()
	killedAt := time.Now()
	leader.p.kill()
	waitUntil(t, survivor.name+" leading after the leader kill", c.within(60*time.Second), func() bool { return leads(survivor) })
	c.rep.newLeader = time.Since(killedAt)

	deployAt := time.Now()
	if _, err := c.deploy("late", oneAppYAML("late", "ocr-cls"), survivor.url); err != nil {
		t.Fatalf("deploy through the survivor %s: %v", survivor.name, err)
	}
	c.rep.deployTook = time.Since(deployAt)
	c.apps["late"] = "ocr-cls"
	waitUntil(t, "the app deployed after the leader kill answering", c.within(60*time.Second), func() bool {
		return c.w.probe(c.probes, map[string]string{"late": "ocr-cls"}, c.targets)
	})
	c.rep.deployReady = time.Since(deployAt)
	c.phase("2b leader kill " + leader.name)

	restartAt := time.Now()
	leader.p.start()
	if err := waitHTTP200(leader.url+"/readyz", c.within(60*time.Second)); err != nil {
		t.Fatalf("%s after restart: %v", leader.name, err)
	}
	leader.g.markUp()
	c.rep.rejoin = time.Since(restartAt)
	time.Sleep(time.Second)
	c.phase("2c " + leader.name + " restarted")
}

// restartEtcdStep is step 3: restart etcd (embedded: crash and restart r1,
// which hosts it) and wait until a deploy is accepted and every app
// answers, then until the app deployed answers too.
func (c *faultCluster) restartEtcdStep() {
	t := c.t
	live := liveAgents(c.agents)
	var etcdAt time.Time
	switch c.variant {
	case "debian-etcd":
		etcdAt = time.Now()
		c.restartEtcd()
	case "embedded":
		c.r1.g.markDown()
		etcdAt = time.Now()
		c.r1.p.kill()
		c.r1.p.start()
		if err := waitHTTP200(c.r1.url+"/readyz", c.within(60*time.Second)); err != nil {
			t.Fatalf("r1 (hosting etcd) after restart: %v", err)
		}
		c.r1.g.markUp()
	}
	c.rep.etcdBack = time.Since(etcdAt)

	var deployed, allAnswer bool
	var refusals []string
	waitUntil(t, "deploy accepted and every app answering after the etcd restart", c.within(60*time.Second), func() bool {
		for _, n := range live {
			if nv, err := c.cl.Node(context.Background(), n); err == nil && !nv.Up {
				c.rep.nodeFlaps++
			}
		}
		if !deployed {
			_, err := c.deploy("after-etcd", oneAppYAML("after-etcd", "blazeface-front"), c.servers, "--timeout", "10s")
			// An attempt that timed out may have applied it.
			if err == nil || strings.Contains(err.Error(), "already exists") {
				deployed = true
			} else {
				refusals = append(refusals, err.Error())
			}
		}
		if !allAnswer {
			allAnswer = c.w.probe(c.probes, c.apps, c.targets)
		}
		return deployed && allAnswer
	})
	c.rep.etcdRecovered = time.Since(etcdAt)
	for i, e := range refusals {
		if i < 3 {
			t.Logf("deploy during the etcd recovery refused: %s", e)
		}
	}
	if len(refusals) > 0 {
		t.Logf("deploy during the etcd recovery: %d attempts refused before one was accepted", len(refusals))
	}
	c.apps["after-etcd"] = "blazeface-front"
	waitUntil(t, "the app deployed after the etcd restart answering", c.within(60*time.Second), func() bool {
		return c.w.probe(c.probes, map[string]string{"after-etcd": "blazeface-front"}, c.targets)
	})
	c.rep.etcdReady = time.Since(etcdAt)
	time.Sleep(time.Second)
	c.phase("3 etcd restart")
}

// finish stops the load, prints the tables and checks that no request was
// lost or answered wrongly.
func (c *faultCluster) finish() string {
	t := c.t
	waitReady(t, c.cl, c.within(60*time.Second))
	if !c.w.probe(c.probes, c.apps, c.targets) {
		t.Errorf("not every application answers through both gateways at the end")
	}
	c.stopLoad()
	c.phase("end")
	total, pt := c.st.snapshot(), c.probes.snapshot()
	t.Logf("requests by phase:\n%s", strings.Join(c.rep.phases, "\n"))
	if r := c.st.errorReport(); r != "" {
		t.Logf("requests that did not get a correct answer, by outcome or error code:\n%s", r)
	}
	t.Logf("slowest request by outcome: %s", c.st.slowestReport())
	t.Logf("probes (one request per app and live gateway, every 100ms while waiting): %s", pt)
	if r := c.probes.errorReport(); r != "" {
		t.Logf("probes that did not get a correct answer:\n%s", r)
	}
	if c.rep.nodeFlaps > 0 {
		// Not a failure: their instances are placed again, and the apps
		// answered. But it means a lease lapsed while etcd was away.
		t.Logf("live agents were reported down %d times during the etcd restart", c.rep.nodeFlaps)
	}
	if total[outLost]+pt[outLost] != 0 || total[outWrong]+pt[outWrong] != 0 {
		t.Errorf("%d requests got neither an answer nor an error response, %d got wrong outputs",
			total[outLost]+pt[outLost], total[outWrong]+pt[outWrong])
	}
	line := c.rep.line(total)
	t.Log(line)
	return line
}

// waitUntil polls cond every 100ms until it holds, failing the test after
// timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(t *testing.T, cl *client.Client, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := cl.WaitReady(ctx); err != nil {
		apps, _ := cl.Apps(context.Background())
		for _, a := range apps {
			t.Logf("app %s: %d/%d ready: %s %+v", a.Metadata.Name, a.Status.Ready, a.Status.Desired, a.Status.Message, a.Status.Instances)
		}
		t.Fatalf("applications not ready after %v: %v", timeout, err)
	}
}

func nodesUp(cl *client.Client) int {
	nodes, err := cl.Nodes(context.Background())
	if err != nil {
		return 0
	}
	up := 0
	for _, n := range nodes {
		if n.Up {
			up++
		}
	}
	return up
}

// replacedOff reports whether every application is fully ready with no
// instance left on node.
func replacedOff(cl *client.Client, node string) bool {
	apps, err := cl.Apps(context.Background())
	if err != nil {
		return false
	}
	for _, a := range apps {
		if a.Status.Ready < a.Status.Desired {
			return false
		}
		for _, in := range a.Status.Instances {
			if in.Node == node {
				return false
			}
		}
	}
	return true
}

func instanceNodes(v cluster.AppView) []string {
	var out []string
	for _, in := range v.Status.Instances {
		out = append(out, in.Node+"("+in.State+")")
	}
	sort.Strings(out)
	return out
}

func replicaByURL(rs []*replica, url string) *replica {
	for _, r := range rs {
		if r.url == url {
			return r
		}
	}
	return nil
}

// leads asks r itself whether it leads.
func leads(r *replica) bool {
	lv, err := client.New([]string{r.url}, clusterToken, &http.Client{Timeout: 2 * time.Second}).Leader(context.Background())
	return err == nil && lv.IsLeader && lv.Leader == r.url
}

func liveAgents(agents map[string]*proc) []string {
	var out []string
	for name, p := range agents {
		if p.running() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func withApps(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// revokeLeaderSession revokes the lease of the election key whose value is
// leaderURL, as `etcdctl lease revoke` would: that replica's session ends,
// it steps down and campaigns again behind the others.
func revokeLeaderSession(ctx context.Context, endpoint, leaderURL string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	prefix := etcdstore.DefaultPrefix + "/election/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list election keys: %w", err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) == leaderURL {
			if _, err := cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
				return fmt.Errorf("revoke lease of %s: %w", kv.Key, err)
			}
			return nil
		}
	}
	return errors.New("no election key holds " + leaderURL)
}
