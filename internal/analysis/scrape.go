package analysis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// EndpointLister lists the registered endpoints of a service in a mesh, in
// every state (the registry).
type EndpointLister interface {
	List(meshName, service string) []*mesh.Endpoint
}

// ScraperOptions tune a Scraper; zero values take defaults.
type ScraperOptions struct {
	// Path is the metrics path on each task's MetricsAddr (default /metrics).
	Path string
	// Timeout bounds one task's scrape (default 1s).
	Timeout time.Duration
	// HandledMetric and HandlingMetric name the counter (labels grpc_service,
	// grpc_code) and the latency histogram in seconds (label grpc_service)
	// (default grpc_server_handled_total, grpc_server_handling_seconds).
	HandledMetric  string
	HandlingMetric string
	// Client makes the requests (default: a client with no timeout of its
	// own; Timeout applies per request).
	Client *http.Client
	Logger *slog.Logger
	// MaxBodyBytes bounds a metrics page (default 8 MiB).
	MaxBodyBytes int64
}

// Scraper samples a task set's request counters by scraping every task's
// Prometheus endpoint concurrently. It implements the rollout engine's
// metric source.
type Scraper struct {
	eps  EndpointLister
	opts ScraperOptions
}

// NewScraper returns a Scraper over the endpoints eps lists.
func NewScraper(eps EndpointLister, opts ScraperOptions) *Scraper {
	if opts.Path == "" {
		opts.Path = "/metrics"
	}
	if !strings.HasPrefix(opts.Path, "/") {
		opts.Path = "/" + opts.Path
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.HandledMetric == "" {
		opts.HandledMetric = "grpc_server_handled_total"
	}
	if opts.HandlingMetric == "" {
		opts.HandlingMetric = "grpc_server_handling_seconds"
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	return &Scraper{eps: eps, opts: opts}
}

// ignoredService reports whether a gRPC service's calls say nothing about the
// version under test: health checks and reflection.
func ignoredService(svc string) bool {
	return svc == "grpc.health.v1.Health" || strings.HasPrefix(svc, "grpc.reflection.")
}

// Sample scrapes every task of taskSet (endpoints of service in meshName
// whose taskSet attribute is taskSet, whatever their state, as long as they
// have a MetricsAddr) and returns their summed counters with each task's own
// under Sample.Tasks. A task whose scrape fails is skipped and named in
// Sample.Failed; Sample fails only when every task's scrape failed.
func (s *Scraper) Sample(ctx context.Context, meshName, service, taskSet string) (Sample, error) {
	var targets []*mesh.Endpoint
	for _, ep := range s.eps.List(meshName, service) {
		if ep.Attributes[mesh.AttrTaskSet] == taskSet && ep.MetricsAddr != "" && ep.State != mesh.TaskStopped {
			targets = append(targets, ep)
		}
	}
	type result struct {
		key string
		s   Sample
		err error
		id  string
	}
	results := make([]result, len(targets))
	var wg sync.WaitGroup
	for i, ep := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			smp, err := s.scrape(ctx, ep.MetricsAddr)
			results[i] = result{key: TaskKey(ep.ID, ep.Proc().PID), s: smp, err: err, id: ep.ID}
		}()
	}
	wg.Wait()
	out := Sample{Tasks: map[string]Sample{}}
	var errs []error
	for _, r := range results {
		if r.err != nil {
			out.Failed = append(out.Failed, r.id+": "+r.err.Error())
			errs = append(errs, r.err)
			s.opts.Logger.Warn("metrics scrape failed", "mesh", meshName, "taskSet", taskSet, "task", r.id, "err", r.err)
			continue
		}
		out.Tasks[r.key] = r.s
		out.Add(r.s)
	}
	sort.Strings(out.Failed)
	if len(targets) > 0 && len(errs) == len(targets) {
		return out, fmt.Errorf("scrape task set %s: all %d tasks failed: %w", taskSet, len(targets), errors.Join(errs...))
	}
	return out, nil
}

func (s *Scraper) scrape(ctx context.Context, addr string) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	url := "http://" + addr + s.opts.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("scrape %s: http status %s", url, resp.Status)
	}
	smp, err := Parse(io.LimitReader(resp.Body, s.opts.MaxBodyBytes), s.opts.HandledMetric, s.opts.HandlingMetric)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return smp, nil
}

// The HTTP server metrics a task may serve, named as Prometheus's
// conventions (and the echo client) name them: a counter labelled code and
// a latency histogram in seconds.
const (
	HTTPRequestsMetric = "http_requests_total"
	HTTPDurationMetric = "http_request_duration_seconds"
)

// Parse reads a Prometheus text exposition and sums every request the task
// served: its gRPC calls (the handled counter by grpc_code and the handling
// histogram, over every gRPC service except health checks and reflection)
// and its HTTP requests (HTTPRequestsMetric, where a 5xx code is an error,
// and HTTPDurationMetric). So an HTTP service such as the echo client is
// judged by a rollout and shown by the dashboard like a gRPC one. The two
// histograms are merged by bucket bound, so they should share their bounds.
func Parse(r io.Reader, handled, handling string) (Sample, error) {
	fams, err := parseFamilies(r)
	if err != nil {
		return Sample{}, err
	}
	out := grpcSample(fams, handled, handling)
	h := httpSample(fams)
	out.Requests += h.Requests
	out.Errors += h.Errors
	out.Buckets = mergeBuckets(out.Buckets, h.Buckets, 1)
	return out, nil
}

// ParseServed is Parse with the default gRPC metric names
// (grpc_server_handled_total, grpc_server_handling_seconds).
func ParseServed(r io.Reader) (Sample, error) {
	return Parse(r, "grpc_server_handled_total", "grpc_server_handling_seconds")
}

func parseFamilies(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// httpSample sums the HTTP requests counter (a 5xx code is an error; Codes
// stays for gRPC codes) and the duration histogram.
func httpSample(fams map[string]*dto.MetricFamily) Sample {
	var out Sample
	if f := fams[HTTPRequestsMetric]; f != nil {
		for _, m := range f.GetMetric() {
			v := counterValue(m)
			if v <= 0 {
				continue
			}
			n := int64(math.Round(v))
			out.Requests += n
			if strings.HasPrefix(label(m, "code"), "5") {
				out.Errors += n
			}
		}
	}
	if f := fams[HTTPDurationMetric]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range f.GetMetric() {
			out.Buckets = mergeBuckets(out.Buckets, histogramBuckets(m.GetHistogram()), 1)
		}
	}
	return out
}

// histogramBuckets returns h's cumulative buckets, ending with +Inf.
func histogramBuckets(h *dto.Histogram) []Bucket {
	var bs []Bucket
	hasInf := false
	for _, b := range h.GetBucket() {
		ub := b.GetUpperBound()
		if math.IsInf(ub, 1) {
			hasInf = true
		}
		bs = append(bs, Bucket{UpperBound: ub, Count: int64(b.GetCumulativeCount())})
	}
	if !hasInf {
		bs = append(bs, Bucket{UpperBound: math.Inf(1), Count: int64(h.GetSampleCount())})
	}
	return bs
}

// grpcSample sums the handled counter by grpc_code and the handling
// histogram, leaving out health checks and reflection.
func grpcSample(fams map[string]*dto.MetricFamily, handled, handling string) Sample {
	var out Sample
	if f := fams[handled]; f != nil {
		for _, m := range f.GetMetric() {
			if ignoredService(label(m, "grpc_service")) {
				continue
			}
			v := counterValue(m)
			if v <= 0 {
				continue
			}
			n := int64(math.Round(v))
			code := label(m, "grpc_code")
			if out.Codes == nil {
				out.Codes = map[string]int64{}
			}
			out.Codes[code] += n
			out.Requests += n
			if IsFailureCode(code) {
				out.Errors += n
			}
		}
	}
	if f := fams[handling]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range f.GetMetric() {
			if ignoredService(label(m, "grpc_service")) {
				continue
			}
			out.Buckets = mergeBuckets(out.Buckets, histogramBuckets(m.GetHistogram()), 1)
		}
	}
	return out
}

func counterValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	if u := m.GetUntyped(); u != nil {
		return u.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
