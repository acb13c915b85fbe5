package rollout

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// memStore is an in-memory Store that validates every commit the way the
// real store does (mesh.DefaultAndValidate, CheckDeletes, ValidateState) and
// keeps a log of the route's weights.
type memStore struct {
	mu    sync.Mutex
	state *mesh.State
	rv    int
	// beforeCommit, if set, may fail a commit (a crash before it lands).
	beforeCommit func(puts []*mesh.Resource, deletes []mesh.Ref) error
	// afterCommit, if set, runs after a commit landed; an error makes the
	// next UpdateStatus fail (a crash between a commit and its status).
	failNextStatus bool
	routeLog       []string
	commits        int
}

var _ Store = (*memStore)(nil)

func (s *memStore) routes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.routeLog...)
}

func newMemStore() *memStore { return &memStore{state: mesh.NewState()} }

func (s *memStore) Get(_ context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.state.Get(ref)
	if r == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", ref)
	}
	return r.Clone(), nil
}

func (s *memStore) List(_ context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*mesh.Resource
	for _, r := range s.state.List(kind, meshName) {
		out = append(out, r.Clone())
	}
	return out, nil
}

func (s *memStore) Put(ctx context.Context, r *mesh.Resource) (uint64, error) {
	return s.Commit(ctx, []*mesh.Resource{r}, nil)
}

func (s *memStore) Delete(ctx context.Context, ref mesh.Ref) (uint64, error) {
	return s.Commit(ctx, nil, []mesh.Ref{ref})
}

// Commit writes puts and deletes atomically, as the real store does; the
// engine writes one resource at a time, the tests seed with it.
func (s *memStore) Commit(_ context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.beforeCommit != nil {
		if err := s.beforeCommit(puts, deletes); err != nil {
			return 0, err
		}
	}
	next := s.state.Clone()
	var in []*mesh.Resource
	for _, p := range puts {
		p = p.Clone()
		cur := next.Get(p.Ref())
		if p.Metadata.ResourceVersion != "" && (cur == nil || cur.Metadata.ResourceVersion != p.Metadata.ResourceVersion) {
			return 0, mesh.Errorf(mesh.EConflict, "%s was changed concurrently", p.Ref())
		}
		if cur != nil && p.Status == nil {
			p.Status = cur.Status
		}
		s.rv++
		p.Metadata.ResourceVersion = strconv.Itoa(s.rv)
		in = append(in, p)
		next.Put(p)
	}
	if err := mesh.DefaultAndValidate(in...); err != nil {
		return 0, err
	}
	for _, d := range deletes {
		if !next.Delete(d) {
			return 0, mesh.Errorf(mesh.ENotFound, "%s not found", d)
		}
	}
	if err := mesh.CheckDeletes(next, deletes); err != nil {
		return 0, err
	}
	if err := mesh.ValidateState(next); err != nil {
		return 0, err
	}
	next.Revision++
	s.state = next
	s.commits++
	for _, p := range in {
		if p.Kind == mesh.KindRoute {
			s.routeLog = append(s.routeLog, weights(p))
		}
	}
	return next.Revision, nil
}

func (s *memStore) UpdateStatus(_ context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNextStatus {
		s.failNextStatus = false
		return nil, fmt.Errorf("status write lost")
	}
	cur := s.state.Get(ref)
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
	s.state.Put(c)
	return c.Clone(), nil
}

// weights prints a route's targets: "echo-server-0-9=50,echo-server-1-0=50".
func weights(r *mesh.Resource) string {
	var out string
	for i, t := range r.Route().Targets() {
		if i > 0 {
			out += ","
		}
		out += fmt.Sprintf("%s=%d", t.VirtualNode, t.Weight)
	}
	return out
}

// behavior is how a fake task set's tasks act.
type behavior int

const (
	healthy     behavior = iota // start RUNNING and HEALTHY
	neverRun                    // stay PENDING
	unhealthy                   // RUNNING, never HEALTHY
	stuckOnStop                 // healthy, but never stop when drained
)

// fakeRuntime plays the runtime and the registry: it keeps each task set's
// endpoints in line with the store (desired count, draining).
type fakeRuntime struct {
	mu       sync.Mutex
	eps      map[string]*mesh.Endpoint
	behavior map[string]behavior // by task set; default healthy
	pid      int
}

func (f *fakeRuntime) List(meshName, service string) []*mesh.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*mesh.Endpoint
	for _, ep := range f.eps {
		if ep.Mesh == meshName && ep.Service == service {
			c := *ep
			out = append(out, &c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// sync makes the endpoints match the task sets in s.
func (f *fakeRuntime) sync(t *testing.T, s Store) {
	t.Helper()
	sets, _ := s.List(context.Background(), mesh.KindTaskSet, "")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eps == nil {
		f.eps = map[string]*mesh.Endpoint{}
	}
	exists := map[string]bool{}
	for _, r := range sets {
		ts := r.TaskSet()
		name := r.Metadata.Name
		exists[name] = true
		b := f.behavior[name]
		for i := range ts.DesiredCount {
			id := fmt.Sprintf("%s-%d", name, i)
			ep := f.eps[id]
			if ts.Draining {
				if ep != nil && b != stuckOnStop {
					delete(f.eps, id)
				} else if ep != nil {
					ep.Draining = true
				}
				continue
			}
			if ep == nil {
				f.pid++
				ep = &mesh.Endpoint{ID: id, Mesh: r.Metadata.Mesh, Service: "echo-server", Process: &mesh.ProcessStatus{PID: f.pid},
					Address: "127.0.0.1", Port: ts.Port, MetricsAddr: "127.0.0.1:9", State: mesh.TaskPending,
					Health: mesh.HealthUnknown, Attributes: map[string]string{mesh.AttrTaskSet: name, mesh.AttrVersion: ts.Version}}
				f.eps[id] = ep
			}
			switch b {
			case healthy, stuckOnStop:
				ep.State, ep.Health = mesh.TaskRunning, mesh.HealthHealthy
			case unhealthy:
				ep.State, ep.Health, ep.LastHealthError = mesh.TaskRunning, mesh.HealthUnhealthy, "rpc error: code = Unavailable"
			}
		}
	}
	for id, ep := range f.eps {
		if !exists[ep.Attributes[mesh.AttrTaskSet]] {
			delete(f.eps, id)
		}
	}
}

// fakeConv acks every revision up to acked; with auto, every revision.
type fakeConv struct {
	mu    sync.Mutex
	auto  bool
	acked uint64
}

func (c *fakeConv) Converged(rev uint64, meshName, route string) (bool, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.auto || rev <= c.acked {
		return true, nil
	}
	return false, []string{"echo-client-1"}
}

// fakeMetrics keeps cumulative per-task counters per task set.
type fakeMetrics struct {
	mu    sync.Mutex
	tasks map[string]map[string]analysis.Sample // taskSet -> task key -> counters
	err   error
}

func (m *fakeMetrics) Sample(_ context.Context, meshName, service, taskSet string) (analysis.Sample, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return analysis.Sample{}, m.err
	}
	out := analysis.Sample{Tasks: map[string]analysis.Sample{}}
	for k, s := range m.tasks[taskSet] {
		c := analysis.Sample{Requests: s.Requests, Errors: s.Errors, Codes: map[string]int64{},
			Buckets: append([]analysis.Bucket(nil), s.Buckets...)}
		for code, n := range s.Codes {
			c.Codes[code] = n
		}
		out.Tasks[k] = c
		out.Add(c)
	}
	return out, nil
}

// serve records n requests (errs failing) on task key of taskSet, all fast.
func (m *fakeMetrics) serve(taskSet, key string, n, errs int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tasks == nil {
		m.tasks = map[string]map[string]analysis.Sample{}
	}
	if m.tasks[taskSet] == nil {
		m.tasks[taskSet] = map[string]analysis.Sample{}
	}
	s := m.tasks[taskSet][key]
	s.Requests += n
	s.Errors += errs
	if s.Codes == nil {
		s.Codes = map[string]int64{}
	}
	s.Codes["OK"] += n - errs
	if errs > 0 {
		s.Codes["Unavailable"] += errs
	}
	fast := int64(0)
	if len(s.Buckets) > 0 {
		fast = s.Buckets[0].Count
	}
	s.Buckets = []analysis.Bucket{{UpperBound: 0.01, Count: fast + n}, {UpperBound: inf(), Count: s.Requests}}
	m.tasks[taskSet][key] = s
}

// restart drops a task's counters (a new process).
func (m *fakeMetrics) restart(taskSet, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tasks[taskSet], key)
}
