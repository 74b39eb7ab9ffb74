//go:build !linux

package linkemu

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
