package scheduler_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scenarios")

// TestScenarios runs the data-driven placement scenarios in testdata/.
// A scenario builds a cluster line by line and checks the explanation of
// each command against the expected text that follows it:
//
//	node NAME [tier=T] [site=S] [labels=k:v,k:v] [down]
//	acc NODE ID KIND SIZE [free=SIZE]
//	inst NODE ACC APP SIZE [id=ID]
//	place APP SIZE [count=N] [tiers=a,b] [sites=a,b] [labels=k:v] [kind=K] [policy=binpack|spread] [top=N]
//	remove APP TARGET
//	----
//	expected output
//	====
//
// Run with -rewrite to regenerate the expected output.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		out     strings.Builder // the file, rewritten
		nodes   []scheduler.NodeState
		lines   = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		changed bool
	)
	find := func(name string) *scheduler.NodeState {
		for i := range nodes {
			if nodes[i].Node.Name == name {
				return &nodes[i]
			}
		}
		t.Fatalf("%s: unknown node %q", path, name)
		return nil
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		out.WriteString(line + "\n")
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		where := fmt.Sprintf("%s:%d", path, i+1)
		args := map[string]string{}
		var pos []string
		for _, a := range f[1:] {
			if k, v, ok := strings.Cut(a, "="); ok {
				args[k] = v
			} else {
				pos = append(pos, a)
			}
		}
		var got string
		switch f[0] {
		case "node":
			n := node(pos[0])
			if v, ok := args["tier"]; ok {
				n.Node.Tier = cluster.Tier(v)
			}
			if v, ok := args["site"]; ok {
				n.Node.Site = v
			}
			n.Node.Labels = kv(args["labels"])
			n.Up = !slices.Contains(pos, "down")
			nodes = append(nodes, n)
			continue
		case "acc":
			n := find(pos[0])
			n.Node.Accelerators = append(n.Node.Accelerators, acc(pos[1], pos[2], size(t, where, pos[3])))
			if v, ok := args["free"]; ok {
				if n.FreeMemory == nil {
					n.FreeMemory = map[string]int64{}
				}
				n.FreeMemory[pos[1]] = size(t, where, v)
			}
			continue
		case "inst":
			n := find(pos[0])
			*n = running(*n, pos[2], pos[1], size(t, where, pos[3]))
			if v, ok := args["id"]; ok {
				n.Instances[len(n.Instances)-1].ID = v
			}
			continue
		case "place":
			a := app(pos[0], func(s *cluster.AppSpec) {
				s.MemoryBytes = size(t, where, pos[1])
				c := &s.Constraints
				for _, v := range list(args["tiers"]) {
					c.Tiers = append(c.Tiers, cluster.Tier(v))
				}
				c.Sites = list(args["sites"])
				if v := kv(args["labels"]); len(v) > 0 {
					c.Labels = v
				}
				c.AcceleratorKind = args["kind"]
			})
			r := req(a, atoi(t, where, args["count"]))
			p := scheduler.BinPackPolicy()
			if args["policy"] == "spread" {
				p = scheduler.SpreadPolicy()
			}
			p.Top = atoi(t, where, args["top"])
			e, err := scheduler.Place(scheduler.Snapshot{Nodes: nodes}, r, p)
			var b strings.Builder
			if err := e.Format(&b); err != nil {
				t.Fatal(err)
			}
			if err != nil {
				fmt.Fprintf(&b, "error: %v\n", err)
			}
			got = b.String()
		case "remove":
			s, err := scheduler.Prepare(scheduler.Snapshot{Nodes: nodes})
			if err != nil {
				t.Fatal(err)
			}
			var insts []cluster.Instance
			for _, n := range nodes {
				for _, in := range n.Instances {
					if in.App == pos[0] {
						insts = append(insts, in)
					}
				}
			}
			var b strings.Builder
			for _, r := range s.ChooseRemovals(insts, atoi(t, where, pos[1])) {
				fmt.Fprintf(&b, "remove %s: %s\n", r.Instance.ID, r.Reason)
			}
			got = b.String()
		default:
			t.Fatalf("%s: unknown command %q", where, f[0])
		}
		// Expected output: "----", lines, "====".
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s: %s must be followed by ----", where, f[0])
		}
		j := i + 2
		for j < len(lines) && lines[j] != "====" {
			j++
		}
		if j >= len(lines) {
			t.Fatalf("%s: expected output does not end with ====", where)
		}
		want := ""
		if j > i+2 {
			want = strings.Join(lines[i+2:j], "\n") + "\n"
		}
		if got != want {
			changed = true
			if !*rewrite {
				t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", where, line, got, want)
			}
		}
		out.WriteString("----\n" + got + "====\n")
		i = j
	}
	if *rewrite && changed {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func size(t *testing.T, where, s string) int64 {
	units := map[string]int64{"GiB": gib, "MiB": mib, "KiB": 1 << 10, "B": 1}
	for _, u := range []string{"GiB", "MiB", "KiB", "B"} {
		if v, ok := strings.CutSuffix(s, u); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: size %q: %v", where, s, err)
			}
			return int64(f * float64(units[u]))
		}
	}
	t.Fatalf("%s: size %q needs a unit (B, KiB, MiB, GiB)", where, s)
	return 0
}

func atoi(t *testing.T, where, s string) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return n
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func kv(s string) map[string]string {
	m := map[string]string{}
	for _, p := range list(s) {
		k, v, _ := strings.Cut(p, ":")
		m[k] = v
	}
	return m
}
