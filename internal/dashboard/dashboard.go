// Package dashboard serves gmesh's live dashboard: the mesh's topology, the
// traffic each version of a service receives next to the weight its route
// asks for, the rollout in progress with buttons to control it, and the xDS
// clients' convergence.
//
// One poller (Run) reads the control plane's status and scrapes every task's
// metrics once per interval, keeps a bounded history, and pushes one event
// per poll to every browser over server-sent events. The page and its assets
// are embedded; no front-end toolchain is involved.
package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Source is what the dashboard reads and controls; controlplane.Client
// implements it.
type Source interface {
	Status(ctx context.Context) (*controlplane.Status, error)
	ControlRollout(ctx context.Context, meshName, service, action string) (*mesh.Resource, error)
}

// Lister is optionally implemented by a Source (controlplane.Client does):
// the dashboard then also lists virtual services, gateways and gateway
// routes, which the status document leaves out, to draw the whole topology.
// They are listed again only when the store's revision changes.
type Lister interface {
	List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error)
}

var _ Source = (*controlplane.Client)(nil)
var _ Lister = (*controlplane.Client)(nil)

// ScrapeFunc reads one task's cumulative request counters from its metrics
// endpoint (host:port and path).
type ScrapeFunc func(ctx context.Context, addr, path string) (analysis.Sample, error)

// Config configures a Dashboard; zero values take defaults.
type Config struct {
	// Source is required.
	Source Source
	Logger *slog.Logger
	// Token is required from every request that does not come straight
	// from loopback with a loopback Host (see guard.go), as
	// "Authorization: Bearer <token>" or the cookie a first visit with
	// ?token=<token> sets. Empty: such requests are refused.
	Token string
	// AllowedHosts are the host names (or addresses) besides loopback and
	// the address a request arrived on that the dashboard answers to in Host
	// and Origin: "name" on any port, "name:port" on that port only.
	AllowedHosts []string
	// Interval is the poll period (default 1s); History how much of it the
	// chart keeps (default 5m).
	Interval time.Duration
	History  time.Duration
	// ScrapeTimeout bounds one task's scrape (default 500ms).
	ScrapeTimeout time.Duration
	// Scrape overrides how a task's metrics are read (default: HTTP GET
	// parsed by analysis.Parse).
	Scrape ScrapeFunc
	// Clock paces the poller and stamps the points (default clock.Real).
	Clock clock.Clock
	// Heartbeat is the period of SSE comment lines that keep idle
	// connections open (default 15s).
	Heartbeat time.Duration
	// SubscriberBuffer is how many events a browser may lag behind before
	// it is dropped (default 16).
	SubscriberBuffer int
	// GatewayListen is where each virtual gateway really listens, by
	// "mesh/name" (host:port), shown instead of its spec's port.
	GatewayListen map[string]string
}

// Dashboard polls a Source and serves the dashboard.
type Dashboard struct {
	cfg Config
	log *slog.Logger

	// Poller-owned state (only Run's goroutine touches it).
	traffic  *traffic
	topo     topology
	topoRev  uint64
	topoOK   bool
	lastPoll time.Time

	hub   *hub
	guard *guard
}

// New checks cfg and returns a Dashboard; call Run to start polling.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Source == nil {
		return nil, errors.New("dashboard: config has no Source")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.History <= 0 {
		cfg.History = 5 * time.Minute
	}
	if cfg.History < cfg.Interval {
		return nil, fmt.Errorf("dashboard: history %v is shorter than the poll interval %v", cfg.History, cfg.Interval)
	}
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = 500 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = 16
	}
	if cfg.Scrape == nil {
		cfg.Scrape = httpScraper(&http.Client{})
	}
	g, err := newGuard(cfg.Token, cfg.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	points := int(cfg.History / cfg.Interval)
	d := &Dashboard{
		guard:   g,
		cfg:     cfg,
		log:     cfg.Logger,
		traffic: newTraffic(),
		hub:     newHub(points, cfg.SubscriberBuffer),
	}
	d.hub.setState(&State{Connected: false, IntervalMillis: cfg.Interval.Milliseconds(), HistoryMillis: cfg.History.Milliseconds(),
		Services: []*ServiceView{}, Gateways: []*GatewayView{}, Clients: []*ClientView{}})
	return d, nil
}

// Run polls until ctx ends: at once, then every Interval. It returns nil
// when ctx is cancelled.
func (d *Dashboard) Run(ctx context.Context) error {
	t := d.cfg.Clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.hub.closeAll()
			return nil
		case <-t.C():
		}
		d.poll(ctx)
		t.Reset(d.cfg.Interval)
	}
}

// poll takes one status + metrics sample and publishes it.
func (d *Dashboard) poll(ctx context.Context) {
	now := d.cfg.Clock.Now()
	sctx, cancel := context.WithTimeout(ctx, max(d.cfg.Interval, 2*time.Second))
	st, err := d.cfg.Source.Status(sctx)
	cancel()
	// Secret values (deploy --env) never reach a browser.
	st = st.Redacted()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("dashboard status failed", "err", err)
		prev := d.hub.current()
		next := *prev
		next.Time = now
		next.Connected = false
		next.Error = err.Error()
		d.hub.publish(&next, nil)
		return
	}
	d.refreshTopology(ctx, st)
	samples := d.scrapeAll(ctx, st)
	elapsed := time.Duration(0)
	if !d.lastPoll.IsZero() {
		elapsed = now.Sub(d.lastPoll)
	}
	d.lastPoll = now
	state, point := build(st, d.topo, d.traffic, samples, now, elapsed)
	for _, g := range state.Gateways {
		g.Listen = d.cfg.GatewayListen[g.Mesh+"/"+g.Name]
	}
	state.IntervalMillis = d.cfg.Interval.Milliseconds()
	state.HistoryMillis = d.cfg.History.Milliseconds()
	d.hub.publish(state, point)
}

// refreshTopology lists what the status document leaves out, when the
// Source can and the store changed.
func (d *Dashboard) refreshTopology(ctx context.Context, st *controlplane.Status) {
	l, ok := d.cfg.Source.(Lister)
	if !ok || (d.topoOK && d.topoRev == st.Revision) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var topo topology
	for _, k := range []mesh.Kind{mesh.KindVirtualService, mesh.KindVirtualGateway, mesh.KindGatewayRoute} {
		rs, err := l.List(ctx, k, "")
		if err != nil {
			d.log.Debug("dashboard list failed", "kind", k, "err", err)
			return
		}
		switch k {
		case mesh.KindVirtualService:
			topo.services = rs
		case mesh.KindVirtualGateway:
			topo.gateways = rs
		case mesh.KindGatewayRoute:
			topo.gatewayRoutes = rs
		}
	}
	d.topo, d.topoRev, d.topoOK = topo, st.Revision, true
}

// scrapeResult is one task's scrape.
type scrapeResult struct {
	sample analysis.Sample
	err    error
}

// scrapeAll scrapes every endpoint with a metrics address concurrently.
func (d *Dashboard) scrapeAll(ctx context.Context, st *controlplane.Status) map[string]scrapeResult {
	paths := map[string]string{}
	for _, r := range st.Services {
		if s := r.Service(); s != nil && s.MetricsPath != "" {
			paths[r.Metadata.Mesh+"/"+r.Metadata.Name] = s.MetricsPath
		}
	}
	out := make(map[string]scrapeResult, len(st.Endpoints))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ep := range st.Endpoints {
		if ep.MetricsAddr == "" || ep.State == mesh.TaskStopped {
			continue
		}
		path := paths[ep.Mesh+"/"+ep.Service]
		if path == "" {
			path = "/metrics"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, d.cfg.ScrapeTimeout)
			defer cancel()
			s, err := d.cfg.Scrape(sctx, ep.MetricsAddr, path)
			mu.Lock()
			out[analysis.TaskKey(ep.ID, ep.Proc().PID)] = scrapeResult{s, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// httpScraper returns the default ScrapeFunc.
func httpScraper(c *http.Client) ScrapeFunc {
	return func(ctx context.Context, addr, path string) (analysis.Sample, error) {
		url := "http://" + addr + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return analysis.Sample{}, fmt.Errorf("scrape %s: %w", url, err)
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4")
		resp, err := c.Do(req)
		if err != nil {
			return analysis.Sample{}, fmt.Errorf("scrape %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return analysis.Sample{}, fmt.Errorf("scrape %s: http status %s", url, resp.Status)
		}
		// gRPC calls and HTTP requests alike: an HTTP service (the echo
		// client) has a request rate too.
		s, err := analysis.ParseServed(io.LimitReader(resp.Body, 8<<20))
		if err != nil {
			return analysis.Sample{}, fmt.Errorf("scrape %s: %w", url, err)
		}
		return s, nil
	}
}
