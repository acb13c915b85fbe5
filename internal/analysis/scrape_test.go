package analysis

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

type fakeLister []*mesh.Endpoint

func (l fakeLister) List(meshName, service string) []*mesh.Endpoint {
	var out []*mesh.Endpoint
	for _, e := range l {
		if e.Mesh == meshName && e.Service == service {
			out = append(out, e)
		}
	}
	return out
}

// task is one fake task: a real client_golang registry served over HTTP.
type fakeTask struct {
	srv      *httptest.Server
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
}

func newFakeTask(t *testing.T) *fakeTask {
	t.Helper()
	reg := prometheus.NewRegistry()
	ft := &fakeTask{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_handled_total", Help: "h"},
			[]string{"grpc_service", "grpc_method", "grpc_code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "grpc_server_handling_seconds", Help: "h",
			Buckets: []float64{0.01, 0.1, 0.5, 1}}, []string{"grpc_service", "grpc_method"}),
	}
	reg.MustRegister(ft.handled, ft.handling)
	ft.srv = httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(ft.srv.Close)
	return ft
}

func (ft *fakeTask) serve(n int, code string, secs float64) {
	for range n {
		ft.handled.WithLabelValues("proto.echo.EchoService", "Echo", code).Inc()
		ft.handling.WithLabelValues("proto.echo.EchoService", "Echo").Observe(secs)
	}
	ft.handled.WithLabelValues("grpc.health.v1.Health", "Check", "OK").Add(1000)
}

func (ft *fakeTask) addr() string { return strings.TrimPrefix(ft.srv.URL, "http://") }

func TestScraperSample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := newFakeTask(t), newFakeTask(t)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers: the scrape must time out
	}))
	defer hang.Close()
	eps := fakeLister{
		{ID: "a", Mesh: "m", Service: "echo", Process: &mesh.ProcessStatus{PID: 1}, MetricsAddr: a.addr(), State: mesh.TaskRunning, Attributes: map[string]string{"taskSet": "echo-1-0"}},
		{ID: "b", Mesh: "m", Service: "echo", Process: &mesh.ProcessStatus{PID: 2}, MetricsAddr: b.addr(), State: mesh.TaskRunning, Health: mesh.HealthUnhealthy, Attributes: map[string]string{"taskSet": "echo-1-0"}},
		{ID: "h", Mesh: "m", Service: "echo", Process: &mesh.ProcessStatus{PID: 3}, MetricsAddr: strings.TrimPrefix(hang.URL, "http://"), State: mesh.TaskRunning, Attributes: map[string]string{"taskSet": "echo-1-0"}},
		{ID: "old", Mesh: "m", Service: "echo", Process: &mesh.ProcessStatus{PID: 4}, MetricsAddr: a.addr(), State: mesh.TaskRunning, Attributes: map[string]string{"taskSet": "echo-0-9"}},
		{ID: "nom", Mesh: "m", Service: "echo", Process: &mesh.ProcessStatus{PID: 5}, State: mesh.TaskRunning, Attributes: map[string]string{"taskSet": "echo-1-0"}},
	}
	s := NewScraper(eps, ScraperOptions{Timeout: 2 * time.Second}) // a loaded machine answers well within it; the hanging task waits it out

	before, err := s.Sample(ctx, "m", "echo", "echo-1-0")
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if len(before.Failed) != 1 || !strings.HasPrefix(before.Failed[0], "h: ") {
		t.Errorf("Failed = %q, want the hanging task h", before.Failed)
	}
	if got := len(before.Tasks); got != 2 {
		t.Errorf("len(Tasks) = %d, want 2", got)
	}
	a.serve(90, "OK", 0.005)
	a.serve(5, "Unavailable", 0.005)
	b.serve(4, "OK", 0.3)
	b.serve(1, "InvalidArgument", 0.005)
	after, err := s.Sample(ctx, "m", "echo", "echo-1-0")
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	d := Delta(before, after)
	if d.Requests != 100 || d.Errors != 5 {
		t.Errorf("delta requests, errors = %d, %d, want 100, 5", d.Requests, d.Errors)
	}
	if got, want := d.Codes["OK"], int64(94); got != want {
		t.Errorf("delta OK = %d, want %d", got, want)
	}
	// 96 of 100 at 5ms, 4 at 300ms: p99 is in (0.1, 0.5]: 0.1+0.4*(99-96)/4.
	if got, want := d.Quantile(0.99), 0.1+0.4*3/4; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("p99 = %v, want %v", got, want)
	}
	an := Evaluate(d, mesh.Gates{})
	if an.Passed || !an.Judged {
		t.Errorf("Evaluate = %+v, want judged and failed", an)
	}
}

func TestScraperAllFail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer bad.Close()
	eps := fakeLister{{ID: "x", Mesh: "m", Service: "echo", MetricsAddr: strings.TrimPrefix(bad.URL, "http://"),
		Attributes: map[string]string{"taskSet": "s"}}}
	s := NewScraper(eps, ScraperOptions{})
	if _, err := s.Sample(ctx, "m", "echo", "s"); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Sample error = %v, want one naming the http status", err)
	}
	// No tasks at all: an empty sample, not an error.
	smp, err := s.Sample(ctx, "m", "echo", "none")
	if err != nil || smp.Requests != 0 {
		t.Errorf("Sample of no tasks = %+v, %v, want empty, nil", smp, err)
	}
}
