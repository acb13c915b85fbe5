package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// stepper drives a registry's checkers with a fake clock, one interval at a
// time.
type stepper struct {
	t   *testing.T
	r   *Registry
	clk *clock.Fake
	iv  time.Duration
}

func newStepper(t *testing.T, p Persister, hc mesh.HealthCheck) *stepper {
	clk := newFakeClock()
	r := New(testLogger(t), p, Options{Clock: clk})
	r.SetPolicy(fixedPolicy(hc))
	startRun(t, r)
	return &stepper{t: t, r: r, clk: clk, iv: time.Duration(hc.IntervalMillis) * time.Millisecond}
}

// settled waits until n checkers have finished a check and wait for the
// next interval.
func (s *stepper) settled(n int) { s.t.Helper(); waitTimers(s.t, s.clk, n) }

// step lets one interval pass and waits for the n checkers to check again.
func (s *stepper) step(n int) {
	s.t.Helper()
	s.clk.Advance(s.iv)
	waitTimers(s.t, s.clk, n)
}

func TestGRPCThresholds(t *testing.T) {
	h, port := startHealthServer(t)
	s := newStepper(t, nil, mesh.HealthCheck{
		Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000,
		HealthyThreshold: 3, UnhealthyThreshold: 2,
	})
	if err := s.r.Register(testContext(t), newEndpoint("t1", port)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s.r, "t1"); got.Health != mesh.HealthUnknown && got.Health != mesh.HealthHealthy {
		t.Fatalf("health right after register: got %s, want UNKNOWN (or HEALTHY if already checked)", got.Health)
	}
	s.settled(1)

	steps := []struct {
		serving   bool
		want      mesh.HealthStatus
		wantError string
	}{
		// check 1: a new process is HEALTHY on its first pass.
		{serving: true, want: mesh.HealthHealthy},
		// checks 2-3: unhealthyThreshold (2) fails to fall.
		{serving: false, want: mesh.HealthHealthy, wantError: "NOT_SERVING"},
		{serving: false, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		// checks 4-6: healthyThreshold (3) passes to come back.
		{serving: true, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		{serving: true, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		{serving: true, want: mesh.HealthHealthy},
		// checks 7-10: a pass in between resets the fail count.
		{serving: false, want: mesh.HealthHealthy, wantError: "NOT_SERVING"},
		{serving: true, want: mesh.HealthHealthy, wantError: "NOT_SERVING"},
		{serving: false, want: mesh.HealthHealthy, wantError: "NOT_SERVING"},
		{serving: false, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		// checks 11-13: and a fail in between resets the pass count.
		{serving: true, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		{serving: false, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
		{serving: true, want: mesh.HealthUnhealthy, wantError: "NOT_SERVING"},
	}
	for i, st := range steps {
		check := i + 1
		if i > 0 {
			h.set(st.serving)
			s.step(1)
		}
		if got := h.checks.Load(); got != int64(check) {
			t.Fatalf("check %d: server got %d checks, want %d", check, got, check)
		}
		ep := get(t, s.r, "t1")
		if ep.Health != st.want {
			t.Errorf("check %d: got health %s, want %s", check, ep.Health, st.want)
		}
		if !strings.Contains(ep.LastHealthError, st.wantError) || (st.wantError == "") != (ep.LastHealthError == "") {
			t.Errorf("check %d: got LastHealthError %q, want it to contain %q", check, ep.LastHealthError, st.wantError)
		}
		if ep.Serving() != (st.want == mesh.HealthHealthy) {
			t.Errorf("check %d: got Serving %v with health %s", check, ep.Serving(), ep.Health)
		}
	}
}

// TestGRPCUnhealthyWithinBound measures, with the real clock, how long an
// endpoint that turns NOT_SERVING stays Serving. The bound is interval ×
// unhealthyThreshold + timeout; the test only requires it to happen within a
// generous deadline and logs the time taken.
func TestGRPCUnhealthyWithinBound(t *testing.T) {
	h, port := startHealthServer(t)
	hc := mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 100, TimeoutMillis: 200, HealthyThreshold: 2, UnhealthyThreshold: 2}
	r := New(testLogger(t), nil, Options{})
	r.SetPolicy(fixedPolicy(hc))
	startRun(t, r)
	if err := r.Register(testContext(t), newEndpoint("t1", port)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "t1 healthy", healthIs(r, "t1", mesh.HealthHealthy))

	notes, cancel := r.Subscribe()
	defer cancel()
	h.set(false)
	took := waitFor(t, r, "t1 leaves Serving", func() bool { return !get(t, r, "t1").Serving() })
	bound := time.Duration(hc.IntervalMillis*int64(hc.UnhealthyThreshold)+hc.TimeoutMillis) * time.Millisecond
	t.Logf("NOT_SERVING to out of Serving: %v (bound interval×threshold+timeout = %v)", took, bound)
	select {
	case <-notes:
	default:
		t.Error("subscriber was not notified of the health change")
	}
	if checks := h.checks.Load(); checks < 3 {
		t.Errorf("got %d checks, want at least 3 (1 pass, 2 fails)", checks)
	}

	h.set(true)
	waitFor(t, r, "t1 healthy again", healthIs(r, "t1", mesh.HealthHealthy))
}

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int64
	var gotPath, gotAgent atomic.Value
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		gotPath.Store(req.URL.Path)
		gotAgent.Store(req.UserAgent())
		code := int(status.Load())
		if code >= 300 && code < 400 {
			// Following this would reach a failing page.
			w.Header().Set("Location", "/broken")
		}
		w.WriteHeader(code)
	})}
	port := serveHTTP(t, srv)

	s := newStepper(t, nil, mesh.HealthCheck{
		Protocol: "http", Path: "/healthz", IntervalMillis: 1000, TimeoutMillis: 5000,
		HealthyThreshold: 1, UnhealthyThreshold: 1,
	})
	status.Store(200)
	if err := s.r.Register(testContext(t), newEndpoint("h1", port)); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	if got := get(t, s.r, "h1").Health; got != mesh.HealthHealthy {
		t.Fatalf("status 200: got %s, want HEALTHY", got)
	}
	if got := gotPath.Load(); got != "/healthz" {
		t.Errorf("got path %v, want /healthz", got)
	}
	if got := gotAgent.Load(); got != userAgent {
		t.Errorf("got user agent %v, want %s", got, userAgent)
	}
	for _, tc := range []struct {
		code int
		want mesh.HealthStatus
	}{
		{500, mesh.HealthUnhealthy},
		{204, mesh.HealthHealthy},
		{404, mesh.HealthUnhealthy},
		{302, mesh.HealthHealthy},
		{399, mesh.HealthHealthy},
		{400, mesh.HealthUnhealthy},
	} {
		status.Store(int64(tc.code))
		s.step(1)
		ep := get(t, s.r, "h1")
		if ep.Health != tc.want {
			t.Errorf("status %d: got %s, want %s", tc.code, ep.Health, tc.want)
		}
		if tc.want == mesh.HealthUnhealthy && !strings.Contains(ep.LastHealthError, itoa(tc.code)) {
			t.Errorf("status %d: got LastHealthError %q, want the status in it", tc.code, ep.LastHealthError)
		}
	}
}

func TestHTTP2CleartextCheck(t *testing.T) {
	var proto atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		proto.Store(int64(req.ProtoMajor))
		w.WriteHeader(http.StatusOK)
	})}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true) // h2c only: HTTP/1.1 is refused
	port := serveHTTP(t, srv)

	s := newStepper(t, nil, mesh.HealthCheck{Protocol: "http2", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 1, UnhealthyThreshold: 1})
	if err := s.r.Register(testContext(t), newEndpoint("h2", port)); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	ep := get(t, s.r, "h2")
	if ep.Health != mesh.HealthHealthy {
		t.Fatalf("got %s (%s), want HEALTHY", ep.Health, ep.LastHealthError)
	}
	if got := proto.Load(); got != 2 {
		t.Errorf("got HTTP/%d, want HTTP/2", got)
	}
}

func serveHTTP(t *testing.T, srv *http.Server) int {
	t.Helper()
	port, _ := serveLocal(t, func(lis net.Listener) { _ = srv.Serve(lis) }, func() { srv.Close() })
	return port
}

func TestTCPCheck(t *testing.T) {
	port, stop := serveLocal(t, acceptAndClose, nil)

	s := newStepper(t, nil, mesh.HealthCheck{Protocol: "tcp", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 1, UnhealthyThreshold: 1})
	if err := s.r.Register(testContext(t), newEndpoint("c1", port)); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	if got := get(t, s.r, "c1").Health; got != mesh.HealthHealthy {
		t.Fatalf("listening: got %s, want HEALTHY", got)
	}
	stop()
	s.step(1)
	ep := get(t, s.r, "c1")
	if ep.Health != mesh.HealthUnhealthy {
		t.Errorf("closed: got %s, want UNHEALTHY", ep.Health)
	}
	if !strings.Contains(ep.LastHealthError, "tcp health check") {
		t.Errorf("closed: got LastHealthError %q, want a tcp dial error", ep.LastHealthError)
	}
}

func TestUnsupportedProtocolFails(t *testing.T) {
	s := newStepper(t, nil, mesh.HealthCheck{Protocol: "udp", IntervalMillis: 1000, HealthyThreshold: 1, UnhealthyThreshold: 1})
	if err := s.r.Register(testContext(t), newEndpoint("u1", 9)); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	ep := get(t, s.r, "u1")
	if ep.Health != mesh.HealthUnhealthy || !strings.Contains(ep.LastHealthError, `unsupported health check protocol "udp"`) {
		t.Errorf("got %s %q, want UNHEALTHY with an unsupported protocol error", ep.Health, ep.LastHealthError)
	}
}

// TestHungBackend: a backend that accepts connections and never answers
// fails by timeout, for gRPC and HTTP, while a good endpoint is checked on
// schedule all along.
func TestHungBackend(t *testing.T) {
	good, goodPort := startHealthServer(t)
	hungPort := startHungServer(t)
	r := New(testLogger(t), nil, Options{})
	r.SetPolicy(func(ep *mesh.Endpoint) *mesh.HealthCheck {
		return &mesh.HealthCheck{
			Protocol: ep.Attributes["proto"], IntervalMillis: 50, TimeoutMillis: 300,
			HealthyThreshold: 2, UnhealthyThreshold: 2,
		}
	})
	startRun(t, r)
	ctx := testContext(t)
	for _, ep := range []*mesh.Endpoint{
		withAttr(newEndpoint("hung-grpc", hungPort), "proto", "grpc"),
		withAttr(newEndpoint("hung-http", hungPort), "proto", "http"),
		withAttr(newEndpoint("hung-tcp-ok", hungPort), "proto", "tcp"), // accepting is all tcp asks
		withAttr(newEndpoint("good", goodPort), "proto", "grpc"),
	} {
		if err := r.Register(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, r, "good healthy", healthIs(r, "good", mesh.HealthHealthy))
	// While the hung checks wait out their 300ms timeouts, the good
	// endpoint keeps its 50ms schedule.
	start := good.checks.Load()
	waitFor(t, r, "good checked 4 more times", func() bool { return good.checks.Load() >= start+4 })
	waitFor(t, r, "hung endpoints unhealthy", func() bool {
		return get(t, r, "hung-grpc").Health == mesh.HealthUnhealthy && get(t, r, "hung-http").Health == mesh.HealthUnhealthy
	})
	if ep := get(t, r, "hung-http"); !strings.Contains(ep.LastHealthError, "timed out after 300ms") {
		t.Errorf("hung-http: got LastHealthError %q, want a timeout", ep.LastHealthError)
	}
	// gRPC's own connect timeout (1s) may have closed the handshake by now,
	// and then the check fails at once on the broken connection.
	if ep := get(t, r, "hung-grpc"); !strings.Contains(ep.LastHealthError, "timed out after 300ms") &&
		!strings.Contains(ep.LastHealthError, "server preface") {
		t.Errorf("hung-grpc: got LastHealthError %q, want a timeout or a handshake error", ep.LastHealthError)
	}
	waitFor(t, r, "hung-tcp-ok healthy", healthIs(r, "hung-tcp-ok", mesh.HealthHealthy))
	if got := get(t, r, "good"); !got.Serving() {
		t.Errorf("good: got health %s, want Serving", got.Health)
	}
}

func withAttr(ep *mesh.Endpoint, k, v string) *mesh.Endpoint {
	ep.Attributes[k] = v
	return ep
}

func TestNoPolicyHealthyOnceRunning(t *testing.T) {
	r := New(testLogger(t), nil, Options{})
	ctx := testContext(t)
	ep := newEndpoint("n1", 8080)
	ep.State = mesh.TaskPending
	if err := r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if got := get(t, r, "n1"); got.Health != mesh.HealthUnknown || got.Serving() {
		t.Fatalf("pending: got %s serving=%v, want UNKNOWN, not serving", got.Health, got.Serving())
	}
	ep.State = mesh.TaskRunning
	if err := r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if got := get(t, r, "n1"); got.Health != mesh.HealthHealthy || !got.Serving() {
		t.Fatalf("running: got %s serving=%v, want HEALTHY, serving", got.Health, got.Serving())
	}
}

func TestDraining(t *testing.T) {
	r := New(testLogger(t), nil, Options{})
	ctx := testContext(t)
	for _, id := range []string{"a", "b"} {
		if err := r.Register(ctx, newEndpoint(id, 8080)); err != nil {
			t.Fatal(err)
		}
	}
	notes, cancel := r.Subscribe()
	defer cancel()
	if err := r.SetDraining(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notes:
	default:
		t.Error("no notification for draining")
	}
	a := get(t, r, "a")
	if !a.Draining || a.Serving() {
		t.Errorf("got draining=%v serving=%v, want draining, not serving", a.Draining, a.Serving())
	}
	if got := ids(r.List(Filter{ServingOnly: true})); got != "b" {
		t.Errorf("serving endpoints: got %q, want %q", got, "b")
	}
	// A runtime re-register does not undo draining.
	if err := r.Register(ctx, newEndpoint("a", 8080)); err != nil {
		t.Fatal(err)
	}
	if !get(t, r, "a").Draining {
		t.Error("re-register cleared draining")
	}
	if err := r.SetDraining(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	if !get(t, r, "a").Serving() {
		t.Error("undrained endpoint not serving")
	}
	if err := r.SetDraining(ctx, "nope", true); !mesh.IsNotFound(err) {
		t.Errorf("unknown id: got %v, want a not found error", err)
	}
}

func ids(eps []*mesh.Endpoint) string {
	var s []string
	for _, ep := range eps {
		s = append(s, ep.ID)
	}
	return strings.Join(s, ",")
}

// TestStoppingLeavesServingAtOnce: the runtime's STOPPING is the fast path
// out of EDS; the checker stops; a new process starts from UNKNOWN.
func TestStoppingLeavesServingAtOnce(t *testing.T) {
	h, port := startHealthServer(t)
	s := newStepper(t, nil, mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2})
	ctx := testContext(t)
	ep := newEndpoint("t1", port)
	if err := s.r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	if !get(t, s.r, "t1").Serving() {
		t.Fatal("not serving after a passing check")
	}

	// A heartbeat re-register of the same process keeps health.
	ep.Process.Restarts = 0
	if err := s.r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if !get(t, s.r, "t1").Serving() {
		t.Fatal("heartbeat re-register lost health")
	}

	notes, cancel := s.r.Subscribe()
	defer cancel()
	ep.State = mesh.TaskStopping
	if err := s.r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if get(t, s.r, "t1").Serving() {
		t.Error("STOPPING endpoint still serving")
	}
	select {
	case <-notes:
	default:
		t.Error("no notification for STOPPING")
	}
	s.settled(0) // the checker stopped
	checks := h.checks.Load()

	ep.State, ep.Process = mesh.TaskRunning, &mesh.ProcessStatus{PID: 1001, Restarts: 1}
	if err := s.r.Register(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s.r, "t1"); got.Health != mesh.HealthUnknown && got.Health != mesh.HealthHealthy {
		t.Errorf("restarted process: got %s", got.Health)
	}
	s.settled(1)
	if got := h.checks.Load(); got != checks+1 {
		t.Errorf("got %d checks after restart, want %d", got, checks+1)
	}
	if got := get(t, s.r, "t1"); got.Health != mesh.HealthHealthy || got.Proc().Restarts != 1 {
		t.Errorf("restarted process: got %s restarts=%d, want HEALTHY restarts=1", got.Health, got.Proc().Restarts)
	}
}

func TestAddressChangeResetsHealth(t *testing.T) {
	h1, port1 := startHealthServer(t)
	h2, port2 := startHealthServer(t)
	h2.set(false)
	s := newStepper(t, nil, mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2})
	ctx := testContext(t)
	if err := s.r.Register(ctx, newEndpoint("t1", port1)); err != nil {
		t.Fatal(err)
	}
	s.settled(1)
	if got := get(t, s.r, "t1").Health; got != mesh.HealthHealthy {
		t.Fatalf("got %s, want HEALTHY", got)
	}
	if err := s.r.Register(ctx, newEndpoint("t1", port2)); err != nil {
		t.Fatal(err)
	}
	// The restarted checker checks the new port at once.
	waitFor(t, s.r, "new port checked", func() bool { return h2.checks.Load() == 1 })
	s.settled(1)
	ep := get(t, s.r, "t1")
	if ep.Health != mesh.HealthUnknown || ep.Serving() {
		t.Errorf("moved to a NOT_SERVING port: got %s, want UNKNOWN after one fail", ep.Health)
	}
	if got := h1.checks.Load(); got != 1 {
		t.Errorf("old port: got %d checks, want 1", got)
	}
}

func TestSetPolicy(t *testing.T) {
	h, port := startHealthServer(t)
	h.set(false)
	clk := newFakeClock()
	r := New(testLogger(t), nil, Options{Clock: clk})
	startRun(t, r)
	ctx := testContext(t)
	if err := r.Register(ctx, newEndpoint("t1", port)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, r, "t1"); !got.Serving() {
		t.Fatalf("no policy: got %s, want serving", got.Health)
	}

	// A check arrives with the mesh: health is kept until the threshold.
	r.SetPolicy(fixedPolicy(mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2}))
	waitTimers(t, clk, 1)
	if got := get(t, r, "t1"); got.Health != mesh.HealthHealthy || got.LastHealthError == "" {
		t.Errorf("after one fail: got %s %q, want HEALTHY with an error", got.Health, got.LastHealthError)
	}
	clk.Advance(time.Second)
	waitTimers(t, clk, 1)
	if got := get(t, r, "t1"); got.Health != mesh.HealthUnhealthy {
		t.Errorf("after two fails: got %s, want UNHEALTHY", got.Health)
	}
	// Setting the same policy again changes nothing.
	checks := h.checks.Load()
	r.SetPolicy(fixedPolicy(mesh.HealthCheck{Protocol: "GRPC", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2}))
	waitTimers(t, clk, 1)
	if got := h.checks.Load(); got != checks {
		t.Errorf("same policy restarted the checker: got %d checks, want %d", got, checks)
	}
	// The check goes away: healthy once running.
	r.SetPolicy(nil)
	if got := get(t, r, "t1"); !got.Serving() || got.LastHealthError != "" {
		t.Errorf("policy removed: got %s %q, want HEALTHY, no error", got.Health, got.LastHealthError)
	}
	waitTimers(t, clk, 0)
}

func TestRestoreKeepsLastHealth(t *testing.T) {
	h, port := startHealthServer(t)
	h.set(false)
	healthy := newEndpoint("a-healthy", port)
	healthy.Health = mesh.HealthHealthy
	healthy.Process = &mesh.ProcessStatus{PID: 42}
	sick := newEndpoint("b-sick", port)
	sick.Health = mesh.HealthUnhealthy
	sick.LastHealthError = "grpc health status NOT_SERVING"
	drained := newEndpoint("c-drained", port)
	drained.Health, drained.Draining = mesh.HealthHealthy, true
	bad := newEndpoint("d-bad", 0)
	p := newMemPersister(healthy, sick, drained, bad)

	clk := newFakeClock()
	r := New(testLogger(t), p, Options{Clock: clk})
	r.SetPolicy(fixedPolicy(mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2}))
	ctx := testContext(t)
	if err := r.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	// Before any check, the restored state is what EDS gets.
	if got := ids(r.List(Filter{ServingOnly: true})); got != "a-healthy" {
		t.Fatalf("serving after restore: got %q, want %q", got, "a-healthy")
	}
	if got := ids(r.List(Filter{})); got != "a-healthy,b-sick,c-drained" {
		t.Errorf("restored: got %q, want the three valid endpoints", got)
	}
	if got := get(t, r, "b-sick"); got.LastHealthError == "" {
		t.Error("restore lost LastHealthError")
	}

	// The runtime re-registers the same process: health is kept.
	if err := r.Register(ctx, newEndpointPID("a-healthy", port, 42)); err != nil {
		t.Fatal(err)
	}
	if !get(t, r, "a-healthy").Serving() {
		t.Fatal("re-register after restore lost health")
	}

	// Checks resume from the restored state: the backend is now NOT_SERVING,
	// so it takes unhealthyThreshold fails to leave EDS.
	startRun(t, r)
	waitTimers(t, clk, 3)
	if !get(t, r, "a-healthy").Serving() {
		t.Error("one fail after restore already removed the endpoint")
	}
	clk.Advance(time.Second)
	waitTimers(t, clk, 3)
	if got := get(t, r, "a-healthy").Health; got != mesh.HealthUnhealthy {
		t.Errorf("after two fails: got %s, want UNHEALTHY", got)
	}
	if got, _ := p.get("a-healthy"); got.Health != mesh.HealthUnhealthy {
		t.Errorf("persisted: got %s, want UNHEALTHY", got.Health)
	}
}

func newEndpointPID(id string, port, pid int) *mesh.Endpoint {
	ep := newEndpoint(id, port)
	ep.Process = &mesh.ProcessStatus{PID: pid}
	return ep
}

func TestPersistence(t *testing.T) {
	h, port := startHealthServer(t)
	p := newMemPersister()
	s := newStepper(t, p, mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 1, UnhealthyThreshold: 1})
	ctx := testContext(t)
	if err := s.r.Register(ctx, newEndpoint("t1", port)); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.get("t1"); !ok {
		t.Fatal("register did not persist")
	}
	s.settled(1)
	if got, _ := p.get("t1"); got.Health != mesh.HealthHealthy {
		t.Errorf("persisted health: got %s, want HEALTHY", got.Health)
	}
	h.set(false)
	s.step(1)
	if got, _ := p.get("t1"); got.Health != mesh.HealthUnhealthy || got.LastHealthError == "" {
		t.Errorf("persisted health: got %s %q, want UNHEALTHY with error", got.Health, got.LastHealthError)
	}
	if err := s.r.SetDraining(ctx, "t1", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.get("t1"); !got.Draining {
		t.Error("draining not persisted")
	}
	if err := s.r.Deregister(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.get("t1"); ok {
		t.Error("deregister did not delete")
	}
	if err := s.r.Deregister(ctx, "t1"); !mesh.IsNotFound(err) {
		t.Errorf("second deregister: got %v, want not found", err)
	}
}

func TestSubscribeCoalescesAndNeverBlocks(t *testing.T) {
	r := New(testLogger(t), nil, Options{})
	ctx := testContext(t)
	slow, cancelSlow := r.Subscribe() // never read until the end
	ch, cancel := r.Subscribe()
	for i := range 100 {
		if err := r.Register(ctx, newEndpoint("e"+itoa(i), 8080)); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(ch); got != 1 {
		t.Errorf("pending notifications after 100 changes: got %d, want 1", got)
	}
	<-ch
	select {
	case <-ch:
		t.Error("got a second notification for changes already seen")
	default:
	}
	// An unchanged re-register is no change.
	if err := r.Register(ctx, newEndpoint("e1", 8080)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Error("got a notification for an unchanged re-register")
	default:
	}
	if err := r.Deregister(ctx, "e1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("no notification for deregister")
	}
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Error("channel still open after cancel")
	}
	if err := r.Deregister(ctx, "e2"); err != nil { // no send on the closed channel
		t.Fatal(err)
	}
	if got := len(slow); got != 1 {
		t.Errorf("slow subscriber: got %d pending, want 1", got)
	}
	cancelSlow()
}

func TestDeregisterStopsChecker(t *testing.T) {
	h, port := startHealthServer(t)
	r := New(testLogger(t), nil, Options{})
	r.SetPolicy(fixedPolicy(mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 50, TimeoutMillis: 1000, HealthyThreshold: 1, UnhealthyThreshold: 1}))
	startRun(t, r)
	ctx := testContext(t)

	// Warm up grpc's lazily started package goroutines.
	if err := r.Register(ctx, newEndpoint("warm", port)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "warm healthy", healthIs(r, "warm", mesh.HealthHealthy))
	if err := r.Deregister(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()

	const n = 20
	for i := range n {
		if err := r.Register(ctx, newEndpoint("t"+itoa(i), port)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, r, "all healthy", func() bool { return len(r.List(Filter{ServingOnly: true})) == n })
	if got := runtime.NumGoroutine(); got < base+n {
		t.Errorf("with %d checkers: got %d goroutines, want at least %d", n, got, base+n)
	}
	for i := range n {
		if err := r.Deregister(ctx, "t"+itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got int
	waitFor(t, r, "goroutines back to the baseline", func() bool {
		got = runtime.NumGoroutine()
		return got <= base
	})
	// No checker checks any more.
	checks := h.checks.Load()
	if err := r.Register(ctx, newEndpoint("probe", port)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "probe checked", func() bool { return h.checks.Load() > checks })
	if err := r.Deregister(ctx, "probe"); err != nil {
		t.Fatal(err)
	}
}

func TestRunTwice(t *testing.T) {
	r := New(testLogger(t), nil, Options{})
	startRun(t, r)
	waitFor(t, r, "running", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.running
	})
	if err := r.Run(testContext(t)); err == nil {
		t.Error("second Run: got nil error, want already running")
	}
}

func TestMaxEndpoints(t *testing.T) {
	r := New(testLogger(t), nil, Options{MaxEndpoints: 2})
	ctx := testContext(t)
	for _, id := range []string{"a", "b"} {
		if err := r.Register(ctx, newEndpoint(id, 8080)); err != nil {
			t.Fatal(err)
		}
	}
	err := r.Register(ctx, newEndpoint("c", 8080))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "registry is full (2 endpoints)") {
		t.Errorf("third endpoint: got %v, want ErrFull", err)
	}
	if err := r.Register(ctx, newEndpoint("a", 9090)); err != nil {
		t.Errorf("update at the limit: got %v, want nil", err)
	}
	if err := r.Deregister(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, newEndpoint("c", 8080)); err != nil {
		t.Errorf("after deregister: got %v, want nil", err)
	}
}

func TestValidation(t *testing.T) {
	long := strings.Repeat("x", 254)
	tests := []struct {
		name   string
		mutate func(*mesh.Endpoint)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(*mesh.Endpoint) {}, ""},
		{"valid ipv6", func(e *mesh.Endpoint) { e.Address = "::1" }, ""},
		{"empty state means running", func(e *mesh.Endpoint) { e.State = "" }, ""},
		{"no id", func(e *mesh.Endpoint) { e.ID = "" }, "id: is required"},
		{"id with space", func(e *mesh.Endpoint) { e.ID = "a b" }, "id: \"a b\" must be printable ASCII"},
		{"long id", func(e *mesh.Endpoint) { e.ID = long }, "id: is 254 characters long"},
		{"no service", func(e *mesh.Endpoint) { e.Service = "" }, "service: is required"},
		{"no address", func(e *mesh.Endpoint) { e.Address = "" }, "address: is required"},
		{"hostname", func(e *mesh.Endpoint) { e.Address = "localhost" }, `address: "localhost" is not an IP address`},
		{"host:port", func(e *mesh.Endpoint) { e.Address = "127.0.0.1:80" }, "is not an IP address"},
		{"unspecified", func(e *mesh.Endpoint) { e.Address = "0.0.0.0" }, "not a unicast address"},
		{"multicast", func(e *mesh.Endpoint) { e.Address = "224.0.0.1" }, "not a unicast address"},
		{"zone", func(e *mesh.Endpoint) { e.Address = "fe80::1%eth0" }, "must not carry an IPv6 zone"},
		{"port 0", func(e *mesh.Endpoint) { e.Port = 0 }, "port: 0 is out of range 1-65535"},
		{"port too big", func(e *mesh.Endpoint) { e.Port = 65536 }, "port: 65536 is out of range"},
		{"bad state", func(e *mesh.Endpoint) { e.State = "running" }, `state: "running" is not one of`},
		{"negative pid", func(e *mesh.Endpoint) { e.Process = &mesh.ProcessStatus{PID: -1} }, "process.pid: -1 is negative"},
		{"negative restarts", func(e *mesh.Endpoint) { e.Process = &mesh.ProcessStatus{Restarts: -1} }, "process.restarts: -1 is negative"},
		{"empty attribute key", func(e *mesh.Endpoint) { e.Attributes[""] = "x" }, "attributes: a key is empty"},
		{"long attribute value", func(e *mesh.Endpoint) { e.Attributes["k"] = long }, "attributes.k: value is 254 characters long"},
		{"bad metrics addr", func(e *mesh.Endpoint) { e.MetricsAddr = "127.0.0.1" }, `metricsAddr: "127.0.0.1" is not host:port`},
		{"several", func(e *mesh.Endpoint) { e.Service, e.Port = "", 0 }, "service: is required\nport: 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New(testLogger(t), nil, Options{})
			ep := newEndpoint("t1", 8080)
			tc.mutate(ep)
			err := r.Register(testContext(t), ep)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			if code := mesh.ErrorCode(err); code != mesh.EInvalid {
				t.Errorf("got code %q, want %q", code, mesh.EInvalid)
			}
			if r.Len() != 0 {
				t.Error("invalid endpoint was stored")
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		err := New(nil, nil, Options{}).Register(testContext(t), nil)
		if mesh.ErrorCode(err) != mesh.EInvalid {
			t.Errorf("got %v, want an invalid error", err)
		}
	})
}

func TestListFilterAndCopies(t *testing.T) {
	r := New(testLogger(t), nil, Options{})
	ctx := testContext(t)
	mk := func(id, meshName, svc, version string) *mesh.Endpoint {
		ep := newEndpoint(id, 8080)
		ep.Mesh, ep.Service, ep.Attributes[mesh.AttrVersion] = meshName, svc, version
		return ep
	}
	for _, ep := range []*mesh.Endpoint{
		mk("d", "m1", "echo", "v2"), mk("a", "m1", "echo", "v1"), mk("c", "m2", "echo", "v1"), mk("b", "m1", "web", "v1"),
	} {
		if err := r.Register(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "a,b,c,d"},
		{Filter{Mesh: "m1"}, "a,b,d"},
		{Filter{Mesh: "m1", Service: "echo"}, "a,d"},
		{Filter{Service: "echo", Attributes: map[string]string{mesh.AttrVersion: "v1"}}, "a,c"},
		{Filter{Attributes: map[string]string{"missing": ""}}, ""},
	} {
		if got := ids(r.List(tc.f)); got != tc.want {
			t.Errorf("List(%+v): got %q, want %q", tc.f, got, tc.want)
		}
	}
	l := r.List(Filter{})
	l[0].Attributes[mesh.AttrVersion] = "mutated"
	l[0].Health = mesh.HealthUnhealthy
	if got := get(t, r, "a"); got.Attributes[mesh.AttrVersion] != "v1" || got.Health != mesh.HealthHealthy {
		t.Error("mutating a listed endpoint changed the registry")
	}
}

func BenchmarkList10000(b *testing.B) {
	r := New(nil, nil, Options{})
	ctx := context.Background()
	for i := range DefaultMaxEndpoints {
		ep := newEndpoint("task-"+itoa(i), 8080)
		ep.Service = "svc-" + itoa(i%100)
		if err := r.Register(ctx, ep); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			if got := len(r.List(Filter{})); got != DefaultMaxEndpoints {
				b.Fatalf("got %d endpoints", got)
			}
		}
	})
	b.Run("one-service", func(b *testing.B) {
		for b.Loop() {
			if got := len(r.List(Filter{Service: "svc-7", ServingOnly: true})); got != 100 {
				b.Fatalf("got %d endpoints", got)
			}
		}
	})
}

// TestRunStaggersManyFirstChecks: endpoints present when Run starts (a
// restored registry) have their first checks spread over one interval.
func TestRunStaggersManyFirstChecks(t *testing.T) {
	port := startAcceptServer(t)
	clk := newFakeClock()
	r := New(testLogger(t), nil, Options{Clock: clk})
	r.SetPolicy(fixedPolicy(mesh.HealthCheck{Protocol: "tcp", IntervalMillis: 1000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2}))
	ctx := testContext(t)
	const n = staggerAbove + 36
	for i := range n {
		if err := r.Register(ctx, newEndpoint("t"+itoa(i), port)); err != nil {
			t.Fatal(err)
		}
	}
	startRun(t, r)
	waitTimers(t, clk, n)
	if got := len(r.List(Filter{ServingOnly: true})); got != 0 {
		t.Errorf("before the first interval: got %d checked, want 0", got)
	}
	clk.Advance(time.Second)
	waitTimers(t, clk, n)
	if got := len(r.List(Filter{ServingOnly: true})); got != n {
		t.Errorf("after one interval: got %d healthy, want %d", got, n)
	}
}

// TestRestoreBeforePolicy: restored health stands until SetPolicy says
// whether there is a check, so an UNHEALTHY endpoint is not published by a
// control plane that has not loaded its mesh yet.
func TestRestoreBeforePolicy(t *testing.T) {
	sick := newEndpoint("sick", 8080)
	sick.Health = mesh.HealthUnhealthy
	r := New(testLogger(t), newMemPersister(sick), Options{})
	if err := r.Restore(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, r, "sick"); got.Serving() {
		t.Fatalf("restored UNHEALTHY endpoint is serving before any policy")
	}
	r.SetPolicy(func(*mesh.Endpoint) *mesh.HealthCheck { return nil })
	if got := get(t, r, "sick"); !got.Serving() {
		t.Errorf("no check for it: got %s, want HEALTHY once RUNNING", got.Health)
	}
}

// TestConcurrentUse runs runtimes, drains, policy changes, readers and the
// checkers at once (for the race detector), then checks that what was
// persisted last is the registry's final state.
func TestConcurrentUse(t *testing.T) {
	h, port := startHealthServer(t)
	p := newMemPersister()
	r := New(testLogger(t), p, Options{})
	hc := mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 10, TimeoutMillis: 1000, HealthyThreshold: 1, UnhealthyThreshold: 1}
	r.SetPolicy(fixedPolicy(hc))
	stop := startRun(t, r)
	ctx := testContext(t)
	notes, cancel := r.Subscribe()
	defer cancel()

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := "w" + itoa(w) + "-" + itoa(i%5)
				ep := newEndpoint(id, port)
				ep.Process.Restarts = i
				if i%7 == 0 {
					ep.State = mesh.TaskStopping
				}
				if err := r.Register(ctx, ep); err != nil {
					t.Error(err)
					return
				}
				if err := r.SetDraining(ctx, id, i%3 == 0); err != nil {
					t.Error(err)
					return
				}
				if i%11 == 0 {
					if err := r.Deregister(ctx, id); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			h.set(i%2 == 0)
			hc.UnhealthyThreshold = 1 + i%3
			r.SetPolicy(fixedPolicy(hc))
			r.List(Filter{ServingOnly: true})
		}
	})
	wg.Wait()
	h.set(true)
	// Let every endpoint settle as HEALTHY or not RUNNING.
	waitFor(t, r, "all settled", func() bool {
		for _, ep := range r.List(Filter{}) {
			if ep.State == mesh.TaskRunning && ep.Health != mesh.HealthHealthy {
				return false
			}
		}
		return true
	})
	select {
	case <-notes:
	default:
		t.Error("no notification")
	}
	// Stop the checkers, and wait for them (and so for their writes), so
	// nothing changes while comparing.
	stop()
	got := map[string]*mesh.Endpoint{}
	persisted, _ := p.ListEndpoints(ctx)
	for _, ep := range persisted {
		got[ep.ID] = ep
	}
	live := r.List(Filter{})
	if len(got) != len(live) {
		t.Errorf("persisted %d endpoints, registry has %d", len(got), len(live))
	}
	for _, ep := range live {
		if !sameEndpoint(ep, got[ep.ID]) {
			t.Errorf("%s: persisted %+v, registry has %+v", ep.ID, got[ep.ID], ep)
		}
	}
}
