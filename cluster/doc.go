// Package cluster holds the control plane's data model: nodes and their
// accelerators, model artifacts, applications (declared in YAML in the
// Kubernetes style) and the instances placed for them. It is pure: types,
// parsing and validation, no I/O. The scheduler decides over these types,
// the store persists them, the server and the agent exchange them.
package cluster
