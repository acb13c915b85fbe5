package rollout

import (
	"context"
	"fmt"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Control actions (mesh.RolloutActions).
const (
	ActionPause   = mesh.ActionPause
	ActionResume  = mesh.ActionResume
	ActionPromote = mesh.ActionPromote
	ActionAbort   = mesh.ActionAbort
)

// Start validates a Rollout and stores it with a Pending status; Run (or
// ReconcileAll) carries it out. It fills in the spec's defaults: the
// rollout's name and service (each from the other), steps, interval,
// timeout, gates, and the target's service, revision (one above any the
// service has had), desired count and port (from the running task set) and
// environment (the running set's, overridden by the target's, unless this is
// a rollback, whose environment is taken as is). It refuses a rollout when
// the service or its route cannot be found, when another rollout of the
// service is unfinished (EConflict), or when the version already runs and
// Force is not set. A finished Rollout of the same name is replaced; its
// revision history carries over.
func (e *Engine) Start(ctx context.Context, r *mesh.Resource) (*mesh.Resource, error) {
	in, ok := r.Spec.(*mesh.RolloutSpec)
	if !ok || in == nil {
		return nil, mesh.FieldError("spec", "a Rollout's spec is required")
	}
	spec := cloneSpec(in)
	meshName, name := r.Metadata.Mesh, r.Metadata.Name
	if meshName == "" {
		return nil, mesh.FieldError("metadata.mesh", "required: the mesh of the service")
	}
	switch {
	case spec.Service == "" && name == "":
		return nil, mesh.FieldError("spec.service", "required: the service to deploy")
	case spec.Service == "":
		spec.Service = name
	case name == "":
		name = spec.Service
	case name != spec.Service:
		return nil, mesh.FieldError("metadata.name", "a rollout is named after its service: want %q, got %q", spec.Service, name)
	}
	ref := mesh.Ref{Kind: mesh.KindRollout, Mesh: meshName, Name: name}
	l := e.lockFor(ref)
	l.Lock()
	defer l.Unlock()

	st, prev, err := e.prepare(ctx, ref, spec, nil)
	if err != nil {
		return nil, err
	}
	put := &mesh.Resource{
		APIVersion: mesh.APIVersion,
		Kind:       mesh.KindRollout,
		Metadata:   mesh.Metadata{Name: name, Mesh: meshName, Labels: r.Metadata.Labels},
		Spec:       spec,
		Status:     st,
	}
	if prev != nil {
		put.Metadata.ResourceVersion = prev.Metadata.ResourceVersion
	}
	if _, err := e.store.Put(ctx, put); err != nil {
		return nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	stored, err := e.store.Get(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	out, err := e.store.UpdateStatus(ctx, ref, st, stored.Metadata.ResourceVersion)
	if err != nil {
		return nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	e.log.Info("rollout started", "rollout", ref.String(), "version", spec.Target.Version, "from", st.OldVersion, "revision", spec.Target.Revision)
	e.Notify()
	return out, nil
}

// Begin starts a rollout whose Rollout is already stored as its user wrote
// it (on Kubernetes, the object `kubectl apply` made): the checks and
// defaults of Start, with the same messages, but only the status is
// written (Pending, with the revision the rollout creates), with the
// Rollout's resourceVersion. The Store must from then on present that
// revision (status.revision) as the spec's target revision, and the
// defaults (mesh.Default) in the spec it returns, since the engine writes
// no spec here. A rollout that has begun already (its status is for its
// spec's revision) is left alone. A Rollout whose last rollout ended is
// begun again, its history carried over; one whose rollout is unfinished
// is refused (EConflict), as a second `gmesh deploy` is.
func (e *Engine) Begin(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	l := e.lockFor(ref)
	l.Lock()
	defer l.Unlock()
	r, err := e.store.Get(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("begin rollout %s: %w", ref, err)
	}
	in, ok := r.Spec.(*mesh.RolloutSpec)
	if !ok || in == nil {
		return nil, mesh.FieldError("spec", "a Rollout's spec is required")
	}
	if orig, _ := r.Status.(*mesh.RolloutStatus); orig != nil && orig.Phase != "" && in.Target.Revision != 0 && orig.Revision == in.Target.Revision {
		return r, nil
	}
	spec := cloneSpec(in)
	if spec.Service == "" {
		spec.Service = ref.Name
	}
	st, _, err := e.prepare(ctx, ref, spec, r)
	if err != nil {
		return nil, err
	}
	out, err := e.store.UpdateStatus(ctx, ref, st, r.Metadata.ResourceVersion)
	if err != nil {
		return nil, fmt.Errorf("begin rollout of %s: %w", spec.Service, err)
	}
	e.log.Info("rollout begun", "rollout", ref.String(), "version", spec.Target.Version, "from", st.OldVersion, "revision", st.Revision)
	e.Notify()
	return out, nil
}

// prepare checks and defaults spec, the rollout ref is to carry out, and
// returns its first status and the finished rollout of the same name it
// replaces, if any. self is the stored Rollout when it is begun in place
// (Begin): its own status then counts as the earlier rollout of the name.
// The caller holds ref's lock.
func (e *Engine) prepare(ctx context.Context, ref mesh.Ref, spec *mesh.RolloutSpec, self *mesh.Resource) (*mesh.RolloutStatus, *mesh.Resource, error) {
	meshName, name := ref.Mesh, ref.Name
	svc, err := e.store.Get(ctx, mesh.Ref{Kind: mesh.KindService, Mesh: meshName, Name: spec.Service})
	if mesh.IsNotFound(err) {
		return nil, nil, mesh.Errorf(mesh.ENotFound, "service %s not found in mesh %s", spec.Service, meshName)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	svcSpec, _ := svc.Spec.(*mesh.ServiceSpec)
	if svcSpec == nil {
		return nil, nil, fmt.Errorf("start rollout of %s: service spec is %T", spec.Service, svc.Spec)
	}

	// One unfinished rollout per service.
	existing, err := e.store.List(ctx, mesh.KindRollout, meshName)
	if err != nil {
		return nil, nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	var prev *mesh.Resource
	maxRev := 0
	for _, x := range existing {
		xs, ok := x.Spec.(*mesh.RolloutSpec)
		if !ok || (xs.Service != spec.Service && x.Metadata.Name != name) {
			continue
		}
		maxRev = max(maxRev, xs.Target.Revision)
		st := effectiveStatus(xs, x)
		if self != nil && x.Metadata.Name == self.Metadata.Name {
			// Begun in place: what the object's status holds is the
			// earlier rollout of the name, unfinished or not.
			orig, _ := x.Status.(*mesh.RolloutStatus)
			st = &mesh.RolloutStatus{Phase: mesh.PhaseSucceeded}
			if orig != nil && orig.Phase != "" {
				st = orig
				// Its revision counts even when nothing it created is
				// left (an aborted rollout): revisions never repeat.
				maxRev = max(maxRev, orig.Revision)
			}
		}
		if !st.Phase.Terminal() {
			return nil, nil, mesh.Errorf(mesh.EConflict,
				"a rollout of %s is already in progress (phase %s, step %d/%d); use `gmesh rollout status %s` or `gmesh rollout abort %s`",
				spec.Service, st.Phase, st.StepIndex+1, len(xs.Steps), spec.Service, spec.Service)
		}
		if x.Metadata.Name == name {
			prev = x
		}
	}

	routeName, err := findRoute(ctx, e.store, meshName, spec.Route, svcSpec.VirtualNode)
	if err != nil {
		return nil, nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	spec.Route = routeName
	oldSet, err := findTaskSet(ctx, e.store, meshName, spec.Service, svcSpec.VirtualNode)
	if err != nil {
		return nil, nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	old := oldSet.Spec.(*mesh.TaskSetSpec)

	if err := defaults(spec, svcSpec, old, e.cfg.CheckTarget); err != nil {
		return nil, nil, err
	}
	if spec.Target.Version == old.Version && !spec.Force {
		return nil, nil, &mesh.Error{Code: mesh.EInvalid, Field: "spec.target.version",
			Message: fmt.Sprintf("version %s of %s is already running; deploy it again with --force", old.Version, spec.Service)}
	}

	history := []mesh.TaskSetSpec(nil)
	if prev != nil {
		maxRev = max(maxRev, StatusOf(prev).Revision)
		history = StatusOf(prev).History
	}
	for _, h := range history {
		maxRev = max(maxRev, h.Revision)
	}
	sets, err := e.store.List(ctx, mesh.KindTaskSet, meshName)
	if err != nil {
		return nil, nil, fmt.Errorf("start rollout of %s: %w", spec.Service, err)
	}
	for _, s := range sets {
		if ts, ok := s.Spec.(*mesh.TaskSetSpec); ok && ts.Service == spec.Service {
			maxRev = max(maxRev, ts.Revision)
		}
	}
	spec.Target.Revision = maxRev + 1

	now := e.stamp()
	st := &mesh.RolloutStatus{
		Phase: mesh.PhasePending, StepIndex: -1, Revision: spec.Target.Revision,
		OldVirtualNode: svcSpec.VirtualNode, OldTaskSet: oldSet.Metadata.Name,
		OldVersion: old.Version, NewVersion: spec.Target.Version, Route: routeName,
		StartedAt: now, PhaseSince: now, WaitSince: now,
		Message: "Waiting to start",
		Events:  []mesh.RolloutEvent{{Time: now, Phase: mesh.PhasePending, Message: fmt.Sprintf("Deploying version %s of %s over %s (revision %d)", spec.Target.Version, spec.Service, old.Version, spec.Target.Revision)}},
		History: history,
	}
	return st, prev, nil
}

// defaults fills in spec's defaults and checks its values.
func defaults(spec *mesh.RolloutSpec, svc *mesh.ServiceSpec, old *mesh.TaskSetSpec, checkTarget func(*mesh.TaskSetSpec) error) error {
	if len(spec.Steps) == 0 {
		spec.Steps = append([]int(nil), mesh.DefaultRolloutSteps...)
	}
	if err := mesh.CheckSteps("spec.steps", spec.Steps); err != nil {
		return err
	}
	if spec.IntervalMillis == 0 {
		spec.IntervalMillis = mesh.DefaultRolloutIntervalMillis
	}
	if spec.TimeoutMillis == 0 {
		spec.TimeoutMillis = mesh.DefaultRolloutTimeoutMillis
	}
	if spec.AckTimeoutMillis == 0 {
		spec.AckTimeoutMillis = min(mesh.DefaultAckTimeoutMillis, spec.TimeoutMillis)
	}
	if spec.OnStalledClient == "" {
		spec.OnStalledClient = mesh.StalledPause
	}
	switch spec.OnStalledClient {
	case mesh.StalledPause, mesh.StalledProceed, mesh.StalledRollback:
	default:
		return mesh.FieldError("spec.onStalledClient", "must be Pause, Proceed or Rollback, got %q", spec.OnStalledClient)
	}
	if spec.AckTimeoutMillis < 0 || spec.AckTimeoutMillis > spec.TimeoutMillis {
		return mesh.FieldError("spec.ackTimeoutMillis", "must be within 1..timeoutMillis (%d), got %d", spec.TimeoutMillis, spec.AckTimeoutMillis)
	}
	if spec.IntervalMillis < 0 {
		return mesh.FieldError("spec.intervalMillis", "must not be negative")
	}
	if spec.TimeoutMillis < 0 {
		return mesh.FieldError("spec.timeoutMillis", "must not be negative")
	}
	spec.Gates = analysis.WithDefaults(spec.Gates)
	if g := spec.Gates; g.MinSuccessRate < 0 || g.MinSuccessRate > 1 {
		return mesh.FieldError("spec.gates.minSuccessRate", "must be within 0..1, got %v", g.MinSuccessRate)
	}
	t := &spec.Target
	t.Service = spec.Service
	t.VirtualNode = ""
	t.Draining = false
	if t.Version == "" {
		return mesh.FieldError("spec.target.version", "required: the new version's label")
	}
	if mesh.VersionSlug(t.Version) == "" {
		return mesh.FieldError("spec.target.version", "%q has no letters or digits to name resources after", t.Version)
	}
	if err := checkTarget(t); err != nil {
		return err
	}
	if t.DesiredCount == 0 {
		t.DesiredCount = old.DesiredCount
	}
	if t.DesiredCount == 0 {
		t.DesiredCount = max(svc.DesiredCount, 1)
	}
	if t.Port == 0 {
		t.Port = old.Port
	}
	if t.Port == 0 {
		t.Port = svc.Port
	}
	if !spec.Rollback {
		env := copyEnv(old.Env)
		for k, v := range t.Env {
			if env == nil {
				env = map[string]string{}
			}
			env[k] = v
		}
		t.Env = env
	}
	return nil
}

// Control applies a user's action to an unfinished rollout: pause (hold the
// current weight), resume, promote (skip the remaining analysis and go to
// 100%, still waiting for ACKs), abort (roll back). It sets the status flag
// with optimistic concurrency; the engine acts on it in its next pass.
func (e *Engine) Control(ctx context.Context, ref mesh.Ref, action string) error {
	for attempt := 0; ; attempt++ {
		r, err := e.store.Get(ctx, ref)
		if mesh.IsNotFound(err) {
			return mesh.Errorf(mesh.ENotFound, "no rollout of %s in mesh %s", ref.Name, ref.Mesh)
		}
		if err != nil {
			return fmt.Errorf("%s rollout %s: %w", action, ref, err)
		}
		st := StatusOf(r)
		if err := st.CheckControl(ref.Name, action); err != nil {
			return err
		}
		var msg string
		switch action {
		case ActionPause:
			st.Paused, msg = true, "Pause requested"
		case ActionResume:
			st.Paused, msg = false, "Resume requested"
		case ActionPromote:
			st.Promote, st.Paused, msg = true, false, "Promote requested"
		case ActionAbort:
			st.Abort, msg = true, "Abort requested"
		}
		st.Events = append(st.Events, mesh.RolloutEvent{Time: e.stamp(), Phase: st.Phase, Message: msg})
		if n := len(st.Events) - e.cfg.MaxEvents; n > 0 {
			st.Events = append([]mesh.RolloutEvent(nil), st.Events[n:]...)
		}
		_, err = e.store.UpdateStatus(ctx, ref, st, r.Metadata.ResourceVersion)
		if mesh.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s rollout %s: %w", action, ref, err)
		}
		e.log.Info("rollout control", "rollout", ref.String(), "action", action)
		e.Notify()
		return nil
	}
}

// LocalTarget is the local runtime's check of a new version's target
// (Config.CheckTarget's default): a task set runs a command.
func LocalTarget(t *mesh.TaskSetSpec) error {
	if len(t.Command) == 0 {
		return mesh.FieldError("spec.target.command", "required: the new version's command")
	}
	return nil
}
