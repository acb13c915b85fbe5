package k8stest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Fixed host paths the kubelet, containerd and the CNI plugins use whatever
// their root directories are. Each one that did not exist before a start is
// removed at teardown.
var fixedPaths = []string{
	"/var/lib/kubelet",
	"/var/log/containers",
	"/var/log/pods",
	"/run/containerd",
	"/var/lib/cni",
	"/run/netns",
	"/etc/cni",
	"/opt/cni",
}

// Sysctls the kubelet sets once at start (setupKernelTunables) or the CNI
// bridge plugin may touch; each is saved before a start and restored right
// after it and at teardown.
var watchedSysctls = []string{
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv6.conf.all.forwarding",
	// Start sets bridge-nf-call-iptables to 1 when it is 0 (see
	// kubeProxyConfig); kube-proxy sets route_localnet with
	// localhostNodePorts and the conntrack values from its conntrack
	// settings, which its configuration here turns off. Watched all the same.
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.ipv4.conf.all.route_localnet",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"net.netfilter.nf_conntrack_tcp_be_liberal",
	"net.netfilter.nf_conntrack_udp_timeout",
	"net.netfilter.nf_conntrack_udp_timeout_stream",
}

// Proc is a process the harness started.
type Proc struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	Exe  string `json:"exe"` // checked against /proc/PID/exe before any signal
}

// State is what a start has created, written to the state file as each thing
// is created so that a killed run can be undone.
type State struct {
	Root     string              `json:"root"`
	Owner    int                 `json:"owner"` // pid of the process that started the cluster
	Procs    []Proc              `json:"procs,omitempty"`
	Bridge   string              `json:"bridge,omitempty"`
	Cgroups  []string            `json:"cgroups,omitempty"`  // absolute paths, one per hierarchy
	Sysctls  map[string]string   `json:"sysctls,omitempty"`  // values before the start
	Created  []string            `json:"created,omitempty"`  // fixed paths absent before the start
	Chains   map[string][]string `json:"chains,omitempty"`   // "iptables/filter" -> chains before the start
	Jumps    map[string][]string `json:"jumps,omitempty"`    // "iptables/nat" -> built-in chains' rules to KUBE-*/CNI-* before the start
	Sockaddr string              `json:"sockaddr,omitempty"` // containerd's socket, named in its shims' arguments
}

// journal keeps State on disk in step with memory.
type journal struct {
	mu   sync.Mutex
	path string
	st   State
}

func (j *journal) update(f func(*State)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(&j.st)
	return writeState(j.path, j.st)
}

func (j *journal) state() State {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.Procs = append([]Proc(nil), j.st.Procs...)
	return st
}

func writeState(path string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("make the state directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write the state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the state: %w", err)
	}
	return nil
}

// ReadState reads a state file; ok is false when there is none.
func ReadState(path string) (st State, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read the state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, false, fmt.Errorf("decode the state %s: %w", path, err)
	}
	return st, true, nil
}
