package cli

import (
	"net"
	"os"
	"syscall"
)

// selfExe is a path that runs this gmesh binary again, even once its file
// is gone: `go run ./cmd/gmesh up --detach` (the README's way) deletes its
// build when it returns, while the detached up still has to restart its
// control plane from it. /proc/self/exe still opens a deleted executable.
func selfExe() (string, error) {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err == nil {
		return self, nil
	}
	return os.Executable()
}

// childAttrs makes a child die with gmesh up (SIGKILL included) and puts it
// in its own process group, so that Ctrl-C reaches gmesh first and gmesh
// stops its children in order.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
