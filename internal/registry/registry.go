// Package registry is gmesh's endpoint registry, its replacement for Cloud
// Map: runtimes register the tasks they run (address, port, service,
// attributes, lifecycle state) and the control plane checks them actively,
// as the healthCheck of the VirtualNode that selects them says (gRPC health
// protocol, HTTP, HTTP/2 cleartext, TCP). Every change reaches subscribers at
// once, so EDS follows health without delay.
//
// Health rules:
//
//   - A task that is not RUNNING is not checked and not Serving. PENDING and
//     STOPPED make its health UNKNOWN; STOPPING keeps the last health, but
//     the endpoint leaves Serving at once (the fast path for a stopping task).
//   - A RUNNING endpoint without an active check is HEALTHY.
//   - With a check, a new process starts UNKNOWN and becomes HEALTHY on its
//     first passing check, as Envoy does for new hosts: a pass is the
//     application's own word that it is ready, and waiting for
//     healthyThreshold passes would only delay every deploy by
//     (threshold-1) × interval. Once it has been HEALTHY, it takes
//     unhealthyThreshold consecutive fails to become UNHEALTHY and then
//     healthyThreshold consecutive passes to come back, so a flapping
//     backend does not flap EDS.
//   - unhealthyThreshold consecutive fails of a process that was never
//     healthy make it UNHEALTHY too (visible in status); its first pass still
//     makes it HEALTHY.
//   - A re-register of the same id keeps its health, unless its address or
//     port changed, or it is a new process (it came back to RUNNING, or its
//     non-zero PID changed): then health starts again from UNKNOWN.
//   - Restore keeps the persisted health, so a restarted control plane does
//     not publish an empty EDS; the checkers go on from there. Until the
//     first SetPolicy, restored health stands as persisted (wire SetPolicy
//     before Register, or new endpoints count as having no check).
//
// The registry serves from memory; a Persister write that fails is
// returned (Register, Deregister, SetDraining) or logged (health changes),
// and the next change of that endpoint writes its whole state again.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// staggerAbove is the number of endpoints above which Run spreads their
// first checks over one interval.
const staggerAbove = 64

// DefaultMaxEndpoints bounds the registry when Options.MaxEndpoints is 0.
const DefaultMaxEndpoints = 10000

// ErrFull is wrapped by the error a Register beyond MaxEndpoints returns.
var ErrFull = errors.New("registry is full")

// Persister stores endpoints durably; internal/store implements it.
type Persister interface {
	PutEndpoint(ctx context.Context, ep *mesh.Endpoint) error
	DeleteEndpoint(ctx context.Context, id string) error
	ListEndpoints(ctx context.Context) ([]*mesh.Endpoint, error)
}

// PolicyFunc returns the active health check for ep (from the VirtualNode
// whose serviceDiscovery selects it), or nil for no active check. A zero
// Port in the result means ep.Port. It is called with the registry locked:
// it must be quick, must not call the Registry, and must not keep or modify
// ep.
type PolicyFunc func(ep *mesh.Endpoint) *mesh.HealthCheck

// CredsFunc returns the transport credentials of ep's gRPC health checks
// and a key that changes whenever they must (nil, "": plaintext). It is
// called with the registry locked, like PolicyFunc: it must be quick (build
// credentials ahead; let them fetch certificates during the handshake).
type CredsFunc func(ep *mesh.Endpoint) (creds credentials.TransportCredentials, key string)

// Options tune a Registry. The zero value is usable.
type Options struct {
	// Clock drives check intervals (default: the real clock).
	Clock clock.Clock
	// MaxEndpoints bounds the number of endpoints (default
	// DefaultMaxEndpoints).
	MaxEndpoints int
	// PersistTimeout bounds a write of a health change made by a checker
	// or SetPolicy (default 5s).
	PersistTimeout time.Duration
}

// Filter selects endpoints in List; empty fields match everything.
type Filter struct {
	Mesh    string
	Service string
	// Attributes must all be present with these values.
	Attributes map[string]string
	// ServingOnly keeps only Serving() endpoints.
	ServingOnly bool
}

func (f *Filter) match(ep *mesh.Endpoint) bool {
	if f.Mesh != "" && ep.Mesh != f.Mesh {
		return false
	}
	if f.Service != "" && ep.Service != f.Service {
		return false
	}
	for k, v := range f.Attributes {
		if got, ok := ep.Attributes[k]; !ok || got != v {
			return false
		}
	}
	return !f.ServingOnly || ep.Serving()
}

// Registry holds endpoints and runs their health checks. Its methods are
// safe for concurrent use.
type Registry struct {
	logger         *slog.Logger
	p              Persister
	clock          clock.Clock
	max            int
	persistTimeout time.Duration

	// persistMu serializes writes to p; see persist.
	persistMu sync.Mutex

	mu      sync.Mutex
	entries map[string]*entry
	ids     []string // sorted keys of entries
	policy  PolicyFunc
	creds   CredsFunc
	subs    map[chan struct{}]struct{}
	runCtx  context.Context // non-nil while Run runs
	running bool
	wg      sync.WaitGroup // checker goroutines
}

// New returns an empty registry. p may be nil (nothing is persisted).
func New(logger *slog.Logger, p Persister, opts Options) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		logger:         logger,
		p:              p,
		clock:          opts.Clock,
		max:            opts.MaxEndpoints,
		persistTimeout: opts.PersistTimeout,
		entries:        make(map[string]*entry),
		subs:           make(map[chan struct{}]struct{}),
	}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	if r.max <= 0 {
		r.max = DefaultMaxEndpoints
	}
	if r.persistTimeout <= 0 {
		r.persistTimeout = 5 * time.Second
	}
	return r
}

// Restore loads the persisted endpoints, keeping their last health and
// draining flag, and checks them again from there once Run runs. Endpoints
// already registered are left alone; invalid records are logged and skipped.
func (r *Registry) Restore(ctx context.Context) error {
	if r.p == nil {
		return nil
	}
	eps, err := r.p.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("restore endpoints: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ep := range eps {
		if err := validate(ep); err != nil {
			r.logger.Warn("skipping invalid persisted endpoint", "error", err)
			continue
		}
		if _, ok := r.entries[ep.ID]; ok {
			continue
		}
		if len(r.entries) >= r.max {
			r.logger.Warn("registry full, skipping persisted endpoint", "id", ep.ID, "max", r.max)
			continue
		}
		in := clone(ep)
		if in.State == "" {
			in.State = mesh.TaskRunning
		}
		switch in.Health {
		case mesh.HealthHealthy, mesh.HealthUnhealthy, mesh.HealthUnknown:
		default:
			in.Health = mesh.HealthUnknown
		}
		e := &entry{ep: in, everHealthy: in.Health == mesh.HealthHealthy}
		e.policy, e.credsKey = r.policyForLocked(in), r.credsKeyLocked(in)
		if r.policy != nil {
			// Without a PolicyFunc yet, the persisted health stands until
			// SetPolicy says whether there is a check.
			e.settle()
		}
		r.insertLocked(e)
		r.syncCheckerLocked(e, false)
		n++
	}
	if n > 0 {
		r.notifyLocked()
	}
	r.logger.Info("restored endpoints", "count", n, "persisted", len(eps))
	return nil
}

// SetCreds sets the function that gives each endpoint's gRPC checks their
// credentials (mTLS for an endpoint that demands it). It takes effect at
// the next SetPolicy, which restarts the checkers whose credentials' key
// changed.
func (r *Registry) SetCreds(f CredsFunc) {
	r.mu.Lock()
	r.creds = f
	r.mu.Unlock()
}

// credsKeyLocked is the key of ep's check credentials.
func (r *Registry) credsKeyLocked(ep *mesh.Endpoint) string {
	if r.creds == nil {
		return ""
	}
	_, k := r.creds(ep)
	return k
}

// SetPolicy sets the function that gives each endpoint its active health
// check, and re-evaluates every endpoint at once: a changed policy restarts
// the endpoint's checker (counters start again, health is kept); a removed
// one makes a RUNNING endpoint HEALTHY. Call it whenever the mesh changes.
func (r *Registry) SetPolicy(f PolicyFunc) {
	r.mu.Lock()
	r.policy = f
	var changed []string
	for _, id := range r.ids {
		e := r.entries[id]
		np := r.policyForLocked(e.ep)
		nk := r.credsKeyLocked(e.ep)
		before := *e.ep
		if samePolicy(np, e.policy) && nk == e.credsKey {
			// Still settle: an endpoint restored before any policy
			// was known becomes HEALTHY here if it has no check.
			e.settle()
		} else {
			e.policy, e.credsKey = np, nk
			e.passes, e.fails = 0, 0
			e.settle()
			r.syncCheckerLocked(e, true)
		}
		if before.Health != e.ep.Health || before.LastHealthError != e.ep.LastHealthError {
			changed = append(changed, id)
		}
	}
	if len(changed) > 0 {
		r.notifyLocked()
	}
	r.mu.Unlock()
	for _, id := range changed {
		r.persistBackground(context.Background(), id)
	}
}

// Register creates or updates an endpoint from its runtime: state, pid,
// restarts, address, port, attributes. Health and LastHealthError are the
// registry's and ignored; Draining can be set here but only SetDraining
// clears it. An empty State means RUNNING. See the package doc for when a
// re-register keeps health.
func (r *Registry) Register(ctx context.Context, ep *mesh.Endpoint) error {
	if err := validate(ep); err != nil {
		if ep == nil {
			return fmt.Errorf("register endpoint: %w", err)
		}
		return fmt.Errorf("register endpoint %q: %w", ep.ID, err)
	}
	in := clone(ep)
	if in.State == "" {
		in.State = mesh.TaskRunning
	}
	in.Health, in.LastHealthError = mesh.HealthUnknown, ""

	r.mu.Lock()
	e, ok := r.entries[in.ID]
	var before *mesh.Endpoint
	if !ok {
		if len(r.entries) >= r.max {
			r.mu.Unlock()
			return &mesh.Error{
				Code:    mesh.EUnavailable,
				Message: fmt.Sprintf("register endpoint %q: registry is full (%d endpoints)", in.ID, r.max),
				Err:     ErrFull,
			}
		}
		e = &entry{ep: in}
		e.policy, e.credsKey = r.policyForLocked(in), r.credsKeyLocked(in)
		e.settle()
		r.insertLocked(e)
		r.syncCheckerLocked(e, false)
	} else {
		before = clone(e.ep)
		old := e.ep
		in.Health, in.LastHealthError = old.Health, old.LastHealthError
		in.Draining = old.Draining || in.Draining
		moved := old.Address != in.Address || old.Port != in.Port
		newProcess := in.State == mesh.TaskRunning &&
			(old.State != mesh.TaskRunning || (old.Proc().PID != 0 && in.Proc().PID != 0 && old.Proc().PID != in.Proc().PID))
		e.ep = in
		np, nk := r.policyForLocked(in), r.credsKeyLocked(in)
		policyChanged := !samePolicy(np, e.policy) || nk != e.credsKey
		e.policy, e.credsKey = np, nk
		switch {
		case moved || newProcess:
			e.resetHealth()
		case policyChanged:
			e.passes, e.fails = 0, 0
		}
		e.settle()
		r.syncCheckerLocked(e, moved || newProcess || policyChanged)
	}
	changed := !sameEndpoint(before, e.ep)
	if changed {
		r.notifyLocked()
	}
	state, health := e.ep.State, e.ep.Health
	r.mu.Unlock()

	if !changed {
		return nil
	}
	if before == nil {
		r.logger.Info("endpoint registered", "id", in.ID, "service", in.Service, "address", hostPort(in.Address, in.Port), "state", state, "health", health)
	} else if before.State != state || before.Health != health {
		r.logger.Info("endpoint updated", "id", in.ID, "state", state, "health", health)
	}
	return r.persist(ctx, in.ID)
}

// Deregister removes an endpoint and stops its checker. An unknown id is a
// mesh.ENotFound error.
func (r *Registry) Deregister(ctx context.Context, id string) error {
	r.mu.Lock()
	e, ok := r.entries[id]
	if !ok {
		r.mu.Unlock()
		return mesh.Errorf(mesh.ENotFound, "deregister endpoint %q: no such endpoint", id)
	}
	r.stopCheckerLocked(e)
	delete(r.entries, id)
	if i, found := slices.BinarySearch(r.ids, id); found {
		r.ids = slices.Delete(r.ids, i, i+1)
	}
	r.notifyLocked()
	r.mu.Unlock()
	r.logger.Info("endpoint deregistered", "id", id)
	return r.persist(ctx, id)
}

// SetDraining marks an endpoint draining (it leaves Serving, so EDS, before
// its task stops) or not. Checks go on while it drains.
func (r *Registry) SetDraining(ctx context.Context, id string, draining bool) error {
	r.mu.Lock()
	e, ok := r.entries[id]
	if !ok {
		r.mu.Unlock()
		return mesh.Errorf(mesh.ENotFound, "set draining of endpoint %q: no such endpoint", id)
	}
	if e.ep.Draining == draining {
		r.mu.Unlock()
		return nil
	}
	e.ep.Draining = draining
	r.notifyLocked()
	r.mu.Unlock()
	r.logger.Info("endpoint draining changed", "id", id, "draining", draining)
	return r.persist(ctx, id)
}

// Get returns a copy of one endpoint.
func (r *Registry) Get(id string) (*mesh.Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return nil, false
	}
	return clone(e.ep), true
}

// List returns copies of the endpoints f selects, sorted by id.
func (r *Registry) List(f Filter) []*mesh.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	var matched []*mesh.Endpoint
	for _, id := range r.ids {
		if ep := r.entries[id].ep; f.match(ep) {
			matched = append(matched, ep)
		}
	}
	// One allocation for all the copies.
	copies := make([]mesh.Endpoint, len(matched))
	out := make([]*mesh.Endpoint, len(matched))
	for i, ep := range matched {
		copies[i] = *ep
		copies[i].Attributes = maps.Clone(ep.Attributes)
		out[i] = &copies[i]
	}
	return out
}

// Len returns the number of endpoints.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// Subscribe returns a channel that receives a value after any change to any
// endpoint (registration, state, health, draining, removal). Notifications
// coalesce: the channel holds at most one, and the registry never waits on
// it, so a subscriber re-reads with List after each receive. cancel
// unsubscribes and closes the channel; it may be called more than once.
func (r *Registry) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.subs, ch)
			close(ch)
			r.mu.Unlock()
		})
	}
}

// Run runs the health checkers until ctx ends, then stops them, waits for
// them and returns nil. Endpoints registered before Run are checked once it
// starts. Only one Run may run at a time.
func (r *Registry) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("registry: run: already running")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.runCtx, r.running = runCtx, true
	// Many endpoints at once (a restored registry) start their first checks
	// spread over one interval rather than all dialing together.
	stagger := len(r.ids) > staggerAbove
	for _, id := range r.ids {
		e := r.entries[id]
		if stagger && r.wantCheckerLocked(e) && e.cancel == nil {
			r.startCheckerLocked(e, time.Duration(rand.Int64N(int64(interval(e.policy)))))
			continue
		}
		r.syncCheckerLocked(e, false)
	}
	r.mu.Unlock()

	<-ctx.Done()

	r.mu.Lock()
	r.runCtx = nil
	for _, e := range r.entries {
		r.stopCheckerLocked(e)
	}
	r.mu.Unlock()
	cancel()
	r.wg.Wait()
	r.mu.Lock()
	r.running = false
	r.mu.Unlock()
	return nil
}

// report applies one check result of checker gen of endpoint id.
func (r *Registry) report(ctx context.Context, id string, gen uint64, err error) {
	r.mu.Lock()
	e, ok := r.entries[id]
	if !ok || e.gen != gen || e.policy == nil || e.ep.State != mesh.TaskRunning {
		r.mu.Unlock()
		return
	}
	from, fromErr := e.ep.Health, e.ep.LastHealthError
	e.observe(err)
	to, toErr := e.ep.Health, e.ep.LastHealthError
	changed := from != to || fromErr != toErr
	if changed {
		r.notifyLocked()
	}
	r.mu.Unlock()

	if from != to {
		r.logger.Info("endpoint health changed", "id", id, "from", from, "to", to, "error", toErr)
	}
	if changed {
		r.persistBackground(ctx, id)
	}
}

// policyForLocked returns ep's normalized active check under the current
// PolicyFunc.
func (r *Registry) policyForLocked(ep *mesh.Endpoint) *mesh.HealthCheck {
	if r.policy == nil {
		return nil
	}
	return normalize(r.policy(clone(ep)), ep)
}

func (r *Registry) insertLocked(e *entry) {
	r.entries[e.ep.ID] = e
	i, _ := slices.BinarySearch(r.ids, e.ep.ID)
	r.ids = slices.Insert(r.ids, i, e.ep.ID)
}

// syncCheckerLocked starts or stops e's checker so that one runs exactly
// when Run runs, e is RUNNING and e has a policy. restart replaces a running
// checker (new address, process or policy).
func (r *Registry) syncCheckerLocked(e *entry, restart bool) {
	want := r.wantCheckerLocked(e)
	if e.cancel != nil && (!want || restart) {
		r.stopCheckerLocked(e)
	}
	if want && e.cancel == nil {
		r.startCheckerLocked(e, 0)
	}
}

func (r *Registry) wantCheckerLocked(e *entry) bool {
	return r.runCtx != nil && e.ep.State == mesh.TaskRunning && e.policy != nil
}

// startCheckerLocked starts a checker for e whose first check waits delay.
func (r *Registry) startCheckerLocked(e *entry, delay time.Duration) {
	e.gen++
	ctx, cancel := context.WithCancel(r.runCtx)
	e.cancel = cancel
	c := &checker{
		r:      r,
		id:     e.ep.ID,
		gen:    e.gen,
		delay:  delay,
		policy: *e.policy,
		prober: newProber(hostPort(e.ep.Address, e.policy.Port), e.policy, r.credsLocked(e.ep)),
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.run(ctx)
	}()
}

// credsLocked is ep's check credentials, nil for plaintext.
func (r *Registry) credsLocked(ep *mesh.Endpoint) credentials.TransportCredentials {
	if r.creds == nil {
		return nil
	}
	c, _ := r.creds(ep)
	return c
}

func (r *Registry) stopCheckerLocked(e *entry) {
	if e.cancel != nil {
		e.cancel()
		e.cancel = nil
		e.gen++
	}
}

// notifyLocked wakes every subscriber without blocking.
func (r *Registry) notifyLocked() {
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// persist writes the current state of endpoint id (or its deletion). Writes
// are serialized and each reads the state after taking persistMu, so the
// last write of an id always carries its newest state.
func (r *Registry) persist(ctx context.Context, id string) error {
	if r.p == nil {
		return nil
	}
	r.persistMu.Lock()
	defer r.persistMu.Unlock()
	r.mu.Lock()
	var ep *mesh.Endpoint
	if e, ok := r.entries[id]; ok {
		ep = clone(e.ep)
	}
	r.mu.Unlock()
	if ep == nil {
		if err := r.p.DeleteEndpoint(ctx, id); err != nil && !mesh.IsNotFound(err) {
			return fmt.Errorf("persist deletion of endpoint %q: %w", id, err)
		}
		return nil
	}
	if err := r.p.PutEndpoint(ctx, ep); err != nil {
		return fmt.Errorf("persist endpoint %q: %w", id, err)
	}
	return nil
}

// persistBackground persists a change nobody waits on, logging a failure.
func (r *Registry) persistBackground(ctx context.Context, id string) {
	if r.p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.persistTimeout)
	defer cancel()
	if err := r.persist(ctx, id); err != nil {
		r.logger.Error("persisting endpoint health failed", "id", id, "error", err)
	}
}
