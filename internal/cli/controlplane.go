package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

func newControlPlaneCmd(g *globals, stdio IO) *cobra.Command {
	var addr string
	var verbose, onKubernetes bool
	ca := caOptions{lifetime: pki.DefaultLifetime}
	var k8s k8sFlags
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane (store, registry, health checks, xDS, rollouts, admin API)",
		Long: `Run the control plane (store, registry, health checks, xDS, rollouts, admin API).

With --kubernetes it runs against a cluster instead: it watches App Mesh's
appmesh.k8s.aws/v1beta2 objects, namespaces and pods, serves their mesh over
xDS on --addr (default :18000), answers /healthz, /readyz, /usage and
/converged/router (whether this replica's xDS clients ACKed a router's
generation; the leader asks every replica found by --peer-selector in
--peer-namespace on --peer-port) on --health-addr, serves the admission
webhooks (pod injection, App Mesh validation) over TLS on --webhook-addr,
and, while it holds the Lease, writes each object's status and keeps the
webhooks' certificates.
The cluster comes from --kubeconfig, else $KUBECONFIG, else ~/.kube/config,
else the in-cluster service account.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if onKubernetes {
				level := slog.LevelInfo
				if verbose {
					level = slog.LevelDebug
				}
				logger := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: level}))
				return runKubernetesControlPlane(cmd.Context(), stdio, logger, addr, k8s)
			}
			if err := ca.validate(); err != nil {
				return err
			}
			dir, err := statedir.Open(g.stateDir)
			if err != nil {
				return err
			}
			if addr == "" {
				addr = "127.0.0.1:0"
				if prev, err := dir.ReadControlPlane(); err == nil && prev.Addr != "" {
					addr = prev.Addr // keep the address tasks' bootstraps name
				} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			token, err := dir.Token()
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: level}))
			cp, err := controlplane.New(controlplane.Config{
				StorePath: dir.StorePath(),
				Addr:      addr,
				Token:     token,
				Logger:    logger,
				CA:        &lazyCA{opts: &ca, dir: dir},
			})
			if err != nil {
				return err
			}
			if err := dir.WriteControlPlane(statedir.ControlPlane{Addr: cp.Addr(), PID: os.Getpid()}); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "Control plane: %s (admin API and xDS), state in %s\n", cp.Addr(), dir.Path)
			return cp.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "listen address of the admin API and xDS (default: the address recorded in the state directory, else 127.0.0.1 on a free port); a non-loopback address requires the token. With --kubernetes: the xDS address (default :18000)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	cmd.Flags().StringVar(&ca.certFile, "ca-cert", "", "the mesh CA's certificate (PEM), with --ca-key, for the health checker's certificate (default: the state directory's CA)")
	cmd.Flags().StringVar(&ca.keyFile, "ca-key", "", "the mesh CA's private key (PEM, mode 0600)")
	cmd.Flags().BoolVar(&onKubernetes, "kubernetes", false, "run against a Kubernetes cluster: App Mesh objects and pods in, xDS out (no state directory, no admin API)")
	cmd.Flags().StringVar(&k8s.kubeconfig, "kubeconfig", "", "with --kubernetes: the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	cmd.Flags().StringVar(&k8s.healthAddr, "health-addr", ":8081", "with --kubernetes: listen address of /healthz and /readyz (empty: none)")
	cmd.Flags().BoolVar(&k8s.leaderElect, "leader-elect", true, "with --kubernetes: stand for the Lease and write status while leading")
	cmd.Flags().BoolVar(&k8s.rollouts, "rollouts", true, "with --kubernetes: carry out Rollouts (rollouts.gmesh.dev; needs the CRD) with the rollout engine, on the Lease holder")
	cmd.Flags().StringVar(&k8s.leaseNamespace, "lease-namespace", "", "with --kubernetes: namespace of the Lease (default: the kubeconfig's or the pod's namespace)")
	cmd.Flags().StringVar(&k8s.identity, "identity", "", "with --kubernetes: this replica's name in the Lease (default: $POD_NAME, else the host name)")
	cmd.Flags().StringVar(&k8s.webhookAddr, "webhook-addr", webhook.DefaultAddr, "with --kubernetes: listen address (TLS) of the admission webhooks, pod injection and App Mesh validation (empty: none)")
	cmd.Flags().StringVar(&k8s.webhookNamespace, "webhook-namespace", "", "with --kubernetes: namespace of the control plane's Service and of the webhook certificates' Secret (default: the kubeconfig's or the pod's namespace)")
	cmd.Flags().StringVar(&k8s.webhookService, "webhook-service", webhook.DefaultService, "with --kubernetes: the control plane's Service: the webhooks' certificate names it, and without --xds-address injected pods get its ClusterIP and port \"xds\"")
	cmd.Flags().StringVar(&k8s.webhookSecret, "webhook-secret", webhook.DefaultSecretName, "with --kubernetes: the Secret of the webhooks' CA and serving certificate (the leader creates and renews it)")
	cmd.Flags().BoolVar(&k8s.webhookWarnOnly, "webhook-warn-only", false, "with --kubernetes: admit App Mesh objects with dangling references, with a warning, instead of refusing them")
	cmd.Flags().StringVar(&k8s.xdsAddress, "xds-address", "", "with --kubernetes: the xDS address (host:port) injected pods' bootstrap names (default: the --webhook-service Service's ClusterIP and port \"xds\"; with cluster DNS, e.g. gmesh-controlplane.gmesh-system.svc:18000)")
	cmd.Flags().StringVar(&k8s.peerNamespace, "peer-namespace", "", "with --kubernetes: namespace of the control plane's pods, which the leader asks whether their xDS clients ACKed a router's generation (default: the kubeconfig's or the pod's namespace)")
	cmd.Flags().StringVar(&k8s.peerSelector, "peer-selector", controller.DefaultPeerSelector, "with --kubernetes: label selector of the control plane's pods")
	cmd.Flags().BoolVar(&k8s.identities, "workload-identities", true, "with --kubernetes: be the mesh CA and give the pods of meshes with TLS on their certificates (a Secret per VirtualNode, mounted by the webhook)")
	cmd.Flags().StringVar(&k8s.caSecret, "mesh-ca-secret", identity.DefaultCASecret, "with --kubernetes: the Secret (type kubernetes.io/tls, in --webhook-namespace) holding the mesh CA; created when missing, or provide your own")
	cmd.Flags().DurationVar(&k8s.certLifetime, "workload-cert-lifetime", identity.DefaultLifetime, "with --kubernetes: lifetime of a pod's certificate; renewed at half of it (the kubelet takes up to its sync period, about a minute, to update a mounted Secret)")
	cmd.Flags().BoolVar(&k8s.xdsTLS, "xds-tls", true, "with --kubernetes and --workload-identities: the pods of meshes with TLS on connect to xDS over TLS with their certificates, and a client claiming such a pod without its certificate is refused")
	cmd.Flags().IntVar(&k8s.peerPort, "peer-port", 0, "with --kubernetes: the other replicas' --health-addr port, where they answer "+controller.PathConvergedRouter+" and "+controller.PathUsage+" (default: this replica's --health-addr port)")
	return cmd
}
