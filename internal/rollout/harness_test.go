package rollout

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func inf() float64 { return math.Inf(1) }

const meshName = "demo"

var t0 = time.Date(2026, 9, 30, 12, 0, 0, 0, time.UTC)

// harness is an engine over fakes, with a traffic model: while the clock
// moves, the new version receives rps*weight/100 requests a second, errRate
// of them failing.
type harness struct {
	t       *testing.T
	ctx     context.Context
	store   testStore
	rt      *fakeRuntime
	conv    *fakeConv
	metrics *fakeMetrics
	clock   *clock.Fake
	e       *Engine
	ref     mesh.Ref
	seeded  int // route log entries from seeding
	rps     float64
	errRate float64
	carry   float64
	// engineStore, if set, is the store the engine gets in place of store
	// (a lagging view); beforePass runs before every pass.
	engineStore Store
	beforePass  func()
}

func newHarness(t *testing.T) *harness { return newHarnessOn(t, newMemStore()) }

// testStore is a Store that logs the route's weights at every commit, and
// commits several resources at once for seeding.
type testStore interface {
	Store
	Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (uint64, error)
	routes() []string
}

// mem returns the fake store, for tests that make it fail.
func (h *harness) mem() *memStore {
	h.t.Helper()
	m, ok := h.store.(*memStore)
	if !ok {
		h.t.Fatalf("store is %T, want the fake", h.store)
	}
	return m
}

func newHarnessOn(t *testing.T, s testStore) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	h := &harness{
		t: t, ctx: ctx, store: s,
		rt:      &fakeRuntime{behavior: map[string]behavior{}},
		conv:    &fakeConv{auto: true},
		metrics: &fakeMetrics{},
		clock:   clock.NewFake(t0),
		ref:     mesh.Ref{Kind: mesh.KindRollout, Mesh: meshName, Name: "echo-server"},
		rps:     100,
	}
	h.seed()
	h.e = h.newEngine()
	return h
}

func (h *harness) newEngine() *Engine {
	var s Store = h.store
	if h.engineStore != nil {
		s = h.engineStore
	}
	return NewEngine(Config{
		Store: s, Endpoints: h.rt, Convergence: h.conv, Metrics: h.metrics, Clock: h.clock,
		Logger: slog.New(slog.DiscardHandler),
	})
}

// seed stores the echo stack with version 0.9 running.
func (h *harness) seed() {
	h.t.Helper()
	hc := &mesh.HealthCheck{Protocol: "grpc", IntervalMillis: 5000, TimeoutMillis: 2000, HealthyThreshold: 2, UnhealthyThreshold: 3}
	rs := []*mesh.Resource{
		mesh.New(mesh.KindMesh, "", meshName, &mesh.MeshSpec{}),
		mesh.New(mesh.KindVirtualNode, meshName, "echo-server-0-9", &mesh.VirtualNodeSpec{
			Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: "grpc"}, HealthCheck: hc}},
			ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: "echo-server",
				Attributes: []mesh.Attribute{{Key: "version", Value: "0.9"}}}},
		}),
		mesh.New(mesh.KindVirtualRouter, meshName, "echo-server", &mesh.VirtualRouterSpec{
			Listeners: []mesh.RouterListener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: "grpc"}}}}),
		mesh.New(mesh.KindRoute, meshName, "echo-server-route", &mesh.RouteSpec{
			VirtualRouterName: "echo-server",
			GRPCRoute: &mesh.GRPCRoute{Match: mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
				Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "echo-server-0-9", Weight: 100}}}},
		}),
		mesh.New(mesh.KindVirtualService, meshName, "echo-server.echo.local", &mesh.VirtualServiceSpec{
			Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "echo-server"}}}),
		mesh.New(mesh.KindService, meshName, "echo-server", &mesh.ServiceSpec{
			VirtualNode: "echo-server-0-9", Program: mesh.Program{Package: "./cmd/echo-server"}, DesiredCount: 2, Port: 8080}),
		mesh.New(mesh.KindTaskSet, meshName, "echo-server-0-9", &mesh.TaskSetSpec{
			Service: "echo-server", VirtualNode: "echo-server-0-9", Version: "0.9", Revision: 1,
			Command: []string{"/artifacts/sha256-09"}, Artifact: "sha256:09", Env: map[string]string{"GREETING": "Hello"},
			DesiredCount: 2, Port: 8080}),
	}
	if _, err := h.store.Commit(h.ctx, rs, nil); err != nil {
		h.t.Fatalf("seed: %v", err)
	}
	h.seeded = len(h.store.routes())
}

func rolloutOf(version string, steps ...int) *mesh.Resource {
	return mesh.New(mesh.KindRollout, meshName, "echo-server", &mesh.RolloutSpec{
		Service: "echo-server",
		Target: mesh.TaskSetSpec{Version: version, Command: []string{"/artifacts/sha256-" + version},
			Artifact: "sha256:" + version, Env: map[string]string{"ECHO_VERSION": version}},
		Steps:          steps,
		IntervalMillis: 10_000,
		TimeoutMillis:  30_000,
		// The tests of stalled clients set their own policy.
		AckTimeoutMillis: 30_000,
		OnStalledClient:  mesh.StalledRollback,
	})
}

func (h *harness) start(version string, steps ...int) {
	h.t.Helper()
	if _, err := h.e.Start(h.ctx, rolloutOf(version, steps...)); err != nil {
		h.t.Fatalf("Start(%s): %v", version, err)
	}
}

func (h *harness) status() *mesh.RolloutStatus {
	h.t.Helper()
	r, err := h.store.Get(h.ctx, h.ref)
	if err != nil {
		h.t.Fatalf("get rollout: %v", err)
	}
	return StatusOf(r)
}

// reconcile runs the fake runtime, then one Reconcile.
func (h *harness) reconcile() (time.Duration, error) {
	h.rt.sync(h.t, h.store)
	if h.beforePass != nil {
		h.beforePass()
	}
	return h.e.Reconcile(h.ctx, h.ref)
}

// advance moves the clock on by d, with the traffic of the new version's
// current weight.
func (h *harness) advance(d time.Duration) {
	st := h.status()
	if st.NewTaskSet != "" && st.Weight > 0 {
		n := h.rps*float64(st.Weight)/100*d.Seconds() + h.carry
		whole := math.Floor(n)
		h.carry = n - whole
		errs := int64(math.Round(whole * h.errRate))
		h.metrics.serve(st.NewTaskSet, st.NewTaskSet+"-0/1", int64(whole), errs)
	}
	h.clock.Advance(d)
}

// runUntil reconciles, advancing the clock by each requeue, until done
// holds or limit of fake time has passed; it returns the last status.
func (h *harness) runUntil(limit time.Duration, done func(*mesh.RolloutStatus) bool) *mesh.RolloutStatus {
	h.t.Helper()
	deadline := h.clock.Now().Add(limit)
	for {
		d, err := h.reconcile()
		if err != nil {
			h.t.Fatalf("Reconcile: %v", err)
		}
		st := h.status()
		if done(st) {
			return st
		}
		if !h.clock.Now().Before(deadline) {
			h.t.Fatalf("after %s: phase %s (%s), want done; events:\n%s", limit, st.Phase, st.Message, events(st))
		}
		if d <= 0 {
			d = time.Second
		}
		h.advance(d)
	}
}

func phaseIs(ps ...mesh.Phase) func(*mesh.RolloutStatus) bool {
	return func(st *mesh.RolloutStatus) bool {
		for _, p := range ps {
			if st.Phase == p {
				return true
			}
		}
		return false
	}
}

func events(st *mesh.RolloutStatus) string {
	var b strings.Builder
	for _, e := range st.Events {
		b.WriteString("  " + e.Time + " " + string(e.Phase) + ": " + e.Message + "\n")
	}
	return b.String()
}

func hasEvent(st *mesh.RolloutStatus, substr string) bool {
	for _, e := range st.Events {
		if strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

func (h *harness) exists(kind mesh.Kind, name string) bool {
	_, err := h.store.Get(h.ctx, mesh.Ref{Kind: kind, Mesh: meshName, Name: name})
	return err == nil
}

func (h *harness) get(kind mesh.Kind, name string) *mesh.Resource {
	h.t.Helper()
	r, err := h.store.Get(h.ctx, mesh.Ref{Kind: kind, Mesh: meshName, Name: name})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// routeLog returns the route's weights at each commit since seeding.
func (h *harness) routeLog() []string { return h.store.routes()[h.seeded:] }

func (h *harness) route() string { return weights(h.get(mesh.KindRoute, "echo-server-route")) }

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
