package echo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

const (
	// ServiceName is the wire name of the echo service, also the name its
	// health status is published under.
	ServiceName = "proto.echo.EchoService"
	// MaxNameBytes is the longest name the server (and the client, before
	// calling) accepts.
	MaxNameBytes = 1024
	// EmptyName is the name greeted when a request carries none.
	EmptyName = "stranger"
)

// ServerConfig configures a [Server]. The zero value of each field is usable
// except Version, which should be set.
type ServerConfig struct {
	// Addr is the gRPC listen address, host:port; port 0 picks a free port.
	// Empty means ":50051".
	Addr string
	// MetricsAddr is the Prometheus listen address; empty turns metrics off.
	MetricsAddr string
	// Version is reported in every reply and as the metrics' version label.
	Version string
	// Said overrides the address reported in replies. Empty means: the
	// listen host if it is a specific IP, otherwise the local IP of the
	// connection each call arrived on.
	Said string
	// TLSCertFile and TLSKeyFile turn TLS on when both are set.
	TLSCertFile, TLSKeyFile string
	// XDS serves through grpc-go's xDS server: it serves once the control
	// plane has sent the listener of its address, over mTLS when that
	// listener says so (xDS credentials, plaintext fallback). Not with
	// TLSCertFile. The binary sets it when its bootstrap has a server
	// listener template (a mesh with TLS on).
	XDS bool
	// XDSBootstrap is the xDS server's bootstrap JSON; nil: grpc-go reads
	// it from the environment. Tests set it to run several servers in one
	// process.
	XDSBootstrap []byte
	// DrainDelay is how long health reports NOT_SERVING before GracefulStop.
	DrainDelay time.Duration
	// ShutdownTimeout bounds GracefulStop; after it the server stops hard.
	// Zero means 10s.
	ShutdownTimeout time.Duration
	// FailRate is the fraction (0..1) of Echo calls that fail with FailCode.
	FailRate float64
	// FailCode is the code of injected failures: codes.Unavailable (the
	// default when zero) or codes.Internal.
	FailCode codes.Code
	// Latency is added to every Echo call.
	Latency time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the gRPC echo server. Create it with [NewServer], then call
// [Server.Run], or [Server.Serve] and [Server.Shutdown].
type Server struct {
	echov1.UnimplementedEchoServiceServer

	cfg      ServerConfig
	log      *slog.Logger
	said     string
	tls      bool
	xds      bool // serving through grpc-go's xDS server
	lis      net.Listener
	grpc     grpcServer
	health   *health.Server
	metrics  *serverMetrics
	mlis     net.Listener
	mhttp    *http.Server
	stopping chan struct{} // closed right before GracefulStop
	draining atomic.Bool   // set when Shutdown begins

	// The xDS server's last serving mode for its listener (xDS mode only):
	// NOT_SERVING until the control plane's Listener arrives.
	modeMu  sync.Mutex
	mode    connectivity.ServingMode
	modeErr error

	shutdownOnce sync.Once
	shutdownErr  error
	shutdownDone chan struct{}
}

var _ echov1.EchoServiceServer = (*Server)(nil)

// grpcServer is what Server needs of a gRPC server; *grpc.Server and
// grpc-go's *xds.GRPCServer have it.
type grpcServer interface {
	reflection.GRPCServer
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

var (
	_ grpcServer = (*grpc.Server)(nil)
	_ grpcServer = (*xds.GRPCServer)(nil)
)

// NewServer validates cfg, loads the TLS files and binds the listeners, so
// that [Server.Addr] is known on return. Nothing is served until Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":50051"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.FailCode == codes.OK {
		cfg.FailCode = codes.Unavailable
	}
	if err := validateFaults(cfg.FailRate, cfg.FailCode, cfg.Latency); err != nil {
		return nil, err
	}
	if cfg.DrainDelay < 0 {
		return nil, fmt.Errorf("drain delay %v is negative", cfg.DrainDelay)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:          cfg,
		log:          log,
		said:         cfg.Said,
		health:       health.NewServer(),
		stopping:     make(chan struct{}),
		shutdownDone: make(chan struct{}),
		mode:         connectivity.ServingModeNotServing,
	}
	if s.said == "" {
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
				s.said = ip.Unmap().WithZone("").String()
			}
		}
	}

	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(newLenientCodec())}
	if cfg.XDS && (cfg.TLSCertFile != "" || cfg.TLSKeyFile != "") {
		return nil, errors.New("tls certificate files and xDS serving exclude each other: with xDS the control plane's listener says how to secure calls")
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		creds, err := loadServerTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(creds))
		s.tls = true
	}
	s.metrics = newServerMetrics(cfg.Version)
	opts = append(opts, grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor))

	if cfg.XDS {
		creds, err := xdsServerCreds()
		if err != nil {
			return nil, fmt.Errorf("xds server credentials: %w", err)
		}
		opts = append(opts, grpc.Creds(creds), xds.ServingModeCallback(s.servingModeChanged))
		if cfg.XDSBootstrap != nil {
			opts = append(opts, xds.BootstrapContentsForTesting(cfg.XDSBootstrap))
		}
		xs, err := xds.NewGRPCServer(opts...)
		if err != nil {
			return nil, fmt.Errorf("xds server: %w", err)
		}
		s.grpc, s.xds = xs, true
	} else {
		s.grpc = grpc.NewServer(opts...)
	}
	echov1.RegisterEchoServiceServer(s.grpc, s)
	healthgrpc.RegisterHealthServer(s.grpc, &drainingHealth{Server: s.health, stopping: s.stopping})
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)

	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for grpc on %s: %w", cfg.Addr, err)
	}
	s.lis = lis
	if cfg.MetricsAddr != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
		s.mlis = mlis
		s.mhttp = newMetricsHTTPServer(s.metrics.registry, s.serveLive, s.serveReady)
	}
	return s, nil
}

func loadServerTLS(certFile, keyFile string) (credentials.TransportCredentials, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls needs both a certificate file and a key file (ECHO_TLS_CERT and ECHO_TLS_KEY)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate %q and key %q: %w", certFile, keyFile, err)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}), nil
}

func validateFaults(rate float64, code codes.Code, latency time.Duration) error {
	if !(rate >= 0 && rate <= 1) { // also rejects NaN
		return fmt.Errorf("fail rate %v is not between 0 and 1", rate)
	}
	if code != codes.Unavailable && code != codes.Internal {
		return fmt.Errorf("fail code %v is not unavailable or internal", code)
	}
	if latency < 0 {
		return fmt.Errorf("latency %v is negative", latency)
	}
	return nil
}

// Addr is the address the gRPC listener is bound to.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// MetricsAddr is the address of the metrics listener, or nil when off.
func (s *Server) MetricsAddr() net.Addr {
	if s.mlis == nil {
		return nil
	}
	return s.mlis.Addr()
}

// Serve logs the start lines, marks the server SERVING and serves until
// [Server.Shutdown]. It returns nil after a shutdown.
func (s *Server) Serve() error {
	s.log.Info("Echo Server Version " + s.cfg.Version)
	port := "?"
	if a, ok := s.lis.Addr().(*net.TCPAddr); ok {
		port = strconv.Itoa(a.Port)
	}
	if s.xds {
		// Whether calls need mTLS is the control plane's listener's to say.
		s.log.Info(fmt.Sprintf("Starting on port: %s, ssl: xds", port), "addr", s.lis.Addr().String())
		s.log.Info("serving through xDS: the control plane's listener for this address says whether calls need mTLS", "addr", s.lis.Addr().String())
		if a, ok := s.lis.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
			s.log.Warn("the xDS server asks for the listener of an unspecified address, and the control plane publishes one per endpoint address: set HOST to this server's address (on Kubernetes the pod IP, from status.podIP)", "addr", s.lis.Addr().String())
		}
	} else {
		s.log.Info(fmt.Sprintf("Starting on port: %s, ssl: %t", port, s.tls), "addr", s.lis.Addr().String())
	}
	if s.cfg.FailRate > 0 {
		s.log.Warn("fault injection on: calls fail on purpose", "fail_rate", s.cfg.FailRate, "fail_code", s.cfg.FailCode.String())
	}
	if s.cfg.Latency > 0 {
		s.log.Warn("fault injection on: latency added to every call", "latency", s.cfg.Latency.String())
	}
	if s.mhttp != nil {
		s.log.Info("metrics listening", "addr", "http://"+s.mlis.Addr().String()+"/metrics")
		go func() {
			if err := s.mhttp.Serve(s.mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics server failed", "err", err)
			}
		}()
	}
	select {
	case <-s.stopping:
		// Shut down before serving: nothing to serve.
		return nil
	default:
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc on %s: %w", s.lis.Addr(), err)
	}
	return nil
}

// Shutdown drains the server: health goes NOT_SERVING, the drain delay
// passes (new calls are still served meanwhile), then GracefulStop waits for
// in-flight calls for at most the shutdown timeout, after which the server
// stops hard. A ctx that ends early cuts the drain delay and the wait short.
// Calling it again waits for the first call and returns its result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		defer close(s.shutdownDone)
		s.shutdownErr = s.shutdown(ctx)
	})
	<-s.shutdownDone
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.log.Info("draining: health is NOT_SERVING", "drain_delay", s.cfg.DrainDelay.String())
	s.draining.Store(true)
	s.health.Shutdown() // every service NOT_SERVING, later updates ignored
	var errs []error
	if s.cfg.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.DrainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	close(s.stopping) // ends health Watch streams, which would hold GracefulStop
	s.log.Info("stopping gracefully", "timeout", s.cfg.ShutdownTimeout.String())
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.grpc.Stop()
		<-stopped
		errs = append(errs, fmt.Errorf("graceful stop did not finish within %v: stopped hard", s.cfg.ShutdownTimeout))
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		errs = append(errs, fmt.Errorf("graceful stop cut short: %w", ctx.Err()))
	}
	if s.mhttp != nil {
		mctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.mhttp.Shutdown(mctx); err != nil {
			s.mhttp.Close()
			errs = append(errs, fmt.Errorf("shut down metrics server: %w", err))
		}
	}
	if len(errs) == 0 {
		s.log.Info("stopped")
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends, then shuts down (with a fresh context: the
// drain delay and shutdown timeout bound it).
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case err := <-errc:
		if err != nil {
			s.Shutdown(context.Background())
			return err
		}
		return nil
	case <-ctx.Done():
	}
	err := s.Shutdown(context.Background())
	return errors.Join(err, <-errc)
}

// servingModeChanged keeps the xDS server's serving mode
// (xds.ServingModeCallback).
func (s *Server) servingModeChanged(addr net.Addr, args xds.ServingModeChangeArgs) {
	s.modeMu.Lock()
	s.mode, s.modeErr = args.Mode, args.Err
	s.modeMu.Unlock()
	if args.Err != nil {
		s.log.Warn("xDS server mode changed", "addr", addr.String(), "mode", args.Mode.String(), "err", args.Err)
		return
	}
	s.log.Info("xDS server mode changed", "addr", addr.String(), "mode", args.Mode.String())
}

// Ready reports whether the server serves calls: nil when it does, else
// why not. It serves once Serve has marked health SERVING, and, in xDS
// mode, once grpc-go's xDS server reports SERVING for its listener (the
// control plane's Listener for its address has arrived); it stops when
// Shutdown begins to drain.
func (s *Server) Ready() error {
	if s.draining.Load() {
		return errors.New("draining: shutting down")
	}
	resp, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New("health is NOT_SERVING: not serving yet")
	}
	if !s.xds {
		return nil
	}
	s.modeMu.Lock()
	mode, merr := s.mode, s.modeErr
	s.modeMu.Unlock()
	if mode == connectivity.ServingModeServing {
		return nil
	}
	if merr != nil {
		return fmt.Errorf("the xDS server does not serve %s: %v", s.lis.Addr(), merr)
	}
	return fmt.Errorf("the xDS server does not serve %s: no listener from the control plane yet", s.lis.Addr())
}

// serveLive is /healthz: the process is alive.
func (s *Server) serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n") //nolint:errcheck // the prober sees a broken reply
}

// serveReady is /readyz: 200 when Ready, else 503 with the reason.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if err := s.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n") //nolint:errcheck // the prober sees a broken reply
}

// Echo answers `Hello, <name>-san! (Said <ip>, Version <version>)`.
func (s *Server) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	name := req.GetName()
	if len(name) > MaxNameBytes {
		return nil, status.Errorf(codes.InvalidArgument, "name is %d bytes long; the limit is %d bytes", len(name), MaxNameBytes)
	}
	if !utf8.ValidString(name) {
		return nil, status.Error(codes.InvalidArgument, "name is not valid UTF-8")
	}
	if name == "" {
		name = EmptyName
	}
	if d := s.cfg.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s.cfg.FailRate > 0 && rand.Float64() < s.cfg.FailRate {
		return nil, status.Error(s.cfg.FailCode, "injected failure (ECHO_FAIL_RATE)")
	}
	return &echov1.EchoResponse{Message: Reply(name, s.saidFor(ctx), s.cfg.Version)}, nil
}

// Reply formats the echo reply text.
func Reply(name, said, version string) string {
	return "Hello, " + name + "-san! (Said " + said + ", Version " + version + ")"
}

func (s *Server) saidFor(ctx context.Context) string {
	if s.said != "" {
		return s.said
	}
	if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
		if ip, ok := addrIP(p.LocalAddr); ok {
			return ip
		}
	}
	if ip, ok := addrIP(s.lis.Addr()); ok {
		return ip
	}
	return "unknown"
}

func addrIP(a net.Addr) (string, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap().String(), true
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return "", false
	}
	return ap.Addr().Unmap().WithZone("").String(), true
}

// drainingHealth is the standard health server, except that Watch streams
// end when the server starts its GracefulStop: they never end on their own
// and would otherwise hold GracefulStop until its deadline.
type drainingHealth struct {
	*health.Server
	stopping <-chan struct{}
}

func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthgrpc.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
	select {
	case <-h.stopping:
		return status.Error(codes.Unavailable, "server is shutting down")
	default:
		return err
	}
}

type watchStream struct {
	healthgrpc.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }
