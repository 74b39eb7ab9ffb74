package cluster

// The admin API's read models: what GET /api/v1/... returns.

// AppView is an application with its instances, as the API returns it.
type AppView struct {
	Application
	Status AppStatus `json:"status"`
}

// AppStatus summarises an application's instances.
type AppStatus struct {
	// Ready counts the up-to-date instances that are ready.
	Ready   int `json:"ready"`
	Desired int `json:"desired"`
	// Outdated counts instances placed for an earlier spec of the
	// application (or an earlier push of its model); they keep serving
	// until up-to-date ones are ready, then go.
	Outdated  int            `json:"outdated,omitempty"`
	Instances []InstanceView `json:"instances"`
	// Message explains why the application is not fully placed.
	Message string `json:"message,omitempty"`
}

// InstanceView is one instance and its reported state.
type InstanceView struct {
	Instance
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Outdated says why the instance no longer matches its application's
	// spec; "" when it does.
	Outdated string `json:"outdated,omitempty"`
}

// NodeView is a node with its liveness and last report.
type NodeView struct {
	Node
	Up        bool       `json:"up"`
	Status    NodeStatus `json:"status"`
	Instances []string   `json:"instances"`
	// ReservedMemoryBytes per accelerator, by placed instances.
	ReservedMemoryBytes map[string]int64 `json:"reservedMemoryBytes"`
}

// LeaderView answers GET /api/v1/leader.
type LeaderView struct {
	Leader   string `json:"leader"`
	Self     string `json:"self"`
	IsLeader bool   `json:"isLeader"`
}

// ExplainView answers GET /api/v1/apps/{name}/explain.
type ExplainView struct {
	App string `json:"app"`
	// Last is the formatted explanation of the last placement decision.
	Last string `json:"last,omitempty"`
	// DryRun explains where one more instance would go now.
	DryRun string `json:"dryRun"`
}
