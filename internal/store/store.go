// Package store is the control plane's durable resource and endpoint store.
//
// The commit logic (versions, defaults, validation of each resource and of
// the whole would-be state, results, watch fan-out) lives here once, in
// Engine; a Backend only persists what Engine decided. internal/store/bolt
// is the durable backend (bbolt), internal/store/memstore the in-memory one
// for tests. Engine keeps the whole state in memory as an immutable snapshot,
// so reads never touch the backend.
//
// Only one process may write a state directory: the bolt file is locked, and
// every writer (CLI apply, deploy, the rollout engine) goes through the
// control plane process that holds it.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Store is the control plane's durable resource and endpoint store.
type Store interface {
	// Commit writes puts and deletes atomically. A put whose
	// Metadata.ResourceVersion is non-empty must match the stored one (else
	// EConflict naming the resource and both versions). It applies
	// mesh.Default and mesh.Validate to each put and mesh.ValidateState (and
	// mesh.CheckDeletes) to the would-be whole state; any error aborts
	// everything. It sets ResourceVersion (the store-wide revision of the
	// write, in decimal), CreatedAt and UpdatedAt; unchanged puts (same spec
	// and labels) are not rewritten. A put keeps the stored Status (status
	// changes only through UpdateStatus); a new resource keeps the Status it
	// carries.
	Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (*CommitResult, error)
	// CommitVersioned is Commit with a version precondition per delete.
	CommitVersioned(ctx context.Context, puts []*mesh.Resource, deletes []Deletion) (*CommitResult, error)
	Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) // ENotFound
	// List returns kind's resources in meshName ("" = all meshes), sorted by
	// mesh and name; an empty kind lists all kinds.
	List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error)
	// State returns a consistent deep copy of everything, with its Revision.
	State(ctx context.Context) (*mesh.State, error)
	// UpdateStatus replaces only the Status of ref (no spec validation), with
	// optimistic concurrency when rv != "". A Rollout's status is stored as
	// *mesh.RolloutStatus (a value or a JSON-shaped map is converted).
	UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error)
	PutEndpoint(ctx context.Context, ep *mesh.Endpoint) error
	DeleteEndpoint(ctx context.Context, id string) error // ENotFound
	ListEndpoints(ctx context.Context) ([]*mesh.Endpoint, error)
	// Watch returns a channel of change events after the current revision;
	// it is closed when ctx ends or the store closes. Slow watchers never
	// block writers: a watcher that falls more than Options.WatchBuffer
	// events behind gets a single Event{Type: RESYNC} in place of the missed
	// events and must re-read State. Event resources are shared between
	// watchers: treat them as read-only.
	Watch(ctx context.Context) <-chan Event
	// Revision returns the current revision.
	Revision() uint64
	Close() error
}

// Event types.
const (
	EventPut      = "PUT"
	EventDelete   = "DELETE"
	EventResync   = "RESYNC"
	EventEndpoint = "ENDPOINT"
)

// Event is one change. For PUT, Resource is the stored resource; for DELETE,
// the resource as it was; for ENDPOINT, Endpoint is the endpoint (nil when
// deleted) and Ref is {Kind: "Endpoint", Mesh, Name: id}. Revision is the
// store revision after the change (endpoint changes do not advance it).
type Event struct {
	Revision uint64
	Type     string
	Resource *mesh.Resource
	Ref      mesh.Ref
	Endpoint *mesh.Endpoint
}

// KindEndpoint is the Ref kind of ENDPOINT events.
const KindEndpoint mesh.Kind = "Endpoint"

// Deletion is a delete with an optional version precondition.
type Deletion struct {
	Ref             mesh.Ref
	ResourceVersion string
}

// Put results.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
)

// CommitResult is the outcome of a commit.
type CommitResult struct {
	// Revision is the store's revision after the commit (unchanged when
	// nothing changed).
	Revision uint64
	// Results has one entry per put, in order.
	Results []PutResult
	Deleted []mesh.Ref
}

// PutResult is one put's outcome and the resource as stored.
type PutResult struct {
	Ref      mesh.Ref
	Result   string // Created, Configured or Unchanged
	Resource *mesh.Resource
}

// Backend persists what Engine decided. Engine serializes all calls.
type Backend interface {
	// Load returns the stored resources, revision and endpoints.
	Load() (*mesh.State, []*mesh.Endpoint, error)
	// Write applies one commit durably and atomically: on error nothing
	// changed. rev becomes the stored revision.
	Write(rev uint64, puts []*mesh.Resource, deletes []mesh.Ref) error
	PutEndpoint(ep *mesh.Endpoint) error
	DeleteEndpoint(id string) error
	Close() error
}

// Options tune an Engine.
type Options struct {
	// Now is the clock for CreatedAt/UpdatedAt (default time.Now).
	Now func() time.Time
	// WatchBuffer is how many events a watcher may fall behind before it
	// gets a RESYNC (default 1024).
	WatchBuffer int
	// Logger (default: discard).
	Logger *slog.Logger
}

// Engine implements Store over a Backend.
type Engine struct {
	b     Backend
	now   func() time.Time
	log   *slog.Logger
	wbuf  int
	state atomic.Pointer[mesh.State] // immutable: never mutate a loaded snapshot

	mu        sync.Mutex // serializes writes and watcher registration
	endpoints map[string]*mesh.Endpoint
	watchers  map[*watcher]struct{}
	closed    bool
	done      chan struct{}
}

var _ Store = (*Engine)(nil)

// New loads b and returns an Engine over it.
func New(b Backend, opts Options) (*Engine, error) {
	st, eps, err := b.Load()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		b: b, now: opts.Now, log: opts.Logger, wbuf: opts.WatchBuffer,
		endpoints: make(map[string]*mesh.Endpoint, len(eps)),
		watchers:  make(map[*watcher]struct{}),
		done:      make(chan struct{}),
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.wbuf <= 0 {
		e.wbuf = 1024
	}
	if err := mesh.ValidateState(st); err != nil {
		e.log.Warn("stored state has dangling references", "err", err)
	}
	e.state.Store(st)
	for _, ep := range eps {
		e.endpoints[ep.ID] = ep
	}
	return e, nil
}

var errClosed = &mesh.Error{Code: mesh.EUnavailable, Message: "store is closed"}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return &mesh.Error{Code: mesh.EUnavailable, Message: "request canceled", Err: err}
	}
	return nil
}

// Revision returns the current revision.
func (e *Engine) Revision() uint64 { return e.state.Load().Revision }

// Commit implements Store.
func (e *Engine) Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (*CommitResult, error) {
	ds := make([]Deletion, len(deletes))
	for i, ref := range deletes {
		ds[i] = Deletion{Ref: ref}
	}
	return e.CommitVersioned(ctx, puts, ds)
}

func describe(ref mesh.Ref) string {
	if ref.Mesh == "" {
		return fmt.Sprintf("%s %s", ref.Kind, ref.Name)
	}
	return fmt.Sprintf("%s %s/%s", ref.Kind, ref.Mesh, ref.Name)
}

func conflict(ref mesh.Ref, have, stored string) *mesh.Error {
	if stored == "" {
		return mesh.Errorf(mesh.EConflict, "%s does not exist, but the request carries resourceVersion %s (it was deleted, or comes from another state directory); drop metadata.resourceVersion to create it", describe(ref), have)
	}
	return mesh.Errorf(mesh.EConflict, "%s was changed since you read it: you have resourceVersion %s, the store has %s; get it again and reapply your change", describe(ref), have, stored)
}

// CommitVersioned implements Store.
func (e *Engine) CommitVersioned(ctx context.Context, puts []*mesh.Resource, deletes []Deletion) (*CommitResult, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errClosed
	}
	cur := e.state.Load()
	rev := cur.Revision + 1
	rv := strconv.FormatUint(rev, 10)
	now := e.now().UTC().Format(time.RFC3339Nano)

	// Each put on its own.
	var errs mesh.Errors
	staged := make([]*mesh.Resource, len(puts))
	for i, p := range puts {
		if p == nil {
			errs = append(errs, mesh.Errorf(mesh.EInvalid, "put %d is nil", i))
			continue
		}
		c := p.Clone()
		mesh.Default(c)
		errs = appendErrs(errs, mesh.Validate(c))
		staged[i] = c
	}
	if len(errs) == 0 {
		errs = appendErrs(errs, mesh.CheckDuplicates(staged))
	}
	if len(errs) > 0 {
		return nil, mesh.CapErrors(errs)
	}

	// Versions, and what actually changes.
	next := cur.Copy()
	res := &CommitResult{Revision: cur.Revision, Results: make([]PutResult, len(puts))}
	var writes []*mesh.Resource
	putRefs := make(map[mesh.Ref]bool, len(puts))
	for i, c := range staged {
		ref := c.Ref()
		putRefs[ref] = true
		old := cur.Get(ref)
		if have := c.Metadata.ResourceVersion; have != "" && (old == nil || old.Metadata.ResourceVersion != have) {
			stored := ""
			if old != nil {
				stored = old.Metadata.ResourceVersion
			}
			errs = append(errs, conflict(ref, have, stored))
			continue
		}
		if old != nil && sameContent(old, c) {
			res.Results[i] = PutResult{Ref: ref, Result: Unchanged, Resource: old}
			continue
		}
		c.Metadata.ResourceVersion = rv
		c.Metadata.UpdatedAt = now
		result := Created
		if old != nil {
			result = Configured
			c.Metadata.CreatedAt = old.Metadata.CreatedAt
			c.Status = old.Status // shared: stored resources are immutable
		} else {
			c.Metadata.CreatedAt = now
		}
		res.Results[i] = PutResult{Ref: ref, Result: result, Resource: c}
		next.Put(c)
		writes = append(writes, c)
	}
	var deleted []*mesh.Resource
	var delRefs []mesh.Ref
	for _, d := range deletes {
		old := cur.Get(d.Ref)
		switch {
		case putRefs[d.Ref]:
			errs = append(errs, mesh.Errorf(mesh.EInvalid, "%s is both put and deleted in one commit", describe(d.Ref)))
		case old == nil:
			errs = append(errs, mesh.Errorf(mesh.ENotFound, "%s not found", describe(d.Ref)))
		case d.ResourceVersion != "" && d.ResourceVersion != old.Metadata.ResourceVersion:
			errs = append(errs, conflict(d.Ref, d.ResourceVersion, old.Metadata.ResourceVersion))
		default:
			if next.Delete(d.Ref) {
				deleted = append(deleted, old)
				delRefs = append(delRefs, d.Ref)
			}
		}
	}
	if len(errs) > 0 {
		return nil, mesh.CapErrors(errs)
	}

	// The whole would-be state.
	if err := mesh.CheckDeletes(next, delRefs); err != nil {
		return nil, err
	}
	if err := mesh.ValidateState(next); err != nil {
		return nil, err
	}
	if len(writes) == 0 && len(delRefs) == 0 {
		for i := range res.Results {
			res.Results[i].Resource = res.Results[i].Resource.Clone()
		}
		return res, nil
	}
	for _, w := range writes {
		w.Source = nil
	}
	if err := e.b.Write(rev, writes, delRefs); err != nil {
		return nil, &mesh.Error{Code: mesh.EInternal, Message: fmt.Sprintf("commit of revision %d failed; nothing was changed: %v", rev, err), Err: err}
	}
	next.Revision = rev
	e.state.Store(next)

	events := make([]Event, 0, len(writes)+len(deleted))
	for _, w := range writes {
		events = append(events, Event{Revision: rev, Type: EventPut, Resource: w.Clone(), Ref: w.Ref()})
	}
	for _, d := range deleted {
		events = append(events, Event{Revision: rev, Type: EventDelete, Resource: d.Clone(), Ref: d.Ref()})
	}
	e.broadcast(rev, events)

	res.Revision = rev
	res.Deleted = delRefs
	for i := range res.Results {
		res.Results[i].Resource = res.Results[i].Resource.Clone()
	}
	return res, nil
}

func appendErrs(errs mesh.Errors, err error) mesh.Errors {
	switch e := err.(type) {
	case nil:
	case mesh.Errors:
		errs = append(errs, e...)
	case *mesh.Error:
		errs = append(errs, e)
	default:
		errs = append(errs, &mesh.Error{Code: mesh.EInternal, Err: err})
	}
	return errs
}

// sameContent reports whether a put changes nothing: same spec and labels.
func sameContent(old, c *mesh.Resource) bool {
	if len(old.Metadata.Labels) != len(c.Metadata.Labels) || !maps.Equal(old.Metadata.Labels, c.Metadata.Labels) {
		return false
	}
	a, err1 := json.Marshal(old.Spec)
	b, err2 := json.Marshal(c.Spec)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// Get implements Store.
func (e *Engine) Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	r := e.state.Load().Get(ref)
	if r == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", describe(ref))
	}
	return r.Clone(), nil
}

// List implements Store.
func (e *Engine) List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	rs := e.state.Load().List(kind, meshName)
	for i, r := range rs {
		rs[i] = r.Clone()
	}
	return rs, nil
}

// State implements Store.
func (e *Engine) State(ctx context.Context) (*mesh.State, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	return e.state.Load().Clone(), nil
}

// UpdateStatus implements Store.
func (e *Engine) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errClosed
	}
	cur := e.state.Load()
	old := cur.Get(ref)
	if old == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "%s not found", describe(ref))
	}
	if rv != "" && rv != old.Metadata.ResourceVersion {
		return nil, conflict(ref, rv, old.Metadata.ResourceVersion)
	}
	st, err := normalizeStatus(ref.Kind, status)
	if err != nil {
		return nil, err
	}
	rev := cur.Revision + 1
	c := *old // shares Spec: stored resources are immutable
	c.Status = st
	c.Metadata.ResourceVersion = strconv.FormatUint(rev, 10)
	c.Metadata.UpdatedAt = e.now().UTC().Format(time.RFC3339Nano)
	if err := e.b.Write(rev, []*mesh.Resource{&c}, nil); err != nil {
		return nil, &mesh.Error{Code: mesh.EInternal, Message: fmt.Sprintf("status update of %s failed; nothing was changed: %v", describe(ref), err), Err: err}
	}
	next := cur.Copy()
	next.Put(&c)
	next.Revision = rev
	e.state.Store(next)
	e.broadcast(rev, []Event{{Revision: rev, Type: EventPut, Resource: c.Clone(), Ref: ref}})
	return c.Clone(), nil
}

// normalizeStatus gives status the shape it has after a JSON round trip, so
// that what is stored in memory equals what a reload reads.
func normalizeStatus(kind mesh.Kind, status any) (any, error) {
	if status == nil {
		return nil, nil
	}
	if kind == mesh.KindRollout {
		switch s := status.(type) {
		case *mesh.RolloutStatus:
			if s == nil {
				return nil, nil
			}
			c := *s
			c.Events = append([]mesh.RolloutEvent(nil), s.Events...)
			if s.Analysis != nil {
				a := *s.Analysis
				c.Analysis = &a
			}
			return &c, nil
		case mesh.RolloutStatus:
			return normalizeStatus(kind, &s)
		}
	}
	b, err := json.Marshal(map[string]any{"apiVersion": mesh.APIVersion, "kind": kind, "metadata": map[string]string{"name": "x"}, "spec": map[string]any{}, "status": status})
	if err != nil {
		return nil, mesh.Errorf(mesh.EInvalid, "status: %v", err)
	}
	var r mesh.Resource
	if err := r.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return r.Status, nil
}

// PutEndpoint implements Store.
func (e *Engine) PutEndpoint(ctx context.Context, ep *mesh.Endpoint) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if ep == nil || ep.ID == "" {
		return mesh.FieldError("id", "required")
	}
	c := *ep
	c.Attributes = maps.Clone(ep.Attributes)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	if err := e.b.PutEndpoint(&c); err != nil {
		return &mesh.Error{Code: mesh.EInternal, Message: fmt.Sprintf("store endpoint %s: %v", ep.ID, err), Err: err}
	}
	e.endpoints[c.ID] = &c
	cp := c
	cp.Attributes = maps.Clone(c.Attributes)
	e.broadcast(e.Revision(), []Event{{Revision: e.Revision(), Type: EventEndpoint, Ref: mesh.Ref{Kind: KindEndpoint, Mesh: c.Mesh, Name: c.ID}, Endpoint: &cp}})
	return nil
}

// DeleteEndpoint implements Store.
func (e *Engine) DeleteEndpoint(ctx context.Context, id string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	old, ok := e.endpoints[id]
	if !ok {
		return mesh.Errorf(mesh.ENotFound, "endpoint %s not found", id)
	}
	if err := e.b.DeleteEndpoint(id); err != nil {
		return &mesh.Error{Code: mesh.EInternal, Message: fmt.Sprintf("delete endpoint %s: %v", id, err), Err: err}
	}
	delete(e.endpoints, id)
	e.broadcast(e.Revision(), []Event{{Revision: e.Revision(), Type: EventEndpoint, Ref: mesh.Ref{Kind: KindEndpoint, Mesh: old.Mesh, Name: id}}})
	return nil
}

// ListEndpoints implements Store; the endpoints are sorted by id.
func (e *Engine) ListEndpoints(ctx context.Context) ([]*mesh.Endpoint, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*mesh.Endpoint, 0, len(e.endpoints))
	for _, id := range sortedKeys(e.endpoints) {
		c := *e.endpoints[id]
		c.Attributes = maps.Clone(c.Attributes)
		out = append(out, &c)
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Close stops every watcher and closes the backend.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	close(e.done)
	return e.b.Close()
}

// ---- watch ----

// Watch implements Store.
func (e *Engine) Watch(ctx context.Context) <-chan Event {
	w := &watcher{
		out:    make(chan Event, 16),
		signal: make(chan struct{}, 1),
		max:    e.wbuf,
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		close(w.out)
		return w.out
	}
	e.watchers[w] = struct{}{}
	e.mu.Unlock()
	go func() {
		w.run(ctx, e.done)
		e.mu.Lock()
		delete(e.watchers, w)
		e.mu.Unlock()
		close(w.out)
	}()
	return w.out
}

// broadcast queues events for every watcher; e.mu is held.
func (e *Engine) broadcast(rev uint64, events []Event) {
	for w := range e.watchers {
		w.push(rev, events)
	}
}

// watcher is one Watch: an unbounded-looking but bounded queue drained by
// its own goroutine, so that a writer only ever appends.
type watcher struct {
	out    chan Event
	signal chan struct{}
	max    int

	mu      sync.Mutex
	queue   []Event
	resyncs int
}

func (w *watcher) push(rev uint64, events []Event) {
	w.mu.Lock()
	if len(w.queue)+len(events) > w.max {
		// Fallen behind: drop what is queued and ask for a re-read.
		w.queue = append(w.queue[:0:0], Event{Revision: rev, Type: EventResync})
		w.resyncs++
	} else {
		w.queue = append(w.queue, events...)
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *watcher) run(ctx context.Context, done <-chan struct{}) {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.mu.Unlock()
			select {
			case <-w.signal:
				continue
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
		ev := w.queue[0]
		w.queue[0] = Event{}
		w.queue = w.queue[1:]
		w.mu.Unlock()
		select {
		case w.out <- ev:
		case <-ctx.Done():
			return
		case <-done:
			return
		}
	}
}
