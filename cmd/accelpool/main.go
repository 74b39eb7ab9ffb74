// Command accelpool pools the accelerators of a device–edge–cloud continuum
// into one virtual accelerator for deep-learning inference. See
// `accelpool help`.
package main

import (
	"os"

	"github.com/accelpool/accelpool/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
