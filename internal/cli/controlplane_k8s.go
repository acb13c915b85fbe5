package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// k8sFlags are `gmesh controlplane --kubernetes`'s flags.
type k8sFlags struct {
	kubeconfig     string
	healthAddr     string
	leaderElect    bool
	leaseNamespace string
	identity       string
	// The webhooks: "" webhookAddr serves none.
	webhookAddr      string
	webhookNamespace string
	webhookService   string
	webhookSecret    string
	webhookWarnOnly  bool
	xdsAddress       string
	// How the leader finds the other replicas to ask about their clients'
	// ACKs (controller.ClusterConvergence).
	peerNamespace string
	peerSelector  string
	peerPort      int
	// rollouts drives Rollouts (rollouts.gmesh.dev) on the leader.
	rollouts bool
	// Workload identities (issue 14): the mesh CA's Secret, the
	// certificates' lifetime, and whether TLS-mesh pods must use TLS xDS.
	identities   bool
	caSecret     string
	certLifetime time.Duration
	xdsTLS       bool
}

// newRouterConvergence is what tells the rollout runtime that the xDS
// clients of a VirtualRouter ACKed a generation of it: every Ready
// replica's clients (controller.ClusterConvergence), or this replica's
// alone when it runs without peers.
var newRouterConvergence = func(cp *controller.ControlPlane) rolloutctl.RouterConvergence {
	if c := cp.Cluster(); c != nil {
		return c
	}
	return cp
}

// kubeClients are the clients of a command that runs against a cluster.
type kubeClients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	config clientcmd.ClientConfig
	rest   *rest.Config
	// namespace is the kubeconfig context's namespace (in a pod, its
	// own), "" if none is set.
	namespace string
}

// newKubeClients finds the cluster by client-go's usual rules
// (kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the in-cluster
// service account) and sends client-go's klog logs to logger.
func newKubeClients(logger *slog.Logger, kubeconfig, userAgent string) (*kubeClients, error) {
	klog.SetSlogLogger(logger.With("component", "client-go"))
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.UserAgent = userAgent
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		ns = ""
	}
	return &kubeClients{kube: kube, dyn: dyn, config: cc, rest: rc, namespace: ns}, nil
}

// defaultK8sXDSAddr is where the control plane serves xDS in a cluster.
const defaultK8sXDSAddr = ":18000"

// runKubernetesControlPlane runs the control plane against the cluster the
// usual client-go rules find: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, else the in-cluster service account.
func runKubernetesControlPlane(ctx context.Context, stdio IO, logger *slog.Logger, xdsAddr string, f k8sFlags) error {
	if f.xdsAddress != "" {
		if _, err := webhook.BootstrapJSON(f.xdsAddress); err != nil {
			return fmt.Errorf("--xds-address: %w", err)
		}
	}
	kc, err := newKubeClients(logger, f.kubeconfig, "gmesh-controlplane")
	if err != nil {
		return err
	}
	kube, dyn, cc, rc := kc.kube, kc.dyn, kc.config, kc.rest
	if xdsAddr == "" {
		xdsAddr = defaultK8sXDSAddr
	}
	cfg := controller.Config{Kube: kube, Dynamic: dyn, XDSAddr: xdsAddr, HealthAddr: f.healthAddr, Logger: logger}
	ownNamespace := func(what, flag string) (string, error) {
		ns, _, err := cc.Namespace()
		if err != nil {
			return "", fmt.Errorf("kubernetes namespace for the %s (set %s): %w", what, flag, err)
		}
		return ns, nil
	}
	if f.webhookAddr != "" {
		ns := f.webhookNamespace
		if ns == "" {
			if ns, err = ownNamespace("webhooks", "--webhook-namespace"); err != nil {
				return err
			}
		}
		cfg.Webhook = &webhook.Options{
			Addr: f.webhookAddr, Namespace: ns, Service: f.webhookService, SecretName: f.webhookSecret,
			XDSAddress: f.xdsAddress, WarnOnly: f.webhookWarnOnly,
		}
	}
	id := f.identity
	if id == "" {
		id = os.Getenv("POD_NAME")
	}
	cfg.Replica = id
	if f.leaderElect {
		ns := f.leaseNamespace
		if ns == "" {
			if ns, err = ownNamespace("lease", "--lease-namespace"); err != nil {
				return err
			}
		}
		cfg.Status = &controller.StatusConfig{Namespace: ns, Identity: id}
	}
	peers := &controller.PeersConfig{Namespace: f.peerNamespace, Selector: f.peerSelector, Port: f.peerPort}
	if peers.Namespace == "" {
		if peers.Namespace, err = ownNamespace("control plane's replicas", "--peer-namespace"); err != nil {
			return err
		}
	}
	if peers.Port == 0 {
		peers.Port = controller.DefaultPeerPort
		if f.healthAddr != "" {
			if _, p, err := net.SplitHostPort(f.healthAddr); err == nil {
				if n, err := strconv.Atoi(p); err == nil && n > 0 {
					peers.Port = n
				}
			}
		}
	}
	cfg.Peers = peers
	if f.identities {
		if err := identitiesConfig(ctx, &cfg, kube, f, ownNamespace); err != nil {
			return err
		}
	}
	cp, err := controller.New(cfg)
	if err != nil {
		return err
	}
	var rolloutRuntime *rolloutctl.Runtime
	if f.rollouts {
		rolloutRuntime, err = rolloutctl.Attach(cp, kube, dyn, newRouterConvergence(cp), logger.With("component", "rollouts"))
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdio.Out, "Control plane on Kubernetes (%s): xDS on %s, health checks on %s", rc.Host, cp.XDSAddr(), cp.HealthAddr())
	if a := cp.WebhookAddr(); a != "" {
		fmt.Fprintf(stdio.Out, ", webhooks on %s", a)
	}
	fmt.Fprintln(stdio.Out)
	if rolloutRuntime != nil && cp.Status() == nil {
		// No leader election: this one replica drives the Rollouts.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan struct{})
		go func() { defer close(done); rolloutRuntime.Lead(ctx) }()
		defer func() { cancel(); <-done }()
		return cp.Run(ctx)
	}
	return cp.Run(ctx)
}

// identitiesConfig loads (or creates) the mesh CA and sets cfg's workload
// identities and, with --xds-tls, the xDS channel's authentication, whose
// certificate names the address pods are given.
func identitiesConfig(ctx context.Context, cfg *controller.Config, kube kubernetes.Interface, f k8sFlags, ownNamespace func(what, flag string) (string, error)) error {
	if f.certLifetime < pki.MinLifetime || f.certLifetime > pki.MaxLifetime {
		return fmt.Errorf("--workload-cert-lifetime %s: want %s to %s", f.certLifetime, pki.MinLifetime, pki.MaxLifetime)
	}
	ns := f.webhookNamespace
	if ns == "" {
		var err error
		if ns, err = ownNamespace("mesh CA's Secret", "--webhook-namespace"); err != nil {
			return err
		}
	}
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ca, err := identity.LoadOrCreateCA(lctx, kube, ns, f.caSecret, nil)
	if err != nil {
		return fmt.Errorf("the mesh CA (--mesh-ca-secret %s/%s): %w", ns, f.caSecret, err)
	}
	cfg.Identities = &controller.IdentitiesConfig{CA: ca, Lifetime: f.certLifetime}
	if !f.xdsTLS || f.webhookAddr == "" {
		return nil
	}
	addr := f.xdsAddress
	if addr == "" {
		sa := &webhook.ServiceAddress{Kube: kube, Namespace: ns, Name: f.webhookService}
		if addr, err = sa.XDSAddress(lctx); err != nil {
			return fmt.Errorf("--xds-tls: the address pods reach xDS by: %w", err)
		}
	}
	cfg.XDSAuth = &controller.XDSAuthConfig{CA: ca, Hosts: controller.XDSHosts(addr, ns, f.webhookService)}
	return nil
}
