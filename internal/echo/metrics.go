package echo

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metric names are a contract: the rollout analysis queries them.
const (
	MetricServerHandled      = "grpc_server_handled_total"
	MetricServerHandling     = "grpc_server_handling_seconds"
	MetricClientHandled      = "grpc_client_handled_total"
	MetricClientHandling     = "grpc_client_handling_seconds"
	MetricHTTPRequests       = "http_requests_total"
	MetricHTTPRequestSeconds = "http_request_duration_seconds"
)

// LatencyBuckets are the histogram buckets (seconds) of every latency metric;
// fine enough around 500ms for a p99 gate.
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// serverMetrics counts EchoService calls only: health checks and reflection
// are not counted, so the error rate a rollout gates on is the service's own.
type serverMetrics struct {
	registry *prometheus.Registry
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
	version  string
}

func newServerMetrics(version string) *serverMetrics {
	m := &serverMetrics{
		registry: prometheus.NewRegistry(),
		version:  version,
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricServerHandled,
			Help: "EchoService RPCs completed on the server, by method, status code and server version.",
		}, []string{"grpc_service", "grpc_method", "grpc_code", "version"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricServerHandling,
			Help:    "Latency (seconds) of EchoService RPCs handled by the server, by method and server version.",
			Buckets: LatencyBuckets,
		}, []string{"grpc_service", "grpc_method", "version"}),
	}
	m.registry.MustRegister(m.handled, m.handling,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series exist from the start (at 0), so a rate() over a fresh version
	// is 0 rather than absent.
	for _, c := range []codes.Code{codes.OK, codes.Unavailable, codes.Internal, codes.InvalidArgument} {
		m.handled.WithLabelValues(ServiceName, "Echo", c.String(), version)
	}
	m.handling.WithLabelValues(ServiceName, "Echo", version)
	return m
}

func (m *serverMetrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	svc, method := splitMethod(info.FullMethod)
	if svc != ServiceName {
		return handler(ctx, req)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	m.handling.WithLabelValues(svc, method, m.version).Observe(time.Since(start).Seconds())
	m.handled.WithLabelValues(svc, method, status.Code(err).String(), m.version).Inc()
	return resp, err
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// newMetricsHTTPServer serves /metrics and, when not nil, the probes
// /healthz (live) and /readyz (ready): the server's, for a kubelet that
// cannot speak to its gRPC port (a STRICT server requires mTLS there).
func newMetricsHTTPServer(reg *prometheus.Registry, live, ready http.HandlerFunc) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if live != nil {
		mux.HandleFunc("GET /healthz", live)
	}
	if ready != nil {
		mux.HandleFunc("GET /readyz", ready)
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
