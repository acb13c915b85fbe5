package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
)

func newGatewayCmd(stdio IO) *cobra.Command {
	var (
		onKubernetes    bool
		virtualGateway  string
		listen          string
		kubeconfig      string
		healthAddr      string
		drainDelay      time.Duration
		shutdownTimeout time.Duration
		verbose         bool
	)
	cmd := &cobra.Command{
		Use:   "gateway --kubernetes --virtual-gateway NAMESPACE/NAME",
		Short: "Run a VirtualGateway's pod on Kubernetes: the mesh's ingress, routed by its gateway routes",
		Long: `Run a VirtualGateway's pod on Kubernetes: gmesh's gateway, routed by the
VirtualGateway's gateway routes, the target services' router weights and
the Ready pods of their virtual nodes.

It watches the cluster with the control plane's informers (App Mesh's
appmesh.k8s.aws/v1beta2 objects, namespaces and pods; it needs get, list and
watch on them) and rebuilds its routing table on every change. It is not an
xDS client, so a rollout's ACK gate does not wait for it. It serves HTTP/1.1
and h2c on --listen, and /healthz, /readyz and /metrics on --health-addr.
On SIGTERM /readyz fails, the gateway serves on for --drain-delay, then
stops accepting and lets in-flight requests finish (--shutdown-timeout).

Locally, ` + "`gmesh up`" + ` runs the gateway itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !onKubernetes {
				return errors.New("gmesh gateway runs on Kubernetes only: give --kubernetes (locally, gmesh up runs the gateway)")
			}
			if virtualGateway == "" {
				return errors.New("--virtual-gateway NAMESPACE/NAME is required: the VirtualGateway whose routes this pod serves")
			}
			vg, err := gatewaypod.ParseVirtualGateway(virtualGateway)
			if err != nil {
				return fmt.Errorf("--virtual-gateway: %w", err)
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: level}))
			kc, err := newKubeClients(logger, kubeconfig, "gmesh-gateway")
			if err != nil {
				return err
			}
			pod, err := gatewaypod.New(gatewaypod.Config{
				Kube:            kc.kube,
				Dynamic:         kc.dyn,
				VirtualGateway:  vg,
				Addr:            listen,
				HealthAddr:      healthAddr,
				DrainDelay:      drainDelay,
				ShutdownTimeout: shutdownTimeout,
				Logger:          logger,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "Gateway of virtual gateway %s on Kubernetes (%s): serving on %s, health checks on %s\n", vg, kc.rest.Host, pod.Addr(), pod.HealthAddr())
			return pod.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&onKubernetes, "kubernetes", false, "run against a Kubernetes cluster (required: the only mode)")
	cmd.Flags().StringVar(&virtualGateway, "virtual-gateway", "", "the VirtualGateway whose routes to serve, as NAMESPACE/NAME (e.g. echo/echo-gateway)")
	cmd.Flags().StringVar(&listen, "listen", gatewaypod.DefaultAddr, "listen address of the gateway (HTTP/1.1 and h2c)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	cmd.Flags().StringVar(&healthAddr, "health-addr", ":8081", "listen address of /healthz, /readyz and /metrics (empty: none)")
	cmd.Flags().DurationVar(&drainDelay, "drain-delay", 2*time.Second, "after SIGTERM, how long to keep serving with /readyz failing before the listener closes")
	cmd.Flags().DurationVar(&shutdownTimeout, "shutdown-timeout", gatewaypod.DefaultShutdownTimeout, "how long in-flight requests may take to finish once the listener is closed")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}
