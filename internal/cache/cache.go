package cache

import (
	"os"
	"path/filepath"
)

// ORTVersion is the ONNX Runtime release scripts/setup.sh installs.
const ORTVersion = "1.30.0"

// Dir is accelpool's cache directory (see the package comment for the rule).
// When neither variable is set and the home directory is unknown it falls
// back to a directory under os.TempDir.
func Dir() string {
	if d := os.Getenv("ACCELPOOL_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "accelpool")
	}
	if h := os.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "accelpool")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "accelpool")
	}
	return filepath.Join(os.TempDir(), "accelpool-cache")
}

// ORTLibPath is where scripts/setup.sh installs the ONNX Runtime shared
// library.
func ORTLibPath() string {
	return filepath.Join(Dir(), "onnxruntime", ORTVersion, "libonnxruntime.so.1")
}

// ModelRepository is the demo model repository: <name>/config.yaml and
// <name>/<version>/model.onnx.
func ModelRepository() string { return filepath.Join(Dir(), "models") }

// AssetsDir holds files models need besides themselves, such as the OCR
// character dictionary.
func AssetsDir() string { return filepath.Join(Dir(), "assets") }
