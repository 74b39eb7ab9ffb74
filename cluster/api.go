package cluster

import "time"

// The agent ⇄ server protocol. Agents call the server's admin API with the
// cluster token (Authorization: Bearer):
//
//	POST /api/v1/agent/join        JoinRequest      → JoinResponse
//	POST /api/v1/agent/heartbeat   HeartbeatRequest → HeartbeatResponse
//	                                 404 when the node's lease has lapsed: join again
//	GET  /api/v1/agent/assignments?node=NAME&agent=ID&after=REV&wait=30s
//	                               → Assignments; long-polls until the node's
//	                                 assignments change after REV or wait passes
//	GET  /api/v1/blobs/sha256:HEX  the artifact bytes; honours Range for resumed pulls
//
// Errors are {"error": "..."} with the errdefs status mapping; joining with
// a name an agent with another AgentID holds live is 409 Conflict.

// JoinRequest registers (or re-registers) a node.
type JoinRequest struct {
	Node Node `json:"node"`
}

// JoinResponse tells the agent how often to heartbeat.
type JoinResponse struct {
	// HeartbeatInterval is how often to call heartbeat; the node is marked
	// down when LeaseTTL passes without one.
	HeartbeatInterval time.Duration `json:"heartbeatInterval"`
	LeaseTTL          time.Duration `json:"leaseTTL"`
}

// HeartbeatRequest renews the node's lease and reports its state.
type HeartbeatRequest struct {
	Name    string     `json:"name"`
	AgentID string     `json:"agentId"`
	Status  NodeStatus `json:"status"`
}

// HeartbeatResponse acknowledges a heartbeat.
type HeartbeatResponse struct {
	OK bool `json:"ok"`
}

// Assignments are the instances a node must serve, at a store revision.
type Assignments struct {
	Revision  int64      `json:"revision"`
	Instances []Instance `json:"instances"`
}
