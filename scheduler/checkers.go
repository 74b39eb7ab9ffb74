package scheduler

import (
	"slices"
	"strconv"
	"strings"

	"github.com/accelpool/accelpool/cluster"
)

// Checker is a feasibility test. Check reports whether the candidate may
// host one more instance of the request and, if not, why, in words an
// operator reads in `accelpool explain` ("needs 512 MiB, 128 MiB free on
// gpu0"); the checker's Name prefixes it there and counts its rejections.
//
// A Check must depend only on the candidate (its node, accelerator,
// instances and the request), not on other nodes: after each placement of
// a multi-instance decision the scheduler re-evaluates only the node it
// placed on. The scheduler evaluates checkers in order and stops at the
// first hard rejection.
type Checker interface {
	Name() string
	Check(c *Candidate) (ok bool, reason string)
}

// SoftChecker is a Checker that states a preference: a candidate it
// rejects stays eligible and is chosen only when no candidate passes every
// checker. Its reason is recorded as the candidate's fallback note.
type SoftChecker interface {
	Checker
	Soft() bool
}

// NodeChecker is a Checker whose result depends only on the node and the
// request, not on the accelerator (node liveness, tier, site, labels,
// anti-affinity). The scheduler runs it once per node and reuses the
// result for the node's other accelerators.
type NodeChecker interface {
	Checker
	NodeScoped() bool
}

// DeferredChecker is a hard Checker costly enough that running it on
// every candidate dominates a decision (a latency model predicting every
// co-located application's p99). When the policy records only its Top
// candidates, the scheduler runs the other checkers and the rankers on
// every candidate first and a deferred checker only on the eligible ones,
// best-ranked first, until it has the Top best that pass it: the decision
// is the same (the best-ranked candidate that passes every checker), at
// the cost of the candidates ranked below those. Explanation.Unchecked
// counts the eligible candidates it never saw. With Top = 0 (a full
// record) it runs on every candidate like any checker. A deferred checker
// runs after the others, whatever its place in Policy.Checkers; a soft
// one is not deferred.
type DeferredChecker interface {
	Checker
	Deferred() bool
}

// QuietChecker is a Checker that can judge a candidate without building
// its reason, for less: the scheduler calls Passes instead of Check where
// it would not record the reason (the deferred rejections beyond
// Policy.Top's sample).
type QuietChecker interface {
	Checker
	Passes(c *Candidate) bool
}

// DefaultCheckers are the built-in checkers in the order they run: cheap
// node-wide tests first, then memory, then the soft anti-affinity
// preference.
func DefaultCheckers() []Checker {
	return []Checker{NodeUp{}, AcceleratorKind{}, Tiers{}, Sites{}, Labels{}, Memory{}, AntiAffinity{}}
}

// NodeUp rejects nodes that are down.
type NodeUp struct{}

func (NodeUp) NodeScoped() bool { return true }
func (NodeUp) Name() string     { return "up" }

func (NodeUp) Check(c *Candidate) (bool, string) {
	if c.Up() {
		return true, ""
	}
	return false, "node is down"
}

// AcceleratorKind enforces spec.constraints.acceleratorKind.
type AcceleratorKind struct{}

func (AcceleratorKind) Name() string { return "kind" }

func (AcceleratorKind) Check(c *Candidate) (bool, string) {
	want := c.App().Spec.Constraints.AcceleratorKind
	a := c.Accelerator()
	if kindAllows(want, a.Kind) {
		return true, ""
	}
	return false, c.Memo(a.ID, a.Kind, func() string {
		return a.ID + " is " + orNone(a.Kind) + ", app needs " + want
	})
}

// Tiers enforces spec.constraints.tiers: the node's tier must be one of
// them.
type Tiers struct{}

func (Tiers) NodeScoped() bool { return true }
func (Tiers) Name() string     { return "tier" }

func (Tiers) Check(c *Candidate) (bool, string) {
	want := c.App().Spec.Constraints.Tiers
	have := c.Node().Tier
	if tierAllows(want, have) {
		return true, ""
	}
	return false, c.Memo(string(have), "", func() string {
		var b strings.Builder
		b.WriteString("node is ")
		b.WriteString(orNone(string(have)))
		b.WriteString(", app needs ")
		for i, t := range want {
			if i > 0 {
				b.WriteString(" or ")
			}
			b.WriteString(string(t))
		}
		return b.String()
	})
}

// Sites enforces spec.constraints.sites: the node's site must be one of
// them.
type Sites struct{}

func (Sites) NodeScoped() bool { return true }
func (Sites) Name() string     { return "site" }

func (Sites) Check(c *Candidate) (bool, string) {
	want := c.App().Spec.Constraints.Sites
	have := c.Node().Site
	if siteAllows(want, have) {
		return true, ""
	}
	return false, c.Memo(have, "", func() string {
		return "node is at " + orNone(have) + ", app needs " + strings.Join(want, " or ")
	})
}

// Labels enforces spec.constraints.labels: every label must be on the
// node with the same value. The reason names the first mismatch in key
// order.
type Labels struct{}

func (Labels) NodeScoped() bool { return true }
func (Labels) Name() string     { return "label" }

func (Labels) Check(c *Candidate) (bool, string) {
	want := c.App().Spec.Constraints.Labels
	if len(want) == 0 {
		return true, ""
	}
	have := c.Node().Labels
	bad, found := firstLabelMismatch(want, have)
	if !found {
		return true, ""
	}
	hv, ok := have[bad]
	if !ok {
		return false, c.Memo(bad, "\x00", func() string {
			return bad + "=" + want[bad] + " not matched (node has no " + bad + " label)"
		})
	}
	return false, c.Memo(bad, hv, func() string {
		return bad + "=" + want[bad] + " not matched (node has " + bad + "=" + hv + ")"
	})
}

// The constraint predicates the checkers above and Allows share.
func kindAllows(want, have string) bool { return want == "" || have == want }
func tierAllows(want []cluster.Tier, have cluster.Tier) bool {
	return len(want) == 0 || slices.Contains(want, have)
}
func siteAllows(want []string, have string) bool {
	return len(want) == 0 || slices.Contains(want, have)
}

// firstLabelMismatch is the first key, in key order, of want that have
// lacks or holds with another value.
func firstLabelMismatch(want, have map[string]string) (key string, found bool) {
	for k, v := range want {
		if hv, ok := have[k]; ok && hv == v {
			continue
		}
		if !found || k < key {
			key, found = k, true
		}
	}
	return key, found
}

// Allows says whether an application's spec.constraints still admit an
// accelerator of a node, and if not, which constraint does not (the
// control plane replaces an instance whose node the constraints no longer
// admit). Memory, liveness and latency are not constraints: they are
// judged when an instance is placed.
func Allows(a *cluster.Application, n *cluster.Node, accel *cluster.Accelerator) (ok bool, why string) {
	c := &a.Spec.Constraints
	switch {
	case !kindAllows(c.AcceleratorKind, accel.Kind):
		return false, "spec.constraints.acceleratorKind " + c.AcceleratorKind + " does not admit " + accel.ID + " (" + orNone(accel.Kind) + ")"
	case !tierAllows(c.Tiers, n.Tier):
		return false, "spec.constraints.tiers does not admit tier " + orNone(string(n.Tier))
	case !siteAllows(c.Sites, n.Site):
		return false, "spec.constraints.sites does not admit site " + orNone(n.Site)
	}
	if k, bad := firstLabelMismatch(c.Labels, n.Labels); bad {
		return false, "spec.constraints.labels: " + k + "=" + c.Labels[k] + " not matched"
	}
	return true, ""
}

// Memory rejects accelerators without the request's memory free, counting
// what this decision already placed there.
type Memory struct{}

func (Memory) Name() string { return "memory" }

func (Memory) Check(c *Candidate) (bool, string) {
	need := c.Request().MemoryBytes
	free := c.Free()
	if free >= need {
		return true, ""
	}
	var buf [64]byte
	b := append(buf[:0], "needs "...)
	b = appendBytes(b, need)
	b = append(b, ", "...)
	b = appendBytes(b, max(free, 0))
	b = append(b, " free on "...)
	b = append(b, c.Accelerator().ID...)
	return false, string(b)
}

// AntiAffinity prefers nodes that run no instance of the application, so
// that a node failure takes out as few of its instances as possible. It is
// soft: when every node that fits already runs one, the scheduler places
// a second instance on a node rather than fail (replicas for throughput
// matter more than spreading). Use HardAntiAffinity to forbid it.
type AntiAffinity struct{}

func (AntiAffinity) NodeScoped() bool { return true }
func (AntiAffinity) Name() string     { return "anti-affinity" }
func (AntiAffinity) Soft() bool       { return true }

func (AntiAffinity) Check(c *Candidate) (bool, string) {
	return antiAffinity(c)
}

// HardAntiAffinity allows at most one instance of the application per
// node, without exception.
type HardAntiAffinity struct{}

func (HardAntiAffinity) NodeScoped() bool { return true }
func (HardAntiAffinity) Name() string     { return "anti-affinity" }

func (HardAntiAffinity) Check(c *Candidate) (bool, string) {
	return antiAffinity(c)
}

func antiAffinity(c *Candidate) (bool, string) {
	n := c.AppInstancesOnNode()
	if n == 0 {
		return true, ""
	}
	return false, c.Memo(strconv.Itoa(n), "", func() string {
		s := " instances of "
		if n == 1 {
			s = " instance of "
		}
		return "node already runs " + strconv.Itoa(n) + s + c.App().Metadata.Name
	})
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// FormatBytes writes a byte count the way explanations show it: "512 MiB",
// "1.5 GiB", "900 B".
func FormatBytes(n int64) string {
	var buf [32]byte
	return string(appendBytes(buf[:0], n))
}

func appendBytes(dst []byte, n int64) []byte {
	if n < 0 {
		dst = append(dst, '-')
		n = -n
	}
	var v float64
	var u string
	switch {
	case n < 1<<10:
		return append(strconv.AppendInt(dst, n, 10), " B"...)
	case n < 1<<20:
		v, u = float64(n)/(1<<10), " KiB"
	case n < 1<<30:
		v, u = float64(n)/(1<<20), " MiB"
	default:
		v, u = float64(n)/(1<<30), " GiB"
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, v, 'f', 1, 64)
	if s := dst[start:]; len(s) >= 2 && s[len(s)-2] == '.' && s[len(s)-1] == '0' {
		dst = dst[:len(dst)-2]
	}
	return append(dst, u...)
}

var (
	_ NodeChecker = NodeUp{}
	_ Checker     = AcceleratorKind{}
	_ NodeChecker = Tiers{}
	_ NodeChecker = Sites{}
	_ NodeChecker = Labels{}
	_ Checker     = Memory{}
	_ SoftChecker = AntiAffinity{}
	_ NodeChecker = AntiAffinity{}
	_ NodeChecker = HardAntiAffinity{}
)
