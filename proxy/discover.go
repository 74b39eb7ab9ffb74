package proxy

import (
	"context"

	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/cluster"
)

// ControlPlane returns a Config.Discover that asks the control plane for
// the nodes holding ready instances and what each serves: every node with
// a gRPC address becomes a target named after it, with its tier and site,
// serving each application it holds a ready instance of under that
// instance's served name.
func ControlPlane(c *client.Client) func(context.Context) ([]Target, error) {
	return func(ctx context.Context) ([]Target, error) {
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		apps, err := c.Apps(ctx)
		if err != nil {
			return nil, err
		}
		return targetsFromViews(nodes, apps), nil
	}
}

func targetsFromViews(nodes []cluster.NodeView, apps []cluster.AppView) []Target {
	byNode := map[string]*Target{}
	var out []Target
	for _, n := range nodes {
		if !n.Up || n.GRPCAddr == "" {
			continue
		}
		byNode[n.Name] = &Target{Name: n.Name, Addr: n.GRPCAddr, Tier: string(n.Tier), Site: n.Site, Models: map[string]string{}}
	}
	for _, a := range apps {
		for _, in := range a.Status.Instances {
			t := byNode[in.Node]
			if t == nil || in.State != cluster.InstanceReady {
				continue
			}
			if _, dup := t.Models[a.Metadata.Name]; !dup {
				t.Models[a.Metadata.Name] = in.ServedName
			}
		}
	}
	for _, n := range nodes {
		if t := byNode[n.Name]; t != nil && len(t.Models) > 0 {
			out = append(out, *t)
		}
	}
	return out
}
