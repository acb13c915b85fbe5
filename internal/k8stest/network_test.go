package k8stest

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// A nat table as `iptables -S` prints it with kube-proxy running, and a jump
// of someone else's that must stay.
const natDump = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N DOCKER
-N KUBE-MARK-MASQ
-N KUBE-POSTROUTING
-N KUBE-SERVICES
-N KUBE-SVC-NPX46M4PTMTKRN6Y
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-SERVICES -d 10.244.1.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SVC-NPX46M4PTMTKRN6Y ! -s 10.244.0.128/25 -d 10.244.1.1/32 -p tcp -j KUBE-MARK-MASQ
`

func TestParseJumps(t *testing.T) {
	want := []string{
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
	}
	if diff := cmp.Diff(want, parseJumps(natDump)); diff != "" {
		t.Errorf("parseJumps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"DOCKER", "KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-SVC-NPX46M4PTMTKRN6Y"}, parseChains(natDump)); diff != "" {
		t.Errorf("parseChains (-want +got):\n%s", diff)
	}
}

func TestCleanupScript(t *testing.T) {
	left := tableLeft{
		dump:   natDump,
		chains: []string{"KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		jumps:  parseJumps(natDump),
	}
	want := []string{
		`-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-D OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-D POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		"-F KUBE-MARK-MASQ", "-F KUBE-POSTROUTING", "-F KUBE-SERVICES", "-F KUBE-SVC-NPX46M4PTMTKRN6Y",
		"-X KUBE-MARK-MASQ", "-X KUBE-POSTROUTING", "-X KUBE-SERVICES", "-X KUBE-SVC-NPX46M4PTMTKRN6Y",
	}
	if diff := cmp.Diff(want, cleanupScript("nat", left)); diff != "" {
		t.Errorf("cleanupScript (-want +got):\n%s", diff)
	}
}

func TestKubeProxyConfig(t *testing.T) {
	for _, masq := range []bool{false, true} {
		var cfg struct {
			Mode              string   `json:"mode"`
			BindAddress       string   `json:"bindAddress"`
			ClusterCIDR       string   `json:"clusterCIDR"`
			NodePortAddresses []string `json:"nodePortAddresses"`
			OOMScoreAdj       *int32   `json:"oomScoreAdj"`
			IPTables          struct {
				MasqueradeAll      bool  `json:"masqueradeAll"`
				LocalhostNodePorts *bool `json:"localhostNodePorts"`
			} `json:"iptables"`
			Conntrack map[string]any `json:"conntrack"`
		}
		if err := yaml.Unmarshal([]byte(kubeProxyConfig("/k.kubeconfig", 1, 2, masq)), &cfg); err != nil {
			t.Fatalf("kube-proxy config is not YAML: %v", err)
		}
		if cfg.Mode != "iptables" || cfg.BindAddress != NodeIP || cfg.ClusterCIDR != PodCIDR {
			t.Errorf("mode, bindAddress, clusterCIDR: got %q %q %q, want iptables %s %s", cfg.Mode, cfg.BindAddress, cfg.ClusterCIDR, NodeIP, PodCIDR)
		}
		if diff := cmp.Diff([]string{NodeIP + "/32"}, cfg.NodePortAddresses); diff != "" {
			t.Errorf("nodePortAddresses (-want +got):\n%s", diff)
		}
		if cfg.IPTables.MasqueradeAll != masq {
			t.Errorf("masqueradeAll: got %v, want %v", cfg.IPTables.MasqueradeAll, masq)
		}
		if cfg.IPTables.LocalhostNodePorts == nil || *cfg.IPTables.LocalhostNodePorts {
			t.Errorf("localhostNodePorts: got %v, want false (it would set route_localnet)", cfg.IPTables.LocalhostNodePorts)
		}
		if cfg.OOMScoreAdj == nil || *cfg.OOMScoreAdj != 0 {
			t.Errorf("oomScoreAdj: got %v, want 0", cfg.OOMScoreAdj)
		}
		// Each conntrack setting present and zero: absent ones default to
		// values that kube-proxy writes into the machine's sysctls.
		for _, k := range []string{"maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout", "tcpBeLiberal", "udpTimeout", "udpStreamTimeout"} {
			v, ok := cfg.Conntrack[k]
			if !ok {
				t.Errorf("conntrack.%s: missing, want it 0", k)
				continue
			}
			switch v {
			case float64(0), "0s", false:
			default:
				t.Errorf("conntrack.%s: got %v, want 0", k, v)
			}
		}
	}
}

func TestBinariesMissing(t *testing.T) {
	dir := t.TempDir()
	b := binariesIn(dir, t.TempDir())
	// A cache from before kube-proxy: every other binary is there.
	for _, p := range []string{b.Etcd, b.APIServer, b.Kubelet, b.ControllerManager, b.Scheduler, b.Kubectl} {
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"kube-proxy"}, b.missing()); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if err := os.WriteFile(b.KubeProxy, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := b.missing(); len(got) != 0 {
		t.Errorf("missing with every binary there: got %v, want none", got)
	}
}
