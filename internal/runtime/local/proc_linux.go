//go:build linux

package local

import "syscall"

// sysProcAttr puts the task in its own process group (so a stop signals its
// children too) and kills it if the supervisor's spawning thread dies: tasks
// must never outlive `gmesh up`.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// ownLoopbackIPs reports whether every 127.0.0.0/8 address is bindable
// without configuration (true on Linux).
const ownLoopbackIPs = true
