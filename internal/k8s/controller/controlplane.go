package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// subscribeFirstWait bounds how long a publish waits for clients to
// subscribe to a new weighted target before giving it weight.
const subscribeFirstWait = 3 * time.Second

// Config configures a ControlPlane.
type Config struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// XDSAddr is where xDS is served; default 127.0.0.1:0.
	XDSAddr string
	// HealthAddr serves /healthz and /readyz over HTTP; "" serves none.
	HealthAddr string
	// Source tunes the debounce; its Logger and BeforePublish are set by
	// the control plane.
	Source Options
	// Status, when set, runs the leader-elected status writer.
	Status *StatusConfig
	// Webhook, when set, serves the admission webhooks (pod injection,
	// App Mesh validation) over TLS on its Addr; the Status leader keeps
	// their certificates. Its Logger is set by the control plane.
	Webhook *webhook.Options
	// Replica names this replica in ConvergedRouter's answers ("replica
	// NAME has not yet seen ..."); default Status.Identity, else the host
	// name. On Kubernetes: the pod's name.
	Replica string
	// Peers, when set, makes Cluster the convergence of every replica
	// (ClusterConvergence), found through the Source's pod informer; its
	// Self defaults to Replica. Nil: Cluster is nil.
	Peers *PeersConfig
	// Identities, when set, gives the pods of meshes with TLS on their
	// workload identities (issue 14): the leader keeps a Secret per
	// VirtualNode (identity.Keeper), and the webhook mounts it into the
	// pods. Without leader election, this replica keeps them.
	Identities *IdentitiesConfig
	// XDSAuth, when set, authenticates xDS clients (XDSAuthConfig): pods
	// of meshes with TLS on must connect over TLS with their workload
	// certificates.
	XDSAuth *XDSAuthConfig
	Logger  *slog.Logger
}

// IdentitiesConfig configures the workload identities on Kubernetes.
type IdentitiesConfig struct {
	// CA issues them (identity.LoadOrCreateCA).
	CA *pki.CA
	// Lifetime of each certificate; default identity.DefaultLifetime.
	Lifetime time.Duration
	// Refresh is how often a pod's gRPC rereads its certificate files;
	// default webhook.DefaultIdentityRefresh.
	Refresh time.Duration
}

// ControlPlane is gmesh's control plane on Kubernetes: the source, the xDS
// server it publishes to, the health endpoints and, on the leader, the
// status writer.
type ControlPlane struct {
	cfg      Config
	log      *slog.Logger
	replica  string
	cluster  *ClusterConvergence
	xds      *xdsserver.Server
	source   *Source
	status   *StatusWriter
	webhooks *webhook.Webhooks
	keeper   *identity.Keeper
	grpc     *grpc.Server
	ln       net.Listener
	healthLn net.Listener
	http     *http.Server
}

// New binds the listeners; Run serves.
func New(cfg Config) (*ControlPlane, error) {
	if cfg.Kube == nil || cfg.Dynamic == nil {
		return nil, errors.New("kubernetes control plane: kubernetes and dynamic clients are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.XDSAddr == "" {
		cfg.XDSAddr = "127.0.0.1:0"
	}
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger, replica: cfg.Replica}
	if cp.replica == "" && cfg.Status != nil {
		cp.replica = cfg.Status.Identity
	}
	if cp.replica == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("kubernetes control plane: replica name: %w", err)
		}
		cp.replica = h
	}
	// The Source publishes to the xDS server, and the xDS server's
	// authentication asks the Source: the server is made first, its
	// authentication reads the Source through auth once both exist.
	var auth *podAuth
	var xdsOpts xdsserver.Options
	if cfg.XDSAuth != nil {
		xdsOpts.Auth = xdsserver.AuthenticatorFunc(func(ctx context.Context, nodeID string) error {
			return auth.meshAuth().Authenticate(ctx, nodeID)
		})
		xdsOpts.View = func(nodeID string) string { return auth.view(nodeID) }
	}
	cp.xds = xdsserver.New(cfg.Logger.With("component", "xds"), xdsOpts)
	opts := cfg.Source
	opts.Logger = cfg.Logger.With("component", "source")
	opts.BeforePublish = func(ctx context.Context, in xds.Input, prev *xds.Resources) {
		cp.xds.PublishSubscribeFirst(ctx, in, prev, subscribeFirstWait)
	}
	cp.source = NewSource(cfg.Kube, cfg.Dynamic, cp.xds, opts)
	if cfg.XDSAuth != nil {
		a, err := newPodAuth(*cfg.XDSAuth, cp.source, cp.source.Pods())
		if err != nil {
			return nil, fmt.Errorf("kubernetes control plane: %w", err)
		}
		auth = a
	}
	if cfg.Status != nil {
		sw, err := NewStatusWriter(cfg.Kube, cfg.Dynamic, cp.source, cp.xds, *cfg.Status, cfg.Logger.With("component", "status"))
		if err != nil {
			return nil, err
		}
		cp.status = sw
	}
	if cfg.Identities != nil {
		if cfg.Identities.CA == nil {
			return nil, errors.New("kubernetes control plane: identities need a CA")
		}
		k, err := identity.NewKeeper(cfg.Kube, cfg.Identities.CA, cp.source.IdentityWants, identity.KeeperOptions{
			Lifetime: cfg.Identities.Lifetime,
			Changed:  cp.source.IdentityChanges(),
			Logger:   cfg.Logger.With("component", "identity"),
		})
		if err != nil {
			return nil, fmt.Errorf("kubernetes control plane: %w", err)
		}
		cp.keeper = k
		if cp.status != nil {
			cp.status.AlsoWhileLeading(func(ctx context.Context) { _ = k.Lead(ctx) })
		}
	}
	if cfg.Peers != nil {
		pc := *cfg.Peers
		if pc.Self == "" {
			pc.Self = cp.replica
		}
		cc, err := NewClusterConvergence(cp, cp.source.Pods(), pc, cfg.Logger.With("component", "convergence"))
		if err != nil {
			return nil, fmt.Errorf("kubernetes control plane: %w", err)
		}
		cp.cluster = cc
		if cp.status != nil {
			cp.status.CountOtherReplicas(cc.Usage, otherReplicasEvery)
		}
	}
	ln, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		return nil, fmt.Errorf("kubernetes control plane: listen for xds on %s: %w", cfg.XDSAddr, err)
	}
	cp.ln = ln
	if cfg.Webhook != nil {
		opts := *cfg.Webhook
		opts.Logger = cfg.Logger.With("component", "webhook")
		if cfg.Identities != nil {
			opts.Identity = webhook.IdentityOptions{Identities: cp.source, Refresh: cfg.Identities.Refresh, ChannelTLS: cfg.XDSAuth != nil}
		}
		wh, err := webhook.New(cfg.Kube, cfg.Dynamic, cp.source, cp.source.Namespaces(), opts)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("kubernetes control plane: %w", err)
		}
		cp.webhooks = wh
		if cp.status != nil {
			cp.status.AlsoWhileLeading(wh.Lead)
		}
	}
	if cfg.HealthAddr != "" {
		hl, err := net.Listen("tcp", cfg.HealthAddr)
		if err != nil {
			ln.Close()
			if cp.webhooks != nil {
				cp.webhooks.Close()
			}
			return nil, fmt.Errorf("kubernetes control plane: listen for health checks on %s: %w", cfg.HealthAddr, err)
		}
		cp.healthLn = hl
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !cp.source.Ready() {
				http.Error(w, "not ready: informers not synced or no snapshot published yet", http.StatusServiceUnavailable)
				return
			}
			if cp.webhooks != nil && !cp.webhooks.Ready() {
				http.Error(w, "not ready: no webhook certificate yet (the leader creates the Secret)", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.Handle("GET "+PathConvergedRouter, ConvergedRouterHandler(cp))
		mux.Handle("GET "+PathUsage, usageHandler(cp))
		cp.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	serverOpts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if auth != nil {
		serverOpts = append(serverOpts, grpc.Creds(xdsserver.TLSOrPlaintext(auth.cert.ServerTLS())))
	}
	cp.grpc = grpc.NewServer(serverOpts...)
	cp.xds.Register(cp.grpc)
	return cp, nil
}

// XDSAddr is the address xDS is served on.
func (cp *ControlPlane) XDSAddr() string { return cp.ln.Addr().String() }

// HealthAddr is the address of /healthz and /readyz, "" when none.
func (cp *ControlPlane) HealthAddr() string {
	if cp.healthLn == nil {
		return ""
	}
	return cp.healthLn.Addr().String()
}

// XDS is the xDS server.
func (cp *ControlPlane) XDS() *xdsserver.Server { return cp.xds }

// Status is the status writer, nil when not configured.
func (cp *ControlPlane) Status() *StatusWriter { return cp.status }

// Identities is the keeper of the workload identities' Secrets, nil when
// not configured.
func (cp *ControlPlane) Identities() *identity.Keeper { return cp.keeper }

// Webhooks are the admission webhooks, nil when not configured.
func (cp *ControlPlane) Webhooks() *webhook.Webhooks { return cp.webhooks }

// WebhookAddr is the address the webhooks are served on, "" when none.
func (cp *ControlPlane) WebhookAddr() string {
	if cp.webhooks == nil {
		return ""
	}
	return cp.webhooks.Addr()
}

// Replica is this replica's name in ConvergedRouter's answers.
func (cp *ControlPlane) Replica() string { return cp.replica }

// Cluster is the convergence of every replica's clients, for the leader's
// rollouts; nil without Config.Peers.
func (cp *ControlPlane) Cluster() *ClusterConvergence { return cp.cluster }

// Source is the cluster source.
func (cp *ControlPlane) Source() *Source { return cp.source }

// Ready reports whether the informers synced and the first snapshot was
// published.
func (cp *ControlPlane) Ready() bool { return cp.source.Ready() }

// Run serves xDS (clients that connect before the first publish wait for
// it), runs the source and, if configured, the status writer, until ctx
// ends; then it stops gracefully and returns once every goroutine it
// started has ended.
func (cp *ControlPlane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 5)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := cp.source.Run(ctx); err != nil {
			errs <- err
		}
	}()
	if cp.status != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cp.status.Run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	if cp.webhooks != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cp.webhooks.Run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	if cp.keeper != nil && cp.status == nil {
		// No leader election: this one replica keeps the identities.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cp.keeper.Lead(ctx); err != nil {
				errs <- err
			}
		}()
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := cp.grpc.Serve(cp.ln); err != nil {
			errs <- fmt.Errorf("serve xds: %w", err)
		}
	}()
	httpDone := make(chan struct{})
	if cp.http != nil {
		go func() {
			defer close(httpDone)
			if err := cp.http.Serve(cp.healthLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serve health checks: %w", err)
			}
		}()
	} else {
		close(httpDone)
	}
	cp.log.Info("kubernetes control plane serving", "xds", cp.XDSAddr(), "health", cp.HealthAddr(), "webhooks", cp.WebhookAddr())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	cancel()
	if cp.http != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		if serr := cp.http.Shutdown(sctx); serr != nil {
			cp.http.Close()
		}
		scancel()
	}
	stopped := make(chan struct{})
	go func() { cp.grpc.GracefulStop(); close(stopped) }()
	// ADS streams never end by themselves: end them, or every stop with a
	// connected client waits out the timeout below.
	cp.xds.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		cp.grpc.Stop()
		<-stopped
	}
	<-served
	<-httpDone
	wg.Wait()
	return err
}
