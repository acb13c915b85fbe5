//go:build unix && !linux

package local

import "syscall"

// sysProcAttr puts the task in its own process group so a stop signals its
// children too. There is no parent-death signal outside Linux; Shutdown
// stops every task.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// ownLoopbackIPs is false: macOS and the BSDs only answer on 127.0.0.1
// unless aliases are configured, so tasks share it on distinct ports.
const ownLoopbackIPs = false
