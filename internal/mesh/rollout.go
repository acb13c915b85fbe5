package mesh

import "fmt"

// RolloutSpec asks for a service to move to a new version progressively.
// A Rollout resource is named after its service (one rollout per service at
// a time) and lives in the service's mesh.
type RolloutSpec struct {
	Service string `json:"service"`
	// Route is the route whose weighted targets are shifted; empty: the one
	// route that targets the service's current virtual node.
	Route string `json:"route,omitempty"`
	// Target is the new version's task set template.
	Target TaskSetSpec `json:"target"`
	// Steps are the new version's weights in percent, ascending, ending at 100.
	Steps []int `json:"steps"`
	// IntervalMillis is the bake time after each step's ACKs.
	IntervalMillis int64 `json:"intervalMillis"`
	// TimeoutMillis bounds every wait (tasks running, healthy, ACKs).
	TimeoutMillis int64 `json:"timeoutMillis"`
	// AckTimeoutMillis bounds how long a step waits for the xDS clients
	// that subscribe to the shifted route to ACK it (default 10 s, never
	// beyond TimeoutMillis); then OnStalledClient decides.
	AckTimeoutMillis int64 `json:"ackTimeoutMillis,omitempty"`
	// OnStalledClient is what a step does about clients that have not
	// ACKed within AckTimeoutMillis, which it names in the status and the
	// events: StalledPause (the default) holds the weight, paused; resume
	// waits again. StalledProceed goes on without them. StalledRollback
	// rolls back.
	OnStalledClient string `json:"onStalledClient,omitempty"`
	Gates           Gates  `json:"gates"`
	// Rollback marks a rollout started by `gmesh rollback`.
	Rollback bool `json:"rollback,omitempty"`
	// Force allows deploying the version that already runs.
	Force bool `json:"force,omitempty"`
}

// OnStalledClient policies.
const (
	StalledPause    = "Pause"
	StalledProceed  = "Proceed"
	StalledRollback = "Rollback"
)

// DefaultAckTimeoutMillis is a rollout step's default bound on ACKs.
const DefaultAckTimeoutMillis = 10_000

// Gates are the analysis thresholds a step must pass.
type Gates struct {
	MinSuccessRate float64 `json:"minSuccessRate"` // 0..1, default 0.99
	MaxP99Millis   float64 `json:"maxP99Millis"`   // default 500
	MinRequests    int64   `json:"minRequests"`    // default 20
}

// Phase is where a rollout stands.
type Phase string

// Rollout phases, in the order a successful rollout passes them.
const (
	PhasePending        Phase = "Pending"
	PhaseStartingTasks  Phase = "StartingTasks"  // waiting for RUNNING
	PhaseWaitingHealthy Phase = "WaitingHealthy" // waiting for HEALTHY
	PhaseShifting       Phase = "Shifting"       // weight set, waiting for ACKs
	PhaseBaking         Phase = "Baking"         // analysing the step
	PhasePaused         Phase = "Paused"
	PhaseRetiring       Phase = "Retiring" // old version drained and removed
	PhaseSucceeded      Phase = "Succeeded"
	PhaseRollingBack    Phase = "RollingBack"
	PhaseRolledBack     Phase = "RolledBack"
	PhaseAborted        Phase = "Aborted"
	PhaseFailed         Phase = "Failed"
)

// Terminal reports whether p is an end state.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseSucceeded, PhaseRolledBack, PhaseAborted, PhaseFailed:
		return true
	}
	return false
}

// RolloutStatus is a rollout's persisted progress.
type RolloutStatus struct {
	Phase Phase `json:"phase"`
	// StepIndex is the index into Spec.Steps of the current step (-1 before
	// the first).
	StepIndex int `json:"stepIndex"`
	// Weight is the new version's current weight.
	Weight int `json:"weight"`
	// OldVirtualNode / NewVirtualNode / OldTaskSet / NewTaskSet name what the
	// rollout moves between.
	OldVirtualNode string `json:"oldVirtualNode,omitempty"`
	NewVirtualNode string `json:"newVirtualNode,omitempty"`
	OldTaskSet     string `json:"oldTaskSet,omitempty"`
	NewTaskSet     string `json:"newTaskSet,omitempty"`
	OldVersion     string `json:"oldVersion,omitempty"`
	NewVersion     string `json:"newVersion,omitempty"`
	// RouteVersion is the xDS route version the current step waits on.
	RouteVersion string `json:"routeVersion,omitempty"`
	// PhaseSince is when the phase began (RFC 3339 with nanoseconds).
	PhaseSince string `json:"phaseSince,omitempty"`
	StartedAt  string `json:"startedAt,omitempty"`
	FinishedAt string `json:"finishedAt,omitempty"`
	// Paused is set by pause and cleared by resume; a paused rollout holds
	// its weight.
	Paused bool `json:"paused,omitempty"`
	// Promote asks to skip the remaining bakes and go to 100.
	Promote bool `json:"promote,omitempty"`
	// Abort asks to roll back.
	Abort bool `json:"abort,omitempty"`
	// Message is a human-readable line about the current phase; Reason the
	// cause of a rollback or failure.
	Message string `json:"message,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Analysis is the last evaluation of the gates.
	Analysis *Analysis `json:"analysis,omitempty"`
	// StalledClients are the xDS clients ("node@ACKed version") that did
	// not ACK the current step's route within the ACK timeout.
	StalledClients []string `json:"stalledClients,omitempty"`
	// Events is the rollout's log of transitions, oldest first (bounded).
	Events []RolloutEvent `json:"events,omitempty"`

	// Revision is the service revision this rollout creates (Spec.Target's);
	// a status whose Revision differs from the spec's belongs to an earlier
	// rollout of the same name and is started afresh.
	Revision int `json:"revision,omitempty"`
	// Route is the route being shifted (resolved at the start).
	Route string `json:"route,omitempty"`
	// StoreRevision is the revision the last route write returned (the
	// store revision locally, the VirtualRouter's metadata.generation on
	// Kubernetes), which the current wait needs every xDS client to have
	// ACKed; 0 when the current phase has not changed the route yet.
	StoreRevision uint64 `json:"storeRevision,omitempty"`
	// WaitSince is when the current wait began (RFC 3339 with nanoseconds);
	// the wait's timeout runs from it.
	WaitSince string `json:"waitSince,omitempty"`
	// ResumePhase is the phase a Paused rollout returns to on resume.
	ResumePhase Phase `json:"resumePhase,omitempty"`
	// History lists the service's revisions that have served it, oldest
	// first, the running one last (bounded). `gmesh rollback` deploys the
	// one before the last.
	History []TaskSetSpec `json:"history,omitempty"`
}

// Analysis is one evaluation of the gates over a bake window.
type Analysis struct {
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	SuccessRate float64 `json:"successRate"`
	P99Millis   float64 `json:"p99Millis"`
	Passed      bool    `json:"passed"`
	Judged      bool    `json:"judged"` // false: too few requests to judge
	Detail      string  `json:"detail,omitempty"`
}

// RolloutEvent is one transition.
type RolloutEvent struct {
	Time    string `json:"time"`
	Phase   Phase  `json:"phase"`
	Message string `json:"message"`
}

// Rollout control actions, as `gmesh rollout ACTION` and the dashboard's
// buttons name them.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionPromote = "promote"
	ActionAbort   = "abort"
)

// RolloutActions lists the control actions in the order they are shown.
var RolloutActions = []string{ActionPause, ActionResume, ActionPromote, ActionAbort}

// Pausable reports whether a rollout in phase p can hold its weight: before
// the new version takes all traffic and while not rolling back.
func (p Phase) Pausable() bool {
	switch p {
	case PhasePending, PhaseStartingTasks, PhaseWaitingHealthy, PhaseShifting, PhaseBaking:
		return true
	}
	return false
}

// ActivePhase is the phase the rollout acts in: its phase, or for a paused
// rollout the phase it resumes to.
func (st *RolloutStatus) ActivePhase() Phase {
	if st.Phase == PhasePaused && st.ResumePhase != "" {
		return st.ResumePhase
	}
	return st.Phase
}

// CheckControl reports whether action may be applied now to the rollout of
// service named name: nil, or an EConflict (EInvalid for an unknown action)
// that says why not. The engine refuses what this refuses, and the dashboard
// offers only what it allows.
func (st *RolloutStatus) CheckControl(name, action string) error {
	if st.Phase.Terminal() {
		return Errorf(EConflict, "the rollout of %s has ended (%s); nothing to %s", name, st.Phase, action)
	}
	ph := st.ActivePhase()
	rollingBack := ph == PhaseRollingBack || st.Abort
	switch action {
	case ActionPause:
		// Pausing a paused rollout changes nothing and is not an error.
		if !ph.Pausable() || st.Abort {
			return Errorf(EConflict, "the rollout of %s cannot be paused while %s", name, describePhase(ph, st.Abort))
		}
	case ActionResume:
		if !st.Paused {
			return Errorf(EConflict, "the rollout of %s is not paused", name)
		}
	case ActionPromote:
		switch {
		case rollingBack:
			return Errorf(EConflict, "the rollout of %s is rolling back; it cannot be promoted", name)
		case ph == PhaseRetiring:
			return Errorf(EConflict, "the rollout of %s needs no promotion: version %s already takes all traffic", name, st.NewVersion)
		}
	case ActionAbort:
		switch {
		case ph == PhaseRetiring:
			return Errorf(EConflict, "too late to abort the rollout of %s: version %s already takes all traffic and version %s is being retired", name, st.NewVersion, st.OldVersion)
		case rollingBack:
			return Errorf(EConflict, "the rollout of %s is already rolling back", name)
		}
	default:
		return Errorf(EInvalid, "unknown rollout action %q: want pause, resume, promote or abort", action)
	}
	return nil
}

func describePhase(ph Phase, abort bool) string {
	if abort {
		return string(PhaseRollingBack)
	}
	return string(ph)
}

// Controls returns, for every action in RolloutActions, whether it would
// change the rollout now: CheckControl allows it, and it is not a pause of a
// paused rollout.
func (st *RolloutStatus) Controls() map[string]bool {
	out := make(map[string]bool, len(RolloutActions))
	for _, a := range RolloutActions {
		out[a] = st.CheckControl("", a) == nil && !(a == ActionPause && st.Paused)
	}
	return out
}

// CheckSteps checks a rollout's steps: the new version's weights in
// percent, ascending within 1..100 and ending at 100. The error names the
// offending element under field ("spec.steps").
func CheckSteps(field string, steps []int) error {
	if len(steps) == 0 {
		return FieldError(field, "required: ascending weights ending at 100, e.g. [10, 50, 100]")
	}
	for i, w := range steps {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case w < 1 || w > 100:
			return FieldError(f, "weights must be 1..100, got %d", w)
		case i > 0 && w <= steps[i-1]:
			return FieldError(f, "steps must be ascending, got %d after %d", w, steps[i-1])
		}
	}
	if last := steps[len(steps)-1]; last != 100 {
		return FieldError(fmt.Sprintf("%s[%d]", field, len(steps)-1), "the last step must be 100, got %d", last)
	}
	return nil
}
