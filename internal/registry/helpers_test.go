package registry

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// newFakeClock returns the fake clock the checkers' tests drive: its timers
// fire only when the test advances it.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)) }

// waitTimers waits until exactly n timers are armed on clk, which is how a
// test knows the checkers have finished a check and armed their next timer,
// so checks can be counted one by one.
func waitTimers(t testing.TB, clk *clock.Fake, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		changed := clk.Changed()
		got := clk.Timers()
		if got == n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("fake clock: got %d armed timers after 10s, want %d", got, n)
		}
	}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countingHealth is grpc's own health server, counting Check calls.
type countingHealth struct {
	*health.Server
	checks atomic.Int64
}

func (h *countingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.checks.Add(1)
	return h.Server.Check(ctx, req)
}

// startHealthServer runs a real gRPC server with the health service on
// 127.0.0.1:0; its overall status ("") starts SERVING.
func startHealthServer(t testing.TB) (*countingHealth, int) {
	t.Helper()
	h := &countingHealth{Server: health.NewServer()}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, h)
	port, _ := serveLocal(t, func(lis net.Listener) { _ = s.Serve(lis) }, s.Stop)
	return h, port
}

// serveLocal listens on 127.0.0.1:0 and runs serve on the listener in a
// goroutine; it returns the port and a stop func that makes serve return
// (by calling halt, or by closing the listener if halt is nil) and waits for
// it. stop also runs when the test ends.
func serveLocal(t testing.TB, serve func(net.Listener), halt func()) (port int, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(lis)
	}()
	if halt == nil {
		halt = func() { lis.Close() }
	}
	stop = sync.OnceFunc(func() {
		halt()
		<-done
	})
	t.Cleanup(stop)
	return lis.Addr().(*net.TCPAddr).Port, stop
}

// acceptAndClose accepts connections on lis and closes them at once, until
// lis is closed.
func acceptAndClose(lis net.Listener) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// startAcceptServer accepts and closes connections on 127.0.0.1:0.
func startAcceptServer(t testing.TB) int {
	t.Helper()
	port, _ := serveLocal(t, acceptAndClose, nil)
	return port
}

func (h *countingHealth) set(serving bool) {
	s := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		s = healthpb.HealthCheckResponse_SERVING
	}
	h.SetServingStatus("", s)
}

// startHungServer accepts connections and never answers on them.
func startHungServer(t testing.TB) int {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	// Cleanups run last first: this one, after serveLocal's has stopped
	// accepting.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	port, _ := serveLocal(t, func(lis net.Listener) {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}, nil)
	return port
}

func newEndpoint(id string, port int) *mesh.Endpoint {
	return &mesh.Endpoint{
		ID:         id,
		Mesh:       "demo",
		Service:    "echo-server",
		Address:    "127.0.0.1",
		Port:       port,
		Attributes: map[string]string{mesh.AttrVersion: "v1"},
		Process:    &mesh.ProcessStatus{PID: 1000},
		State:      mesh.TaskRunning,
	}
}

func fixedPolicy(hc mesh.HealthCheck) PolicyFunc {
	return func(*mesh.Endpoint) *mesh.HealthCheck {
		cp := hc
		return &cp
	}
}

// startRun runs r.Run until the test ends or stop is called; stop returns
// once Run has returned, so every checker has finished.
func startRun(t testing.TB, r *Registry) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond on every registry change, and every 10ms, until it
// holds or 10s pass.
func waitFor(t testing.TB, r *Registry, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	ch, cancel := r.Subscribe()
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not true after 10s", what)
		}
	}
	return time.Since(start)
}

func get(t testing.TB, r *Registry, id string) *mesh.Endpoint {
	t.Helper()
	ep, ok := r.Get(id)
	if !ok {
		t.Fatalf("endpoint %q not registered", id)
	}
	return ep
}

func healthIs(r *Registry, id string, want mesh.HealthStatus) func() bool {
	return func() bool {
		ep, ok := r.Get(id)
		return ok && ep.Health == want
	}
}

// memPersister is an in-memory Persister.
type memPersister struct {
	mu  sync.Mutex
	eps map[string]*mesh.Endpoint
}

var _ Persister = (*memPersister)(nil)

func newMemPersister(eps ...*mesh.Endpoint) *memPersister {
	p := &memPersister{eps: make(map[string]*mesh.Endpoint)}
	for _, ep := range eps {
		p.eps[ep.ID] = clone(ep)
	}
	return p
}

func (p *memPersister) PutEndpoint(_ context.Context, ep *mesh.Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.eps[ep.ID] = clone(ep)
	return nil
}

func (p *memPersister) DeleteEndpoint(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.eps[id]; !ok {
		return mesh.Errorf(mesh.ENotFound, "endpoint %q not found", id)
	}
	delete(p.eps, id)
	return nil
}

func (p *memPersister) ListEndpoints(context.Context) ([]*mesh.Endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*mesh.Endpoint
	for _, ep := range p.eps {
		out = append(out, clone(ep))
	}
	return out, nil
}

func (p *memPersister) get(id string) (*mesh.Endpoint, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep, ok := p.eps[id]
	if !ok {
		return nil, false
	}
	return clone(ep), true
}

func itoa(i int) string { return strconv.Itoa(i) }
