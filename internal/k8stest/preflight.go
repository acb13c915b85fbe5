package k8stest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// debianPackages maps each host command the cluster needs to the Debian
// package that provides it.
var debianPackages = []struct{ path, pkg string }{
	{"/usr/bin/containerd", "containerd"},
	{"/usr/bin/ctr", "containerd"},
	{"/usr/sbin/runc", "runc"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
	{"/usr/sbin/conntrack", "conntrack"},
	{"/usr/sbin/iptables", "iptables"},
	{"/usr/sbin/ip6tables", "iptables"},
	{"/usr/sbin/iptables-restore", "iptables"}, // kube-proxy's and the teardown's
	{"/usr/sbin/ip6tables-restore", "iptables"},
	{"/usr/sbin/ip", "iproute2"},
}

// ErrUnsupported is wrapped by Preflight's error when this machine cannot run
// the cluster at all (not root, no cgroup v1).
var ErrUnsupported = errors.New("this machine cannot run the k8stest cluster")

// Preflight checks that this machine can run the cluster: root, cgroup v1
// hierarchies mounted under /sys/fs/cgroup, and the host commands, which it
// installs with apt-get when install is true. The error says what is
// missing.
func Preflight(ctx context.Context, log *slog.Logger, install bool) error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("root (running as uid %d; the kubelet, containerd and the bridge need root)", os.Geteuid()))
	}
	var fs syscall.Statfs_t
	const cgroup2Magic = 0x63677270
	if err := syscall.Statfs("/sys/fs/cgroup", &fs); err != nil {
		missing = append(missing, "cgroups (/sys/fs/cgroup: "+err.Error()+")")
	} else if fs.Type == cgroup2Magic {
		missing = append(missing, "cgroup v1 (/sys/fs/cgroup is cgroup v2 only; this harness runs kubelet 1.34 with cgroup v1 settings)")
	} else if hs, err := cgroupHierarchies(); err != nil || len(hs) == 0 {
		missing = append(missing, "cgroup v1 (no cgroup v1 hierarchy is mounted)")
	} else {
		for _, want := range []string{"cpu", "cpuset", "memory", "pids"} {
			if _, err := os.Stat("/sys/fs/cgroup/" + want + "/cgroup.procs"); err != nil {
				missing = append(missing, "cgroup v1 hierarchy "+want+" at /sys/fs/cgroup/"+want)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrUnsupported, strings.Join(missing, "; "))
	}
	var pkgs []string
	seen := map[string]bool{}
	for _, d := range debianPackages {
		if _, err := os.Stat(d.path); err != nil && !seen[d.pkg] {
			seen[d.pkg] = true
			pkgs = append(pkgs, d.pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	if !install {
		return fmt.Errorf("%w: missing Debian packages %s (apt-get install %s)", ErrUnsupported, strings.Join(pkgs, ", "), strings.Join(pkgs, " "))
	}
	log.Info("installing host packages", "packages", pkgs)
	if out, err := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(pkgs, " "), err, out)
	}
	// Debian's containerd package may start its service; this harness runs
	// its own containerd and wants no other.
	return nil
}
