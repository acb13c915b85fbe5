// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/store"
)

// Opener returns a new, empty store with the given options; the suite
// closes it.
type Opener func(t *testing.T, opts store.Options) store.Store

// Context returns a context that ends with the test or after a minute.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Base returns a small consistent topology: mesh m, nodes a and b, router
// r, route rt (a:100, b:0), virtual service s.m.local on the router.
func Base() []*mesh.Resource {
	return []*mesh.Resource{
		mesh.New(mesh.KindMesh, "", "m", nil),
		mesh.New(mesh.KindVirtualNode, "m", "a", &mesh.VirtualNodeSpec{Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: "grpc"}}}}),
		mesh.New(mesh.KindVirtualNode, "m", "b", &mesh.VirtualNodeSpec{Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: "grpc"}}}}),
		mesh.New(mesh.KindVirtualRouter, "m", "r", nil),
		Route(100, 0),
		mesh.New(mesh.KindVirtualService, "m", "s.m.local", &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "r"}}}),
	}
}

// Route returns route m/rt splitting wa:wb between nodes a and b.
func Route(wa, wb int) *mesh.Resource {
	return mesh.New(mesh.KindRoute, "m", "rt", &mesh.RouteSpec{VirtualRouterName: "r", GRPCRoute: &mesh.GRPCRoute{
		Match:  mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
		Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "a", Weight: wa}, {VirtualNode: "b", Weight: wb}}},
	}})
}

var (
	refMesh  = mesh.Ref{Kind: mesh.KindMesh, Name: "m"}
	refA     = mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: "m", Name: "a"}
	refB     = mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: "m", Name: "b"}
	refRoute = mesh.Ref{Kind: mesh.KindRoute, Mesh: "m", Name: "rt"}
)

func mustCommit(t *testing.T, s store.Store, puts []*mesh.Resource, deletes []mesh.Ref) *store.CommitResult {
	t.Helper()
	res, err := s.Commit(Context(t), puts, deletes)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return res
}

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	newStore := func(t *testing.T, opts store.Options) store.Store {
		s := open(t, opts)
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("CommitResultsAndVersions", func(t *testing.T) { testCommit(t, newStore(t, store.Options{})) })
	t.Run("ValidationAbortsEverything", func(t *testing.T) { testAbort(t, newStore(t, store.Options{})) })
	t.Run("Conflicts", func(t *testing.T) { testConflicts(t, newStore(t, store.Options{})) })
	t.Run("DeleteInUse", func(t *testing.T) { testDeleteInUse(t, newStore(t, store.Options{})) })
	t.Run("Status", func(t *testing.T) { testStatus(t, newStore(t, store.Options{})) })
	t.Run("Snapshots", func(t *testing.T) { testSnapshots(t, newStore(t, store.Options{})) })
	t.Run("Endpoints", func(t *testing.T) { testEndpoints(t, newStore(t, store.Options{})) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, newStore(t, store.Options{})) })
	t.Run("SlowWatcherResyncs", func(t *testing.T) { testSlowWatcher(t, newStore(t, store.Options{WatchBuffer: 4})) })
	t.Run("ConcurrentReadModifyWrite", func(t *testing.T) { testConcurrent(t, newStore(t, store.Options{})) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open(t, store.Options{})) })
}

func testCommit(t *testing.T, s store.Store) {
	ctx := Context(t)
	res := mustCommit(t, s, Base(), nil)
	if got, want := res.Revision, uint64(1); got != want {
		t.Errorf("revision: got %d, want %d", got, want)
	}
	for _, r := range res.Results {
		if r.Result != store.Created || r.Resource.Metadata.ResourceVersion != "1" || r.Resource.Metadata.CreatedAt == "" {
			t.Errorf("%s: got %s version %q createdAt %q, want created version 1", r.Ref, r.Result, r.Resource.Metadata.ResourceVersion, r.Resource.Metadata.CreatedAt)
		}
	}
	// The same again changes nothing, and the revision stays.
	res = mustCommit(t, s, Base(), nil)
	for _, r := range res.Results {
		if r.Result != store.Unchanged || r.Resource.Metadata.ResourceVersion != "1" {
			t.Errorf("%s: got %s version %q, want unchanged version 1", r.Ref, r.Result, r.Resource.Metadata.ResourceVersion)
		}
	}
	if got := res.Revision; got != 1 {
		t.Errorf("revision after unchanged commit: got %d, want 1", got)
	}
	// A weight change configures only the route.
	base := Base()
	base[4] = Route(50, 50)
	res = mustCommit(t, s, base, nil)
	if res.Revision != 2 {
		t.Errorf("revision: got %d, want 2", res.Revision)
	}
	_ = res
	got, err := s.Get(ctx, refRoute)
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata.ResourceVersion != "2" || got.Route().GRPCRoute.Action.WeightedTargets[1].Weight != 50 {
		t.Errorf("route: got version %q weights %+v, want version 2 and b=50", got.Metadata.ResourceVersion, got.Route().GRPCRoute.Action.WeightedTargets)
	}
	a, _ := s.Get(ctx, refA)
	if a.Metadata.ResourceVersion != "1" {
		t.Errorf("unchanged node: got version %q, want 1", a.Metadata.ResourceVersion)
	}
	// Labels are content.
	m := mesh.New(mesh.KindMesh, "", "m", nil)
	m.Metadata.Labels = map[string]string{"team": "x"}
	res = mustCommit(t, s, []*mesh.Resource{m}, nil)
	if res.Results[0].Result != store.Configured {
		t.Errorf("label change: got %s, want configured", res.Results[0].Result)
	}
	// List.
	nodes, err := s.List(ctx, mesh.KindVirtualNode, "m")
	if err != nil || len(nodes) != 2 || nodes[0].Metadata.Name != "a" || nodes[1].Metadata.Name != "b" {
		t.Errorf("List nodes: got %d, %v; want a, b", len(nodes), err)
	}
	if all, _ := s.List(ctx, mesh.KindVirtualNode, ""); len(all) != 2 {
		t.Errorf("List all meshes: got %d, want 2", len(all))
	}
	if none, _ := s.List(ctx, mesh.KindVirtualNode, "other"); len(none) != 0 {
		t.Errorf("List other mesh: got %d, want 0", len(none))
	}
	// Delete, then Get is ENotFound, and deleting again is ENotFound.
	res = mustCommit(t, s, nil, []mesh.Ref{{Kind: mesh.KindVirtualService, Mesh: "m", Name: "s.m.local"}})
	if len(res.Deleted) != 1 {
		t.Errorf("Deleted: got %v, want one", res.Deleted)
	}
	if _, err := s.Get(ctx, mesh.Ref{Kind: mesh.KindVirtualService, Mesh: "m", Name: "s.m.local"}); !mesh.IsNotFound(err) {
		t.Errorf("Get of deleted: got %v, want ENotFound", err)
	}
	if _, err := s.Commit(ctx, nil, []mesh.Ref{{Kind: mesh.KindVirtualService, Mesh: "m", Name: "s.m.local"}}); !mesh.IsNotFound(err) {
		t.Errorf("delete of missing: got %v, want ENotFound", err)
	}
	if got := s.Revision(); got != res.Revision {
		t.Errorf("Revision(): got %d, want %d", got, res.Revision)
	}
}

func testAbort(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil)
	before, _ := s.State(ctx)
	for _, tc := range []struct {
		name    string
		puts    []*mesh.Resource
		deletes []mesh.Ref
		code    string
		want    string
	}{
		{"weight 150 with a valid put", []*mesh.Resource{mesh.New(mesh.KindVirtualNode, "m", "c", nil), Route(150, 0)}, nil, mesh.EInvalid,
			"spec.grpcRoute.action.weightedTargets[0].weight: must be 0..100, got 150"},
		{"route to a missing node", []*mesh.Resource{mesh.New(mesh.KindRoute, "m", "rt", &mesh.RouteSpec{VirtualRouterName: "r", GRPCRoute: &mesh.GRPCRoute{Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "zz", Weight: 1}}}}})}, nil, mesh.EInvalid,
			"virtualnode zz not found in mesh m"},
		{"duplicate puts", []*mesh.Resource{mesh.New(mesh.KindVirtualNode, "m", "c", nil), mesh.New(mesh.KindVirtualNode, "m", "c", nil)}, nil, mesh.EInvalid,
			"duplicate virtualnode m/c"},
		{"put and delete of one resource", []*mesh.Resource{mesh.New(mesh.KindVirtualNode, "m", "c", nil)}, []mesh.Ref{{Kind: mesh.KindVirtualNode, Mesh: "m", Name: "c"}}, mesh.EInvalid,
			"both put and deleted"},
		{"valid put with a missing delete", []*mesh.Resource{mesh.New(mesh.KindVirtualNode, "m", "c", nil)}, []mesh.Ref{{Kind: mesh.KindVirtualNode, Mesh: "m", Name: "nope"}}, mesh.ENotFound,
			"VirtualNode m/nope not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Commit(ctx, tc.puts, tc.deletes)
			if err == nil || !strings.Contains(err.Error(), tc.want) || mesh.ErrorCode(err) != tc.code {
				t.Fatalf("got %v (code %q), want %s containing %q", err, mesh.ErrorCode(err), tc.code, tc.want)
			}
			after, _ := s.State(ctx)
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("a failed commit changed the store (-before +after):\n%s", diff)
			}
		})
	}
	if fs, ok := s.(interface{ FailWrites(error) }); ok {
		t.Run("backend failure", func(t *testing.T) {
			fs.FailWrites(errors.New("disk full"))
			_, err := s.Commit(ctx, []*mesh.Resource{Route(0, 100)}, nil)
			fs.FailWrites(nil)
			if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("got %v, want the disk error and that nothing changed", err)
			}
			after, _ := s.State(ctx)
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("a failed write changed the store (-before +after):\n%s", diff)
			}
		})
	}
}

func testConflicts(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil)
	r, _ := s.Get(ctx, refRoute)
	stale := r.Clone()
	r.Route().GRPCRoute.Action.WeightedTargets[1].Weight = 10
	if _, err := s.Commit(ctx, []*mesh.Resource{r}, nil); err != nil {
		t.Fatalf("commit with current version: %v", err)
	}
	stale.Route().GRPCRoute.Action.WeightedTargets[1].Weight = 20
	_, err := s.Commit(ctx, []*mesh.Resource{stale}, nil)
	if !mesh.IsConflict(err) || !strings.Contains(err.Error(), "Route m/rt") || !strings.Contains(err.Error(), "you have resourceVersion 1, the store has 2") {
		t.Errorf("stale put: got %v, want EConflict naming the route and both versions", err)
	}
	_, err = s.CommitVersioned(ctx, nil, []store.Deletion{{Ref: refRoute, ResourceVersion: "1"}})
	if !mesh.IsConflict(err) {
		t.Errorf("stale delete: got %v, want EConflict", err)
	}
	n := mesh.New(mesh.KindVirtualNode, "m", "new", nil)
	n.Metadata.ResourceVersion = "5"
	if _, err := s.Commit(ctx, []*mesh.Resource{n}, nil); !mesh.IsConflict(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("create with a version: got %v, want EConflict saying it does not exist", err)
	}
	if _, err := s.CommitVersioned(ctx, nil, []store.Deletion{{Ref: refRoute, ResourceVersion: "2"}}); err != nil {
		t.Errorf("delete with current version: %v", err)
	}
}

func testDeleteInUse(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil)
	_, err := s.Commit(ctx, nil, []mesh.Ref{refA})
	if mesh.ErrorCode(err) != mesh.EInUse || !strings.Contains(err.Error(), "virtualnode a is still a target of route m/rt; remove it from the route first") {
		t.Errorf("delete of a targeted node: got %v", err)
	}
	_, err = s.Commit(ctx, nil, []mesh.Ref{refMesh})
	if mesh.ErrorCode(err) != mesh.EInUse || !strings.Contains(err.Error(), "mesh m still has 5 resource(s)") {
		t.Errorf("delete of a non-empty mesh: got %v", err)
	}
	// A weight of 0 still refers to the node; removing the target and
	// deleting the node in one commit is fine.
	if _, err := s.Commit(ctx, []*mesh.Resource{Route(0, 100)}, []mesh.Ref{refA}); mesh.ErrorCode(err) != mesh.EInUse {
		t.Errorf("delete of a node at weight 0: got %v, want EInUse", err)
	}
	onlyB := Route(0, 100)
	onlyB.Route().GRPCRoute.Action.WeightedTargets = onlyB.Route().GRPCRoute.Action.WeightedTargets[1:]
	mustCommit(t, s, []*mesh.Resource{onlyB}, []mesh.Ref{refA})
	// Everything at once, in any order, is fine.
	var all []mesh.Ref
	st, _ := s.State(ctx)
	for ref := range st.Resources {
		all = append(all, ref)
	}
	mustCommit(t, s, nil, all)
	if st, _ := s.State(ctx); st.Len() != 0 {
		t.Errorf("after deleting everything: got %d resources", st.Len())
	}
}

func testStatus(t *testing.T, s store.Store) {
	ctx := Context(t)
	svc := mesh.New(mesh.KindService, "m", "svc", &mesh.ServiceSpec{VirtualNode: "a", Program: mesh.Program{Package: "./cmd/x"}, Port: 1})
	ro := mesh.New(mesh.KindRollout, "m", "svc", &mesh.RolloutSpec{Service: "svc"})
	res := mustCommit(t, s, append(Base(), svc, ro), nil)
	rv := res.Results[len(res.Results)-1].Resource.Metadata.ResourceVersion
	ref := ro.Ref()
	got, err := s.UpdateStatus(ctx, ref, &mesh.RolloutStatus{Phase: mesh.PhaseShifting, Weight: 50}, rv)
	if err != nil {
		t.Fatal(err)
	}
	if st := got.RolloutStatus(); st == nil || st.Phase != mesh.PhaseShifting || got.Metadata.ResourceVersion == rv {
		t.Errorf("UpdateStatus: got status %+v version %q", got.Status, got.Metadata.ResourceVersion)
	}
	if _, err := s.UpdateStatus(ctx, ref, &mesh.RolloutStatus{Phase: mesh.PhaseFailed}, rv); !mesh.IsConflict(err) {
		t.Errorf("UpdateStatus with a stale version: got %v, want EConflict", err)
	}
	// A map is converted to the typed status.
	if _, err := s.UpdateStatus(ctx, ref, map[string]any{"phase": "Baking", "weight": 50}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateStatus(ctx, ref, map[string]any{"phaze": "Baking"}, ""); mesh.ErrorCode(err) != mesh.EInvalid {
		t.Errorf("UpdateStatus with an unknown field: got %v, want EInvalid", err)
	}
	// Apply keeps the status.
	ro2 := mesh.New(mesh.KindRollout, "m", "svc", &mesh.RolloutSpec{Service: "svc", Steps: []int{10, 100}})
	ro2.Status = &mesh.RolloutStatus{Phase: mesh.PhaseFailed}
	mustCommit(t, s, []*mesh.Resource{ro2}, nil)
	got, _ = s.Get(ctx, ref)
	if st := got.RolloutStatus(); st == nil || st.Phase != mesh.PhaseBaking || got.Rollout().Steps[0] != 10 {
		t.Errorf("after apply: got status %+v steps %v, want Baking kept and steps updated", got.Status, got.Rollout().Steps)
	}
	if _, err := s.UpdateStatus(ctx, mesh.Ref{Kind: mesh.KindRollout, Mesh: "m", Name: "nope"}, nil, ""); !mesh.IsNotFound(err) {
		t.Errorf("UpdateStatus of a missing resource: got %v, want ENotFound", err)
	}
}

func testSnapshots(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil)
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != 1 || st.Len() != 6 {
		t.Fatalf("State: got revision %d, %d resources; want 1, 6", st.Revision, st.Len())
	}
	if err := mesh.ValidateState(st); err != nil {
		t.Errorf("ValidateState of a stored state: %v", err)
	}
	// Mutating what the store returned changes nothing inside it.
	st.Get(refRoute).Route().GRPCRoute.Action.WeightedTargets[0].Weight = 7
	r, _ := s.Get(ctx, refRoute)
	r.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 8
	r2, _ := s.Get(ctx, refRoute)
	if got := r2.Route().GRPCRoute.Action.WeightedTargets[0].Weight; got != 100 {
		t.Errorf("store changed through a returned value: got weight %d, want 100", got)
	}
	// Mutating what was committed changes nothing either.
	puts := []*mesh.Resource{Route(40, 60)}
	mustCommit(t, s, puts, nil)
	puts[0].Route().GRPCRoute.Action.WeightedTargets[0].Weight = 1
	r3, _ := s.Get(ctx, refRoute)
	if got := r3.Route().GRPCRoute.Action.WeightedTargets[0].Weight; got != 40 {
		t.Errorf("store changed through a committed value: got weight %d, want 40", got)
	}
}

func testEndpoints(t *testing.T, s store.Store) {
	ctx := Context(t)
	ep := &mesh.Endpoint{ID: "t2", Mesh: "m", Service: "svc", Address: "127.0.0.2", Port: 50051, Attributes: map[string]string{"version": "1"}, State: mesh.TaskRunning, Health: mesh.HealthHealthy}
	if err := s.PutEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(ctx, &mesh.Endpoint{ID: "t1", Mesh: "m"}); err != nil {
		t.Fatal(err)
	}
	ep.Attributes["version"] = "changed after put"
	eps, err := s.ListEndpoints(ctx)
	if err != nil || len(eps) != 2 || eps[0].ID != "t1" || eps[1].Attributes["version"] != "1" {
		t.Fatalf("ListEndpoints: got %+v, %v", eps, err)
	}
	if err := s.DeleteEndpoint(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEndpoint(ctx, "t1"); !mesh.IsNotFound(err) {
		t.Errorf("second delete: got %v, want ENotFound", err)
	}
	if err := s.PutEndpoint(ctx, &mesh.Endpoint{}); mesh.ErrorCode(err) != mesh.EInvalid {
		t.Errorf("endpoint without id: got %v, want EInvalid", err)
	}
}

func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

// Event is store.Event (shorter in this file).
type Event = store.Event

func testWatch(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil) // before the watch: not seen
	wctx, cancel := context.WithCancel(ctx)
	ch := s.Watch(wctx)
	mustCommit(t, s, []*mesh.Resource{Route(0, 100)}, nil)
	ev := next(t, ch)
	if ev.Type != store.EventPut || ev.Ref != refRoute || ev.Revision != 2 || ev.Resource.Route().GRPCRoute.Action.WeightedTargets[1].Weight != 100 {
		t.Errorf("first event: got %s %s rev %d, want PUT %s rev 2", ev.Type, ev.Ref, ev.Revision, refRoute)
	}
	mustCommit(t, s, nil, []mesh.Ref{{Kind: mesh.KindVirtualService, Mesh: "m", Name: "s.m.local"}})
	if ev := next(t, ch); ev.Type != store.EventDelete || ev.Revision != 3 || ev.Resource == nil {
		t.Errorf("second event: got %s rev %d, want DELETE rev 3 with the old resource", ev.Type, ev.Revision)
	}
	if err := s.PutEndpoint(ctx, &mesh.Endpoint{ID: "x", Mesh: "m"}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Type != store.EventEndpoint || ev.Endpoint == nil || ev.Ref.Name != "x" {
		t.Errorf("third event: got %+v, want ENDPOINT x", ev)
	}
	cancel()
	for range ch { // closes once ctx ends
	}
}

func testSlowWatcher(t *testing.T, s store.Store) {
	ctx := Context(t)
	mustCommit(t, s, Base(), nil)
	ch := s.Watch(ctx)
	// Nobody reads: writers must not block.
	const n = 200
	for i := 0; i < n; i++ {
		mustCommit(t, s, []*mesh.Resource{Route(100-i%2, i%2)}, nil)
	}
	final := s.Revision()
	sawResync := false
	for {
		ev := next(t, ch)
		if ev.Type == store.EventResync {
			sawResync = true
			st, _ := s.State(ctx)
			if st.Revision < ev.Revision {
				t.Errorf("State after RESYNC: got revision %d, want >= %d", st.Revision, ev.Revision)
			}
		}
		if ev.Revision == final {
			break
		}
	}
	if !sawResync {
		t.Errorf("got no RESYNC after %d unread events with a buffer of 4", n)
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	ctx := Context(t)
	counter := mesh.New(mesh.KindMesh, "", "counter", nil)
	counter.Metadata.Labels = map[string]string{"n": "0"}
	mustCommit(t, s, []*mesh.Resource{counter}, nil)
	ref := counter.Ref()
	const workers, tries = 8, 25
	var (
		mu   sync.Mutex
		wins int
		errs []error
	)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < tries; i++ {
				r, err := s.Get(ctx, ref)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				n, _ := strconv.Atoi(r.Metadata.Labels["n"])
				r.Metadata.Labels["n"] = strconv.Itoa(n + 1)
				_, err = s.Commit(ctx, []*mesh.Resource{r}, nil)
				mu.Lock()
				switch {
				case err == nil:
					wins++
				case mesh.IsConflict(err):
				default:
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	r, _ := s.Get(ctx, ref)
	if got, want := r.Metadata.Labels["n"], strconv.Itoa(wins); got != want {
		t.Errorf("counter: got %s, want %s (the number of winning writes)", got, want)
	}
	if wins == 0 {
		t.Errorf("got no winning writes")
	}
	t.Logf("%d of %d writes won", wins, workers*tries)
}

func testClosed(t *testing.T, s store.Store) {
	ctx := Context(t)
	ch := s.Watch(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range ch { // closed by Close
	}
	if _, err := s.Commit(ctx, Base(), nil); mesh.ErrorCode(err) != mesh.EUnavailable {
		t.Errorf("Commit after Close: got %v, want EUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
