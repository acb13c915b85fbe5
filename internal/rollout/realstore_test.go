package rollout

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/store/memstore"
)

// realStore is internal/store's in-memory store in the shape the engine
// declares (as the control plane adapts it), logging route weights.
type realStore struct {
	s  *memstore.Store
	mu sync.Mutex
	rl []string
}

var _ Store = (*realStore)(nil)

func newRealStore(now func() time.Time) *realStore {
	return &realStore{s: memstore.New(store.Options{Now: now})}
}

func (r *realStore) Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	return r.s.Get(ctx, ref)
}

func (r *realStore) List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	return r.s.List(ctx, kind, meshName)
}

func (r *realStore) Put(ctx context.Context, res *mesh.Resource) (uint64, error) {
	return r.Commit(ctx, []*mesh.Resource{res}, nil)
}

func (r *realStore) Delete(ctx context.Context, ref mesh.Ref) (uint64, error) {
	return r.Commit(ctx, nil, []mesh.Ref{ref})
}

func (r *realStore) Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (uint64, error) {
	res, err := r.s.Commit(ctx, puts, deletes)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range res.Results {
		if p.Ref.Kind == mesh.KindRoute && p.Result != store.Unchanged {
			r.rl = append(r.rl, weights(p.Resource))
		}
	}
	return res.Revision, nil
}

func (r *realStore) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	return r.s.UpdateStatus(ctx, ref, status, rv)
}

func (r *realStore) routes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.rl...)
}

// TestOnRealStore runs rollouts over internal/store's memstore: its
// validation accepts every commit the engine makes, a restarted engine
// resumes, and a failing version is rolled back.
func TestOnRealStore(t *testing.T) {
	newH := func(t *testing.T) *harness {
		var h *harness
		rs := newRealStore(func() time.Time {
			if h == nil { // seeding
				return t0
			}
			return h.clock.Now()
		})
		h = newHarnessOn(t, rs)
		return h
	}
	t.Run("deploy with a restart mid-bake", func(t *testing.T) {
		h := newH(t)
		h.start("1.0", 10, 50, 100)
		h.runUntil(time.Minute, func(st *mesh.RolloutStatus) bool { return st.Phase == mesh.PhaseBaking && st.StepIndex == 1 })
		h.e = h.newEngine()
		st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed))
		if st.Phase != mesh.PhaseSucceeded || st.Message != "Version 0.9 retired" {
			t.Fatalf("phase %s (%s %s), want Succeeded; events:\n%s", st.Phase, st.Message, st.Reason, events(st))
		}
		want := []string{
			"echo-server-0-9=100,echo-server-1-0=0",
			"echo-server-0-9=90,echo-server-1-0=10",
			"echo-server-0-9=50,echo-server-1-0=50",
			"echo-server-0-9=0,echo-server-1-0=100",
			"echo-server-1-0=100",
		}
		if got := h.routeLog(); len(got) != len(want) || got[3] != want[3] || got[4] != want[4] || got[1] != want[1] {
			t.Errorf("route changes = %q, want %q", got, want)
		}
		if h.exists(mesh.KindVirtualNode, "echo-server-0-9") || h.exists(mesh.KindTaskSet, "echo-server-0-9") {
			t.Error("old version not removed")
		}
		// The next deploy replaces the finished rollout and keeps history.
		h.start("1.1", 50, 100)
		st = h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed))
		if st.Phase != mesh.PhaseSucceeded || len(st.History) != 3 || st.Message != "Version 1.0 retired" {
			t.Fatalf("second deploy: phase %s history %d message %q", st.Phase, len(st.History), st.Message)
		}
	})
	t.Run("gate failure", func(t *testing.T) {
		h := newH(t)
		h.errRate = 0.2
		h.start("1.0", 50, 100)
		st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed))
		checkRolledBack(t, h, st, mesh.PhaseRolledBack, "success rate 80.0% < 99.0%")
	})
	t.Run("abort", func(t *testing.T) {
		h := newH(t)
		h.start("1.0", 50, 100)
		h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
		if err := h.e.Control(h.ctx, h.ref, ActionAbort); err != nil {
			t.Fatal(err)
		}
		st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseAborted, mesh.PhaseRolledBack, mesh.PhaseSucceeded))
		checkRolledBack(t, h, st, mesh.PhaseAborted, "aborted on request")
	})
}
