package k8stest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// poll calls cond every interval until it reports done, returns an error, or
// ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(name, value string) error {
	if err := os.WriteFile(sysctlPath(name), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// readSysctls reads every watched sysctl that exists on this kernel.
func readSysctls() map[string]string {
	m := map[string]string{}
	for _, name := range watchedSysctls {
		if v, err := readSysctl(name); err == nil {
			m[name] = v
		}
	}
	return m
}

// restoreSysctls writes back each saved value that has changed.
func restoreSysctls(saved map[string]string) error {
	var errs []error
	for name, want := range saved {
		if got, err := readSysctl(name); err == nil && got != want {
			errs = append(errs, writeSysctl(name, want))
		}
	}
	return errors.Join(errs...)
}

// procExe is the executable of pid, without the " (deleted)" suffix; "" when
// the process is gone or a zombie.
func procExe(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

func procCmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z'
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ownedPids finds the processes of a cluster under root: those recorded (if
// their executable still matches) and those whose executable is one of the
// cluster's (a kube binary, containerd, its shims, runc) and whose arguments
// name root, as containerd's shims do.
func ownedPids(st State) map[int]string {
	out := map[int]string{}
	for _, p := range st.Procs {
		if exe := procExe(p.Pid); exe != "" && exe == p.Exe {
			out[p.Pid] = p.Name
		}
	}
	if st.Root == "" {
		return out
	}
	for _, pid := range allPids() {
		if pid == os.Getpid() {
			continue
		}
		if _, ok := out[pid]; ok {
			continue
		}
		exe := procExe(pid)
		if exe == "" {
			continue
		}
		base := filepath.Base(exe)
		if !clusterExe(base) {
			continue
		}
		if strings.Contains(procCmdline(pid), st.Root+"/") {
			out[pid] = base
		}
	}
	return out
}

func clusterExe(base string) bool {
	switch base {
	case "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
		"containerd", "runc", "reaper", "pause":
		return true
	}
	return strings.HasPrefix(base, "containerd-shim")
}

// cgroupPids lists the processes in a cgroup directory and its descendants.
func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroup removes a cgroup directory and its descendants, deepest first.
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup v1 hierarchies' directories.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mp, fstype, _ := parseMountinfo(sc.Text())
		if fstype == "cgroup" && !seen[mp] {
			seen[mp] = true
			dirs = append(dirs, mp)
		}
	}
	return dirs, sc.Err()
}

// parseMountinfo returns a mountinfo line's mount point and file system type.
func parseMountinfo(line string) (mountPoint, fstype, source string) {
	fields := strings.Fields(line)
	if len(fields) < 10 {
		return "", "", ""
	}
	mountPoint = unescapeMount(fields[4])
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" && i+2 < len(fields) {
			return mountPoint, fields[i+1], fields[i+2]
		}
	}
	return mountPoint, "", ""
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists the mount points at or under any of dirs, deepest first.
func mountsUnder(dirs []string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		mp, _, _ := parseMountinfo(line)
		if mp == "" {
			continue
		}
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// dumpTable is one iptables table's rules as `-S` prints them ("-N CHAIN",
// "-A CHAIN ..."), or "" when the tool or table is missing.
func dumpTable(key string) string {
	tool, table, _ := strings.Cut(key, "/")
	out, err := exec.Command(tool, "-w", "-t", table, "-S").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// parseChains lists the user-defined chains of a `-S` dump.
func parseChains(dump string) []string {
	var cs []string
	for _, line := range strings.Split(dump, "\n") {
		if name, ok := strings.CutPrefix(line, "-N "); ok {
			cs = append(cs, strings.TrimSpace(name))
		}
	}
	return cs
}

// ours reports whether a chain is of the kind the cluster's parts make:
// the kubelet's and kube-proxy's KUBE-*, the CNI plugins' CNI-*, Start's
// GMESH-* (guardChain).
func ours(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-") || strings.HasPrefix(chain, "GMESH-")
}

// ruleTarget is the chain a "-A CHAIN ..." line jumps or goes to, if any.
func ruleTarget(rule string) string {
	args := strings.Fields(rule)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "-g" {
			return args[i+1]
		}
	}
	return ""
}

// parseJumps lists the rules of a `-S` dump that sit in a built-in chain
// (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING: those with a policy,
// "-P") and jump to a KUBE-* or CNI-* chain: kube-proxy's and the kubelet's
// hooks into the machine's tables.
func parseJumps(dump string) []string {
	builtin := map[string]bool{}
	var rules []string
	for _, line := range strings.Split(dump, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "-P" {
			builtin[f[1]] = true
		}
	}
	for _, line := range strings.Split(dump, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "-A" && builtin[f[1]] && ours(ruleTarget(line)) {
			rules = append(rules, strings.TrimSpace(line))
		}
	}
	return rules
}

var chainTables = []string{
	"iptables/filter", "iptables/nat", "iptables/mangle",
	"ip6tables/filter", "ip6tables/nat", "ip6tables/mangle",
}

// allChains and allJumps read, per table, the chains and the built-in
// chains' jumps to KUBE-*/CNI-* chains: what was there before a start.
func allChains() (chains, jumps map[string][]string) {
	chains, jumps = map[string][]string{}, map[string][]string{}
	for _, k := range chainTables {
		d := dumpTable(k)
		chains[k], jumps[k] = parseChains(d), parseJumps(d)
	}
	return chains, jumps
}

// added lists what is in now but not in before.
func added(before, now []string) []string {
	had := map[string]bool{}
	for _, x := range before {
		had[x] = true
	}
	var out []string
	for _, x := range now {
		if !had[x] {
			out = append(out, x)
		}
	}
	return out
}

// tableLeft is what a start added to one table and is still there: KUBE-*
// and CNI-* chains, and jumps from built-in chains to such chains.
type tableLeft struct {
	dump   string
	chains []string
	jumps  []string
}

// leftInTables compares each table with what it held before a start.
func leftInTables(chains, jumps map[string][]string) map[string]tableLeft {
	out := map[string]tableLeft{}
	for _, k := range chainTables {
		d := dumpTable(k)
		var t tableLeft
		for _, c := range added(chains[k], parseChains(d)) {
			if ours(c) {
				t.chains = append(t.chains, c)
			}
		}
		t.jumps = added(jumps[k], parseJumps(d))
		if len(t.chains) > 0 || len(t.jumps) > 0 {
			t.dump = d
			out[k] = t
		}
	}
	return out
}

// cleanupScript is the iptables-restore input that removes what t lists
// from a table: every rule outside the doomed chains that jumps to one of
// them, the added built-in jumps, then the chains' rules, then the chains.
// Rules are the `-S` lines with -A turned into -D, so their quoting (a
// comment such as "kubernetes service portals") is parsed by iptables
// itself.
func cleanupScript(table string, t tableLeft) []string {
	doomed := map[string]bool{}
	for _, c := range t.chains {
		doomed[c] = true
	}
	del := map[string]bool{}
	for _, r := range t.jumps {
		del[r] = true
	}
	var lines []string
	for _, line := range strings.Split(t.dump, "\n") {
		line = strings.TrimSpace(line)
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || doomed[f[1]] {
			continue
		}
		if doomed[ruleTarget(line)] || del[line] {
			lines = append(lines, "-D"+strings.TrimPrefix(line, "-A"))
		}
	}
	for _, c := range t.chains {
		lines = append(lines, "-F "+c)
	}
	for _, c := range t.chains {
		lines = append(lines, "-X "+c)
	}
	return lines
}

// cleanTable applies cleanupScript in one iptables-restore transaction; if
// that fails (a rule or chain changed meanwhile), line by line.
func cleanTable(key string, t tableLeft) error {
	tool, table, _ := strings.Cut(key, "/")
	lines := cleanupScript(table, t)
	restore := func(lines []string) error {
		cmd := exec.Command(tool+"-restore", "-w", "--noflush")
		cmd.Stdin = strings.NewReader("*" + table + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s-restore -t %s %q: %w: %s", tool, table, lines, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if restore(lines) == nil {
		return nil
	}
	var errs []error
	for _, l := range lines {
		if err := restore([]string{l}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
