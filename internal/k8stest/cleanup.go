package k8stest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The order in which recorded processes are stopped: kube-proxy first so
// that it rewrites no iptables rules, the kubelet next so that it restarts
// nothing, the pods' processes (by cgroup) next, then the runtime, then the
// control plane, etcd last.
var stopOrder = []string{"kube-proxy", "kubelet", "containerd", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"}

// Cleanup undoes everything st records, whether the run that made it is still
// in this process, died, or was killed: it stops every process by pid (after
// checking its executable), unmounts what is mounted under the cluster's
// directories, removes its cgroups, the iptables chains added since the
// start, the bridge and the fixed paths it created, restores the sysctls, and
// removes the root directory with the state file. It keeps going past errors
// and returns them all.
func Cleanup(ctx context.Context, log *slog.Logger, st State) error {
	var errs []error
	owned := ownedPids(st)
	// Stop in order: each group gets SIGTERM and a short grace period.
	byName := map[string][]int{}
	for pid, name := range owned {
		byName[name] = append(byName[name], pid)
	}
	stop := func(pids []int, grace time.Duration) {
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		gctx, cancel := context.WithTimeout(ctx, grace)
		defer cancel()
		_ = poll(gctx, 20*time.Millisecond, func() (bool, error) { return !anyAlive(pids), nil })
		for _, pid := range pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, name := range stopOrder[:2] {
		stop(byName[name], 5*time.Second)
		delete(byName, name)
	}
	// The pods' processes: everything left in the cluster's cgroups.
	for i := 0; i < 3; i++ {
		var pids []int
		for _, cg := range st.Cgroups {
			pids = append(pids, cgroupPids(cg)...)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = poll(gctx, 20*time.Millisecond, func() (bool, error) { return !anyAlive(pids), nil })
		cancel()
	}
	// containerd's shims and runc, then containerd under its reaper.
	var shims []int
	for name, pids := range byName {
		if name != "containerd" && name != "reaper" && !contains(stopOrder, name) {
			shims = append(shims, pids...)
			delete(byName, name)
		}
	}
	stop(shims, 2*time.Second)
	stop(append(byName["containerd"], byName["reaper"]...), 5*time.Second)
	delete(byName, "containerd")
	delete(byName, "reaper")
	for _, name := range stopOrder[3:] {
		stop(byName[name], 5*time.Second)
		delete(byName, name)
	}
	var rest []int
	for _, pids := range byName {
		rest = append(rest, pids...)
	}
	stop(rest, 2*time.Second)
	// While the runtime was being stopped it may have started more: a shim
	// that daemonized, a runc kill or delete. Sweep until none is left: by
	// executable and command line, and by the cluster's cgroups.
	if left := sweep(ctx, st, 15*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes still running after SIGKILL: %s", strings.Join(left, "; ")))
	}

	// Mounts: containerd's overlays and shm, the kubelet's volumes, the
	// pods' network namespaces, all under the cluster's directories.
	dirs := append([]string{st.Root}, st.Created...)
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := poll(mctx, 50*time.Millisecond, func() (bool, error) {
		mps := mountsUnder(dirs)
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				log.Debug("unmount", "path", mp, "err", err)
			}
		}
		return len(mountsUnder(dirs)) == 0, nil
	})
	cancel()
	if err != nil {
		errs = append(errs, fmt.Errorf("mounts left under the cluster's directories: %v", mountsUnder(dirs)))
	}

	// Cgroups: retried while the last processes leave them.
	for _, cg := range st.Cgroups {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var last error
		err := poll(cctx, 50*time.Millisecond, func() (bool, error) {
			last = removeCgroup(cg)
			return last == nil, nil
		})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, last))
		}
	}

	// iptables chains kube-proxy, the kubelet, the CNI plugins or Start
	// added, and their jumps from the built-in chains.
	for key, t := range leftInTables(st.Chains, st.Jumps) {
		if err := cleanTable(key, t); err != nil {
			errs = append(errs, err)
		}
	}

	if st.Bridge != "" && linkExists(st.Bridge) {
		if err := run("ip", "link", "del", st.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if err := restoreSysctls(st.Sysctls); err != nil {
		errs = append(errs, err)
	}
	for _, p := range st.Created {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	if st.Root != "" && len(mountsUnder([]string{st.Root})) == 0 {
		if err := os.RemoveAll(st.Root); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", st.Root, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up the cluster at %s: %w", st.Root, err)
	}
	log.Info("cluster cleaned up", "root", st.Root)
	return nil
}

// Leftovers lists what of st is still on the machine: processes, mounts,
// cgroups, KUBE-/CNI-/GMESH- iptables chains and the built-in chains' jumps
// to them, the bridge, changed sysctls, created paths and the root
// directory. Empty after a complete teardown.
func Leftovers(st State) []string {
	var out []string
	for pid, name := range ownedPids(st) {
		out = append(out, fmt.Sprintf("process %d (%s)", pid, name))
	}
	for _, mp := range mountsUnder(append([]string{st.Root}, st.Created...)) {
		out = append(out, "mount "+mp)
	}
	for _, cg := range st.Cgroups {
		if _, err := os.Stat(cg); err == nil {
			out = append(out, "cgroup "+cg)
		}
	}
	for key, t := range leftInTables(st.Chains, st.Jumps) {
		for _, c := range t.chains {
			out = append(out, fmt.Sprintf("%s chain %s", key, c))
		}
		for _, r := range t.jumps {
			out = append(out, fmt.Sprintf("%s rule %s", key, r))
		}
	}
	if st.Bridge != "" && linkExists(st.Bridge) {
		out = append(out, "bridge "+st.Bridge)
	}
	for name, want := range st.Sysctls {
		if got, err := readSysctl(name); err == nil && got != want {
			out = append(out, fmt.Sprintf("sysctl %s=%s (was %s)", name, got, want))
		}
	}
	for _, p := range append([]string{st.Root}, st.Created...) {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			out = append(out, "path "+p)
		}
	}
	sort.Strings(out)
	return out
}

// sweep SIGKILLs every process of the cluster, again and again until none
// is found or d has passed, and describes those still running.
func sweep(ctx context.Context, st State, d time.Duration) []string {
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	found := func() map[int]string {
		m := ownedPids(st)
		for _, cg := range st.Cgroups {
			for _, pid := range cgroupPids(cg) {
				if _, ok := m[pid]; !ok && pid != os.Getpid() && alive(pid) {
					m[pid] = "in cgroup " + cg
				}
			}
		}
		return m
	}
	_ = poll(sctx, 50*time.Millisecond, func() (bool, error) {
		m := found()
		for pid := range m {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(m) == 0, nil
	})
	var left []string
	for pid, name := range found() {
		left = append(left, fmt.Sprintf("%d %s [%s]", pid, name, procCmdline(pid)))
	}
	sort.Strings(left)
	return left
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if alive(pid) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stateFile is where the state of the cluster under root is kept.
func stateFile(root string) string { return filepath.Join(root, "state.json") }
