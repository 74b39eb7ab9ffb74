// Package cache names the places under accelpool's cache directory where
// scripts/setup.sh installs what the project downloads: the ONNX Runtime
// library, the demo model repository, model assets, and for benchmarks the
// toxiproxy-server binary and test images. The script and this
// package follow one rule, so a binary finds what the script installed
// without flags:
//
//	$ACCELPOOL_CACHE, else $XDG_CACHE_HOME/accelpool, else $HOME/.cache/accelpool
//
// The package is pure Go and only computes paths; it never creates
// anything, and only ImagesDir checks that what it names is there.
package cache
