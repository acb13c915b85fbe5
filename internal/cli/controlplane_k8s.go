package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
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
	// rollouts drives Rollouts (rollouts.gmesh.dev) on the leader.
	rollouts bool
}

// newRouterConvergence is what tells the rollout runtime that the xDS
// clients of a VirtualRouter ACKed a generation of it. Until the
// cluster-wide implementation is plugged in here, it is the leader's own
// clients only (rolloutctl.LocalConvergence): with several replicas, the
// clients of the others are not waited for.
var newRouterConvergence = func(cp *controller.ControlPlane) rolloutctl.RouterConvergence {
	return &rolloutctl.LocalConvergence{Source: cp.Source(), XDS: cp.XDS()}
}

// kubeClients are the clients of a command that runs against a cluster.
type kubeClients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	config clientcmd.ClientConfig
	rest   *rest.Config
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
	return &kubeClients{kube: kube, dyn: dyn, config: cc, rest: rc}, nil
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
	if f.leaderElect {
		ns := f.leaseNamespace
		if ns == "" {
			if ns, err = ownNamespace("lease", "--lease-namespace"); err != nil {
				return err
			}
		}
		id := f.identity
		if id == "" {
			id = os.Getenv("POD_NAME")
		}
		cfg.Status = &controller.StatusConfig{Namespace: ns, Identity: id}
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
