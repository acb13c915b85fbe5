// Package controlplane is gmesh's control plane: the durable store, the
// endpoint registry with active health checks, the xDS server fed with whole
// translated snapshots, the rollout engine, and the admin API, served on one
// gRPC port. cmd/gmesh wires it as `gmesh controlplane`; tests start the
// real thing in-process on port 0.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/rollout"
	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/store/bolt"
	"github.com/gmesh-dev/gmesh/internal/store/memstore"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

const routeTypeURL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

// Config configures a control plane.
type Config struct {
	// StateDir holds the store; empty means an in-memory store (tests).
	StorePath string
	// Addr is the listen address of the admin API and xDS; default
	// 127.0.0.1:0.
	Addr string
	// Token is the admin API bearer token, required when Addr is not
	// loopback.
	Token  string
	Logger *slog.Logger
	// CA issues the health checker's certificate for checks of STRICT
	// endpoints (mTLS); nil: they are checked in plain text, and fail.
	CA pki.Issuer
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	registry *registry.Registry
	xds      *xdsserver.Server
	rollouts *rollout.Engine
	grpc     *grpc.Server
	ln       net.Listener

	health *healthIdentities
	xdsID  *xdsIdentity // nil without a CA: plaintext xDS only

	mu             sync.Mutex
	translateError string
	lastPublished  *xds.Resources
}

// New opens the store and binds the listener; Run serves.
func New(cfg Config) (*ControlPlane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if !IsLoopback(cfg.Addr) && cfg.Token == "" {
		return nil, fmt.Errorf("control plane on non-loopback address %s needs a token", cfg.Addr)
	}
	var st store.Store
	if cfg.StorePath == "" {
		st = memstore.New(store.Options{})
	} else {
		b, err := bolt.Open(cfg.StorePath, bolt.Options{})
		if err != nil {
			return nil, err
		}
		st = b
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		st.Close()
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			return nil, fmt.Errorf("control plane cannot listen on %s: %w", cfg.Addr, opErr.Err)
		}
		return nil, fmt.Errorf("control plane cannot listen on %s: %w", cfg.Addr, err)
	}
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger, store: st, ln: ln, health: &healthIdentities{ca: cfg.CA}}
	auth := &authenticator{required: !IsLoopback(ln.Addr().String()), token: []byte(cfg.Token)}
	cp.registry = registry.New(cfg.Logger.With("component", "registry"), st, registry.Options{})
	xdsOpts := xdsserver.Options{}
	serverOpts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(auth.unary),
		grpc.ChainStreamInterceptor(auth.stream),
		grpc.MaxRecvMsgSize(8 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	// With a CA, the one port also speaks TLS: xDS clients of meshes with
	// TLS on authenticate with their workload certificates (xdsIdentity).
	cp.xdsID = newXDSIdentity(cfg.CA, st, ln.Addr().String())
	if x := cp.xdsID; x != nil {
		xdsOpts.Auth = x.auth()
		xdsOpts.View = x.view
		serverOpts = append(serverOpts, grpc.Creds(xdsserver.TLSOrPlaintext(x.serverTLS())))
	}
	cp.xds = xdsserver.New(cfg.Logger.With("component", "xds"), xdsOpts)
	scraper := analysis.NewScraper(endpointLister{cp.registry}, analysis.ScraperOptions{})
	cp.rollouts = rollout.NewEngine(rollout.Config{
		Store:       storeAdapter{st},
		Endpoints:   endpointLister{cp.registry},
		Convergence: convergence{s: cp.xds, store: st},
		Metrics:     scraper,
		Logger:      cfg.Logger.With("component", "rollout"),
		// Waits on ACKs and task health are in-memory checks: look often, so
		// a step follows its ACKs within a tenth of a second.
		Poll: 100 * time.Millisecond,
	})
	cp.grpc = grpc.NewServer(serverOpts...)
	meshv1.RegisterMeshAdminServer(cp.grpc, &admin{cp: cp})
	cp.xds.Register(cp.grpc)
	return cp, nil
}

// Addr is the address the control plane serves on.
func (cp *ControlPlane) Addr() string { return cp.ln.Addr().String() }

// Store is the control plane's store (for tests and wiring).
func (cp *ControlPlane) Store() store.Store { return cp.store }

// Registry is the endpoint registry.
func (cp *ControlPlane) Registry() *registry.Registry { return cp.registry }

// XDS is the xDS server.
func (cp *ControlPlane) XDS() *xdsserver.Server { return cp.xds }

// Run restores the registry, publishes the first snapshot, and serves until
// ctx ends; then it stops gracefully and closes the store.
func (cp *ControlPlane) Run(ctx context.Context) error {
	defer cp.store.Close()
	if err := cp.registry.Restore(ctx); err != nil {
		return fmt.Errorf("restore endpoints: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	storeEvents := cp.store.Watch(ctx)
	regNotify, regCancel := cp.registry.Subscribe()
	defer regCancel()
	if err := cp.publish(ctx); err != nil {
		cp.log.Error("first publish failed", "err", err)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); cp.registry.Run(ctx) }()
	go func() { defer wg.Done(); cp.publishLoop(ctx, storeEvents, regNotify) }()
	go func() { defer wg.Done(); cp.rollouts.Run(ctx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- cp.grpc.Serve(cp.ln) }()
	cp.log.Info("control plane serving", "addr", cp.Addr())
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	cancel()
	stopped := make(chan struct{})
	go func() { cp.grpc.GracefulStop(); close(stopped) }()
	// ADS streams never end by themselves: end them, or every stop with a
	// connected client waits out the timeout below.
	cp.xds.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		cp.grpc.Stop() // ADS streams never end by themselves
	}
	wg.Wait()
	return err
}

func (cp *ControlPlane) publishLoop(ctx context.Context, events <-chan store.Event, reg <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-reg:
		}
		// Coalesce a burst of changes into one publish.
		drain := true
		for drain {
			select {
			case _, ok := <-events:
				if !ok {
					// Closed (ctx ended, or the store closed): a closed
					// channel is always ready, so draining would spin.
					return
				}
			case <-reg:
			default:
				drain = false
			}
		}
		if err := cp.publish(ctx); err != nil && ctx.Err() == nil {
			cp.log.Error("publish failed", "err", err)
		}
		cp.kickRollouts()
	}
}

// publish translates the whole mesh and the registry's endpoints into one
// snapshot and hands it to the xDS server.
func (cp *ControlPlane) publish(ctx context.Context) error {
	st, err := cp.store.State(ctx)
	if err != nil {
		return err
	}
	cp.registry.SetCreds(cp.health.credsFunc(st))
	cp.xdsID.published(st)
	cp.registry.SetPolicy(healthPolicy(st))
	eps := cp.registry.List(registry.Filter{})
	all := make([]*mesh.Resource, 0, len(st.Resources))
	for _, r := range st.Resources {
		all = append(all, r)
	}
	mesh.SortResources(all)
	in := xds.Input{Revision: st.Revision, Resources: all, Endpoints: eps}
	// A resource that cannot be translated is left out and reported (in
	// status), and the rest is published: one bad resource never freezes
	// the mesh.
	res, err := xds.Translate(in)
	cp.mu.Lock()
	if err != nil {
		cp.translateError = err.Error()
	} else {
		cp.translateError = ""
	}
	prev := cp.lastPublished
	cp.mu.Unlock()
	if err != nil {
		cp.log.Warn("translation left resources out", "revision", st.Revision, "err", err)
	}
	if res == nil {
		return fmt.Errorf("translate revision %d: %w", st.Revision, err)
	}
	cp.xds.PublishSubscribeFirst(ctx, in, prev, holdWait)
	if err := cp.xds.Publish(res, st.Revision); err != nil {
		return err
	}
	cp.mu.Lock()
	cp.lastPublished = res
	cp.mu.Unlock()
	return nil
}

// holdWait bounds how long a publish waits for clients to subscribe to a
// new target before giving it weight.
const holdWait = 3 * time.Second

func (cp *ControlPlane) kickRollouts() { cp.rollouts.Notify() }

// onlyMesh returns the mesh of ref when exactly one mesh has a resource of
// that kind and name, so that `gmesh get route NAME` works without --mesh.
func (cp *ControlPlane) onlyMesh(ctx context.Context, ref mesh.Ref) (string, error) {
	meshes, err := cp.store.List(ctx, mesh.KindMesh, "")
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range meshes {
		r := ref
		r.Mesh = m.Metadata.Name
		if _, err := cp.store.Get(ctx, r); err == nil {
			found = append(found, r.Mesh)
		}
	}
	switch len(found) {
	case 0:
		return "", mesh.Errorf(mesh.ENotFound, "%s %q not found in any mesh", ref.Kind, ref.Name)
	case 1:
		return found[0], nil
	}
	sort.Strings(found)
	return "", mesh.Errorf(mesh.EInvalid, "%s %q exists in meshes %v; say which with --mesh", ref.Kind, ref.Name, found)
}

// healthPolicy returns the registry's policy: the health check of the
// first listener of the virtual node that selects an endpoint.
func healthPolicy(st *mesh.State) registry.PolicyFunc {
	type vn struct {
		sel *mesh.RegistryDiscovery
		hc  *mesh.HealthCheck
	}
	var nodes []vn
	for _, r := range st.List(mesh.KindVirtualNode, "") {
		spec := r.VirtualNode()
		if spec == nil || len(spec.Listeners) == 0 {
			continue
		}
		sel := spec.ServiceDiscovery.Selector()
		if sel == nil {
			continue
		}
		l := spec.Listeners[0]
		hc := l.HealthCheck
		if hc != nil && hc.Port == 0 {
			c := *hc
			c.Port = l.PortMapping.Port
			hc = &c
		}
		nodes = append(nodes, vn{sel: sel, hc: hc})
	}
	return func(ep *mesh.Endpoint) *mesh.HealthCheck {
		for _, n := range nodes {
			if ep.Matches(n.sel) {
				if n.hc == nil {
					return nil
				}
				c := *n.hc
				// Tasks listen on their own registered port.
				c.Port = ep.Port
				return &c
			}
		}
		return nil
	}
}
