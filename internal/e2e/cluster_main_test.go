package e2e

import (
	"os"
	"testing"
)

// TestMain runs the package's tests and then removes the accelpool binary
// the cluster tests built (see clusterBinary).
func TestMain(m *testing.M) {
	code := m.Run()
	removeClusterBinary()
	os.Exit(code)
}
