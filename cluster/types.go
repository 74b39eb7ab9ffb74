package cluster

import (
	"time"

	"github.com/accelpool/accelpool/agent/repository"
)

// Tier is where in the continuum a node sits.
type Tier string

// The tiers, nearest the data first.
const (
	TierDevice Tier = "device"
	TierEdge   Tier = "edge"
	TierCloud  Tier = "cloud"
)

// Valid reports whether t is a known tier.
func (t Tier) Valid() bool { return t == TierDevice || t == TierEdge || t == TierCloud }

// Accelerator is one compute device of a node.
type Accelerator struct {
	// ID is unique within the node ("cpu0", "gpu0").
	ID string `json:"id"`
	// Kind is "cpu", "gpu" or "tpu".
	Kind string `json:"kind"`
	// Model names the hardware ("Xeon", "H100"); informational.
	Model string `json:"model,omitempty"`
	// MemoryBytes is the memory models can occupy.
	MemoryBytes int64 `json:"memoryBytes"`
	// Compute is a relative capacity (1.0 = one reference CPU core).
	Compute float64 `json:"compute"`
}

// Node is a machine that runs an agent.
type Node struct {
	Name         string            `json:"name"`
	Tier         Tier              `json:"tier"`
	Site         string            `json:"site,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Accelerators []Accelerator     `json:"accelerators"`
	// HTTPAddr and GRPCAddr are the agent's Open Inference Protocol
	// endpoints (host:port).
	HTTPAddr string `json:"httpAddr"`
	GRPCAddr string `json:"grpcAddr"`
	// AgentID distinguishes two agents claiming one name.
	AgentID string    `json:"agentId"`
	Joined  time.Time `json:"joined"`
}

// NodeStatus is what an agent reports with each heartbeat.
type NodeStatus struct {
	Up            bool      `json:"up"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// Per accelerator ID.
	FreeMemoryBytes map[string]int64   `json:"freeMemoryBytes,omitempty"`
	Utilisation     map[string]float64 `json:"utilisation,omitempty"`
	// QueueLength per loaded model.
	QueueLength  map[string]int `json:"queueLength,omitempty"`
	LoadedModels []string       `json:"loadedModels,omitempty"`
	// Instances reports each assigned instance's state.
	Instances map[string]InstanceStatus `json:"instances,omitempty"`
}

// ModelArtifact is a content-addressed model file stored by the control
// plane.
type ModelArtifact struct {
	Name string `json:"name"`
	// Digest is "sha256:<hex>".
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// Format is "onnx".
	Format string `json:"format"`
}

// Instance states.
const (
	InstancePending = "Pending" // placed, agent has not started it
	InstancePulling = "Pulling"
	InstanceLoading = "Loading"
	InstanceReady   = "Ready"
	InstanceFailed  = "Failed"
)

// Instance is one replica of an application placed on a node.
type Instance struct {
	ID          string `json:"id"`
	App         string `json:"app"`
	Node        string `json:"node"`
	Accelerator string `json:"accelerator"`
	// Model is the artifact name and digest the agent must serve; the agent
	// serves it under the instance's ServedName.
	ModelName   string `json:"modelName"`
	ModelDigest string `json:"modelDigest"`
	ServedName  string `json:"servedName"`
	// MemoryBytes is what the placement reserved on the accelerator.
	MemoryBytes int64    `json:"memoryBytes"`
	Batching    Batching `json:"batching,omitempty"`
	// Serving is the application's spec.serving (nil: the defaults).
	Serving *repository.Config `json:"serving,omitempty"`
	Created time.Time          `json:"created"`
}

// InstanceStatus is an instance's state as its agent reports it.
type InstanceStatus struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}
