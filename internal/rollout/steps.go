package rollout

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// pass is one run of one phase's step over a freshly read rollout.
type pass struct {
	e    *Engine
	ref  mesh.Ref
	r    *mesh.Resource
	spec *mesh.RolloutSpec
	st   *mesh.RolloutStatus // the working copy Reconcile persists
	now  time.Time
	// again asks Reconcile for another pass right away (a step changed the
	// store and persisted a mid-phase marker, such as StoreRevision).
	again bool
}

// step applies the controls, then runs the step of the current phase.
func (p *pass) step(ctx context.Context) (time.Duration, error) {
	st := p.st
	switch {
	case st.Abort && abortable(st.Phase):
		p.rollback("aborted on request")
		return 0, nil
	case st.Paused && pausable(st.Phase):
		p.pause()
		return 0, nil
	case st.Phase == mesh.PhasePaused && !st.Paused:
		p.resume()
		return 0, nil
	}
	switch st.Phase {
	case mesh.PhasePending:
		return p.startTasks(ctx)
	case mesh.PhaseStartingTasks:
		return p.awaitRunning(ctx)
	case mesh.PhaseWaitingHealthy:
		return p.awaitHealthy(ctx)
	case mesh.PhaseShifting:
		return p.shift(ctx)
	case mesh.PhaseBaking:
		return p.bake(ctx)
	case mesh.PhasePaused:
		return 0, nil
	case mesh.PhaseRetiring:
		return p.retire(ctx)
	case mesh.PhaseRollingBack:
		return p.rollBack(ctx)
	}
	return 0, fmt.Errorf("rollout %s: unknown phase %q", p.ref, st.Phase)
}

func pausable(ph mesh.Phase) bool { return ph.Pausable() }

func abortable(ph mesh.Phase) bool {
	return pausable(ph) || ph == mesh.PhasePaused
}

// ---- status helpers ----

func (p *pass) stamp() string { return p.now.UTC().Format(time.RFC3339Nano) }

// setPhase moves to ph, starting a new wait, and logs msg as an event.
func (p *pass) setPhase(ph mesh.Phase, msg string) {
	p.e.log.Info("rollout phase", "rollout", p.ref.String(), "from", p.st.Phase, "to", ph, "message", msg)
	p.st.Phase = ph
	p.st.PhaseSince = p.stamp()
	p.st.WaitSince = p.st.PhaseSince
	p.st.Message = msg
	p.event(msg)
}

// say sets the status message, logging it as an event when it changed.
func (p *pass) say(msg string) {
	if msg != p.st.Message {
		p.st.Message = msg
		p.event(msg)
	}
}

func (p *pass) event(msg string) {
	p.st.Events = append(p.st.Events, mesh.RolloutEvent{Time: p.stamp(), Phase: p.st.Phase, Message: msg})
	if n := len(p.st.Events) - p.e.cfg.MaxEvents; n > 0 {
		p.st.Events = append([]mesh.RolloutEvent(nil), p.st.Events[n:]...)
	}
}

func (p *pass) timeout() time.Duration { return time.Duration(p.spec.TimeoutMillis) * time.Millisecond }

func (p *pass) interval() time.Duration {
	return time.Duration(p.spec.IntervalMillis) * time.Millisecond
}

// waitSince is when the current wait began (now if unknown).
func (p *pass) waitSince() time.Time {
	if t, ok := parseTime(p.st.WaitSince); ok {
		return t
	}
	p.st.WaitSince = p.stamp()
	return p.now
}

// expired reports whether the current wait has run past the timeout.
func (p *pass) expired() bool { return !p.now.Before(p.waitSince().Add(p.timeout())) }

// wait returns how long to sleep before checking again: until the timeout,
// at most Poll.
func (p *pass) wait() time.Duration { return p.until(p.waitSince().Add(p.timeout())) }

func (p *pass) until(t time.Time) time.Duration {
	d := t.Sub(p.now)
	if d > p.e.cfg.Poll {
		d = p.e.cfg.Poll
	}
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

// rollback starts rolling back for reason.
func (p *pass) rollback(reason string) {
	p.e.log.Warn("rollout rolling back", "rollout", p.ref.String(), "reason", reason)
	p.st.Reason = reason
	p.st.StoreRevision = 0
	p.st.ResumePhase = ""
	p.setPhase(mesh.PhaseRollingBack, "Rolling back: "+reason)
}

// fail ends a rollout that changed nothing and cannot start.
func (p *pass) fail(reason string) (time.Duration, error) {
	p.e.log.Warn("rollout failed", "rollout", p.ref.String(), "reason", reason)
	p.st.Reason = reason
	p.st.FinishedAt = p.stamp()
	p.setPhase(mesh.PhaseFailed, "Failed: "+reason)
	return 0, nil
}

// ---- store helpers ----

func (p *pass) get(ctx context.Context, kind mesh.Kind, name string) (*mesh.Resource, error) {
	r, err := p.e.store.Get(ctx, mesh.Ref{Kind: kind, Mesh: p.ref.Mesh, Name: name})
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", kind, name, err)
	}
	return r, nil
}

// getOpt returns nil, nil when the resource does not exist.
func (p *pass) getOpt(ctx context.Context, kind mesh.Kind, name string) (*mesh.Resource, error) {
	if name == "" {
		return nil, nil
	}
	r, err := p.get(ctx, kind, name)
	if mesh.IsNotFound(err) {
		return nil, nil
	}
	return r, err
}

// put writes one resource; what says why, for the log and the error.
func (p *pass) put(ctx context.Context, what string, r *mesh.Resource) (uint64, error) {
	rev, err := p.e.store.Put(ctx, r)
	if err != nil {
		return 0, fmt.Errorf("rollout %s: %s: %w", p.ref, what, err)
	}
	p.e.log.Info("rollout write", "rollout", p.ref.String(), "change", what, "revision", rev)
	return rev, nil
}

// del deletes one resource; one already gone is not an error (a pass
// before a crash deleted it).
func (p *pass) del(ctx context.Context, what string, ref mesh.Ref) error {
	rev, err := p.e.store.Delete(ctx, ref)
	if mesh.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rollout %s: %s: %w", p.ref, what, err)
	}
	p.e.log.Info("rollout write", "rollout", p.ref.String(), "change", what, "revision", rev)
	return nil
}

func (p *pass) ref2(kind mesh.Kind, name string) mesh.Ref {
	return mesh.Ref{Kind: kind, Mesh: p.ref.Mesh, Name: name}
}

// registryService is the registry service name the service's endpoints are
// registered under: the virtual nodes' serviceDiscovery serviceName.
func (p *pass) registryService(ctx context.Context) string {
	for _, n := range []string{p.st.NewVirtualNode, p.st.OldVirtualNode} {
		if r, _ := p.getOpt(ctx, mesh.KindVirtualNode, n); r != nil {
			if spec, ok := r.Spec.(*mesh.VirtualNodeSpec); ok {
				if sel := spec.ServiceDiscovery.Selector(); sel != nil && sel.ServiceName != "" {
					return sel.ServiceName
				}
			}
		}
	}
	return p.spec.Service
}

// endpoints lists the endpoints of taskSet.
func (p *pass) endpoints(ctx context.Context, taskSet string) []*mesh.Endpoint {
	var out []*mesh.Endpoint
	for _, ep := range p.e.eps.List(p.ref.Mesh, p.registryService(ctx)) {
		if ep.Attributes[mesh.AttrTaskSet] == taskSet {
			out = append(out, ep)
		}
	}
	return out
}

// live counts endpoints that have not stopped.
func live(eps []*mesh.Endpoint) int {
	n := 0
	for _, ep := range eps {
		if ep.State != mesh.TaskStopped {
			n++
		}
	}
	return n
}

func (p *pass) desired() int {
	if n := p.spec.Target.DesiredCount; n > 0 {
		return n
	}
	return 1
}

// ---- Pending -> StartingTasks ----

// startTasks creates the new version, one write each and in this order: its
// virtual node (the old node's spec selecting the new version's
// endpoints), its task set, and a weight-0 target on the route (which the
// xDS translation leaves out, so clients subscribe to the new cluster
// before any call may pick it). Each state in between serves as before.
// Parts that exist from an interrupted earlier pass are kept; the names are
// in the status from the first write on, so a failed write is persisted
// with them and the next pass (or a rollback) finds what was made.
func (p *pass) startTasks(ctx context.Context) (time.Duration, error) {
	st, spec := p.st, p.spec
	if spec.Target.Revision <= 0 || len(spec.Steps) == 0 || spec.TimeoutMillis <= 0 {
		return p.fail("this rollout was not started by the rollout engine (no revision, steps or timeout); start it with `gmesh deploy`")
	}
	svc, err := p.getOpt(ctx, mesh.KindService, spec.Service)
	if err != nil {
		return 0, err
	}
	if svc == nil {
		return p.fail(fmt.Sprintf("service %s no longer exists", spec.Service))
	}
	svcSpec, _ := svc.Spec.(*mesh.ServiceSpec)
	if svcSpec == nil {
		return 0, fmt.Errorf("service %s: spec is %T", spec.Service, svc.Spec)
	}
	if st.OldVirtualNode == "" {
		st.OldVirtualNode = svcSpec.VirtualNode
	}
	oldNode, err := p.getOpt(ctx, mesh.KindVirtualNode, st.OldVirtualNode)
	if err != nil {
		return 0, err
	}
	if oldNode == nil {
		return p.fail(fmt.Sprintf("virtual node %s of service %s does not exist", st.OldVirtualNode, spec.Service))
	}
	if st.Route == "" {
		name, err := findRoute(ctx, p.e.store, p.ref.Mesh, spec.Route, st.OldVirtualNode)
		if err != nil {
			if mesh.ErrorCode(err) == mesh.EInternal {
				return 0, err
			}
			return p.fail(err.Error())
		}
		st.Route = name
	}
	route, err := p.getOpt(ctx, mesh.KindRoute, st.Route)
	if err != nil {
		return 0, err
	}
	if route == nil {
		return p.fail(fmt.Sprintf("route %s does not exist", st.Route))
	}
	if st.OldTaskSet == "" {
		old, err := findTaskSet(ctx, p.e.store, p.ref.Mesh, spec.Service, st.OldVirtualNode)
		if err != nil {
			if mesh.ErrorCode(err) == mesh.EInternal {
				return 0, err
			}
			return p.fail(err.Error())
		}
		st.OldTaskSet = old.Metadata.Name
	}
	oldSet, err := p.getOpt(ctx, mesh.KindTaskSet, st.OldTaskSet)
	if err != nil {
		return 0, err
	}
	if oldSet == nil {
		return p.fail(fmt.Sprintf("task set %s does not exist", st.OldTaskSet))
	}
	oldSetSpec := oldSet.Spec.(*mesh.TaskSetSpec)
	st.OldVersion = oldSetSpec.Version
	st.NewVersion = spec.Target.Version
	st.Revision = spec.Target.Revision
	p.recordHistory(*oldSetSpec)

	nodeName, node, err := p.pickName(ctx, mesh.KindVirtualNode)
	if err != nil {
		return p.fail(err.Error())
	}
	setName, set, err := p.pickName(ctx, mesh.KindTaskSet)
	if err != nil {
		return p.fail(err.Error())
	}
	var nodeSpec *mesh.VirtualNodeSpec
	if node == nil {
		nodeSpec = cloneSpec(oldNode.Spec.(*mesh.VirtualNodeSpec))
		sel := nodeSpec.ServiceDiscovery.Selector()
		if sel == nil {
			return p.fail(fmt.Sprintf("virtual node %s does not select registry endpoints (serviceDiscovery.registry), so a new version cannot be added", st.OldVirtualNode))
		}
		sel.Attributes = selectAttributes(sel.Attributes, st.NewVersion, setName, st.NewVersion == st.OldVersion)
	}
	st.NewVirtualNode, st.NewTaskSet = nodeName, setName
	st.Weight = 0
	what := "create version " + st.NewVersion
	if nodeSpec != nil {
		if _, err := p.put(ctx, what+": virtual node "+nodeName, p.newResource(mesh.KindVirtualNode, nodeName, nodeSpec)); err != nil {
			return 0, err
		}
	}
	if set == nil {
		setSpec := spec.Target
		setSpec.Service = spec.Service
		setSpec.VirtualNode = nodeName
		setSpec.Draining = false
		setSpec.Env = copyEnv(spec.Target.Env)
		setSpec.Command = append([]string(nil), spec.Target.Command...)
		setSpec.DesiredCount = p.desired()
		if _, err := p.put(ctx, what+": task set "+setName, p.newResource(mesh.KindTaskSet, setName, &setSpec)); err != nil {
			return 0, err
		}
	}
	if !hasTarget(route, nodeName) {
		r, _ := withWeights(route, []nodeWeight{{nodeName, 0}})
		if _, err := p.put(ctx, what+": route "+st.Route+" target "+nodeName+" at 0%", r); err != nil {
			return 0, err
		}
	}
	p.setPhase(mesh.PhaseStartingTasks, "Waiting for tasks to be RUNNING...")
	return 0, nil
}

func (p *pass) newResource(kind mesh.Kind, name string, spec any) *mesh.Resource {
	return &mesh.Resource{
		APIVersion: mesh.APIVersion,
		Kind:       kind,
		Metadata: mesh.Metadata{Name: name, Mesh: p.ref.Mesh, Labels: map[string]string{
			LabelService:  p.spec.Service,
			LabelRevision: itoa(p.spec.Target.Revision),
		}},
		Spec: spec,
	}
}

// selectAttributes returns the new node's selector attributes: the old
// node's, with version and taskSet replaced by the new version's; version is
// added if missing, and taskSet too when the version is the same as the old
// one (a forced redeploy), so that the new node selects only the new tasks.
func selectAttributes(old []mesh.Attribute, version, taskSet string, sameVersion bool) []mesh.Attribute {
	var out []mesh.Attribute
	hasVersion, hasSet := false, false
	for _, a := range old {
		switch a.Key {
		case mesh.AttrVersion:
			a.Value, hasVersion = version, true
		case mesh.AttrTaskSet:
			a.Value, hasSet = taskSet, true
		}
		out = append(out, a)
	}
	if !hasVersion {
		out = append(out, mesh.Attribute{Key: mesh.AttrVersion, Value: version})
	}
	if sameVersion && !hasSet {
		out = append(out, mesh.Attribute{Key: mesh.AttrTaskSet, Value: taskSet})
	}
	return out
}

func copyEnv(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// candidateNames are the names the new version's node and task set may
// take: "<service>-<version>" and, when that is taken by something else,
// "<service>-<version>-r<revision>".
func (p *pass) candidateNames() []string {
	t := p.spec.Target
	return []string{mesh.VersionName(p.spec.Service, t.Version), mesh.RevisionName(p.spec.Service, t.Version, t.Revision)}
}

// pickName returns the first candidate name that is free or already ours
// (with the resource, when ours).
func (p *pass) pickName(ctx context.Context, kind mesh.Kind) (string, *mesh.Resource, error) {
	names := p.candidateNames()
	for _, n := range names {
		r, err := p.getOpt(ctx, kind, n)
		if err != nil {
			return "", nil, err
		}
		if r == nil {
			return n, nil, nil
		}
		if owned(r, p.spec.Service, p.spec.Target.Revision) {
			return n, r, nil
		}
	}
	return "", nil, fmt.Errorf("%s names %s are taken by other resources", kind, strings.Join(names, " and "))
}

// recordHistory makes s, the running revision, the last history entry.
func (p *pass) recordHistory(s mesh.TaskSetSpec) {
	s.Draining = false
	h := p.st.History
	if n := len(h); n > 0 && h[n-1].Revision == s.Revision && h[n-1].Version == s.Version && h[n-1].Artifact == s.Artifact {
		return
	}
	h = append(h, s)
	if n := len(h) - p.e.cfg.MaxHistory; n > 0 {
		h = append([]mesh.TaskSetSpec(nil), h[n:]...)
	}
	p.st.History = h
}

// ---- StartingTasks -> WaitingHealthy ----

// awaitRunning waits until the desired count of the new set's tasks are
// RUNNING.
func (p *pass) awaitRunning(ctx context.Context) (time.Duration, error) {
	want, running := p.desired(), 0
	for _, ep := range p.endpoints(ctx, p.st.NewTaskSet) {
		if ep.State == mesh.TaskRunning {
			running++
		}
	}
	if running >= want {
		p.event("Tasks started")
		p.setPhase(mesh.PhaseWaitingHealthy, "Waiting for tasks to be HEALTHY...")
		return 0, nil
	}
	if p.expired() {
		p.rollback(fmt.Sprintf("timed out after %s waiting for tasks of %s to be RUNNING (%d/%d)", p.timeout(), p.st.NewTaskSet, running, want))
		return 0, nil
	}
	if running > 0 {
		p.say(fmt.Sprintf("Tasks are starting (%d/%d)...", running, want))
	}
	return p.wait(), nil
}

// ---- WaitingHealthy -> Shifting (or Retiring) ----

// awaitHealthy waits until the desired count of the new set's tasks are
// RUNNING and HEALTHY, then moves to the first step.
func (p *pass) awaitHealthy(ctx context.Context) (time.Duration, error) {
	want, healthy := p.desired(), 0
	lastErr := ""
	for _, ep := range p.endpoints(ctx, p.st.NewTaskSet) {
		if ep.Serving() {
			healthy++
		} else if ep.LastHealthError != "" {
			lastErr = ep.LastHealthError
		}
	}
	if healthy >= want {
		p.event("Tasks healthy")
		p.advance()
		return 0, nil
	}
	if p.expired() {
		reason := fmt.Sprintf("timed out after %s waiting for tasks of %s to be HEALTHY (%d/%d)", p.timeout(), p.st.NewTaskSet, healthy, want)
		if lastErr != "" {
			reason += ": " + lastErr
		}
		p.rollback(reason)
		return 0, nil
	}
	if healthy > 0 {
		p.say(fmt.Sprintf("Tasks are becoming healthy (%d/%d)...", healthy, want))
	}
	return p.wait(), nil
}

// advance moves to the next step: Shifting for a weight below 100, Retiring
// for 100 or when promoted.
func (p *pass) advance() {
	st := p.st
	k := st.StepIndex + 1
	st.StoreRevision = 0
	if st.Promote || k >= len(p.spec.Steps) || p.spec.Steps[k] >= 100 {
		msg := "Routing 100% of traffic to the new version"
		if st.Promote {
			msg += " (promoted)"
		}
		st.StepIndex = len(p.spec.Steps) - 1
		p.setPhase(mesh.PhaseRetiring, msg)
		return
	}
	st.StepIndex = k
	p.setPhase(mesh.PhaseShifting, fmt.Sprintf("Routing %d%% of traffic to the new version", p.spec.Steps[k]))
}

// ---- Shifting -> Baking ----

// shift sets the route's weights for the current step in one write of the
// route, then waits until every xDS client has ACKed that write's revision.
func (p *pass) shift(ctx context.Context) (time.Duration, error) {
	st := p.st
	if st.StepIndex < 0 || st.StepIndex >= len(p.spec.Steps) {
		st.StepIndex = -1
		p.advance()
		return 0, nil
	}
	w := p.spec.Steps[st.StepIndex]
	if st.StoreRevision == 0 {
		route, err := p.get(ctx, mesh.KindRoute, st.Route)
		if err != nil {
			return 0, err
		}
		r, _ := withWeights(route, []nodeWeight{{st.OldVirtualNode, 100 - w}, {st.NewVirtualNode, w}})
		rev, err := p.put(ctx, fmt.Sprintf("route %d%% to %s", w, st.NewVersion), r)
		if err != nil {
			return 0, err
		}
		p.routeChanged(rev, w)
		return 0, nil
	}
	done, pending := p.converged()
	if done {
		st.StalledClients = nil
		p.setPhase(mesh.PhaseBaking, fmt.Sprintf("Analysing version %s at %d%% for %s", st.NewVersion, w, p.interval()))
		return 0, nil
	}
	if ackBy := p.waitSince().Add(p.ackTimeout()); !p.now.Before(ackBy) {
		// Never a silent wait: name the clients, then do as the user said.
		st.StalledClients = pending
		stalled := fmt.Sprintf("xDS clients %s have not acknowledged the route at %d%% within %s", names(pending), w, p.ackTimeout())
		switch p.spec.OnStalledClient {
		case mesh.StalledProceed:
			p.event(stalled + "; proceeding without them (onStalledClient: Proceed)")
			p.setPhase(mesh.PhaseBaking, fmt.Sprintf("Analysing version %s at %d%% for %s", st.NewVersion, w, p.interval()))
		case mesh.StalledRollback:
			p.rollback(fmt.Sprintf("timed out after %s waiting for xDS clients to acknowledge the route at %d%%: %s", p.ackTimeout(), w, names(pending)))
		default:
			p.event(stalled + "; pausing (onStalledClient: Pause): resume to wait for them again, or abort")
			st.Paused = true
			p.pause()
		}
		return 0, nil
	}
	p.say(fmt.Sprintf("Waiting for xDS clients to acknowledge the route at %d%% (%d pending)", w, len(pending)))
	return p.until(p.waitSince().Add(p.ackTimeout())), nil
}

// converged asks whether every xDS client that subscribes to the shifted
// route has ACKed its last change.
func (p *pass) converged() (bool, []string) {
	return p.e.conv.Converged(p.st.StoreRevision, p.ref.Mesh, p.st.Route)
}

// ackTimeout bounds a step's wait for ACKs (spec.ackTimeoutMillis, at most
// the timeout; 0: the timeout).
func (p *pass) ackTimeout() time.Duration {
	d := time.Duration(p.spec.AckTimeoutMillis) * time.Millisecond
	if d <= 0 || d > p.timeout() {
		return p.timeout()
	}
	return d
}

// routeChanged records a route commit the next wait needs ACKed.
func (p *pass) routeChanged(rev uint64, weight int) {
	p.st.StoreRevision = rev
	p.st.RouteVersion = strconv.FormatUint(rev, 10)
	p.st.Weight = weight
	p.st.WaitSince = p.stamp()
	p.again = true
}

func names(ns []string) string {
	ns = append([]string(nil), ns...)
	sort.Strings(ns)
	if len(ns) > 5 {
		return strings.Join(ns[:5], ", ") + fmt.Sprintf(" and %d more", len(ns)-5)
	}
	if len(ns) == 0 {
		return "(none named)"
	}
	return strings.Join(ns, ", ")
}

// ---- Baking -> Shifting / Retiring / RollingBack ----

// bake analyses the new version's requests since the bake began. It
// re-evaluates every AnalysisInterval and rolls back as soon as the gates
// fail with enough requests to judge; at the end of the interval a pass
// moves on. Without enough requests to judge, the bake is extended by up to
// the timeout, then rolled back ("not enough traffic to judge"): a version
// nobody has exercised is not promoted.
func (p *pass) bake(ctx context.Context) (time.Duration, error) {
	st, e := p.st, p.e
	e.mu.Lock()
	b := e.bakes[p.ref]
	e.mu.Unlock()
	if b == nil || b.revision != st.Revision || b.step != st.StepIndex || b.since != st.WaitSince {
		base, err := p.sample(ctx)
		if err != nil {
			return p.metricsDown(err)
		}
		st.WaitSince = p.stamp()
		e.mu.Lock()
		e.bakes[p.ref] = &bake{revision: st.Revision, step: st.StepIndex, since: st.WaitSince, last: base}
		e.mu.Unlock()
		return min(e.cfg.AnalysisInterval, p.interval()), nil
	}
	if st.Promote {
		p.event("Promoted: skipping the remaining analysis")
		p.advance()
		return 0, nil
	}
	cur, err := p.sample(ctx)
	if err != nil {
		return p.metricsDown(err)
	}
	b.acc.Add(analysis.Delta(b.last, cur))
	b.last = cur
	a := analysis.Evaluate(b.acc, p.spec.Gates)
	st.Analysis = &a
	if a.Judged && !a.Passed {
		p.rollback(fmt.Sprintf("analysis of version %s at %d%% failed: %s", st.NewVersion, st.Weight, a.Detail))
		return 0, nil
	}
	since := p.waitSince()
	end := since.Add(p.interval())
	if p.now.Before(end) {
		return min(e.cfg.AnalysisInterval, end.Sub(p.now)), nil
	}
	if a.Passed {
		p.event(fmt.Sprintf("Step %d/%d (%d%%) passed: %s", st.StepIndex+1, len(p.spec.Steps), st.Weight, a.Detail))
		p.advance()
		return 0, nil
	}
	last := end.Add(p.timeout())
	if !p.now.Before(last) {
		p.rollback(fmt.Sprintf("not enough traffic to judge version %s at %d%% within %s: %s", st.NewVersion, st.Weight, last.Sub(since), a.Detail))
		return 0, nil
	}
	p.say(fmt.Sprintf("Waiting for enough traffic to judge version %s at %d%%", st.NewVersion, st.Weight))
	return min(e.cfg.AnalysisInterval, last.Sub(p.now)), nil
}

func (p *pass) sample(ctx context.Context) (analysis.Sample, error) {
	return p.e.metrics.Sample(ctx, p.ref.Mesh, p.registryService(ctx), p.st.NewTaskSet)
}

// metricsDown handles a failed sample: retry until the bake and its
// extension are over, then roll back.
func (p *pass) metricsDown(err error) (time.Duration, error) {
	p.e.log.Warn("rollout metrics unavailable", "rollout", p.ref.String(), "err", err)
	last := p.waitSince().Add(p.interval() + p.timeout())
	if !p.now.Before(last) {
		p.rollback(fmt.Sprintf("metrics of version %s unavailable: %v", p.st.NewVersion, err))
		return 0, nil
	}
	p.say(fmt.Sprintf("Waiting for metrics of version %s", p.st.NewVersion))
	return min(p.e.cfg.AnalysisInterval, last.Sub(p.now)), nil
}

// ---- Paused ----

func (p *pass) pause() {
	from := p.st.Phase
	p.st.ResumePhase = from
	p.setPhase(mesh.PhasePaused, fmt.Sprintf("Paused at %d%% (in %s)", p.st.Weight, from))
}

// resume returns to the paused phase; its wait (and a bake) starts afresh.
func (p *pass) resume() {
	to := p.st.ResumePhase
	if to == "" {
		to = mesh.PhasePending
	}
	p.st.ResumePhase = ""
	p.setPhase(to, fmt.Sprintf("Resumed at %d%%", p.st.Weight))
}

// ---- Retiring -> Succeeded ----

// retire routes all traffic to the new version (one write of the route,
// the old target kept at weight 0), waits for the ACKs, drains the old
// task set, waits for its tasks to go, then removes the old target from
// the route, points the service at the new node, deletes the old task set
// and last the old virtual node, which by then nothing refers to. Each of
// these is one write; a pass after a crash skips what is done.
//
// The old target stays in the route at weight 0 until its tasks are gone
// because a STRICT node's servers admit the callers of the services whose
// routes target it (mesh.Routing.Callers, at any weight): removing it at
// once would make its servers deny calls that clients still send while
// they take in the route at 100%.
func (p *pass) retire(ctx context.Context) (time.Duration, error) {
	st := p.st
	if st.StoreRevision == 0 {
		route, err := p.get(ctx, mesh.KindRoute, st.Route)
		if err != nil {
			return 0, err
		}
		r, _ := withWeights(route, []nodeWeight{{st.OldVirtualNode, 0}, {st.NewVirtualNode, 100}})
		rev, err := p.put(ctx, "route 100% to "+st.NewVersion, r)
		if err != nil {
			return 0, err
		}
		p.routeChanged(rev, 100)
		return 0, nil
	}
	oldSet, err := p.getOpt(ctx, mesh.KindTaskSet, st.OldTaskSet)
	if err != nil {
		return 0, err
	}
	if oldSet != nil && !oldSet.Spec.(*mesh.TaskSetSpec).Draining {
		if done, pending := p.converged(); !done {
			if !p.expired() {
				p.say(fmt.Sprintf("Waiting for xDS clients to acknowledge the route at 100%% (%d pending)", len(pending)))
				return p.wait(), nil
			}
			p.event(fmt.Sprintf("Warning: xDS clients %s did not acknowledge the route at 100%% within %s; retiring version %s anyway", names(pending), p.timeout(), st.OldVersion))
		}
		if err := p.drain(ctx, oldSet); err != nil {
			return 0, err
		}
		p.say(fmt.Sprintf("Draining version %s", st.OldVersion))
		return 0, nil
	}
	if oldSet != nil {
		if left := live(p.endpoints(ctx, st.OldTaskSet)); left > 0 {
			if !p.expired() {
				p.say(fmt.Sprintf("Waiting for version %s to drain (%d tasks left)", st.OldVersion, left))
				return p.wait(), nil
			}
			p.event(fmt.Sprintf("Warning: %d tasks of version %s did not stop within %s; deleting task set %s anyway", left, st.OldVersion, p.timeout(), st.OldTaskSet))
		}
	}
	what := "retire version " + st.OldVersion
	if st.OldVirtualNode != st.NewVirtualNode {
		if err := p.removeTargets(ctx, what, st.OldVirtualNode); err != nil {
			return 0, err
		}
	}
	svc, err := p.getOpt(ctx, mesh.KindService, p.spec.Service)
	if err != nil {
		return 0, err
	}
	if svc != nil {
		if spec, ok := svc.Spec.(*mesh.ServiceSpec); ok && spec.VirtualNode != st.NewVirtualNode {
			s := *spec
			s.VirtualNode = st.NewVirtualNode
			if _, err := p.put(ctx, what+": service "+p.spec.Service+" to virtual node "+st.NewVirtualNode, update(svc, &s)); err != nil {
				return 0, err
			}
		}
	}
	if oldSet != nil {
		if err := p.del(ctx, what+": task set "+oldSet.Metadata.Name, oldSet.Ref()); err != nil {
			return 0, err
		}
	}
	if st.OldVirtualNode != st.NewVirtualNode {
		oldNode, err := p.getOpt(ctx, mesh.KindVirtualNode, st.OldVirtualNode)
		if err != nil {
			return 0, err
		}
		if oldNode != nil {
			if err := p.del(ctx, what+": virtual node "+oldNode.Metadata.Name, oldNode.Ref()); err != nil {
				return 0, err
			}
		}
	}
	newSet, err := p.getOpt(ctx, mesh.KindTaskSet, st.NewTaskSet)
	if err != nil {
		return 0, err
	}
	if newSet != nil {
		p.recordHistory(*newSet.Spec.(*mesh.TaskSetSpec))
	}
	st.Weight = 100
	st.FinishedAt = p.stamp()
	p.setPhase(mesh.PhaseSucceeded, fmt.Sprintf("Version %s retired", st.OldVersion))
	return 0, nil
}

// removeTargets removes nodes, which carry no traffic any more (weight 0,
// their tasks gone), from the route; nothing when they are not in it.
func (p *pass) removeTargets(ctx context.Context, what string, nodes ...string) error {
	route, err := p.getOpt(ctx, mesh.KindRoute, p.st.Route)
	if err != nil || route == nil {
		return err
	}
	want := make([]nodeWeight, 0, len(nodes))
	for _, n := range nodes {
		want = append(want, nodeWeight{n, absent})
	}
	r, changed := withWeights(route, want)
	if !changed {
		return nil
	}
	_, err = p.put(ctx, what+": route without "+strings.Join(nodes, ", "), r)
	return err
}

// drain marks a task set Draining: the runtime takes its endpoints out of
// EDS, lets in-flight calls finish and stops its tasks.
func (p *pass) drain(ctx context.Context, set *mesh.Resource) error {
	s := *set.Spec.(*mesh.TaskSetSpec)
	s.Draining = true
	if _, err := p.put(ctx, "drain task set "+set.Metadata.Name, update(set, &s)); err != nil {
		return err
	}
	p.st.WaitSince = p.stamp()
	p.again = true
	return nil
}

// ---- RollingBack -> RolledBack / Aborted ----

// rollBack routes all traffic to the old version (one write of the route,
// the new target kept at weight 0, as retire keeps the old one), waits for
// the ACKs, drains the new task set, waits for its tasks to go, removes
// the new target from the route, and deletes the new task set, then the
// new virtual node (one write each).
func (p *pass) rollBack(ctx context.Context) (time.Duration, error) {
	st := p.st
	newNodes, err := p.ours(ctx, mesh.KindVirtualNode, st.NewVirtualNode)
	if err != nil {
		return 0, err
	}
	newSets, err := p.ours(ctx, mesh.KindTaskSet, st.NewTaskSet)
	if err != nil {
		return 0, err
	}
	if st.StoreRevision == 0 {
		route, err := p.getOpt(ctx, mesh.KindRoute, st.Route)
		if err != nil {
			return 0, err
		}
		if route != nil && st.OldVirtualNode != "" {
			want := []nodeWeight{{st.OldVirtualNode, 100}}
			for _, n := range newNodes {
				w := absent // never a target (a start cut short): not added
				if hasTarget(route, n.Metadata.Name) {
					w = 0
				}
				want = append(want, nodeWeight{n.Metadata.Name, w})
			}
			r, _ := withWeights(route, want)
			rev, err := p.put(ctx, "route 100% to "+st.OldVersion, r)
			if err != nil {
				return 0, err
			}
			p.routeChanged(rev, 0)
			p.say(fmt.Sprintf("Routing 100%% of traffic to version %s", st.OldVersion))
			return 0, nil
		}
	}
	for _, set := range newSets {
		if set.Spec.(*mesh.TaskSetSpec).Draining {
			continue
		}
		if st.StoreRevision != 0 {
			if done, pending := p.converged(); !done {
				if !p.expired() {
					p.say(fmt.Sprintf("Waiting for xDS clients to acknowledge the route back to version %s (%d pending)", st.OldVersion, len(pending)))
					return p.wait(), nil
				}
				p.event(fmt.Sprintf("Warning: xDS clients %s did not acknowledge the route back to version %s within %s; stopping version %s anyway", names(pending), st.OldVersion, p.timeout(), st.NewVersion))
			}
		}
		if err := p.drain(ctx, set); err != nil {
			return 0, err
		}
		p.say(fmt.Sprintf("Stopping version %s", st.NewVersion))
		return 0, nil
	}
	left := 0
	for _, set := range newSets {
		left += live(p.endpoints(ctx, set.Metadata.Name))
	}
	if left > 0 {
		if !p.expired() {
			p.say(fmt.Sprintf("Waiting for version %s to stop (%d tasks left)", st.NewVersion, left))
			return p.wait(), nil
		}
		p.event(fmt.Sprintf("Warning: %d tasks of version %s did not stop within %s; deleting them anyway", left, st.NewVersion, p.timeout()))
	}
	if len(newNodes) > 0 {
		names := make([]string, len(newNodes))
		for i, n := range newNodes {
			names[i] = n.Metadata.Name
		}
		if err := p.removeTargets(ctx, "remove version "+st.NewVersion, names...); err != nil {
			return 0, err
		}
	}
	for _, r := range append(newSets, newNodes...) {
		if err := p.del(ctx, fmt.Sprintf("remove version %s: %s %s", st.NewVersion, r.Kind, r.Metadata.Name), r.Ref()); err != nil {
			return 0, err
		}
	}
	st.Weight = 0
	st.FinishedAt = p.stamp()
	if st.Abort {
		p.setPhase(mesh.PhaseAborted, fmt.Sprintf("Aborted; version %s serves all traffic", st.OldVersion))
	} else {
		p.setPhase(mesh.PhaseRolledBack, fmt.Sprintf("Rolled back to version %s: %s", st.OldVersion, st.Reason))
	}
	return 0, nil
}

// ours returns the resources of kind this rollout created: the one named
// in status, or (when a crash lost the name) those under the candidate
// names that carry this rollout's labels.
func (p *pass) ours(ctx context.Context, kind mesh.Kind, name string) ([]*mesh.Resource, error) {
	names := []string{name}
	if name == "" {
		names = p.candidateNames()
	}
	var out []*mesh.Resource
	for _, n := range names {
		r, err := p.getOpt(ctx, kind, n)
		if err != nil {
			return nil, err
		}
		if r != nil && owned(r, p.spec.Service, p.spec.Target.Revision) {
			out = append(out, r)
		}
	}
	return out, nil
}

// findRoute returns the route to shift: the named one (which must target
// node), or the one route in the mesh that targets node.
func findRoute(ctx context.Context, s Store, meshName, named, node string) (string, error) {
	if named != "" {
		r, err := s.Get(ctx, mesh.Ref{Kind: mesh.KindRoute, Mesh: meshName, Name: named})
		if err != nil {
			return "", fmt.Errorf("route %s: %w", named, err)
		}
		if !hasTarget(r, node) {
			return "", mesh.Errorf(mesh.EInvalid, "route %s does not target virtual node %s", named, node)
		}
		return named, nil
	}
	routes, err := s.List(ctx, mesh.KindRoute, meshName)
	if err != nil {
		return "", fmt.Errorf("list routes of mesh %s: %w", meshName, err)
	}
	var found []string
	for _, r := range routes {
		if hasTarget(r, node) {
			found = append(found, r.Metadata.Name)
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", mesh.Errorf(mesh.EInvalid, "no route in mesh %s targets virtual node %s", meshName, node)
	case 1:
		return found[0], nil
	}
	return "", mesh.Errorf(mesh.EInvalid, "routes %s all target virtual node %s; name the one to shift in spec.route", strings.Join(found, ", "), node)
}

// findTaskSet returns the running (not draining) task set of service that
// backs node, the newest revision if several.
func findTaskSet(ctx context.Context, s Store, meshName, service, node string) (*mesh.Resource, error) {
	sets, err := s.List(ctx, mesh.KindTaskSet, meshName)
	if err != nil {
		return nil, fmt.Errorf("list task sets of mesh %s: %w", meshName, err)
	}
	var best *mesh.Resource
	for _, r := range sets {
		ts, ok := r.Spec.(*mesh.TaskSetSpec)
		if !ok || ts.Service != service || ts.VirtualNode != node || ts.Draining {
			continue
		}
		if best == nil || ts.Revision > best.Spec.(*mesh.TaskSetSpec).Revision {
			best = r
		}
	}
	if best == nil {
		return nil, mesh.Errorf(mesh.EInvalid, "service %s has no running task set for virtual node %s", service, node)
	}
	return best, nil
}
