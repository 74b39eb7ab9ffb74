package scheduler_test

import (
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func acc(id, kind string, mem int64) cluster.Accelerator {
	return cluster.Accelerator{ID: id, Kind: kind, MemoryBytes: mem, Compute: 1}
}

func gpu(id string, mem int64) cluster.Accelerator { return acc(id, "gpu", mem) }

// node is an up edge node at site s1 with zone=eu.
func node(name string, accs ...cluster.Accelerator) scheduler.NodeState {
	return scheduler.NodeState{
		Node: cluster.Node{
			Name: name, Tier: cluster.TierEdge, Site: "s1",
			Labels: map[string]string{"zone": "eu"}, Accelerators: accs,
		},
		Up: true,
	}
}

func with(n scheduler.NodeState, f func(*scheduler.NodeState)) scheduler.NodeState {
	f(&n)
	return n
}

func down(n scheduler.NodeState) scheduler.NodeState {
	n.Up = false
	return n
}

func tier(n scheduler.NodeState, t cluster.Tier) scheduler.NodeState {
	n.Node.Tier = t
	return n
}

func site(n scheduler.NodeState, s string) scheduler.NodeState {
	n.Node.Site = s
	return n
}

func labels(n scheduler.NodeState, kv ...string) scheduler.NodeState {
	n.Node.Labels = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Node.Labels[kv[i]] = kv[i+1]
	}
	return n
}

// running adds an instance of app using mem on accelerator a.
func running(n scheduler.NodeState, app, a string, mem int64) scheduler.NodeState {
	id := n.Node.Name + "-" + app + "-" + a
	for _, in := range n.Instances {
		if in.ID == id {
			id += "x"
		}
	}
	n.Instances = append(append([]cluster.Instance(nil), n.Instances...), cluster.Instance{
		ID: id, App: app, Node: n.Node.Name, Accelerator: a, MemoryBytes: mem,
	})
	return n
}

func app(name string, f ...func(*cluster.AppSpec)) cluster.Application {
	a := cluster.Application{
		APIVersion: cluster.APIVersion, Kind: cluster.KindApplication,
		Metadata: cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{
			Model: "m-" + name, Objective: cluster.Objective{P99Ms: 100},
			Replicas: cluster.Replicas{Min: 1, Max: 1}, MemoryBytes: 512 * mib,
		},
	}
	for _, g := range f {
		g(&a.Spec)
	}
	return a
}

func req(a cluster.Application, count int) scheduler.Request {
	return scheduler.Request{App: a, Count: count}
}

// where lists placements as "node/accelerator".
func where(e scheduler.Explanation) []string {
	var out []string
	for _, p := range e.Placements {
		out = append(out, p.Instance.Node+"/"+p.Instance.Accelerator)
	}
	return out
}

// outcome finds a candidate's outcome.
func outcome(e scheduler.Explanation, node, accel string) (scheduler.Outcome, bool) {
	for _, o := range e.Candidates {
		if o.Node == node && o.Accelerator == accel {
			return o, true
		}
	}
	return scheduler.Outcome{}, false
}
