package rollout

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// kubeStore plays the Kubernetes API server as the Store seam allows it to
// be, no more: each object is versioned alone, nothing checks references
// between objects (a route may name a node that does not exist, a node may
// be deleted while a route targets it: only the engine's order of writes
// prevents that), a create of an object that exists is refused (the
// AlreadyExists conflict), and the revision a write returns is a counter of
// its own, as the control plane's publish generation is. Each object is
// checked alone, as a CRD's schema would.
type kubeStore struct {
	mu       sync.Mutex
	objs     map[mesh.Ref]*mesh.Resource
	rv       int
	gen      uint64
	routeLog []string
	nwrites  int // writes tried, landed or not
	// targetFromStatus presents Rollouts as the Kubernetes Store will. The
	// object's spec has no revision, and its user may edit the target at
	// any time: while a rollout is unfinished the spec shows the target it
	// began with (its version, from the status; on a cluster the whole
	// target, recorded in the status) and its revision; once it ended, the
	// object's own target, with the ended revision if it is the same
	// target, else 0 (not begun).
	targetFromStatus bool
}

// view is what a read returns of a stored object.
func (s *kubeStore) view(r *mesh.Resource) *mesh.Resource {
	r = r.Clone()
	spec, ok := r.Spec.(*mesh.RolloutSpec)
	if !s.targetFromStatus || !ok {
		return r
	}
	spec.Target.Revision = 0
	st, _ := r.Status.(*mesh.RolloutStatus)
	switch {
	case st == nil || st.Phase == "":
	case !st.Phase.Terminal():
		spec.Target.Version, spec.Target.Revision = st.NewVersion, st.Revision
	case st.NewVersion == spec.Target.Version:
		spec.Target.Revision = st.Revision
	}
	return r
}

func (s *kubeStore) writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nwrites
}

func newKubeStore() *kubeStore { return &kubeStore{objs: map[mesh.Ref]*mesh.Resource{}} }

func (s *kubeStore) Get(_ context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.objs[ref]
	if r == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", ref)
	}
	return s.view(r), nil
}

func (s *kubeStore) List(_ context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*mesh.Resource
	for ref, r := range s.objs {
		if ref.Kind == kind && (meshName == "" || ref.Mesh == meshName) {
			out = append(out, s.view(r))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out, nil
}

func (s *kubeStore) Put(_ context.Context, r *mesh.Resource) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nwrites++
	r = r.Clone()
	cur := s.objs[r.Ref()]
	switch {
	case r.Metadata.ResourceVersion == "" && cur != nil:
		return 0, mesh.Errorf(mesh.EConflict, "%s already exists", r.Ref())
	case r.Metadata.ResourceVersion != "" && (cur == nil || cur.Metadata.ResourceVersion != r.Metadata.ResourceVersion):
		return 0, mesh.Errorf(mesh.EConflict, "%s was changed concurrently", r.Ref())
	}
	// As the Kubernetes Store will, targetFromStatus makes a task set a
	// Deployment built from the Rollout object, not checked as a local one.
	if !(s.targetFromStatus && r.Kind == mesh.KindTaskSet) {
		if err := mesh.DefaultAndValidate(r); err != nil {
			return 0, err
		}
	}
	if cur != nil {
		r.Status = cur.Status
	}
	s.rv++
	r.Metadata.ResourceVersion = strconv.Itoa(s.rv)
	s.objs[r.Ref()] = r
	s.gen++
	if r.Kind == mesh.KindRoute {
		s.routeLog = append(s.routeLog, weights(r))
	}
	return s.gen, nil
}

func (s *kubeStore) Delete(_ context.Context, ref mesh.Ref) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nwrites++
	if s.objs[ref] == nil {
		return 0, mesh.Errorf(mesh.ENotFound, "%s not found", ref)
	}
	delete(s.objs, ref)
	s.gen++
	return s.gen, nil
}

func (s *kubeStore) UpdateStatus(_ context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nwrites++
	cur := s.objs[ref]
	if cur == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", ref)
	}
	if rv != "" && rv != cur.Metadata.ResourceVersion {
		return nil, mesh.Errorf(mesh.EConflict, "%s was changed concurrently", ref)
	}
	c := cur.Clone()
	c.Status = cloneStatus(status.(*mesh.RolloutStatus))
	s.rv++
	c.Metadata.ResourceVersion = strconv.Itoa(s.rv)
	s.objs[ref] = c
	return s.view(c), nil
}

// Commit seeds the store, one object after the other.
func (s *kubeStore) Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (uint64, error) {
	var gen uint64
	for _, r := range puts {
		g, err := s.Put(ctx, r)
		if err != nil {
			return 0, err
		}
		gen = g
	}
	for _, ref := range deletes {
		g, err := s.Delete(ctx, ref)
		if err != nil {
			return 0, err
		}
		gen = g
	}
	return gen, nil
}

func (s *kubeStore) routes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.routeLog...)
}

// lagging is an informer cache in front of a Store: reads are served from
// a copy taken by resync (before each pass, in the tests), so a pass never
// reads its own writes, nor anyone else's made since; writes go through.
type lagging struct {
	Store
	mu   sync.Mutex
	snap map[mesh.Ref]*mesh.Resource
}

func (l *lagging) resync(ctx context.Context) error {
	snap := map[mesh.Ref]*mesh.Resource{}
	for _, k := range []mesh.Kind{mesh.KindMesh, mesh.KindVirtualNode, mesh.KindVirtualRouter, mesh.KindRoute,
		mesh.KindVirtualService, mesh.KindService, mesh.KindTaskSet, mesh.KindRollout} {
		rs, err := l.Store.List(ctx, k, "")
		if err != nil {
			return err
		}
		for _, r := range rs {
			snap[r.Ref()] = r
		}
	}
	l.mu.Lock()
	l.snap = snap
	l.mu.Unlock()
	return nil
}

func (l *lagging) Get(_ context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.snap[ref]
	if r == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", ref)
	}
	return r.Clone(), nil
}

func (l *lagging) List(_ context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*mesh.Resource
	for ref, r := range l.snap {
		if ref.Kind == kind && (meshName == "" || ref.Mesh == meshName) {
			out = append(out, r.Clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out, nil
}

// TestStaleCacheKeepsControls: behind a cache that has not seen a pause
// yet, the engine's pass loses its status write to the pause, does not
// spin on the stale read, and does not overwrite the pause; once the cache
// catches up, the rollout pauses.
func TestStaleCacheKeepsControls(t *testing.T) {
	ks := newKubeStore()
	h := newHarnessOn(t, ks)
	h.start("1.0", 50, 100) // Start reads its own write: not behind a cache
	l := &lagging{Store: ks}
	h.engineStore = l
	resync := func() {
		if err := l.resync(h.ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.beforePass = resync
	h.e = h.newEngine()
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
	// The user pauses through the API server; the engine's cache is behind.
	h.beforePass = nil
	user := NewEngine(Config{Store: ks, Endpoints: h.rt, Convergence: h.conv, Metrics: h.metrics, Clock: h.clock})
	if err := user.Control(h.ctx, h.ref, ActionPause); err != nil {
		t.Fatal(err)
	}
	before := ks.writes()
	h.advance(10 * time.Second) // the bake ends: the pass wants to write
	if _, err := h.reconcile(); err != nil {
		t.Fatalf("Reconcile behind a stale cache: %v", err)
	}
	if st := h.status(); !st.Paused {
		t.Fatalf("the pause was overwritten: %s", dump(st))
	}
	if n := ks.writes() - before; n > 4 {
		t.Errorf("%d writes in one pass behind a stale cache, want a few (no spinning)", n)
	}
	h.beforePass = resync
	st := h.runUntil(time.Minute, phaseIs(mesh.PhasePaused))
	if !st.Paused || st.ResumePhase == "" {
		t.Errorf("status %s", dump(st))
	}
}

// TestBeginInPlace: a Rollout stored as its user wrote it (no revision, no
// status, a target without a command, as on Kubernetes) is begun in place:
// only its status is written, and the engine carries it out. Beginning it
// again changes nothing. A new version applied to the object while a
// rollout runs waits for it to end (the Store shows the running target
// meanwhile), then is begun as the next revision, history carried over.
func TestBeginInPlace(t *testing.T) {
	ks := newKubeStore()
	h := newHarnessOn(t, ks)
	ks.targetFromStatus = true
	noCommand := func(*mesh.TaskSetSpec) error { return nil }
	h.e = NewEngine(Config{Store: ks, Endpoints: h.rt, Convergence: h.conv, Metrics: h.metrics, Clock: h.clock, CheckTarget: noCommand})
	apply := func(version string) {
		t.Helper()
		r := rolloutOf(version, 50, 100)
		r.Spec.(*mesh.RolloutSpec).Target.Command = nil
		if cur, err := ks.Get(h.ctx, h.ref); err == nil {
			r.Metadata.ResourceVersion = cur.Metadata.ResourceVersion
		}
		if _, err := ks.Put(h.ctx, r); err != nil {
			t.Fatalf("apply %s: %v", version, err)
		}
	}
	apply("1.0")
	before := ks.writes()
	if _, err := h.e.Begin(h.ctx, h.ref); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	st := h.status()
	if st.Phase != mesh.PhasePending || st.Revision != 2 || st.OldVersion != "0.9" || st.Route != "echo-server-route" || ks.writes()-before != 1 {
		t.Fatalf("after Begin: %d writes, status %s", ks.writes()-before, dump(st))
	}
	if _, err := h.e.Begin(h.ctx, h.ref); err != nil || ks.writes()-before != 1 {
		t.Errorf("Begin again: %v, %d writes, want nothing done", err, ks.writes()-before)
	}
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
	apply("1.1")
	if _, err := h.e.Begin(h.ctx, h.ref); err != nil {
		t.Errorf("Begin during a rollout: %v, want nothing done", err)
	}
	// The runtime reconciles only what has begun: once the rollout of 1.0
	// ends, the object's 1.1 shows as not begun, and is begun next.
	stored := func() *mesh.RolloutStatus {
		r, err := ks.Get(h.ctx, h.ref)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.(*mesh.RolloutStatus)
	}
	for deadline := h.clock.Now().Add(5 * time.Minute); !stored().Phase.Terminal(); {
		d, err := h.reconcile()
		if err != nil || h.clock.Now().After(deadline) {
			t.Fatalf("Reconcile: %v; status %s", err, dump(stored()))
		}
		h.advance(max(d, time.Millisecond))
	}
	st = stored()
	if st.Phase != mesh.PhaseSucceeded || st.NewVersion != "1.0" || h.route() != "echo-server-1-0=100" {
		t.Fatalf("phase %s version %s route %s, want 1.0 Succeeded; events:\n%s", st.Phase, st.NewVersion, h.route(), events(st))
	}
	if _, err := h.e.Begin(h.ctx, h.ref); err != nil {
		t.Fatalf("Begin of the next version: %v", err)
	}
	st = h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed))
	if st.Phase != mesh.PhaseSucceeded || st.Revision != 3 || len(st.History) != 3 || h.route() != "echo-server-1-1=100" {
		t.Errorf("second rollout: phase %s revision %d history %d route %s", st.Phase, st.Revision, len(st.History), h.route())
	}
	// The rollout that ended is not begun again for the same target.
	if _, err := h.e.Begin(h.ctx, h.ref); err != nil {
		t.Errorf("Begin of an ended rollout's own target: %v, want nothing done", err)
	}
}
