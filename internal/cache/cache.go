package cache

import (
	"fmt"
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

// ToxiproxyVersion is the Shopify/toxiproxy release scripts/setup.sh builds
// (with --bench or --test) into BinDir as toxiproxy-server.
const ToxiproxyVersion = "v2.12.0"

// BinDir holds programs scripts/setup.sh builds, such as toxiproxy-server.
func BinDir() string { return filepath.Join(Dir(), "bin") }

// Images are the test photographs scripts/setup.sh (with --bench or --test)
// copies into ImagesDir from Debian's python3-skimage: astronaut.png, a
// colour portrait with a face (512x512), text.png, handwriting photographed
// at a slant (448x172 grey), and page.png, a photographed printed page
// (384x191 grey).
var Images = []string{"astronaut.png", "text.png", "page.png"}

// ImagesDir is the directory holding Images. Unlike the other functions here
// it checks: it fails, naming the first missing file, when any of Images is
// not there.
func ImagesDir() (string, error) {
	dir := filepath.Join(AssetsDir(), "images")
	for _, name := range Images {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return dir, fmt.Errorf("test image %s is missing (run scripts/setup.sh --bench to install it): %w", p, err)
		}
	}
	return dir, nil
}
