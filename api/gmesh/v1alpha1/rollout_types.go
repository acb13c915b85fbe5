package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// OnStalledClient policies (mesh.StalledPause, ...).
const (
	StalledPause    = "Pause"
	StalledProceed  = "Proceed"
	StalledRollback = "Rollback"
)

// Condition types a Rollout's status carries.
const (
	// ConditionProgressing is True while the rollout runs (reason: its
	// phase), False once it ended (reason: Succeeded, RolledBack, Aborted
	// or Failed).
	ConditionProgressing = "Progressing"
	// ConditionPaused is True while the rollout holds its weight, with
	// reason PausedByUser (spec.paused) or StalledClients
	// (onStalledClient: Pause).
	ConditionPaused = "Paused"
	// ConditionControlRefused is True when a control in the spec (paused,
	// abort, promote) cannot be applied in the current phase; the message
	// says why, as `gmesh rollout` would.
	ConditionControlRefused = "ControlRefused"
)

// VirtualRouterReference names a VirtualRouter in the Rollout's namespace.
type VirtualRouterReference struct {
	// Name of the VirtualRouter.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ContainerImage is the image one container of the pod template runs.
type ContainerImage struct {
	// Container is the container's name in the stable Deployment's pod
	// template.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Container string `json:"container"`
	// Image is the container's new image.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`
}

// AnalysisGates are the thresholds each step's bake must pass, judged on
// the new version's own requests (gmesh deploy's --min-success-rate,
// --max-p99, --min-requests). Unset: gmesh's defaults (0.99, 500ms, 20).
type AnalysisGates struct {
	// MinSuccessRate is the lowest share of successful requests, 0..1, as a
	// decimal string ("0.99").
	// +kubebuilder:validation:Pattern=`^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$`
	// +optional
	MinSuccessRate *string `json:"minSuccessRate,omitempty"`
	// MaxP99Latency is the highest 99th percentile latency ("500ms").
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive, e.g. 500ms"
	// +optional
	MaxP99Latency *metav1.Duration `json:"maxP99Latency,omitempty"`
	// MinRequests is how many requests a bake needs to judge the version;
	// with fewer the bake is extended up to the timeout, then rolled back.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinRequests *int64 `json:"minRequests,omitempty"`
}

// RolloutSpec says which route moves from which version to which, and how.
// The options are `gmesh deploy`'s.
//
// +kubebuilder:validation:XValidation:rule="has(self.images) != has(self.templatePatch)",message="exactly one of images, templatePatch must be set: the new version's image per container, or a patch of the stable Deployment's pod template"
// +kubebuilder:validation:XValidation:rule="!has(self.ackTimeout) || !has(self.timeout) || duration(self.ackTimeout) <= duration(self.timeout)",fieldPath=".ackTimeout",message="must not exceed spec.timeout: the ACK wait is one of the waits the timeout bounds"
type RolloutSpec struct {
	// VirtualRouterRef is the router whose route's weighted targets are
	// shifted from the stable version's VirtualNode to the new one's. A
	// VirtualService is reached through it (provider.virtualRouter); one
	// provided by a VirtualNode directly has nothing to shift.
	VirtualRouterRef VirtualRouterReference `json:"virtualRouterRef"`
	// Route is the name of the router's route to shift; unset: the one
	// route whose targets include the stable VirtualNode.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Route string `json:"route,omitempty"`
	// StableDeployment is the Deployment that runs the version serving
	// now; unset: the Deployment whose pods the VirtualNode that takes 100%
	// of the route selects.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StableDeployment string `json:"stableDeployment,omitempty"`
	// Version is the new version's label value (pods' `version` label, the
	// new VirtualNode's and Deployment's names: SERVICE-VERSION with dots
	// spelt '-').
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	Version string `json:"version"`
	// Images sets the new version's image per container of the stable
	// Deployment's pod template.
	// +listType=map
	// +listMapKey=container
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +optional
	Images []ContainerImage `json:"images,omitempty"`
	// TemplatePatch is a strategic merge patch of the stable Deployment's
	// pod template (metadata and spec) that makes the new version's. The
	// API server validates the Deployment it produces.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	TemplatePatch *runtime.RawExtension `json:"templatePatch,omitempty"`
	// Replicas of the new version; unset: the stable Deployment's.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// Steps are the new version's weights in percent, ascending, ending at
	// 100; unset: [50, 100].
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self.isSorted() && self.all(w, self.indexOf(w) == self.lastIndexOf(w))",message="steps must be ascending: the new version's weights in percent, e.g. [10, 50, 100]"
	// +kubebuilder:validation:XValidation:rule="self[size(self) - 1] == 100",message="the last step must be 100: the new version ends with all of the traffic"
	// +optional
	Steps []int32 `json:"steps,omitempty"`
	// Interval is each step's bake time after its ACKs ("15s", the
	// default).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Timeout bounds every wait: pods Ready, endpoints, ACKs, drains
	// ("5m", the default).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive, e.g. 5m"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// AckTimeout bounds a step's wait for the xDS clients of the shifted
	// route to ACK it (default 10s, never beyond the timeout); then
	// onStalledClient decides.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="must be positive, e.g. 10s"
	// +optional
	AckTimeout *metav1.Duration `json:"ackTimeout,omitempty"`
	// OnStalledClient is what a step does about xDS clients that have not
	// ACKed within ackTimeout (named in status.stalledClients): Pause (the
	// default) holds the weight until spec.paused goes back to false,
	// Proceed goes on without them, Rollback rolls back.
	// +kubebuilder:validation:Enum=Pause;Proceed;Rollback
	// +optional
	OnStalledClient string `json:"onStalledClient,omitempty"`
	// Force deploys even when the stable Deployment already runs this
	// version (`gmesh deploy --force`).
	// +optional
	Force bool `json:"force,omitempty"`
	// Rollback marks a revision made by `gmesh rollback`: the previous
	// entry of status.history deployed again (its pod template, as a
	// templatePatch that replaces the stable one's).
	// +optional
	Rollback bool `json:"rollback,omitempty"`
	// Analysis holds the gates each bake must pass.
	// +optional
	Analysis *AnalysisGates `json:"analysis,omitempty"`
	// Paused holds the current weight (`gmesh rollout pause`); false
	// resumes, also after a pause for stalled clients.
	// +optional
	Paused bool `json:"paused,omitempty"`
	// Abort rolls back (`gmesh rollout abort`); refused once the new version
	// takes all traffic.
	// +optional
	Abort bool `json:"abort,omitempty"`
	// Promote skips the remaining bakes and goes to 100%, still waiting for
	// ACKs (`gmesh rollout promote`).
	// +optional
	Promote bool `json:"promote,omitempty"`
}

// RolloutAnalysis is the last evaluation of the gates.
type RolloutAnalysis struct {
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// SuccessRate is a decimal string (0..1).
	SuccessRate string `json:"successRate"`
	// P99Millis is a decimal string.
	P99Millis string `json:"p99Millis"`
	Passed    bool   `json:"passed"`
	// Judged is false when there were too few requests to judge.
	Judged bool   `json:"judged"`
	Detail string `json:"detail,omitempty"`
}

// RolloutEvent is one transition.
type RolloutEvent struct {
	// Time is RFC 3339 with nanoseconds.
	Time    string `json:"time"`
	Phase   string `json:"phase"`
	Message string `json:"message"`
}

// RolloutRevision is one version that served the route.
type RolloutRevision struct {
	Revision    int32             `json:"revision"`
	Version     string            `json:"version"`
	VirtualNode string            `json:"virtualNode,omitempty"`
	Command     []string          `json:"command,omitempty"`
	Artifact    string            `json:"artifact,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Replicas    int32             `json:"replicas,omitempty"`
	Port        int32             `json:"port,omitempty"`
	// Template is the pod template (metadata and spec) the revision's
	// Deployment ran, recorded by the runtime (rollouts.SetRevisionTemplate)
	// so that `gmesh rollback` can deploy this revision again: the new
	// revision's templatePatch replaces the stable pod template with it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	Template *runtime.RawExtension `json:"template,omitempty"`
}

// RolloutStatus is the engine's persisted state (mesh.RolloutStatus) and
// what `kubectl get rollouts` shows.
type RolloutStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase: Pending, StartingTasks, WaitingHealthy, Shifting, Baking,
	// Paused, Retiring, Succeeded, RollingBack, RolledBack, Aborted, Failed.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Step is the current step as "k/n" (for the printer column).
	// +optional
	Step string `json:"step,omitempty"`
	// StepIndex is the index into spec.steps of the current step (-1
	// before the first).
	// +optional
	StepIndex int32 `json:"stepIndex"`
	// Weight is the new version's current weight in percent.
	// +optional
	Weight int32 `json:"weight"`
	// Message is a line about the current phase; Reason the cause of a
	// rollback or failure.
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// Conditions: Progressing, Paused, ControlRefused.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// StalledClients are the xDS clients ("node@ACKed version") that did
	// not ACK the current step's route within the ACK timeout.
	// +optional
	StalledClients []string `json:"stalledClients,omitempty"`
	// Events is the rollout's log of transitions, oldest first (bounded).
	// +optional
	Events []RolloutEvent `json:"events,omitempty"`
	// History lists the revisions that served the route, oldest first, the
	// running one last (bounded).
	// +optional
	History []RolloutRevision `json:"history,omitempty"`
	// Analysis is the last evaluation of the gates.
	// +optional
	Analysis *RolloutAnalysis `json:"analysis,omitempty"`

	// The engine's bookkeeping: what it moves between and what it waits
	// on. A leader that takes over resumes from these.

	// +optional
	OldVirtualNode string `json:"oldVirtualNode,omitempty"`
	// +optional
	NewVirtualNode string `json:"newVirtualNode,omitempty"`
	// +optional
	OldTaskSet string `json:"oldTaskSet,omitempty"`
	// +optional
	NewTaskSet string `json:"newTaskSet,omitempty"`
	// +optional
	OldVersion string `json:"oldVersion,omitempty"`
	// +optional
	NewVersion string `json:"newVersion,omitempty"`
	// Route is the route being shifted (resolved at the start).
	// +optional
	Route string `json:"route,omitempty"`
	// Revision is the revision this rollout creates.
	// +optional
	Revision int32 `json:"revision,omitempty"`
	// WriteRevision is the revision of the last route change the current
	// wait needs every xDS client to have ACKed (on Kubernetes the
	// VirtualRouter's metadata.generation after the change); 0 before the
	// phase changed the route.
	// +optional
	WriteRevision int64 `json:"writeRevision,omitempty"`
	// RouteVersion is WriteRevision as text.
	// +optional
	RouteVersion string `json:"routeVersion,omitempty"`
	// Times are RFC 3339 with nanoseconds.
	// +optional
	StartedAt string `json:"startedAt,omitempty"`
	// +optional
	PhaseSince string `json:"phaseSince,omitempty"`
	// +optional
	WaitSince string `json:"waitSince,omitempty"`
	// +optional
	FinishedAt string `json:"finishedAt,omitempty"`
	// ResumePhase is the phase a Paused rollout returns to.
	// +optional
	ResumePhase string `json:"resumePhase,omitempty"`
	// Paused, Promote and Abort are the controls as the engine applied
	// them (the spec's, or a pause for stalled clients).
	// +optional
	Paused bool `json:"paused,omitempty"`
	// +optional
	Promote bool `json:"promote,omitempty"`
	// +optional
	Abort bool `json:"abort,omitempty"`
	// Target is the new version as the rollout began with it (the spec's
	// version, images, templatePatch and replicas at that time): the
	// runtime carries out this target, so a spec edited during a rollout
	// waits for it to end, then begins as the next rollout.
	// +optional
	Target *RolloutTarget `json:"target,omitempty"`
}

// RolloutTarget is what a rollout deploys: the spec's fields that say the
// new version.
type RolloutTarget struct {
	Version string `json:"version"`
	// +optional
	Images []ContainerImage `json:"images,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	TemplatePatch *runtime.RawExtension `json:"templatePatch,omitempty"`
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
}

// Rollout moves a VirtualRouter's route from a stable Deployment's version
// to a new one, step by step, with gmesh's rollout engine.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={all,gmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="Step",type="string",JSONPath=".status.step"
// +kubebuilder:printcolumn:name="Weight",type="integer",JSONPath=".status.weight"
// +kubebuilder:printcolumn:name="Message",type="string",JSONPath=".status.message"
// +kubebuilder:printcolumn:name="Version",type="string",JSONPath=".spec.version",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type Rollout struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RolloutSpec   `json:"spec,omitempty"`
	Status RolloutStatus `json:"status,omitempty"`
}

// RolloutList is a list of rollouts.
//
// +kubebuilder:object:root=true
type RolloutList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Rollout `json:"items"`
}
