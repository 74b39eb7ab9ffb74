package gateway

import (
	"context"
	"testing"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime/fake"
)

// TestResponseParametersForwarded: the agent's server-side timings reach
// the gateway's caller, so a device proxy can separate the node's time from
// the network's.
func TestResponseParametersForwarded(t *testing.T) {
	_, r := cluster(t, map[string]fake.Model{"a": sleepy(2)})
	g, _ := newGateway(t, r, nil)
	resp, err := g.Infer(context.Background(), smallReq("app"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{agent.QueueParameter, agent.ComputeParameter} {
		if v, ok := resp.Parameters[p].(int64); !ok || v < 0 {
			t.Errorf("%s = %#v through the gateway, want a non-negative int64 (all: %v)", p, resp.Parameters[p], resp.Parameters)
		}
	}
	if v, _ := resp.Parameters[agent.ComputeParameter].(int64); v < 2000 {
		t.Errorf("compute_us %d for a model that sleeps 2 ms", v)
	}
}
