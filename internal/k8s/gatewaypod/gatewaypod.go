// Package gatewaypod runs a VirtualGateway's pods on Kubernetes: gmesh's
// gateway (internal/gateway) fed from the cluster by the control plane's
// own informers and conversion (controller.Source with a Consumer of its
// own). Every rebuild of the cluster state becomes the gateway's routing
// table through gateway.RoutesFromMesh, the same routing brain the xDS
// translation asks: the VirtualGateway's gateway routes, the target
// services' router weights and the Ready pods of their virtual nodes.
//
// The gateway is not an xDS client: it reads the cluster itself, so a
// rollout's ACK gate, which counts xDS clients, does not wait for it.
package gatewaypod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Defaults for Config's zero values.
const (
	DefaultAddr            = ":8080"
	DefaultShutdownTimeout = 15 * time.Second
)

// Config configures a gateway pod.
type Config struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// VirtualGateway is the VirtualGateway object whose routes this pod
	// serves (see ParseVirtualGateway).
	VirtualGateway types.NamespacedName
	// Addr is where the gateway listens; default DefaultAddr.
	Addr string
	// HealthAddr serves /healthz, /readyz and /metrics; "" serves none.
	HealthAddr string
	// DrainDelay is how long the gateway keeps serving after Run's context
	// ends, with /readyz failing, so that the Service stops sending new
	// connections before the listener closes. Zero: none.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish once the listener is closed; default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Source tunes the debounce; its Logger is set here.
	Source controller.Options
	// Gateway configures the proxy; its Addr, Logger and Registry are set
	// here. Active health checks are off: on Kubernetes a pod's readiness
	// decides whether it is an endpoint, as it does for xDS clients
	// (passive ejection of failing backends stays on).
	Gateway gateway.Config
	Clock   clock.Clock
	Logger  *slog.Logger
}

// ParseVirtualGateway parses --virtual-gateway's NAMESPACE/NAME.
func ParseVirtualGateway(s string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("virtual gateway %q: want NAMESPACE/NAME, e.g. echo/echo-gateway", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return types.NamespacedName{}, fmt.Errorf("virtual gateway %q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return types.NamespacedName{}, fmt.Errorf("virtual gateway %q: name %q: %s", s, name, strings.Join(errs, "; "))
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// Pod is one gateway pod: the cluster source, the routing table it feeds,
// the gateway serving it and the health endpoints.
type Pod struct {
	cfg    Config
	log    *slog.Logger
	gw     *gateway.Gateway
	source *controller.Source
	feeder *feeder

	ln       net.Listener
	healthLn net.Listener
	health   *http.Server
	draining atomic.Bool
}

// New binds the gateway's and the health endpoints' listeners; Run serves.
func New(cfg Config) (*Pod, error) {
	if cfg.Kube == nil || cfg.Dynamic == nil {
		return nil, errors.New("kubernetes gateway: kubernetes and dynamic clients are required")
	}
	if cfg.VirtualGateway.Namespace == "" || cfg.VirtualGateway.Name == "" {
		return nil, errors.New("kubernetes gateway: the virtual gateway (NAMESPACE/NAME) is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gcfg := cfg.Gateway
	gcfg.Addr = cfg.Addr
	gcfg.Logger = cfg.Logger.With("component", "gateway")
	gcfg.Registry = reg
	gcfg.DisableHealthCheck = true
	gw, err := gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	p := &Pod{cfg: cfg, log: cfg.Logger, gw: gw}
	p.feeder = &feeder{vg: cfg.VirtualGateway, routes: gw, log: cfg.Logger.With("component", "routes")}
	opts := cfg.Source
	opts.Logger = cfg.Logger.With("component", "source")
	p.source = controller.NewSourceFor(cfg.Kube, cfg.Dynamic, p.feeder, opts)

	ln, err := gw.Listen()
	if err != nil {
		p.closeGateway()
		return nil, fmt.Errorf("kubernetes gateway: %w", err)
	}
	p.ln = ln
	if cfg.HealthAddr != "" {
		hl, err := net.Listen("tcp", cfg.HealthAddr)
		if err != nil {
			ln.Close()
			p.closeGateway()
			return nil, fmt.Errorf("kubernetes gateway: listen for health checks on %s: %w", cfg.HealthAddr, err)
		}
		p.healthLn = hl
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			if why := p.notReady(); why != "" {
				http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		p.health = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	return p, nil
}

// closeGateway stops the gateway's background work when New fails.
func (p *Pod) closeGateway() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.gw.Shutdown(ctx)
}

// Addr is the address the gateway serves on.
func (p *Pod) Addr() string { return p.ln.Addr().String() }

// HealthAddr is the address of /healthz, /readyz and /metrics, "" when
// none.
func (p *Pod) HealthAddr() string {
	if p.healthLn == nil {
		return ""
	}
	return p.healthLn.Addr().String()
}

// Gateway is the proxy the pod runs.
func (p *Pod) Gateway() *gateway.Gateway { return p.gw }

// Source is the cluster source feeding the gateway.
func (p *Pod) Source() *controller.Source { return p.source }

// Ready reports whether the pod takes traffic: the informers have synced,
// the virtual gateway was found and converted and its routing table built,
// and the pod is not draining.
func (p *Pod) Ready() bool { return p.notReady() == "" }

// notReady says why the pod is not ready, "" when it is.
func (p *Pod) notReady() string {
	if p.draining.Load() {
		return "shutting down"
	}
	snap := p.source.Last()
	switch {
	case snap == nil:
		return "informers not synced yet"
	case snap.Err != nil:
		return snap.Err.Error()
	case !p.source.Ready():
		return "informers not synced yet"
	}
	return ""
}

// Run serves until ctx ends, then shuts down gracefully: /readyz fails at
// once, the gateway keeps serving for the drain delay, then stops accepting
// connections and lets in-flight requests finish (up to the shutdown
// timeout); the source keeps following the cluster until then. It returns
// once every goroutine it started has ended.
func (p *Pod) Run(ctx context.Context) error {
	srcCtx, stopSource := context.WithCancel(context.Background())
	defer stopSource()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.source.Run(srcCtx); err != nil {
			errs <- fmt.Errorf("kubernetes source: %w", err)
		}
	}()
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := p.gw.Serve(p.ln); err != nil {
			errs <- fmt.Errorf("serve the gateway: %w", err)
		}
	}()
	healthDone := make(chan struct{})
	if p.health != nil {
		go func() {
			defer close(healthDone)
			if err := p.health.Serve(p.healthLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serve health checks: %w", err)
			}
		}()
	} else {
		close(healthDone)
	}
	p.log.Info("kubernetes gateway serving", "virtualGateway", p.cfg.VirtualGateway.String(), "addr", p.Addr(), "health", p.HealthAddr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	p.draining.Store(true)
	if err == nil && p.cfg.DrainDelay > 0 {
		p.log.Info("kubernetes gateway draining", "delay", p.cfg.DrainDelay)
		t := p.cfg.Clock.NewTimer(p.cfg.DrainDelay)
		select {
		case <-t.C():
		case err = <-errs:
		}
		t.Stop()
	}
	p.log.Info("kubernetes gateway stopping", "timeout", p.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	if serr := p.gw.Shutdown(sctx); serr != nil {
		p.log.Warn("in-flight requests did not finish in time", "err", serr)
	}
	cancel()
	<-served
	if p.health != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if serr := p.health.Shutdown(hctx); serr != nil {
			p.health.Close()
		}
		hcancel()
	}
	<-healthDone
	stopSource()
	wg.Wait()
	p.log.Info("kubernetes gateway stopped")
	return err
}

// Routes receives the gateway's routing table; *gateway.Gateway is one.
type Routes interface {
	SetRoutes(rt *gateway.Routes)
}

var _ Routes = (*gateway.Gateway)(nil)

// feeder is the Source's consumer: each rebuild's converted mesh becomes
// the gateway's routing table.
type feeder struct {
	vg     types.NamespacedName
	routes Routes
	log    *slog.Logger

	// Only the rebuild goroutine uses these.
	key     string // of the table last set; "" before the first
	set     bool
	lastErr map[string]bool // the routing errors already logged
}

var _ controller.Consumer = (*feeder)(nil)

// Consume builds the virtual gateway's routing table from the converted
// mesh and sets it when it changed. A virtual gateway that is missing or
// refused gets an empty table (every request 404s) and makes the pod not
// ready; a gateway route or service that cannot route is logged and left
// out while the rest routes.
func (f *feeder) Consume(_ context.Context, snap *controller.Snapshot) error {
	r := snap.Results.Find(mesh.KindVirtualGateway, f.vg.Namespace, f.vg.Name)
	var why error
	switch {
	case r == nil:
		why = fmt.Errorf("virtual gateway %s is not in the cluster (kubectl get virtualgateway -n %s %s)", f.vg, f.vg.Namespace, f.vg.Name)
	case r.Refused():
		why = fmt.Errorf("virtual gateway %s was refused: %w", f.vg, errors.Join(fieldErrors(r)...))
	}
	if why != nil {
		f.setEmpty()
		f.log.Error("gateway has no routes", "generation", snap.Generation, "err", why)
		return why
	}
	st := mesh.NewState()
	for _, res := range snap.Results.Resources() {
		st.Put(res)
	}
	rt, key, errs := gateway.RoutesFromMesh(st, r.Mesh, r.Name, snap.Results.Endpoints())
	seen := make(map[string]bool, len(errs))
	for _, err := range errs {
		if msg := err.Error(); !f.lastErr[msg] {
			f.log.Warn("gateway route left out", "virtualGateway", f.vg.String(), "err", err)
		}
		seen[err.Error()] = true
	}
	f.lastErr = seen
	if f.set && key == f.key {
		return nil
	}
	f.routes.SetRoutes(rt)
	f.key, f.set = key, true
	backends := 0
	for _, bs := range rt.Nodes {
		backends += len(bs)
	}
	f.log.Info("gateway routes", "generation", snap.Generation, "mesh", r.Mesh, "gateway", r.Name,
		"gatewayRoutes", len(rt.Gateway), "services", len(rt.Services), "nodes", len(rt.Nodes), "backends", backends)
	return nil
}

// setEmpty routes nothing: every request 404s.
func (f *feeder) setEmpty() {
	if f.set && f.key == "" {
		return
	}
	f.routes.SetRoutes(&gateway.Routes{})
	f.key, f.set = "", true
}

// fieldErrors are a refused object's errors, each naming its field (the
// object is named by the caller).
func fieldErrors(r *appmesh.Result) []error {
	out := make([]error, len(r.Errors))
	for i, e := range r.Errors {
		out[i] = fmt.Errorf("%s: %s", e.Field, e.Message)
	}
	return out
}
