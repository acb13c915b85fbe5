// Package rollout is gmesh's progressive delivery engine. A Rollout resource
// is a persisted state machine (mesh.Phase plus mesh.RolloutStatus); each
// Reconcile pass re-reads it from the store, runs the one step function of
// its phase (each returns early while its condition is unmet), and persists
// the status after every transition, so a control plane restarted at any
// point resumes where the rollout stood.
//
// The happy path: Pending -> StartingTasks (new virtual node, task set, and a
// weight-0 route target; wait for RUNNING) -> WaitingHealthy -> Shifting
// (route weights for step k; wait until every xDS client has ACKed that
// revision) -> Baking (analyse the new version's requests; next step or
// roll back) -> ... -> Retiring (route to the new version only, ACKs, drain
// the old task set, point the service at the new node, delete the old task
// set and node) -> Succeeded. Rolling back mirrors retiring for the new
// version: route to the old version only, ACKs, drain, delete.
//
// Every write is of one resource (Store): the engine needs no transaction
// over several. Their order keeps every state between two writes safe to
// serve, and each step re-derives what was done, so a crash between any
// two writes resumes:
//
//  1. create the new virtual node (nothing routes to it yet);
//  2. create its task set (tasks start, reach no client);
//  3. add it to the route at weight 0 (clients subscribe to its cluster;
//     the translation leaves a weight-0 target out, so no call reaches it);
//  4. per step, set both weights in one write of the route (the route is
//     one object, so old+new always sum to 100);
//  5. retiring: the route to the new node at 100 and the old at 0, then
//     drain the old task set once clients ACKed, then (its tasks gone)
//     remove the old target, point the service at the new node, delete
//     the old task set, then the old node (nothing refers to it any more:
//     the store refuses to delete a node a route or service names);
//  6. rolling back: the route to the old node at 100 and the new at 0,
//     drain the new task set once ACKed, then remove the new target,
//     delete the new task set, then the new node.
//
// A node leaves the route only once its tasks are gone, because a STRICT
// node's servers admit the callers of the services whose routes target it
// at any weight (mesh.Routing.Callers): taking it out while clients still
// send to it would have its servers deny those calls.
//
// The rollout's status is persisted after every pass that changed it, also
// when a write failed, and what it records is only ever a consequence of a
// write already made (the names and revision of what was created, the
// route's revision) or a decision that re-running the phase repeats. The
// resources the rollout creates carry its service and revision as labels,
// so a pass after a crash that lost the status recognises them.
//
// Every wait is bounded by the spec's timeout. Going forward, a timeout rolls
// back. Once traffic is moving to its final state (Retiring, RollingBack) a
// timed-out wait does not reverse direction: the engine records a warning
// event and carries on, because an xDS client that never ACKs is stuck or
// gone, and waiting forever would leave two versions running.
package rollout

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Store is the engine's seam to where mesh resources live: the bbolt store
// locally (internal/controlplane adapts internal/store), the API server on
// Kubernetes (a VirtualRouter's routes, VirtualNodes, Deployments and the
// Rollout object). It is shaped by what the weaker side can promise: the
// API server has no transaction over several objects and versions each
// object alone, so every write names one resource, and the engine orders
// its writes so that the mesh is safe to serve between any two of them and
// a crash between any two resumes (see the package doc for the order).
type Store interface {
	Reader
	Writer
	StatusWriter
}

// Reader reads resources. On Kubernetes it reads informer caches, which
// may lag behind writes, the engine's own included. The engine copes: it
// takes its rollout's status from the status write's answer, not from a
// read; every other decision re-derives what exists, and one made on a
// stale read cannot land, because updates carry the resourceVersion they
// read (EConflict), a create of what exists is refused (EConflict), the
// rollout's status carries its resourceVersion, and a delete of what is
// gone is taken as done. The next pass retries.
type Reader interface {
	Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error)
	// List lists the resources of kind in meshName ("" for resources
	// outside any mesh, such as Meshes).
	List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error)
}

// Writer writes one resource at a time.
//
// Each write returns the revision that convergence is keyed by: every xDS
// snapshot published at rev or later reflects the write, and the engine
// asks Convergence.Converged(rev, ...) about it. Locally rev is the store
// revision of the commit (or the current one when nothing changed). On
// Kubernetes (internal/k8s/rolloutctl) the engine waits only on route
// writes, and a route's rev is its VirtualRouter's metadata.generation
// after the update: the API server's, the same on every control-plane
// replica and across leaders, so a revision an earlier leader persisted
// stays valid for the next one. Its other writes return 0, as the engine
// waits on none of them.
type Writer interface {
	// Put creates or replaces r (its spec and labels; the stored status is
	// kept). A non-empty Metadata.ResourceVersion must match the stored one
	// (else EConflict). The write is refused (EInvalid) when the mesh it
	// would leave has a dangling reference (a route target, a service's
	// node) or r itself is invalid.
	Put(ctx context.Context, r *mesh.Resource) (rev uint64, err error)
	// Delete removes ref: ENotFound when it does not exist, EInUse while
	// another resource refers to it (a route still targets the node).
	Delete(ctx context.Context, ref mesh.Ref) (rev uint64, err error)
}

// StatusWriter writes a Rollout's status, the engine's persisted state.
type StatusWriter interface {
	// UpdateStatus replaces a resource's status if rv matches (or is
	// empty), else EConflict.
	UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error)
}

// Endpoints lists the registered endpoints (every state) of a registry
// service: the tasks of task sets, told apart by Attributes["taskSet"].
type Endpoints interface {
	List(meshName, service string) []*mesh.Endpoint
}

// Convergence is the xDS server's ACK tracking.
type Convergence interface {
	// Converged reports whether every xDS client that subscribes to the
	// routes of route (in meshName) has ACKed configuration built from
	// store revision rev or later; pending names the others. A client that
	// never asked for those routes does not count.
	Converged(rev uint64, meshName, route string) (done bool, pending []string)
}

// Metrics samples a task set's cumulative request counters
// (analysis.Scraper).
type Metrics interface {
	Sample(ctx context.Context, meshName, service, taskSet string) (analysis.Sample, error)
}

var _ Metrics = (*analysis.Scraper)(nil)

// Config wires an Engine. Store, Endpoints, Convergence and Metrics are
// required.
type Config struct {
	Store       Store
	Endpoints   Endpoints
	Convergence Convergence
	Metrics     Metrics
	Clock       clock.Clock  // default clock.Real
	Logger      *slog.Logger // default: discard
	// AnalysisInterval is how often a bake re-evaluates the gates, so that a
	// clearly failing version is rolled back before the bake ends
	// (default 1s).
	AnalysisInterval time.Duration
	// Poll bounds how long a wait sleeps between checks when no
	// notification arrives (default 2s).
	Poll time.Duration
	// Resync is how often Run reconciles with nothing to wait for
	// (default 30s).
	Resync time.Duration
	// CheckTarget checks a new version's target as the runtime that runs it
	// needs it, when a rollout starts (default LocalTarget: a local task
	// set runs a command; a Deployment is made from the Rollout object).
	CheckTarget func(*mesh.TaskSetSpec) error
	// MaxEvents bounds a rollout's event log (default 100); MaxHistory the
	// revision history (default 10).
	MaxEvents  int
	MaxHistory int
}

// Engine drives Rollout resources.
type Engine struct {
	cfg     Config
	store   Store
	eps     Endpoints
	conv    Convergence
	metrics Metrics
	clock   clock.Clock
	log     *slog.Logger
	notify  chan struct{}

	mu    sync.Mutex
	locks map[mesh.Ref]*sync.Mutex
	bakes map[mesh.Ref]*bake
}

// bake is the in-memory part of a Baking phase. Requests are accumulated
// check by check (acc += Delta(last, now)), as Prometheus's increase() does,
// so a task that restarts mid-bake loses at most the requests since the
// previous check. It is not persisted; a restarted engine starts the current
// step's bake afresh.
type bake struct {
	revision int
	step     int
	since    string // the status's WaitSince when the bake began
	last     analysis.Sample
	acc      analysis.Sample
}

// NewEngine returns an engine; call Run, or ReconcileAll from a loop of
// your own.
func NewEngine(cfg Config) *Engine {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AnalysisInterval <= 0 {
		cfg.AnalysisInterval = time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.CheckTarget == nil {
		cfg.CheckTarget = LocalTarget
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 100
	}
	if cfg.MaxHistory <= 0 {
		cfg.MaxHistory = 10
	}
	return &Engine{
		cfg: cfg, store: cfg.Store, eps: cfg.Endpoints, conv: cfg.Convergence, metrics: cfg.Metrics,
		clock: cfg.Clock, log: cfg.Logger,
		notify: make(chan struct{}, 1),
		locks:  map[mesh.Ref]*sync.Mutex{},
		bakes:  map[mesh.Ref]*bake{},
	}
}

// Notify wakes Run: call it on store changes, endpoint changes and ACKs. It
// never blocks.
func (e *Engine) Notify() {
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

// Run reconciles every unfinished rollout whenever Notify is called or the
// earliest requeue time comes, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	var t clock.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		next := e.ReconcileAll(ctx)
		if next <= 0 || next > e.cfg.Resync {
			next = e.cfg.Resync
		}
		if t == nil {
			t = e.clock.NewTimer(next)
		} else {
			t.Stop()
			select {
			case <-t.C(): // drop a tick that fired meanwhile
			default:
			}
			t.Reset(next)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.notify:
		case <-t.C():
		}
	}
}

// ReconcileAll reconciles every unfinished rollout in every mesh once and
// returns when the earliest of them wants to be looked at again (0: none
// is waiting on time).
func (e *Engine) ReconcileAll(ctx context.Context) time.Duration {
	meshes, err := e.store.List(ctx, mesh.KindMesh, "")
	if err != nil {
		e.log.Error("list meshes failed", "err", err)
		return time.Second
	}
	var next time.Duration
	earliest := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, m := range meshes {
		ros, err := e.store.List(ctx, mesh.KindRollout, m.Metadata.Name)
		if err != nil {
			e.log.Error("list rollouts failed", "mesh", m.Metadata.Name, "err", err)
			earliest(time.Second)
			continue
		}
		for _, r := range ros {
			if spec, ok := r.Spec.(*mesh.RolloutSpec); ok && effectiveStatus(spec, r).Phase.Terminal() {
				continue
			}
			d, err := e.Reconcile(ctx, r.Ref())
			if err != nil {
				if ctx.Err() != nil {
					return 0
				}
				e.log.Warn("rollout reconcile failed", "rollout", r.Ref().String(), "err", err)
				d = time.Second
			}
			earliest(d)
		}
	}
	return next
}

func (e *Engine) lockFor(ref mesh.Ref) *sync.Mutex {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.locks[ref]
	if l == nil {
		l = &sync.Mutex{}
		e.locks[ref] = l
	}
	return l
}

// maxTransitions bounds the transitions one Reconcile call runs back to
// back (each persisted) before it yields.
const maxTransitions = 16

// Reconcile runs the rollout ref forward as far as it can go now: it
// re-reads the rollout, runs its phase's step, persists the status, and
// repeats while the step made a transition. It returns when the rollout
// wants to be looked at again if nothing notifies earlier (0: not waiting on
// time, e.g. finished or paused).
func (e *Engine) Reconcile(ctx context.Context, ref mesh.Ref) (requeueAfter time.Duration, err error) {
	l := e.lockFor(ref)
	l.Lock()
	defer l.Unlock()
	// written is the rollout as the last status write returned it: the next
	// transition starts from it rather than from a read, which on
	// Kubernetes comes from a cache that may not hold the write yet.
	var written *mesh.Resource
	// conflicted is the resourceVersion a status write lost to: a re-read
	// that returns it again comes from a cache that has not caught up.
	conflicted := ""
	for range maxTransitions {
		r, err := written, error(nil)
		if r == nil {
			r, err = e.store.Get(ctx, ref)
		}
		written = nil
		if mesh.IsNotFound(err) {
			e.forgetBake(ref)
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("reconcile %s: %w", ref, err)
		}
		if conflicted != "" && r.Metadata.ResourceVersion == conflicted {
			return e.retryStale(ref, mesh.Errorf(mesh.EConflict, "%s: the read after a lost status write is still at resourceVersion %s", ref, conflicted))
		}
		spec, ok := r.Spec.(*mesh.RolloutSpec)
		if !ok {
			return 0, fmt.Errorf("reconcile %s: spec is %T, want *mesh.RolloutSpec", ref, r.Spec)
		}
		orig, _ := r.Status.(*mesh.RolloutStatus)
		st := effectiveStatus(spec, r)
		if st.Phase.Terminal() {
			e.forgetBake(ref)
			return 0, nil
		}
		if st.StartedAt == "" {
			st.StartedAt = e.stamp()
		}
		p := &pass{e: e, ref: ref, r: r, spec: spec, st: st, now: e.clock.Now()}
		phase := st.Phase
		requeue, stepErr := p.step(ctx)
		// A write refused as a conflict was decided on a stale read (on
		// Kubernetes, a cache behind the API server) or raced another
		// writer: nothing it meant to do happened; the next pass decides
		// again from fresher reads.
		stale := mesh.IsConflict(stepErr)
		if !statusEqual(orig, st) {
			out, err := e.store.UpdateStatus(ctx, ref, st, r.Metadata.ResourceVersion)
			switch {
			case mesh.IsConflict(err) && stepErr == nil:
				// A control (pause, abort...) landed meanwhile: what this
				// pass wrote is idempotent; re-read and run it again.
				conflicted = r.Metadata.ResourceVersion
				continue
			case mesh.IsConflict(err) && stale:
				return e.retryStale(ref, stepErr)
			case err != nil:
				return time.Second, fmt.Errorf("persist status of %s: %w", ref, err)
			}
			if _, ok := out.Spec.(*mesh.RolloutSpec); ok {
				written = out
			}
		}
		if stale {
			return e.retryStale(ref, stepErr)
		}
		if stepErr != nil {
			return time.Second, stepErr
		}
		if st.Phase.Terminal() {
			e.forgetBake(ref)
			return 0, nil
		}
		if st.Phase == phase && !p.again {
			return requeue, nil
		}
	}
	return time.Millisecond, nil
}

// retryStale asks for another pass soon after a write that conflicted.
func (e *Engine) retryStale(ref mesh.Ref, err error) (time.Duration, error) {
	e.log.Info("rollout write conflicted; retrying from fresh reads", "rollout", ref.String(), "err", err)
	return e.cfg.Poll, nil
}

func (e *Engine) forgetBake(ref mesh.Ref) {
	e.mu.Lock()
	delete(e.bakes, ref)
	e.mu.Unlock()
}

func (e *Engine) stamp() string { return e.clock.Now().UTC().Format(time.RFC3339Nano) }
