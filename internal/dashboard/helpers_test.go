package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// fakeSource is a Source made of funcs; the status is settable.
type fakeSource struct {
	mu      sync.Mutex
	status  *controlplane.Status
	err     error
	control func(ctx context.Context, meshName, service, action string) (*mesh.Resource, error)
	calls   []string
}

func (f *fakeSource) Status(ctx context.Context) (*controlplane.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.err
}

func (f *fakeSource) ControlRollout(ctx context.Context, meshName, service, action string) (*mesh.Resource, error) {
	f.mu.Lock()
	f.calls = append(f.calls, meshName+"/"+service+"/"+action)
	fn := f.control
	f.mu.Unlock()
	if fn == nil {
		return nil, nil
	}
	return fn(ctx, meshName, service, action)
}

func (f *fakeSource) set(st *controlplane.Status, err error) {
	f.mu.Lock()
	f.status, f.err = st, err
	f.mu.Unlock()
}

func (f *fakeSource) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

var _ Source = (*fakeSource)(nil)

// metricTask is a task's Prometheus endpoint serving settable echo-server
// counters as text.
type metricTask struct {
	srv     *httptest.Server
	version string
	ok      atomic.Int64
	fail    atomic.Int64
	// perScrape is added to ok on every scrape: steady traffic without a
	// goroutine.
	perScrape atomic.Int64
}

func newMetricTask(t *testing.T, version string) *metricTask {
	t.Helper()
	m := &metricTask{version: version}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		m.ok.Add(m.perScrape.Load())
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# HELP grpc_server_handled_total EchoService RPCs.\n# TYPE grpc_server_handled_total counter\n")
		fmt.Fprintf(w, "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Echo\",grpc_service=\"proto.echo.EchoService\",version=%q} %d\n", m.version, m.ok.Load())
		fmt.Fprintf(w, "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Echo\",grpc_service=\"proto.echo.EchoService\",version=%q} %d\n", m.version, m.fail.Load())
		fmt.Fprintf(w, "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Check\",grpc_service=\"grpc.health.v1.Health\",version=%q} 5000\n", m.version)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *metricTask) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *metricTask) add(ok, fail int64) {
	m.ok.Add(ok)
	m.fail.Add(fail)
}

// echoStatus is the echo stack in the middle of a rollout 0.9 -> 1.0 with
// weights old/new, one echo-server task per version scraping addrs.
func echoStatus(oldW, newW int, oldAddr, newAddr string) *controlplane.Status {
	route := mesh.New(mesh.KindRoute, "echo", "echo-server-route", &mesh.RouteSpec{
		VirtualRouterName: "echo-server",
		GRPCRoute: &mesh.GRPCRoute{
			Match: mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
			Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{
				{VirtualNode: "echo-server-0-9", Weight: oldW},
				{VirtualNode: "echo-server-1-0", Weight: newW},
			}},
		},
	})
	ro := mesh.New(mesh.KindRollout, "echo", "echo-server", &mesh.RolloutSpec{
		Service: "echo-server", Steps: []int{10, 50, 100}, IntervalMillis: 5000,
		Target: mesh.TaskSetSpec{Service: "echo-server", VirtualNode: "echo-server-1-0", Version: "1.0", Revision: 2},
		Gates:  mesh.Gates{MinSuccessRate: 0.99, MaxP99Millis: 500, MinRequests: 20},
	})
	ro.Status = &mesh.RolloutStatus{
		Phase: mesh.PhaseBaking, StepIndex: 0, Weight: newW, Route: "echo-server-route",
		OldVirtualNode: "echo-server-0-9", NewVirtualNode: "echo-server-1-0", OldVersion: "0.9", NewVersion: "1.0",
		Message:  "baking step 1/3 at 10%",
		Analysis: &mesh.Analysis{Requests: 42, SuccessRate: 1, P99Millis: 3.2, Passed: true, Judged: true},
		Events: []mesh.RolloutEvent{
			{Time: "2026-01-02T15:04:05Z", Phase: mesh.PhaseStartingTasks, Message: "starting 2 tasks of 1.0"},
			{Time: "2026-01-02T15:04:09Z", Phase: mesh.PhaseBaking, Message: "weight 10, all clients ACKed"},
		},
		History: []mesh.TaskSetSpec{{Service: "echo-server", VirtualNode: "echo-server-0-9", Version: "0.9", Revision: 1}},
	}
	ep := func(id, version, ts, metrics string, port int) *mesh.Endpoint {
		return &mesh.Endpoint{ID: id, Mesh: "echo", Service: "echo-server", Address: "127.0.0.1", Port: port,
			Attributes: map[string]string{mesh.AttrVersion: version, mesh.AttrTaskSet: ts}, MetricsAddr: metrics,
			Process: &mesh.ProcessStatus{PID: 1000 + port}, State: mesh.TaskRunning, Health: mesh.HealthHealthy}
	}
	pub := map[string]string{
		"type.googleapis.com/envoy.config.listener.v3.Listener":              "e-3",
		"type.googleapis.com/envoy.config.route.v3.RouteConfiguration":       "e-7",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster":                "e-3",
		"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "e-5",
	}
	client := func(id string, rds string, nack *xdsserver.NACK) xdsserver.ClientStatus {
		types := map[string]xdsserver.TypeStatus{}
		for url, v := range pub {
			types[url] = xdsserver.TypeStatus{ACKedVersion: v, SentVersion: v}
		}
		rt := "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
		types[rt] = xdsserver.TypeStatus{ACKedVersion: rds, SentVersion: pub[rt]}
		return xdsserver.ClientStatus{NodeID: id, Streams: 1, Types: types, LastNACK: nack}
	}
	return &controlplane.Status{
		Revision: 12, PublishedRevision: 12, PublishedVersions: pub,
		Clients: []xdsserver.ClientStatus{
			client("echo-client-1", "e-7", nil),
			client("echo-client-2", "e-6", &xdsserver.NACK{TypeURL: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", Version: "e-7", Detail: "route: weights sum to 0"}),
		},
		Endpoints: []*mesh.Endpoint{
			ep("echo-server-0-9-a", "0.9", "echo-server-0-9", oldAddr, 50051),
			ep("echo-server-1-0-a", "1.0", "echo-server-1-0", newAddr, 50052),
		},
		Services: []*mesh.Resource{mesh.New(mesh.KindService, "echo", "echo-server", &mesh.ServiceSpec{VirtualNode: "echo-server-0-9", DesiredCount: 1, Port: 50051})},
		TaskSets: []*mesh.Resource{
			mesh.New(mesh.KindTaskSet, "echo", "echo-server-1-0", &mesh.TaskSetSpec{Service: "echo-server", VirtualNode: "echo-server-1-0", Version: "1.0", Revision: 2, DesiredCount: 1}),
			mesh.New(mesh.KindTaskSet, "echo", "echo-server-0-9", &mesh.TaskSetSpec{Service: "echo-server", VirtualNode: "echo-server-0-9", Version: "0.9", Revision: 1, DesiredCount: 1}),
		},
		Nodes:    []*mesh.Resource{},
		Routes:   []*mesh.Resource{route},
		Rollouts: []*mesh.Resource{ro},
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name, id, data string
}

// readEvents parses an SSE stream into ch until it ends.
func readEvents(body *bufio.Reader, ch chan<- sseEvent) {
	defer close(ch)
	var ev sseEvent
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.data != "" || ev.name != "" {
				ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			ch <- sseEvent{name: "comment", data: line}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data += strings.TrimPrefix(line, "data: ")
		}
	}
}
