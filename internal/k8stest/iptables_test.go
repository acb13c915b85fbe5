package k8stest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
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
