package server

import (
	"fmt"
	"strings"
)

// The key layout in the store. The etcd store namespaces every key under
// its own prefix ("/accelpool" by default).
const (
	prefixNodes     = "/nodes/"     // <name> → cluster.Node (persistent)
	prefixAlive     = "/alive/"     // <name> → agent ID, attached to the node's lease
	prefixStatus    = "/status/"    // <name> → cluster.NodeStatus, attached to the lease
	prefixModels    = "/models/"    // <name> → cluster.ModelArtifact (the latest push)
	prefixBlobs     = "/blobs/"     // <digest>/meta → blobMeta; <digest>/<%08d> → chunk
	prefixApps      = "/apps/"      // <name> → cluster.Application
	prefixInstances = "/instances/" // <node>/<id> → cluster.Instance
	prefixExplain   = "/explain/"   // <app> → last placement explanation (text)
	prefixProfiles  = "/profiles/"  // <model>/<accelerator kind> → cluster.ModelProfile
	electionName    = "leader"
)

func nodeKey(name string) string           { return prefixNodes + name }
func aliveKey(name string) string          { return prefixAlive + name }
func statusKey(name string) string         { return prefixStatus + name }
func modelKey(name string) string          { return prefixModels + name }
func blobMetaKey(digest string) string     { return prefixBlobs + digest + "/meta" }
func appKey(name string) string            { return prefixApps + name }
func instanceKey(node, id string) string   { return prefixInstances + node + "/" + id }
func explainKey(app string) string         { return prefixExplain + app }
func profileKey(model, kind string) string { return prefixProfiles + model + "/" + kind }

func blobChunkKey(digest string, i int64) string {
	return fmt.Sprintf("%s%s/%08d", prefixBlobs, digest, i)
}

// lastSegment is the part of key after prefix (for flat prefixes).
func lastSegment(key, prefix string) string { return strings.TrimPrefix(key, prefix) }
