// Package gateway is gmesh's ingress, the role the ALB plays in the reference
// setup (an App Mesh VirtualGateway): it takes HTTP/1.1 and h2c requests and
// proxies them to the healthy tasks of its gateway route's target, balanced
// by least outstanding requests, with active and passive health checking, one
// retry on a connection that failed before any byte was sent, a body size
// limit, timeouts, an access log, Prometheus metrics and graceful shutdown.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// Defaults for Config's zero values.
const (
	DefaultAddr              = "127.0.0.1:8080"
	DefaultMaxBodyBytes      = 1 << 20
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultRequestTimeout    = 15 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultHealthPath        = "/healthz"
	DefaultHealthInterval    = time.Second
	DefaultEjectAfter        = 5
	DefaultBaseEjection      = 5 * time.Second
	DefaultMaxEjection       = 5 * time.Minute
)

// Config configures a Gateway. Zero values take the defaults above.
type Config struct {
	Logger *slog.Logger
	Addr   string // listen address for ListenAndServe
	// MaxBodyBytes limits request bodies (413 beyond); MaxHeaderBytes
	// limits request headers (431 beyond).
	MaxBodyBytes   int64
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's headers; RequestTimeout
	// bounds a proxied request end to end (504 when it passes before the
	// response started); IdleTimeout closes idle client connections.
	ReadHeaderTimeout, RequestTimeout, IdleTimeout time.Duration
	// HealthPath is GET on every backend each HealthInterval; 2xx passes.
	// A backend is unhealthy after UnhealthyThreshold (2) failures in a row
	// and healthy again after HealthyThreshold (1) pass. HealthTimeout
	// defaults to HealthInterval capped at 2s. DisableHealthCheck turns
	// active checks off (passive ejection still runs).
	HealthPath                           string
	HealthInterval, HealthTimeout        time.Duration
	UnhealthyThreshold, HealthyThreshold int
	DisableHealthCheck                   bool
	// EjectAfter consecutive failed attempts (connection errors, timeouts,
	// 5xx) eject a backend for BaseEjection times its recent ejection count,
	// at most MaxEjection.
	EjectAfter                int
	BaseEjection, MaxEjection time.Duration
	// Registry receives the gateway's metrics; nil: not registered.
	Registry *prometheus.Registry
	Clock    clock.Clock
}

// Gateway is the ingress proxy.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	proxy   *httputil.ReverseProxy
	handler http.Handler
	srv     *http.Server
	m       *metrics

	mu       sync.RWMutex
	backends []*backend // every backend, for health checks and stats
	table    *table
	rr       atomic.Uint64

	stopHealth context.CancelFunc
	healthDone chan struct{}
	shutOnce   sync.Once
}

// New returns a Gateway with no backends; its health checker runs until
// Shutdown.
func New(cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.HealthPath == "" {
		cfg.HealthPath = DefaultHealthPath
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = min(cfg.HealthInterval, 2*time.Second)
	}
	if cfg.UnhealthyThreshold <= 0 {
		cfg.UnhealthyThreshold = 2
	}
	if cfg.HealthyThreshold <= 0 {
		cfg.HealthyThreshold = 1
	}
	if cfg.EjectAfter <= 0 {
		cfg.EjectAfter = DefaultEjectAfter
	}
	if cfg.BaseEjection <= 0 {
		cfg.BaseEjection = DefaultBaseEjection
	}
	if cfg.MaxEjection <= 0 {
		cfg.MaxEjection = DefaultMaxEjection
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, m: m, healthDone: make(chan struct{})}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    (*transport)(g),
		ErrorHandler: g.proxyError,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		BufferPool:   &bufferPool{},
	}
	g.handler = http.HandlerFunc(g.serveHTTP)

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	g.srv = &http.Server{
		Addr:              cfg.Addr,
		Handler:           g.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}

	ctx, cancel := context.WithCancel(context.Background())
	g.stopHealth = cancel
	go func() {
		defer close(g.healthDone)
		if !cfg.DisableHealthCheck {
			g.healthLoop(ctx)
		}
	}()
	return g, nil
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// rewrite prepares the outbound request; the transport picks the backend.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "backend.invalid"
	pr.SetXForwarded() // X-Forwarded-Host: the client's host
	pr.Out.Host = pr.In.Host
	if st, ok := pr.In.Context().Value(stateKey{}).(*reqState); ok {
		// As the gateway route rewrote them.
		pr.Out.Host = st.host
		if st.path != pr.Out.URL.Path {
			pr.Out.URL.Path, pr.Out.URL.RawPath = st.path, ""
		}
	}
}

// Handler returns the gateway's HTTP handler (without the server's header
// limit and h2c, which Serve adds).
func (g *Gateway) Handler() http.Handler { return g.handler }

// Stats returns each backend's counters and state, by ID.
func (g *Gateway) Stats() map[string]BackendStats {
	now := g.clock.Now()
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make(map[string]BackendStats, len(g.backends))
	for _, b := range g.backends {
		b.mu.Lock()
		out[b.id] = BackendStats{
			Addr:        b.addr,
			Requests:    b.requests.Load(),
			Failures:    b.failures.Load(),
			Outstanding: b.outstanding.Load(),
			Healthy:     b.healthy,
			Ejected:     now.Before(b.ejectedUntil),
			Ejections:   b.ejections,
		}
		b.mu.Unlock()
	}
	return out
}

// AddrInUseError is ListenAndServe's error when the address is taken.
type AddrInUseError struct {
	Addr string
	Err  error
}

func (e *AddrInUseError) Error() string { return e.Addr + " is already in use" }
func (e *AddrInUseError) Unwrap() error { return e.Err }

// Listen opens the gateway's listener on cfg.Addr, with a one-line error
// when the address is in use.
func (g *Gateway) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, &AddrInUseError{Addr: g.cfg.Addr, Err: err}
		}
		return nil, fmt.Errorf("gateway: listen on %s: %w", g.cfg.Addr, err)
	}
	return ln, nil
}

// ListenAndServe listens on cfg.Addr and serves until Shutdown.
func (g *Gateway) ListenAndServe() error {
	ln, err := g.Listen()
	if err != nil {
		return err
	}
	return g.Serve(ln)
}

// Serve serves HTTP/1.1 and h2c on ln until Shutdown, then returns nil.
func (g *Gateway) Serve(ln net.Listener) error {
	g.log.Info("gateway listening", "addr", ln.Addr().String())
	err := g.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, lets in-flight requests finish
// (until ctx ends), and stops health checking.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	g.shutOnce.Do(func() {
		g.stopHealth()
		<-g.healthDone
		g.mu.RLock()
		for _, b := range g.backends {
			b.tr.CloseIdleConnections()
		}
		g.mu.RUnlock()
	})
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}
