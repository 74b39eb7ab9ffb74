// Package synth generates synthetic, heterogeneous clusters and placement
// requests for the scheduler's benchmarks and the simulator. Everything is
// a function of the Config and its seed, so two runs see the same cluster.
//
// A cluster mixes tiers (20 % device, 50 % edge, 30 % cloud), sites, zone
// and arch labels, and one to four accelerators per node whose kind and
// memory follow the tier (devices: a small CPU and sometimes a TPU; edge:
// a CPU and up to three 16–24 GiB GPUs; cloud: a large CPU and up to three
// 40–80 GiB GPUs). A fraction of nodes is down, and existing instances of
// many applications fill accelerator memory to about Config.Fill.
package synth

import (
	"fmt"
	"math/rand/v2"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/scheduler"
)

// Config shapes a synthetic cluster.
type Config struct {
	Nodes int
	Seed  uint64
	// DownFraction of nodes are down; default 0.05 (negative: none).
	DownFraction float64
	// Fill is the mean fraction of accelerator memory reserved by existing
	// instances; default 0.5 (negative: empty cluster).
	Fill float64
	// Apps is how many distinct applications the existing instances
	// belong to; default 10 per node.
	Apps int
}

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// Zones are the values of the "zone" label.
var Zones = []string{"eu", "us", "ap"}

// Sites is the number of sites a cluster of n nodes spans.
func Sites(n int) int { return max(3, n/50) }

// SiteName names site i.
func SiteName(i int) string { return fmt.Sprintf("site-%03d", i) }

// Cluster builds the snapshot described by cfg, with Snapshot.Apps holding
// every application of the existing instances.
func Cluster(cfg Config) scheduler.Snapshot {
	if cfg.DownFraction == 0 {
		cfg.DownFraction = 0.05
	}
	if cfg.Fill == 0 {
		cfg.Fill = 0.5
	}
	if cfg.Apps <= 0 {
		cfg.Apps = max(1, 10*cfg.Nodes)
	}
	r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	snap := scheduler.Snapshot{Nodes: make([]scheduler.NodeState, cfg.Nodes)}
	snap.Apps = make([]cluster.Application, cfg.Apps)
	for i := range snap.Apps {
		snap.Apps[i] = App(r, fmt.Sprintf("app-%06d", i), cfg.Nodes)
	}
	sites := Sites(cfg.Nodes)
	id := 0
	for i := range snap.Nodes {
		n := node(r, i, sites)
		ns := scheduler.NodeState{Node: n, Up: r.Float64() >= cfg.DownFraction}
		for _, a := range n.Accelerators {
			if cfg.Fill < 0 {
				break
			}
			target := int64(float64(a.MemoryBytes) * min(0.95, 2*cfg.Fill*r.Float64()))
			var used int64
			for {
				app := &snap.Apps[r.IntN(len(snap.Apps))]
				m := app.Spec.MemoryBytes
				if used+m > target {
					break
				}
				used += m
				id++
				model, _ := app.Spec.ModelRef()
				ns.Instances = append(ns.Instances, cluster.Instance{
					ID:          fmt.Sprintf("inst-%08d", id),
					App:         app.Metadata.Name,
					Node:        n.Name,
					Accelerator: a.ID,
					ModelName:   model,
					ServedName:  app.Metadata.Name,
					MemoryBytes: m,
				})
			}
		}
		snap.Nodes[i] = ns
	}
	return snap
}

func node(r *rand.Rand, i, sites int) cluster.Node {
	n := cluster.Node{
		Name: fmt.Sprintf("node-%05d", i),
		Site: SiteName(r.IntN(sites)),
		Labels: map[string]string{
			"zone": Zones[r.IntN(len(Zones))],
			"arch": "amd64",
		},
	}
	gpus := func(k int, sizes ...int64) {
		for j := range k {
			n.Accelerators = append(n.Accelerators, cluster.Accelerator{
				ID: fmt.Sprintf("gpu%d", j), Kind: "gpu", Model: "sim",
				MemoryBytes: sizes[r.IntN(len(sizes))], Compute: 20,
			})
		}
	}
	switch p := r.Float64(); {
	case p < 0.2:
		n.Tier = cluster.TierDevice
		n.Labels["arch"] = "arm64"
		n.Accelerators = append(n.Accelerators, cluster.Accelerator{ID: "cpu0", Kind: "cpu", MemoryBytes: int64(2+r.IntN(7)) * gib, Compute: 4})
		if r.IntN(2) == 0 {
			n.Accelerators = append(n.Accelerators, cluster.Accelerator{ID: "tpu0", Kind: "tpu", MemoryBytes: 1 * gib, Compute: 8})
		}
	case p < 0.7:
		n.Tier = cluster.TierEdge
		n.Accelerators = append(n.Accelerators, cluster.Accelerator{ID: "cpu0", Kind: "cpu", MemoryBytes: int64(16<<r.IntN(3)) * gib, Compute: 16})
		gpus(r.IntN(4), 16*gib, 24*gib)
	default:
		n.Tier = cluster.TierCloud
		n.Accelerators = append(n.Accelerators, cluster.Accelerator{ID: "cpu0", Kind: "cpu", MemoryBytes: 128 * gib, Compute: 64})
		gpus(1+r.IntN(3), 40*gib, 80*gib)
	}
	return n
}

// App returns a synthetic application: a 128 MiB–2 GiB model, a rate and
// a p99 objective, and constraints drawn from a mix (40 % none, 20 % edge
// tier, 15 % GPU, 10 % a zone, 10 % two sites, 5 % a device TPU) for a
// cluster of nodes nodes.
func App(r *rand.Rand, name string, nodes int) cluster.Application {
	sizes := []int64{128 * mib, 256 * mib, 512 * mib, 1 * gib, 2 * gib}
	a := cluster.Application{
		APIVersion: cluster.APIVersion,
		Kind:       cluster.KindApplication,
		Metadata:   cluster.Metadata{Name: name},
		Spec: cluster.AppSpec{
			Model:       "model-" + name,
			Objective:   cluster.Objective{P99Ms: float64(20 + r.IntN(480))},
			Rate:        float64(1 + r.IntN(200)),
			Replicas:    cluster.Replicas{Min: 1, Max: 3},
			MemoryBytes: sizes[r.IntN(len(sizes))],
		},
	}
	c := &a.Spec.Constraints
	switch p := r.Float64(); {
	case p < 0.4:
	case p < 0.6:
		c.Tiers = []cluster.Tier{cluster.TierEdge}
	case p < 0.75:
		c.AcceleratorKind = "gpu"
	case p < 0.85:
		c.Labels = map[string]string{"zone": Zones[r.IntN(len(Zones))]}
	case p < 0.95:
		s := Sites(nodes)
		c.Sites = []string{SiteName(r.IntN(s)), SiteName(r.IntN(s))}
	default:
		c.Tiers = []cluster.Tier{cluster.TierDevice}
		c.AcceleratorKind = "tpu"
	}
	return a
}

// Requests returns n placement requests of count instances each for new
// applications ("new-000000", …) with App's mix of constraints.
func Requests(n, count, nodes int, seed uint64) []scheduler.Request {
	r := rand.New(rand.NewPCG(seed, ^seed))
	reqs := make([]scheduler.Request, n)
	for i := range reqs {
		a := App(r, fmt.Sprintf("new-%06d", i), nodes)
		reqs[i] = scheduler.Request{App: a, MemoryBytes: a.Spec.MemoryBytes, Count: count}
	}
	return reqs
}
