// Package rollouts converts gmesh's Rollout objects (api/gmesh/v1alpha1)
// to and from the rollout engine's model (mesh.RolloutSpec,
// mesh.RolloutStatus), so that the engine of `gmesh deploy`
// (internal/rollout) drives a Rollout on Kubernetes as it drives one
// locally. The rules (steps, controls) are internal/mesh's; this package
// only maps fields.
//
// What has no counterpart in the engine's model stays in the object and is
// the Kubernetes runtime's business: the VirtualRouter, the stable
// Deployment, the new version's images or pod template patch. The engine
// names the rollout's service after the Rollout (metadata.name), as a
// local rollout is named after its service.
package rollouts

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Spec returns the engine's spec of ro. Unset options stay zero: the
// engine fills in its defaults when it starts the rollout (mesh.Default,
// rollout.Engine.Start), so that the two modes share them. The error names
// the field of ro that is wrong.
func Spec(ro *v1alpha1.Rollout) (*mesh.RolloutSpec, error) {
	in := &ro.Spec
	out := &mesh.RolloutSpec{
		Service:         ro.Name,
		Route:           in.Route,
		Target:          mesh.TaskSetSpec{Service: ro.Name, Version: in.Version},
		OnStalledClient: in.OnStalledClient,
		Force:           in.Force,
		Rollback:        in.Rollback,
	}
	if in.Replicas != nil {
		out.Target.DesiredCount = int(*in.Replicas)
	}
	if len(in.Steps) > 0 {
		out.Steps = make([]int, len(in.Steps))
		for i, w := range in.Steps {
			out.Steps[i] = int(w)
		}
		if err := mesh.CheckSteps("spec.steps", out.Steps); err != nil {
			return nil, err
		}
	}
	out.IntervalMillis = millis(in.Interval)
	out.TimeoutMillis = millis(in.Timeout)
	out.AckTimeoutMillis = millis(in.AckTimeout)
	switch in.OnStalledClient {
	case "", v1alpha1.StalledPause, v1alpha1.StalledProceed, v1alpha1.StalledRollback:
	default:
		return nil, mesh.FieldError("spec.onStalledClient", "must be Pause, Proceed or Rollback, got %q", in.OnStalledClient)
	}
	if a := in.Analysis; a != nil {
		if a.MinSuccessRate != nil {
			f, err := strconv.ParseFloat(*a.MinSuccessRate, 64)
			if err != nil || f < 0 || f > 1 {
				return nil, mesh.FieldError("spec.analysis.minSuccessRate", "must be a decimal within 0..1, e.g. \"0.99\", got %q", *a.MinSuccessRate)
			}
			out.Gates.MinSuccessRate = f
		}
		if a.MaxP99Latency != nil {
			out.Gates.MaxP99Millis = float64(a.MaxP99Latency.Duration) / float64(time.Millisecond)
		}
		if a.MinRequests != nil {
			out.Gates.MinRequests = *a.MinRequests
		}
	}
	return out, nil
}

// FromSpec writes the engine's spec s into the fields of out it maps to
// (the inverse of Spec), leaving the Kubernetes-only ones (router, stable
// Deployment, images, template patch, controls) as they are. Engine
// defaults filled in by Start show up as set.
func FromSpec(s *mesh.RolloutSpec, out *v1alpha1.RolloutSpec) {
	out.Route = s.Route
	out.Version = s.Target.Version
	out.Replicas = nil
	if s.Target.DesiredCount > 0 {
		n := int32(s.Target.DesiredCount)
		out.Replicas = &n
	}
	out.Steps = nil
	for _, w := range s.Steps {
		out.Steps = append(out.Steps, int32(w))
	}
	out.Interval = duration(s.IntervalMillis)
	out.Timeout = duration(s.TimeoutMillis)
	out.AckTimeout = duration(s.AckTimeoutMillis)
	out.OnStalledClient = s.OnStalledClient
	out.Force = s.Force
	out.Rollback = s.Rollback
	out.Analysis = nil
	if g := s.Gates; g != (mesh.Gates{}) {
		a := &v1alpha1.AnalysisGates{}
		if g.MinSuccessRate != 0 {
			v := strconv.FormatFloat(g.MinSuccessRate, 'f', -1, 64)
			a.MinSuccessRate = &v
		}
		if g.MaxP99Millis != 0 {
			a.MaxP99Latency = &metav1.Duration{Duration: time.Duration(g.MaxP99Millis * float64(time.Millisecond))}
		}
		if g.MinRequests != 0 {
			n := g.MinRequests
			a.MinRequests = &n
		}
		out.Analysis = a
	}
}

func millis(d *metav1.Duration) int64 {
	if d == nil {
		return 0
	}
	return d.Milliseconds()
}

func duration(ms int64) *metav1.Duration {
	if ms == 0 {
		return nil
	}
	return &metav1.Duration{Duration: time.Duration(ms) * time.Millisecond}
}

// Status returns the engine's status held in in; service names the
// rollout's service (the Rollout's name), which history entries carry.
func Status(in *v1alpha1.RolloutStatus, service string) *mesh.RolloutStatus {
	out := &mesh.RolloutStatus{
		Phase:          mesh.Phase(in.Phase),
		StepIndex:      int(in.StepIndex),
		Weight:         int(in.Weight),
		OldVirtualNode: in.OldVirtualNode,
		NewVirtualNode: in.NewVirtualNode,
		OldTaskSet:     in.OldTaskSet,
		NewTaskSet:     in.NewTaskSet,
		OldVersion:     in.OldVersion,
		NewVersion:     in.NewVersion,
		RouteVersion:   in.RouteVersion,
		PhaseSince:     in.PhaseSince,
		StartedAt:      in.StartedAt,
		FinishedAt:     in.FinishedAt,
		Paused:         in.Paused,
		Promote:        in.Promote,
		Abort:          in.Abort,
		Message:        in.Message,
		Reason:         in.Reason,
		StalledClients: clone(in.StalledClients),
		Revision:       int(in.Revision),
		Route:          in.Route,
		StoreRevision:  uint64(in.WriteRevision),
		WaitSince:      in.WaitSince,
		ResumePhase:    mesh.Phase(in.ResumePhase),
	}
	if in.Phase == "" {
		out.Phase = mesh.PhasePending
		out.StepIndex = -1
	}
	if a := in.Analysis; a != nil {
		sr, _ := strconv.ParseFloat(a.SuccessRate, 64)
		p99, _ := strconv.ParseFloat(a.P99Millis, 64)
		out.Analysis = &mesh.Analysis{Requests: a.Requests, Errors: a.Errors, SuccessRate: sr, P99Millis: p99,
			Passed: a.Passed, Judged: a.Judged, Detail: a.Detail}
	}
	for _, e := range in.Events {
		out.Events = append(out.Events, mesh.RolloutEvent{Time: e.Time, Phase: mesh.Phase(e.Phase), Message: e.Message})
	}
	for _, h := range in.History {
		out.History = append(out.History, mesh.TaskSetSpec{
			Service: service, VirtualNode: h.VirtualNode, Version: h.Version, Revision: int(h.Revision),
			Command: clone(h.Command), Artifact: h.Artifact, Env: cloneMap(h.Env),
			DesiredCount: int(h.Replicas), Port: int(h.Port),
		})
	}
	return out
}

// FromStatus writes the engine's status st into out, for the Rollout at
// generation with steps steps: the engine's fields, the printer columns'
// step ("k/n"), observedGeneration, and the Progressing and Paused
// conditions (their lastTransitionTime moves, to now, only when their
// status changes). The ControlRefused condition is SetControlRefused's.
func FromStatus(st *mesh.RolloutStatus, generation int64, steps int, now time.Time, out *v1alpha1.RolloutStatus) {
	out.ObservedGeneration = generation
	out.Phase = string(st.Phase)
	out.StepIndex = int32(st.StepIndex)
	out.Step = ""
	if st.StepIndex >= 0 && steps > 0 {
		out.Step = fmt.Sprintf("%d/%d", st.StepIndex+1, steps)
	}
	out.Weight = int32(st.Weight)
	out.Message, out.Reason = st.Message, st.Reason
	out.StalledClients = clone(st.StalledClients)
	out.OldVirtualNode, out.NewVirtualNode = st.OldVirtualNode, st.NewVirtualNode
	out.OldTaskSet, out.NewTaskSet = st.OldTaskSet, st.NewTaskSet
	out.OldVersion, out.NewVersion = st.OldVersion, st.NewVersion
	out.Route, out.Revision = st.Route, int32(st.Revision)
	out.WriteRevision, out.RouteVersion = int64(st.StoreRevision), st.RouteVersion
	out.StartedAt, out.PhaseSince, out.WaitSince, out.FinishedAt = st.StartedAt, st.PhaseSince, st.WaitSince, st.FinishedAt
	out.ResumePhase = string(st.ResumePhase)
	out.Paused, out.Promote, out.Abort = st.Paused, st.Promote, st.Abort
	out.Analysis = nil
	if a := st.Analysis; a != nil {
		out.Analysis = &v1alpha1.RolloutAnalysis{Requests: a.Requests, Errors: a.Errors,
			SuccessRate: strconv.FormatFloat(a.SuccessRate, 'g', -1, 64), P99Millis: strconv.FormatFloat(a.P99Millis, 'g', -1, 64),
			Passed: a.Passed, Judged: a.Judged, Detail: a.Detail}
	}
	out.Events = nil
	for _, e := range st.Events {
		out.Events = append(out.Events, v1alpha1.RolloutEvent{Time: e.Time, Phase: string(e.Phase), Message: e.Message})
	}
	// The pod templates recorded in the history (SetRevisionTemplate)
	// have no counterpart in the engine's entries: keep each with its
	// revision.
	templates := map[revisionKey]*runtime.RawExtension{}
	for _, h := range out.History {
		if h.Template != nil {
			templates[revisionKey{h.Revision, h.Version}] = h.Template
		}
	}
	out.History = nil
	for _, h := range st.History {
		out.History = append(out.History, v1alpha1.RolloutRevision{
			Revision: int32(h.Revision), Version: h.Version, VirtualNode: h.VirtualNode,
			Command: clone(h.Command), Artifact: h.Artifact, Env: cloneMap(h.Env),
			Replicas: int32(h.DesiredCount), Port: int32(h.Port),
			Template: templates[revisionKey{int32(h.Revision), h.Version}],
		})
	}
	progressing := metav1.Condition{Type: v1alpha1.ConditionProgressing, Status: metav1.ConditionTrue,
		Reason: string(st.ActivePhase()), Message: st.Message, ObservedGeneration: generation}
	if st.Phase.Terminal() {
		progressing.Status = metav1.ConditionFalse
		progressing.Reason = string(st.Phase)
	}
	setCondition(&out.Conditions, progressing, now)
	paused := metav1.Condition{Type: v1alpha1.ConditionPaused, Status: metav1.ConditionFalse, Reason: "NotPaused", ObservedGeneration: generation}
	if st.Phase == mesh.PhasePaused {
		paused.Status, paused.Reason, paused.Message = metav1.ConditionTrue, "PausedByUser", st.Message
		if len(st.StalledClients) > 0 {
			paused.Reason = "StalledClients"
		}
	}
	setCondition(&out.Conditions, paused, now)
	if out.Conditions == nil {
		out.Conditions = []metav1.Condition{}
	}
}

func setCondition(cs *[]metav1.Condition, c metav1.Condition, now time.Time) {
	c.LastTransitionTime = metav1.NewTime(now)
	meta.SetStatusCondition(cs, c)
}

// ApplyControls brings the controls of spec (paused, abort, promote) into
// st, the engine's status of the rollout named name, as `gmesh rollout`
// would apply them locally, and returns why a control the spec asks for
// is refused in the current phase (mesh.RolloutStatus.CheckControl), ""
// when none is. specChanged says whether the spec changed since the status
// was written (metadata.generation != status.observedGeneration).
//
// Paused follows the spec, with one exception: a pause the engine made
// itself (onStalledClient: Pause) while the spec did not change is kept,
// and selfPaused asks the runtime to mirror it into spec.paused, so that
// `kubectl patch ... paused: false` (a spec change) resumes it as it
// resumes a user's pause. Abort and promote, once applied, stay.
func ApplyControls(spec *v1alpha1.RolloutSpec, specChanged bool, name string, st *mesh.RolloutStatus) (selfPaused bool, refused string) {
	var why []string
	check := func(action string) bool {
		if err := st.CheckControl(name, action); err != nil {
			why = append(why, err.Error())
			return false
		}
		return true
	}
	if st.Phase.Terminal() {
		return false, ""
	}
	switch {
	case spec.Abort && !st.Abort:
		if check(mesh.ActionAbort) {
			st.Abort = true
		}
	case spec.Promote && !st.Promote:
		if check(mesh.ActionPromote) {
			st.Promote, st.Paused = true, false
		}
	}
	switch {
	case spec.Paused && !st.Paused:
		if check(mesh.ActionPause) {
			st.Paused = true
		}
	case !spec.Paused && st.Paused && !specChanged:
		selfPaused = true
	case !spec.Paused && st.Paused:
		if check(mesh.ActionResume) {
			st.Paused = false
		}
	}
	return selfPaused, strings.Join(why, "; ")
}

// SetControlRefused records ApplyControls' refusal in conds.
func SetControlRefused(conds *[]metav1.Condition, refused string, generation int64, now time.Time) {
	c := metav1.Condition{Type: v1alpha1.ConditionControlRefused, Status: metav1.ConditionFalse, Reason: "Applied", ObservedGeneration: generation}
	if refused != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Refused", refused
	}
	setCondition(conds, c, now)
}

func clone[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append([]T(nil), s...)
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
