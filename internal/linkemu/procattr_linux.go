package linkemu

import "syscall"

// sysProcAttr makes the kernel kill toxiproxy-server if the process that
// started it dies without calling Close (a test binary that panics, say).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
