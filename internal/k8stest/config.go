package k8stest

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeRuntimeConfig writes containerd's config and the CNI network. The
// network gives pods one route besides their subnet: the Service range via
// the node IP, where kube-proxy's rules DNAT it (no default route: pods reach
// nothing off this machine). hairpinMode lets a pod reach itself through a
// Service: the DNATed packet leaves by the bridge port it came in on.
//   - restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, and without it
//     every sandbox fails ("can't get final child's PID from pipe: EOF").
//   - netns_mounts_under_state_dir: the pods' network namespaces are mounted
//     under the cluster's root, not /run/netns.
//   - sandbox_image: the local pause image; nothing is ever pulled.
func (c *Cluster) writeRuntimeConfig() error {
	r := c.root
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[8]q
`, filepath.Join(r, "containerd", "root"), filepath.Join(r, "containerd", "state"), c.sock, c.sock+".ttrpc",
		PauseImage, filepath.Join(r, "runc"), filepath.Join(r, "cni", "net.d"), filepath.Join(r, "containerd", "opt"))
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "gmesh-k8stest",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q}]],
        "routes": [{"dst": %q, "gw": %q}],
        "dataDir": %q
      }
    }
  ]
}
`, BridgeName, podSubnet, podRangeFrom, podRangeTo, ServiceCIDR, NodeIP, filepath.Join(r, "cni", "ipam"))
	return writeAll(map[string]string{
		filepath.Join(r, "containerd", "config.toml"):                 cfg,
		filepath.Join(r, "cni", "net.d", "10-gmesh-k8stest.conflist"): cni,
	})
}

// writeKubeletConfig writes the kubelet's configuration: cgroup v1 with the
// cgroupfs driver under its own cgroupRoot, no iptables chains, an empty
// resolv.conf for pods, and no image garbage collection or eviction (imported
// images must stay).
func (c *Cluster) writeKubeletConfig(crt, key, ca string) error {
	r := c.root
	resolv := filepath.Join(r, "kubelet-resolv.conf")
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %[2]s
tlsPrivateKeyFile: %[3]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[4]s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
cgroupRoot: /%[6]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
resolvConf: %[7]s
hairpinMode: none
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 876000h
evictionHard:
  memory.available: "0%%"
  nodefs.available: "0%%"
  nodefs.inodesFree: "0%%"
  imagefs.available: "0%%"
  imagefs.inodesFree: "0%%"
evictionPressureTransitionPeriod: 0s
serializeImagePulls: false
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
enableServer: true
maxPods: 60
podPidsLimit: -1
syncFrequency: 10s
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
shutdownGracePeriod: 0s
`, NodeIP, crt, key, ca, c.sock, cgroupName, resolv)
	return writeAll(map[string]string{
		filepath.Join(r, "kubelet", "config.yaml"): cfg,
		resolv: "",
	})
}

// kubeProxyConfig is kube-proxy's configuration: iptables mode (the
// default; the iptables here is iptables-nft, so the rules live in
// nf_tables all the same), NodePorts only on the node IP (none on the
// machine's other addresses, none on loopback, so route_localnet stays
// off), conntrack limits and timeouts left as the machine has them (0
// leaves each unchanged; kube-proxy would otherwise raise nf_conntrack_max
// and the conntrack hash size), its oom_score_adj left alone (root here lacks
// CAP_SYS_RESOURCE), and its health and metrics servers on free loopback
// ports.
func kubeProxyConfig(kubeconfig string, healthzPort, metricsPort int, masqueradeAll bool) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]s
  qps: 50
  burst: 100
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: 127.0.0.1:%[4]d
metricsBindAddress: 127.0.0.1:%[5]d
mode: iptables
clusterCIDR: %[6]s
detectLocalMode: ClusterCIDR
nodePortAddresses: ["%[3]s/32"]
oomScoreAdj: 0
iptables:
  masqueradeAll: %[7]t
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 1s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  tcpBeLiberal: false
  udpTimeout: 0s
  udpStreamTimeout: 0s
configSyncPeriod: 15m
`, kubeconfig, NodeName, NodeIP, healthzPort, metricsPort, PodCIDR, masqueradeAll)
}

func writeAll(files map[string]string) error {
	for path, text := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("make %s: %w", filepath.Dir(path), err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
