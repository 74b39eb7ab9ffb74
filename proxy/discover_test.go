package proxy

import (
	"testing"

	"github.com/accelpool/accelpool/cluster"
)

func TestTargetsFromViews(t *testing.T) {
	node := func(name, addr string, tier cluster.Tier, up bool) cluster.NodeView {
		return cluster.NodeView{Node: cluster.Node{Name: name, GRPCAddr: addr, Tier: tier, Site: "s1"}, Up: up}
	}
	inst := func(node, served, state string) cluster.InstanceView {
		return cluster.InstanceView{Instance: cluster.Instance{Node: node, ServedName: served}, State: state}
	}
	app := func(name string, ins ...cluster.InstanceView) cluster.AppView {
		var a cluster.AppView
		a.Metadata.Name = name
		a.Status.Instances = ins
		return a
	}
	nodes := []cluster.NodeView{node("e1", "10.0.0.1:8001", cluster.TierEdge, true), node("c1", "10.0.0.2:8001", cluster.TierCloud, true),
		node("down", "10.0.0.3:8001", cluster.TierEdge, false), node("noaddr", "", cluster.TierEdge, true)}
	apps := []cluster.AppView{
		app("det", inst("e1", "det-a1b2", cluster.InstanceReady), inst("c1", "det-c3d4", "Loading"), inst("down", "det-x", cluster.InstanceReady)),
		app("rec", inst("c1", "rec-9", cluster.InstanceReady), inst("noaddr", "rec-1", cluster.InstanceReady)),
	}
	got := targetsFromViews(nodes, apps)
	if len(got) != 2 {
		t.Fatalf("got %d targets %+v, want e1 and c1", len(got), got)
	}
	if got[0].Name != "e1" || got[0].Tier != "edge" || got[0].Models["det"] != "det-a1b2" || len(got[0].Models) != 1 {
		t.Errorf("e1: %+v", got[0])
	}
	if got[1].Name != "c1" || got[1].Models["rec"] != "rec-9" || len(got[1].Models) != 1 {
		t.Errorf("c1 (det not ready there): %+v", got[1])
	}
}
