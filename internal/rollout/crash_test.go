package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// errCrash is the error of a write the test made fail.
var errCrash = errors.New("the control plane died")

// crashStore numbers the engine's writes (Put, Delete, UpdateStatus: one
// resource each) and makes write failAt fail: before it lands (lost: the
// store never saw it) or, with landed, after it landed (the process died
// before it learnt so). After every write that landed it checks that the
// mesh is safe to serve, and records what is not.
type crashStore struct {
	testStore
	mu         sync.Mutex
	n          int
	failAt     int
	landed     bool
	writes     []string
	violations []string
}

func (c *crashStore) write(what string, do func() error) error {
	c.mu.Lock()
	c.n++
	n := c.n
	c.writes = append(c.writes, what)
	c.mu.Unlock()
	if n == c.failAt && !c.landed {
		return fmt.Errorf("write %d (%s): %w", n, what, errCrash)
	}
	if err := do(); err != nil {
		return err
	}
	if v := safeToServe(c.testStore); v != "" {
		c.mu.Lock()
		c.violations = append(c.violations, fmt.Sprintf("after write %d (%s): %s", n, what, v))
		c.mu.Unlock()
	}
	if n == c.failAt {
		return fmt.Errorf("after write %d (%s): %w", n, what, errCrash)
	}
	return nil
}

func (c *crashStore) Put(ctx context.Context, r *mesh.Resource) (rev uint64, err error) {
	err = c.write(fmt.Sprintf("put %s %s", r.Kind, r.Metadata.Name), func() error { rev, err = c.testStore.Put(ctx, r); return err })
	return rev, err
}

func (c *crashStore) Delete(ctx context.Context, ref mesh.Ref) (rev uint64, err error) {
	err = c.write(fmt.Sprintf("delete %s %s", ref.Kind, ref.Name), func() error { rev, err = c.testStore.Delete(ctx, ref); return err })
	return rev, err
}

func (c *crashStore) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (out *mesh.Resource, err error) {
	what := "status"
	if st, ok := status.(*mesh.RolloutStatus); ok {
		what += " " + string(st.Phase)
	}
	err = c.write(what, func() error { out, err = c.testStore.UpdateStatus(ctx, ref, status, rv); return err })
	return out, err
}

// safeToServe returns what makes the mesh unsafe to serve, "" if nothing:
// every node the route targets and the service's node exist (the local
// store refuses a write that breaks this, the API server does not), the
// route's weights add up to 100, and every target with traffic is backed
// by a task set that is not draining.
func safeToServe(s Store) string {
	ctx := context.Background()
	route, err := s.Get(ctx, mesh.Ref{Kind: mesh.KindRoute, Mesh: meshName, Name: "echo-server-route"})
	if err != nil {
		return err.Error()
	}
	svc, err := s.Get(ctx, mesh.Ref{Kind: mesh.KindService, Mesh: meshName, Name: "echo-server"})
	if err != nil {
		return err.Error()
	}
	nodes := []string{svc.Service().VirtualNode}
	for _, t := range route.Route().Targets() {
		nodes = append(nodes, t.VirtualNode)
	}
	for _, n := range nodes {
		if _, err := s.Get(ctx, mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: n}); err != nil {
			return fmt.Sprintf("route %s, service node %s: %v", weights(route), svc.Service().VirtualNode, err)
		}
	}
	sets, err := s.List(ctx, mesh.KindTaskSet, meshName)
	if err != nil {
		return err.Error()
	}
	serving := map[string]bool{}
	for _, r := range sets {
		if ts := r.TaskSet(); !ts.Draining {
			serving[ts.VirtualNode] = true
		}
	}
	sum := 0
	for _, t := range route.Route().Targets() {
		sum += t.Weight
		if t.Weight > 0 && !serving[t.VirtualNode] {
			return fmt.Sprintf("route %s sends %d%% to %s, which no running task set backs", weights(route), t.Weight, t.VirtualNode)
		}
	}
	if sum != 100 {
		return fmt.Sprintf("route %s: weights add up to %d", weights(route), sum)
	}
	return ""
}

// names lists the mesh's resources of kind.
func (h *harness) names(kind mesh.Kind) string {
	h.t.Helper()
	rs, err := h.store.List(h.ctx, kind, meshName)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Metadata.Name)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// crashStores are the stores the crash tests run on: internal/store's
// memstore, and kubeStore, which is only what the API server promises.
var crashStores = []struct {
	name string
	new  func(now func() time.Time) testStore
	// lag puts an informer-like cache between the engine and the store.
	lag bool
}{
	{name: "real store", new: func(now func() time.Time) testStore { return newRealStore(now) }},
	{name: "kube-like store", new: func(func() time.Time) testStore { return newKubeStore() }},
	{name: "kube-like store behind a lagging cache", new: func(func() time.Time) testStore { return newKubeStore() }, lag: true},
}

// newCrashHarness starts a rollout of 1.0 in steps 50, 100 over a store of
// newStore, whose engine writes go through a crashStore failing write
// failAt (0: none).
func newCrashHarness(t *testing.T, newStore func(func() time.Time) testStore, lag bool, errRate float64, failAt int, landed bool) (*harness, *crashStore) {
	t.Helper()
	var h *harness
	s := newStore(func() time.Time {
		if h == nil { // seeding
			return t0
		}
		return h.clock.Now()
	})
	h = newHarnessOn(t, s)
	h.errRate = errRate
	h.start("1.0", 50, 100)
	cs := &crashStore{testStore: s, failAt: failAt, landed: landed}
	h.store = cs
	if lag {
		l := &lagging{Store: cs}
		h.engineStore = l
		h.beforePass = func() {
			if err := l.resync(h.ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.e = h.newEngine()
	return h, cs
}

// runCrashing reconciles to the end, restarting the engine (a new control
// plane over the persisted state) after every crash.
func runCrashing(t *testing.T, h *harness) *mesh.RolloutStatus {
	t.Helper()
	deadline := h.clock.Now().Add(10 * time.Minute)
	for {
		d, err := h.reconcile()
		if err != nil {
			if !errors.Is(err, errCrash) {
				t.Fatalf("Reconcile: %v", err)
			}
			h.e = h.newEngine()
			d = time.Second
		}
		st := h.status()
		if st.Phase.Terminal() {
			return st
		}
		if h.clock.Now().After(deadline) {
			t.Fatalf("not done: %s", dump(st))
		}
		h.advance(max(d, time.Millisecond))
	}
}

// TestCrashBetweenWrites: on the real store and on a store that is only
// what the API server promises (kubeStore), on the fake clock, the write
// numbered n of a rollout (every write of one resource, the rollout's
// status included) fails, before or after it lands, for every n; the
// control plane then restarts (a new engine over the persisted state). The
// rollout still reaches the end it reaches without a crash, having created
// nothing twice and left nothing behind, and the mesh was safe to serve
// after every write.
func TestCrashBetweenWrites(t *testing.T) {
	scenarios := []struct {
		name    string
		errRate float64
		check   func(t *testing.T, h *harness, st *mesh.RolloutStatus)
	}{
		{name: "deploy", check: func(t *testing.T, h *harness, st *mesh.RolloutStatus) {
			if st.Phase != mesh.PhaseSucceeded || st.Message != "Version 0.9 retired" {
				t.Fatalf("phase %s (%s), want Succeeded; events:\n%s", st.Phase, st.Message, events(st))
			}
			if got := h.route(); got != "echo-server-1-0=100" {
				t.Errorf("route = %s, want echo-server-1-0=100", got)
			}
			for _, k := range []mesh.Kind{mesh.KindVirtualNode, mesh.KindTaskSet} {
				if got := h.names(k); got != "echo-server-1-0" {
					t.Errorf("%s = %s, want echo-server-1-0 only", k, got)
				}
			}
			if got := h.get(mesh.KindService, "echo-server").Service().VirtualNode; got != "echo-server-1-0" {
				t.Errorf("service virtualNode = %s", got)
			}
			if len(st.History) != 2 || st.History[1].Version != "1.0" {
				t.Errorf("history = %s", dump(st.History))
			}
		}},
		{name: "rollback", errRate: 0.2, check: func(t *testing.T, h *harness, st *mesh.RolloutStatus) {
			checkRolledBack(t, h, st, mesh.PhaseRolledBack, "success rate")
			for _, k := range []mesh.Kind{mesh.KindVirtualNode, mesh.KindTaskSet} {
				if got := h.names(k); got != "echo-server-0-9" {
					t.Errorf("%s = %s, want echo-server-0-9 only", k, got)
				}
			}
		}},
	}
	for _, store := range crashStores {
		for _, sc := range scenarios {
			t.Run(store.name+"/"+sc.name, func(t *testing.T) {
				// A run without a crash counts the writes.
				h, cs := newCrashHarness(t, store.new, store.lag, sc.errRate, 0, false)
				sc.check(t, h, runCrashing(t, h))
				if len(cs.violations) > 0 {
					t.Fatalf("unsafe without a crash:\n%s", strings.Join(cs.violations, "\n"))
				}
				total, writes := cs.n, cs.writes
				if total < 10 {
					t.Fatalf("only %d writes: %q", total, writes)
				}
				for n := 1; n <= total; n++ {
					for _, landed := range []bool{false, true} {
						how := "lost"
						if landed {
							how = "landed"
						}
						t.Run(fmt.Sprintf("write %d %s %s", n, writes[n-1], how), func(t *testing.T) {
							h, cs := newCrashHarness(t, store.new, store.lag, sc.errRate, n, landed)
							sc.check(t, h, runCrashing(t, h))
							if len(cs.violations) > 0 {
								t.Errorf("unsafe to serve:\n%s", strings.Join(cs.violations, "\n"))
							}
							if cs.n < n {
								t.Errorf("the crash at write %d never happened (%d writes)", n, cs.n)
							}
						})
					}
				}
			})
		}
	}
}

// TestAbortAfterPartialStart: the control plane dies after each of the
// writes that create the new version (node, task set, route target), and
// the user aborts before it is back: the restarted engine finds what was
// made from the status and labels, and removes all of it.
func TestAbortAfterPartialStart(t *testing.T) {
	for _, store := range crashStores {
		for n := 1; n <= 3; n++ {
			t.Run(fmt.Sprintf("%s/%d", store.name, n), func(t *testing.T) {
				h, cs := newCrashHarness(t, store.new, store.lag, 0, n, true)
				if _, err := h.reconcile(); !errors.Is(err, errCrash) {
					t.Fatalf("Reconcile: %v, want the crash at write %d", err, n)
				}
				h.e = h.newEngine()
				if h.beforePass != nil {
					h.beforePass() // the cache catches up before the user's abort
				}
				if err := h.e.Control(h.ctx, h.ref, ActionAbort); err != nil {
					t.Fatal(err)
				}
				st := runCrashing(t, h)
				checkRolledBack(t, h, st, mesh.PhaseAborted, "aborted on request")
				for _, k := range []mesh.Kind{mesh.KindVirtualNode, mesh.KindTaskSet} {
					if got := h.names(k); got != "echo-server-0-9" {
						t.Errorf("%s = %s, want echo-server-0-9 only", k, got)
					}
				}
				if len(cs.violations) > 0 {
					t.Errorf("unsafe to serve:\n%s", strings.Join(cs.violations, "\n"))
				}
			})
		}
	}
}
