// Package k8stest runs a real single-node Kubernetes cluster on this machine
// for end-to-end tests: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and a kubelet on containerd and runc, with bridge CNI on a
// bridge of its own (gmesh0, 10.244.0.1/24), and kube-proxy (iptables mode),
// so Service ClusterIPs (ServiceCIDR, 10.244.1.0/24) route from pods and from
// the host as on a real cluster. Nothing is faked.
//
// The Kubernetes binaries are built from the Go module proxy (k8s.io/kubernetes
// v1.34.4, etcd v3.6.16) and cached by version under $XDG_CACHE_HOME/gmesh-k8s
// (or ~/.cache/gmesh-k8s); containerd, runc, the CNI plugins and conntrack come
// from Debian's packages. See docs/kubernetes-testing.md and
// ../shared/K8S-NOTES.md for the traps each setting avoids.
//
// Everything a start creates (processes, cgroups, the bridge, iptables chains
// and the built-in chains' jumps to them, changed sysctls, fixed paths such as /var/lib/kubelet/device-plugins) is
// recorded in a state file as it is created, so that Cleanup, the next Start,
// or `gmesh-k8stest cleanup` can undo a run that was killed. Only one cluster
// runs on a machine at a time: a file lock serialises starts.
package k8stest
