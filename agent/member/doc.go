// Package member runs an agent's membership in an accelpool cluster: it
// joins the control plane, keeps the node's lease alive with heartbeats
// that report what the node serves, and long-polls the node's assignments,
// turning each assigned instance into a loaded model of the local
// agent.Manager.
//
// The protocol is the one in cluster/api.go. Per instance the agent walks
// Pulling → Loading → Ready (or Failed with a reason): the model artifact is
// fetched once into a content-addressed blob cache under
// <DataDir>/blobs/sha256/<hex> (resuming interrupted downloads with Range
// requests and verifying the digest before the blob becomes visible), then
// hard-linked into the Manager's repository at
// <DataDir>/repository/<ServedName>/1/model.onnx next to a config.yaml
// carrying the instance's batching settings, and loaded. Instances progress
// concurrently; each instance's own steps are ordered, and removing an
// instance unloads its model and deletes its repository directory.
//
// Blobs survive restarts, so an agent that comes back re-serves its
// instances without downloading them again. Several control plane replicas
// may be given; requests go to the one that answered last and fail over to
// the next when it cannot be reached.
package member
