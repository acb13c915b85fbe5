package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

// ClientVersion is the echo client's version, logged at start.
const ClientVersion = "0.1"

// ClientConfig configures a [Client].
type ClientConfig struct {
	// Addr is the HTTP listen address; port 0 picks a free port. Empty
	// means ":8080".
	Addr string
	// MetricsAddr is the Prometheus listen address; empty turns metrics off.
	MetricsAddr string
	// Target is the gRPC target: host:port, or xds:///name (the caller must
	// link grpc-go's xds package in and provide a bootstrap). Empty means
	// "localhost:50051".
	Target string
	// Timeout is the deadline of each call to the server; zero means 2s.
	Timeout time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests in Run; zero
	// means 10s.
	ShutdownTimeout time.Duration
	// Creds secures the connection to the server; nil means plaintext.
	Creds credentials.TransportCredentials
	// DialOptions are added to the connection's options (tests, mostly).
	DialOptions []grpc.DialOption
	// Logger receives the logs and the access log; nil discards them.
	Logger *slog.Logger
	// Version is the version the client reports in every reply's
	// VersionHeader and at start; empty means ClientVersion.
	Version string
	// ShowVersion is set by --version: print Version and exit.
	ShowVersion bool
}

// VersionHeader is the response header that names the echo client's version,
// so that a load run through a gateway can count the client's versions as
// the reply body counts the server's.
const VersionHeader = "Echo-Client-Version"

// Client is the HTTP echo client: GET /?name=X calls the echo server and
// answers `Response from the server: <message>`. Create it with
// [NewClient], then call [Client.Run], or [Client.Serve] and
// [Client.Shutdown].
type Client struct {
	cfg     ClientConfig
	log     *slog.Logger
	conn    *grpc.ClientConn
	echo    echov1.EchoServiceClient
	lis     net.Listener
	http    *http.Server
	metrics *clientMetrics
	mlis    net.Listener
	mhttp   *http.Server

	closing   atomic.Bool
	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// NewClient creates the gRPC connection and starts connecting in the background,
// and binds the HTTP listeners, so that [Client.Addr] is known on return.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.Target == "" {
		cfg.Target = "localhost:50051"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("timeout %v is negative", cfg.Timeout)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log, metrics: newClientMetrics(), watchDone: make(chan struct{})}

	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(c.metrics.unaryInterceptor),
		grpc.WithIdleTimeout(0), // stay connected: readiness reflects the connection
		// Reconnect within seconds, not grpc's default of up to two minutes,
		// so a client started before its server is ready soon after it.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	opts = append(opts, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("create grpc client for %q: %w", cfg.Target, err)
	}
	c.conn = conn
	c.echo = echov1.NewEchoServiceClient(conn)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	c.stopWatch = stopWatch
	go c.keepConnected(watchCtx)

	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		stopWatch()
		conn.Close()
		return nil, fmt.Errorf("listen for http on %s: %w", cfg.Addr, err)
	}
	c.lis = lis
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			stopWatch()
			conn.Close()
			lis.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
		c.mlis = mlis
		c.mhttp = newMetricsHTTPServer(c.metrics.registry, nil, nil)
	}
	c.http = &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return c, nil
}

// Addr is the address the HTTP listener is bound to.
func (c *Client) Addr() net.Addr { return c.lis.Addr() }

// MetricsAddr is the address of the metrics listener, or nil when off.
func (c *Client) MetricsAddr() net.Addr {
	if c.mlis == nil {
		return nil
	}
	return c.mlis.Addr()
}

// ConnState is the state of the gRPC connection to the server.
func (c *Client) ConnState() connectivity.State { return c.conn.GetState() }

// Serve logs the start lines and serves HTTP until
// [Client.Shutdown]. It returns nil after a shutdown.
func (c *Client) Serve() error {
	c.log.Info("Echo Client " + c.version())
	c.log.Info("Echo Client connecting to " + c.cfg.Target)
	port := "?"
	if a, ok := c.lis.Addr().(*net.TCPAddr); ok {
		port = strconv.Itoa(a.Port)
	}
	c.log.Info("Listening to port: "+port, "addr", c.lis.Addr().String())

	if c.mhttp != nil {
		c.log.Info("metrics listening", "addr", "http://"+c.mlis.Addr().String()+"/metrics")
		go func() {
			if err := c.mhttp.Serve(c.mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				c.log.Error("metrics server failed", "err", err)
			}
		}()
	}
	if err := c.http.Serve(c.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", c.lis.Addr(), err)
	}
	return nil
}

// keepConnected makes an idle connection connect again, so readiness tracks
// whether the server can be reached rather than whether it was called.
func (c *Client) keepConnected(ctx context.Context) {
	defer close(c.watchDone)
	for {
		s := c.conn.GetState()
		if s == connectivity.Idle {
			c.conn.Connect()
		}
		if !c.conn.WaitForStateChange(ctx, s) {
			return
		}
		c.log.Debug("grpc connection state", "state", c.conn.GetState().String())
	}
}

// Shutdown stops accepting HTTP requests, waits for in-flight ones (until
// ctx ends, then closes them), and closes the gRPC connection.
func (c *Client) Shutdown(ctx context.Context) error {
	if c.closing.Swap(true) {
		return errors.New("echo client is already shut down")
	}
	c.log.Info("shutting down: finishing in-flight requests")
	var errs []error
	if err := c.http.Shutdown(ctx); err != nil {
		c.http.Close()
		errs = append(errs, fmt.Errorf("shut down http server: %w", err))
	}
	if c.mhttp != nil {
		if err := c.mhttp.Shutdown(ctx); err != nil {
			c.mhttp.Close()
			errs = append(errs, fmt.Errorf("shut down metrics server: %w", err))
		}
	}
	c.stopWatch()
	<-c.watchDone
	if err := c.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close grpc connection: %w", err))
	}
	if len(errs) == 0 {
		c.log.Info("stopped")
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends, then shuts down, waiting at most the shutdown
// timeout for in-flight requests.
func (c *Client) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- c.Serve() }()
	select {
	case err := <-errc:
		c.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	err := c.Shutdown(sctx)
	return errors.Join(err, <-errc)
}

// Handler is the client's HTTP handler: /healthz and /ping (liveness, no
// backend call), /readyz (the gRPC connection is READY), and every other
// path the echo call, GET and HEAD only.
func (c *Client) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", c.serveLive)
	mux.HandleFunc("/ping", c.serveLive)
	mux.HandleFunc("/readyz", c.serveReady)
	mux.HandleFunc("/", c.serveEcho)
	return c.instrument(mux)
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed: use GET or HEAD", http.StatusMethodNotAllowed)
	return false
}

func (c *Client) serveLive(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ok\n")
}

func (c *Client) serveReady(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if c.closing.Load() {
		http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
		return
	}
	s := c.conn.GetState()
	if s != connectivity.Ready {
		if s == connectivity.Idle {
			c.conn.Connect()
		}
		http.Error(w, "not ready: grpc connection is "+s.String(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "ready\n")
}

func (c *Client) version() string {
	if c.cfg.Version != "" {
		return c.cfg.Version
	}
	return ClientVersion
}

func (c *Client) serveEcho(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(VersionHeader, c.version())
	if !allowGet(w, r) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, "bad request: malformed query string", http.StatusBadRequest)
		return
	}
	name := q.Get("name")
	if len(name) > MaxNameBytes {
		http.Error(w, fmt.Sprintf("bad request: name is %d bytes long; the limit is %d bytes", len(name), MaxNameBytes), http.StatusBadRequest)
		return
	}
	if !utf8.ValidString(name) {
		http.Error(w, "bad request: name is not valid UTF-8", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
	defer cancel()
	resp, err := c.echo.Echo(ctx, &echov1.EchoRequest{Name: name})
	if err != nil {
		st := status.Convert(err)
		w.Header().Set("X-Upstream-Status", st.Code().String())
		http.Error(w, "error from the server: "+st.Code().String()+": "+truncate(st.Message(), 200), HTTPStatus(st.Code()))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "Response from the server: "+resp.GetMessage())
}

// HTTPStatus maps a gRPC code of the echo call to the client's HTTP status.
func HTTPStatus(code codes.Code) int {
	switch code {
	case codes.OK:
		return http.StatusOK
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.InvalidArgument:
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// statusRecorder records the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// probePaths are health and liveness probes: logged, but not counted in the
// HTTP metrics, so that a request rate or success rate read from them is the
// echo traffic's own (as the server leaves health checks out of its own).
var probePaths = map[string]bool{"/healthz": true, "/ping": true, "/readyz": true}

// instrument adds the access log and the HTTP metrics.
func (c *Client) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		d := time.Since(start)
		if !probePaths[r.URL.Path] {
			c.metrics.requests.WithLabelValues(strconv.Itoa(rec.code)).Inc()
			c.metrics.duration.Observe(d.Seconds())
		}
		c.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.code),
			slog.Duration("duration", d),
			slog.String("remote", r.RemoteAddr))
	})
}

type clientMetrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
}

func newClientMetrics() *clientMetrics {
	m := &clientMetrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricHTTPRequests,
			Help: "HTTP requests answered by the echo client, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricHTTPRequestSeconds,
			Help:    "Latency (seconds) of HTTP requests answered by the echo client.",
			Buckets: LatencyBuckets,
		}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricClientHandled,
			Help: "RPCs the echo client completed, by method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricClientHandling,
			Help:    "Latency (seconds) of RPCs made by the echo client.",
			Buckets: LatencyBuckets,
		}, []string{"grpc_service", "grpc_method"}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.handled, m.handling,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.requests.WithLabelValues("200")
	m.handled.WithLabelValues(ServiceName, "Echo", codes.OK.String())
	return m
}

func (m *clientMetrics) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	svc, meth := splitMethod(method)
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.handling.WithLabelValues(svc, meth).Observe(time.Since(start).Seconds())
	m.handled.WithLabelValues(svc, meth, status.Code(err).String()).Inc()
	return err
}
