package k8stest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The cluster's fixed network and names. Pods get addresses from .128 up on
// the bridge's subnet; Services get ClusterIPs from a range of their own off
// that subnet, which kube-proxy DNATs to their endpoints: pods route it via
// the node IP, the host through the bridge.
const (
	BridgeName   = "gmesh0"
	NodeIP       = "10.244.0.1"
	NodeName     = "gmesh-k8stest"
	bridgeCIDR   = NodeIP + "/24"
	podSubnet    = "10.244.0.0/24"
	podRangeFrom = "10.244.0.128"
	podRangeTo   = "10.244.0.254"
	// PodCIDR holds every pod address (kube-proxy's clusterCIDR: traffic to
	// a ClusterIP from outside it is masqueraded).
	PodCIDR = "10.244.0.128/25"
	// ServiceCIDR is the range of the Services' ClusterIPs.
	ServiceCIDR = "10.244.1.0/24"
	// KubernetesServiceIP is the `kubernetes` Service's ClusterIP (the
	// range's first address), which in-cluster clients dial: it is in the
	// API server's certificate and kube-proxy DNATs it to NodeIP:443.
	KubernetesServiceIP = "10.244.1.1"
	apiPort             = 443
	cgroupName          = "gmesh-k8stest"
	// PauseImage is containerd's sandbox image, built locally.
	PauseImage = "gmesh.local/k8stest/pause:1"
	// DefaultRoot holds everything a cluster writes; GMESH_K8S_ROOT overrides it.
	DefaultRoot = "/var/lib/gmesh-k8stest"
	// EnvKubeconfig names a kubeconfig of a running cluster (from
	// `gmesh-k8stest up`) that Connect and ForTest use instead of starting one.
	EnvKubeconfig = "GMESH_K8S_KUBECONFIG"
)

// Options configure Start.
type Options struct {
	Log *slog.Logger
	// Root is the directory for the cluster's files; DefaultRoot when empty.
	Root string
	// InstallPackages lets Start apt-get install missing host packages.
	InstallPackages bool
	// Timeout bounds the start once the binaries are built; 4 minutes when 0
	// (about 5 s on a quiet machine, 30 s seen under heavy load).
	Timeout time.Duration
}

// Cluster is a running single-node cluster.
type Cluster struct {
	log        *slog.Logger
	root       string
	kubeconfig string
	sock       string // containerd's socket
	cfg        *rest.Config
	client     kubernetes.Interface
	bins       Binaries

	ownSysctls map[string]string // set by Start on purpose, kept until teardown

	owned   bool // started here: Stop tears it down
	j       *journal
	lock    *os.File
	mu      sync.Mutex
	exits   map[string]chan struct{} // closed when a started process exits
	wg      sync.WaitGroup
	timings []Timing
}

// Timing is how long one start-up step took.
type Timing struct {
	Step string
	Took time.Duration
}

func rootDir(opt string) string {
	if opt != "" {
		return opt
	}
	if d := os.Getenv("GMESH_K8S_ROOT"); d != "" {
		return d
	}
	return DefaultRoot
}

// Start builds what is missing, undoes any earlier run's leftovers, and
// starts a cluster, returning once its node is Ready and the default service
// account exists. On failure it tears down what it started.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := Preflight(ctx, log, opts.InstallPackages); err != nil {
		return nil, err
	}
	bins, err := EnsureBinaries(ctx, log)
	if err != nil {
		return nil, err
	}
	root := rootDir(opts.Root)
	lock, err := acquireLock(ctx, log)
	if err != nil {
		return nil, err
	}
	if err := cleanupStale(ctx, log, root); err != nil {
		releaseLock(lock)
		return nil, err
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 4 * time.Minute
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &Cluster{
		log: log, root: root, bins: bins, owned: true, lock: lock,
		kubeconfig: filepath.Join(root, "kubeconfig"),
		sock:       filepath.Join(root, "containerd", "containerd.sock"),
		exits:      map[string]chan struct{}{},
	}
	if err := c.start(sctx); err != nil {
		c.log.Error("cluster start failed; tearing down", "err", err, "logs", filepath.Join(root, "logs"))
		tail := c.logTails()
		if cerr := c.Stop(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, fmt.Errorf("start the cluster: %w%s", err, tail)
	}
	return c, nil
}

func (c *Cluster) step(name string, start time.Time) {
	d := time.Since(start)
	c.timings = append(c.timings, Timing{Step: name, Took: d})
	c.log.Info("cluster step done", "step", name, "took", d.Round(time.Millisecond))
}

// Timings are the start-up steps and how long each took.
func (c *Cluster) Timings() []Timing { return append([]Timing(nil), c.timings...) }

func (c *Cluster) start(ctx context.Context) error {
	t0 := time.Now()
	root := c.root
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return fmt.Errorf("make %s: %w", root, err)
	}
	st := State{Root: root, Owner: os.Getpid(), Sysctls: readSysctls(), Sockaddr: c.sock}
	st.Chains, st.Jumps = allChains()
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			st.Created = append(st.Created, p)
		}
	}
	c.j = &journal{path: stateFile(root), st: st}
	if err := c.j.update(func(*State) {}); err != nil {
		return err
	}

	// Certificates and kubeconfigs.
	p, err := newPKI(filepath.Join(root, "pki"))
	if err != nil {
		return err
	}
	ip := net.ParseIP(NodeIP)
	loop := net.ParseIP("127.0.0.1")
	apiCrt, apiKey, err := p.issue(certSpec{name: "apiserver", cn: "kube-apiserver", server: true, ips: []net.IP{ip, net.ParseIP(KubernetesServiceIP), loop},
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	if err != nil {
		return err
	}
	kubeletSrvCrt, kubeletSrvKey, err := p.issue(certSpec{name: "kubelet-server", cn: NodeName, server: true, ips: []net.IP{ip}, dns: []string{NodeName}})
	if err != nil {
		return err
	}
	apiKubeletCrt, apiKubeletKey, err := p.issue(certSpec{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}})
	if err != nil {
		return err
	}
	saKey, saPub, err := p.serviceAccountKey()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", NodeIP, apiPort)
	kubeconfigs := map[string]certSpec{
		"admin":                   {name: "admin", cn: "gmesh-k8stest-admin", orgs: []string{"system:masters"}},
		"kube-controller-manager": {name: "kube-controller-manager", cn: "system:kube-controller-manager"},
		"kube-scheduler":          {name: "kube-scheduler", cn: "system:kube-scheduler"},
		"kubelet":                 {name: "kubelet", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}},
		"kube-proxy":              {name: "kube-proxy", cn: "system:kube-proxy"}, // bound to system:node-proxier
	}
	kcPath := map[string]string{}
	for name, spec := range kubeconfigs {
		crt, key, err := p.issue(spec)
		if err != nil {
			return err
		}
		path := filepath.Join(root, name+".kubeconfig")
		if name == "admin" {
			path = c.kubeconfig
		}
		if err := writeKubeconfig(path, server, p.caPEM, crt, key); err != nil {
			return err
		}
		kcPath[name] = path
	}
	c.cfg, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("load the admin kubeconfig: %w", err)
	}
	c.cfg.QPS, c.cfg.Burst = 50, 100
	c.client, err = kubernetes.NewForConfig(c.cfg)
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	c.step("certificates", t0)

	// The bridge that holds the node IP; the CNI bridge plugin attaches pods.
	t := time.Now()
	if linkExists(BridgeName) {
		return fmt.Errorf("a link named %s already exists and no state file records it; remove it (ip link del %s) or run gmesh-k8stest cleanup", BridgeName, BridgeName)
	}
	if err := run("ip", "link", "add", BridgeName, "type", "bridge"); err != nil {
		return err
	}
	if err := c.j.update(func(s *State) { s.Bridge = BridgeName }); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", bridgeCIDR, "dev", BridgeName); err != nil {
		return err
	}
	if err := run("ip", "link", "set", BridgeName, "up"); err != nil {
		return err
	}
	// The host reaches ClusterIPs through the bridge, from the node IP; the
	// route goes with the bridge.
	if err := run("ip", "route", "add", ServiceCIDR, "dev", BridgeName, "src", NodeIP); err != nil {
		return err
	}
	masqueradeAll, err := c.bridgeNetfilter()
	if err != nil {
		return err
	}
	if err := forwardOnBridge(); err != nil {
		return err
	}

	// The kubelet's cgroupRoot, in every hierarchy, cpuset filled in.
	hs, err := cgroupHierarchies()
	if err != nil {
		return fmt.Errorf("list cgroup hierarchies: %w", err)
	}
	for _, h := range hs {
		dir := filepath.Join(h, cgroupName)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make cgroup %s: %w", dir, err)
		}
		if err := c.j.update(func(s *State) { s.Cgroups = append(s.Cgroups, dir) }); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("copy %s into %s: %w", f, dir, err)
				}
			}
		}
	}
	c.step("bridge and cgroups", t)

	// etcd.
	t = time.Now()
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if err := c.startProc("etcd", c.bins.Etcd,
		"--name=k8stest", "--data-dir="+filepath.Join(root, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=k8stest="+peerURL, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}

	// kube-apiserver.
	if err := c.startProc("kube-apiserver", c.bins.APIServer,
		"--etcd-servers="+etcdURL,
		"--bind-address="+NodeIP, "--advertise-address="+NodeIP, "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+apiCrt, "--tls-private-key-file="+apiKey,
		"--client-ca-file="+p.caFile,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--authorization-mode=Node,RBAC",
		"--kubelet-client-certificate="+apiKubeletCrt, "--kubelet-client-key="+apiKubeletKey,
		"--kubelet-certificate-authority="+p.caFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--profiling=false",
		"--cert-dir="+filepath.Join(root, "apiserver"),
		"--v=1"); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver ready", []string{"etcd", "kube-apiserver"}, func(ctx context.Context) (bool, error) {
		_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	}); err != nil {
		return err
	}
	c.step("etcd and kube-apiserver ready", t)

	// Controller manager and scheduler, serving only on loopback.
	t = time.Now()
	kcmPort, err := freePort()
	if err != nil {
		return err
	}
	schedPort, err := freePort()
	if err != nil {
		return err
	}
	if err := c.startProc("kube-controller-manager", c.bins.ControllerManager,
		"--kubeconfig="+kcPath["kube-controller-manager"],
		"--authentication-kubeconfig="+kcPath["kube-controller-manager"],
		"--authorization-kubeconfig="+kcPath["kube-controller-manager"],
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(root, "kcm"),
		"--service-account-private-key-file="+saKey, "--root-ca-file="+p.caFile,
		"--cluster-signing-cert-file="+p.caFile, "--cluster-signing-key-file="+filepath.Join(p.dir, "ca.key"),
		"--use-service-account-credentials=true", "--leader-elect=false",
		"--kube-api-qps=100", "--kube-api-burst=200", "--v=1"); err != nil {
		return err
	}
	if err := c.startProc("kube-scheduler", c.bins.Scheduler,
		"--kubeconfig="+kcPath["kube-scheduler"],
		"--authentication-kubeconfig="+kcPath["kube-scheduler"],
		"--authorization-kubeconfig="+kcPath["kube-scheduler"],
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--cert-dir="+filepath.Join(root, "scheduler"),
		"--leader-elect=false", "--v=1"); err != nil {
		return err
	}

	// containerd under the reaper, then the local pause image.
	if err := c.writeRuntimeConfig(); err != nil {
		return err
	}
	if err := c.startProc("containerd", c.bins.Reaper, "/usr/bin/containerd", "--config", filepath.Join(root, "containerd", "config.toml")); err != nil {
		return err
	}
	pauseTar := filepath.Join(root, "images", "pause.tar")
	if err := BuildImage(ImageSpec{Ref: PauseImage, Binary: c.bins.Pause, Path: "/pause"}, pauseTar); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", []string{"containerd"}, func(ctx context.Context) (bool, error) {
		return exec.CommandContext(ctx, "ctr", "--address", c.sock, "version").Run() == nil, nil
	}); err != nil {
		return err
	}
	if err := c.LoadImage(ctx, pauseTar); err != nil {
		return err
	}
	c.step("controllers, scheduler, containerd and pause image", t)

	// The kubelet.
	t = time.Now()
	if err := c.writeKubeletConfig(kubeletSrvCrt, kubeletSrvKey, p.caFile); err != nil {
		return err
	}
	if err := c.startProc("kubelet", c.bins.Kubelet,
		"--config="+filepath.Join(root, "kubelet", "config.yaml"),
		"--kubeconfig="+kcPath["kubelet"],
		"--root-dir="+filepath.Join(root, "kubelet"),
		"--hostname-override="+NodeName, "--node-ip="+NodeIP,
		"--v=1"); err != nil {
		return err
	}
	// kube-proxy, beside the kubelet: it waits for the node object.
	healthzPort, err := freePort()
	if err != nil {
		return err
	}
	metricsPort, err := freePort()
	if err != nil {
		return err
	}
	proxyConfig := filepath.Join(root, "kube-proxy", "config.yaml")
	if err := writeAll(map[string]string{proxyConfig: kubeProxyConfig(kcPath["kube-proxy"], healthzPort, metricsPort, masqueradeAll)}); err != nil {
		return err
	}
	if err := c.startProc("kube-proxy", c.bins.KubeProxy, "--config="+proxyConfig, "--v=1"); err != nil {
		return err
	}
	all := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}
	if err := c.waitFor(ctx, "node Ready", all, func(ctx context.Context) (bool, error) {
		n, err := c.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	// The kubelet set its sysctls while starting: put them back, but for
	// those set here on purpose.
	if err := restoreSysctls(without(c.j.state().Sysctls, c.ownSysctls)); err != nil {
		return err
	}
	c.step("kubelet and node Ready", t)

	// kube-proxy has synced once the `kubernetes` Service's ClusterIP
	// answers: before, nothing on the bridge owns that address.
	t = time.Now()
	svc := net.JoinHostPort(KubernetesServiceIP, strconv.Itoa(apiPort))
	if err := c.waitFor(ctx, "the kubernetes Service through kube-proxy", all, func(ctx context.Context) (bool, error) {
		conn, err := (&net.Dialer{Timeout: 250 * time.Millisecond}).DialContext(ctx, "tcp", svc)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	}); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "default service account", all, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	}); err != nil {
		return err
	}
	c.step("kube-proxy synced, default service account", t)
	c.step("total", t0)
	return nil
}

// bridgeNetfilter makes the host's iptables see traffic between pods on the
// bridge (net.bridge.bridge-nf-call-iptables=1). A pod's packet to a
// ClusterIP goes to the node IP, is DNATed to a pod on the same bridge and
// bridged there; that pod's reply is bridged straight back and only passes
// conntrack, which undoes the DNAT, when bridged frames go through iptables.
// The kernel's br_netfilter turns it on by default when loaded; Start sets it
// when it is 0 (the saved value is restored at teardown). Without
// br_netfilter at all (no /proc/sys/net/bridge; Start loads no module),
// kube-proxy masquerades every connection to a ClusterIP instead, so
// replies come back through the host: masqueradeAll is then true.
func (c *Cluster) bridgeNetfilter() (masqueradeAll bool, err error) {
	const name = "net.bridge.bridge-nf-call-iptables"
	v, err := readSysctl(name)
	if err != nil {
		c.log.Warn("no br_netfilter (the bridge's traffic bypasses iptables): kube-proxy masquerades all Service traffic; pods see the node IP as the client", "sysctl", name, "err", err)
		return true, nil
	}
	if v != "1" {
		if err := writeSysctl(name, "1"); err != nil {
			return false, err
		}
		c.log.Info("set sysctl for Service traffic between pods on the bridge; restored at teardown", "sysctl", name, "was", v)
	}
	c.ownSysctls = map[string]string{name: "1"}
	return false, nil
}

// guardChain holds the one rule that keeps forwarding on the bridge inside
// the bridge. Its name starts with GMESH-, so teardown removes it and its
// jump like the KUBE-* ones.
const guardChain = "GMESH-K8STEST-FORWARD"

// forwardOnBridge lets the host forward packets that arrive on the bridge,
// and only from the bridge back onto it. A pod's packet to a ClusterIP
// whose endpoint is another pod on the bridge is DNATed in the bridge's
// PREROUTING and must then be sent on; measured on this kernel (6.18), it is
// dropped after the DNAT unless the bridge forwards, although
// br_netfilter's "bridged DNAT" was once meant to need no forwarding. The
// setting is the bridge's own (net.ipv4.conf.gmesh0.forwarding: it goes with
// the bridge; the machine's net.ipv4.ip_forward stays as it is), and the
// guard chain drops anything from the bridge bound elsewhere, so no pod
// reaches off this machine through the host.
func forwardOnBridge() error {
	rules := "*filter\n:" + guardChain + " - [0:0]\n" +
		"-A " + guardChain + " -i " + BridgeName + " ! -o " + BridgeName + " -m comment --comment \"gmesh-k8stest: pods reach nothing off this machine\" -j DROP\n" +
		"-I FORWARD 1 -j " + guardChain + "\nCOMMIT\n"
	cmd := exec.Command("iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("add the %s chain: %w: %s", guardChain, err, strings.TrimSpace(string(out)))
	}
	return writeSysctl("net.ipv4.conf."+BridgeName+".forwarding", "1")
}

// without is saved less the names in own.
func without(saved, own map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range saved {
		if _, ok := own[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// startProc starts a cluster process in its own session, its output in
// logs/NAME.log, and records its pid in the state file.
func (c *Cluster) startProc(name, bin string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(c.root, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open the %s log: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	exe := procExe(cmd.Process.Pid)
	if exe == "" {
		exe = bin
	}
	if err := c.j.update(func(s *State) { s.Procs = append(s.Procs, Proc{Name: name, Pid: cmd.Process.Pid, Exe: exe}) }); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.exits[name] = done
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

// waitFor polls cond until it holds, failing early if one of the named
// processes exits.
func (c *Cluster) waitFor(ctx context.Context, what string, procs []string, cond func(context.Context) (bool, error)) error {
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		c.mu.Lock()
		for _, name := range procs {
			select {
			case <-c.exits[name]:
				c.mu.Unlock()
				return false, fmt.Errorf("%s exited while waiting for %s (see %s)", name, what, filepath.Join(c.root, "logs", name+".log"))
			default:
			}
		}
		c.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return cond(cctx)
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", what, err)
	}
	return nil
}

// logTails returns the last lines of each process's log, for error messages.
func (c *Cluster) logTails() string {
	var b strings.Builder
	ents, _ := os.ReadDir(filepath.Join(c.root, "logs"))
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(c.root, "logs", e.Name()))
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&b, "\n--- %s (last lines)\n%s", e.Name(), strings.Join(lines, "\n"))
	}
	return b.String()
}

// Kubeconfig is the path of an admin kubeconfig for the cluster.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig is an admin client configuration for the cluster.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.cfg) }

// Client is an admin clientset for the cluster.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Root is the cluster's directory: logs/ holds each process's log.
func (c *Cluster) Root() string { return c.root }

// Binaries are the cluster's binaries (kubectl among them).
func (c *Cluster) Binaries() Binaries { return c.bins }

// State is what the cluster has created so far.
func (c *Cluster) State() State {
	if c.j == nil {
		return State{Root: c.root}
	}
	return c.j.state()
}

// LoadImage imports an image tarball (docker-archive or OCI) into the
// cluster's containerd, where pods with imagePullPolicy Never find it.
func (c *Cluster) LoadImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.sock, "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import image %s: %w: %s", tarball, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CopyLogs copies the cluster's process logs into dir.
func (c *Cluster) CopyLogs(dir string) error {
	ents, err := os.ReadDir(filepath.Join(c.root, "logs"))
	if err != nil {
		return fmt.Errorf("read the cluster logs: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(c.root, "logs", e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Stop tears the cluster down completely if this process started it (see
// Cleanup), and releases the machine's cluster lock. Stopping a cluster that
// was only connected to does nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	_, err := c.stop(ctx, false)
	return err
}

// StopChecked is Stop that also returns what the teardown left behind
// (Leftovers), looked at while this process still holds the machine's
// cluster lock: once the lock is released, the next cluster (another test
// package's, waiting on it) may already be making the same root directory.
func (c *Cluster) StopChecked(ctx context.Context) (leftovers []string, err error) {
	return c.stop(ctx, true)
}

func (c *Cluster) stop(ctx context.Context, check bool) ([]string, error) {
	if !c.owned {
		return nil, nil
	}
	var err error
	var left []string
	if c.j != nil {
		st := c.j.state()
		err = Cleanup(ctx, c.log, st)
		c.wg.Wait()
		if check {
			left = Leftovers(st)
		}
	} else {
		c.wg.Wait()
	}
	if c.lock != nil {
		releaseLock(c.lock)
		c.lock = nil
	}
	c.owned = false
	return left, err
}

// Connect uses a running cluster from a kubeconfig (as `gmesh-k8stest up`
// writes), for tests that should not start their own. Its containerd socket
// is found from the state file under root.
func Connect(kubeconfig, root string) (*Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("make a client: %w", err)
	}
	root = rootDir(root)
	bins, _ := EnsureBinariesCached()
	return &Cluster{log: slog.New(slog.DiscardHandler), root: root, kubeconfig: kubeconfig, cfg: cfg, client: client,
		sock: filepath.Join(root, "containerd", "containerd.sock"), bins: bins}, nil
}

// EnsureBinariesCached returns the binaries' paths without building.
func EnsureBinariesCached() (Binaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	return binariesIn(filepath.Join(cache, KubernetesVersion+"-etcd"+EtcdVersion, "bin"), ""), nil
}

func writeKubeconfig(path, server string, caPEM []byte, certFile, keyFile string) error {
	crt, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: gmesh-k8stest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: gmesh-k8stest
  context:
    cluster: gmesh-k8stest
    user: user
current-context: gmesh-k8stest
`, server, enc(caPEM), enc(crt), enc(key))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
