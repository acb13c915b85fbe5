package rollouts

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func example(t *testing.T) *v1alpha1.Rollout {
	t.Helper()
	data, err := os.ReadFile("../../../api/gmesh/v1alpha1/testdata/echo-rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ro v1alpha1.Rollout
	if err := yaml.UnmarshalStrict(data, &ro); err != nil {
		t.Fatal(err)
	}
	return &ro
}

func TestSpec(t *testing.T) {
	ro := example(t)
	got, err := Spec(ro)
	if err != nil {
		t.Fatal(err)
	}
	want := &mesh.RolloutSpec{
		Service: "echo-server", Route: "echo-server-route",
		Target: mesh.TaskSetSpec{Service: "echo-server", Version: "1.0"},
		Steps:  []int{10, 50, 100}, IntervalMillis: 30_000, TimeoutMillis: 300_000, AckTimeoutMillis: 10_000,
		OnStalledClient: mesh.StalledPause,
		Gates:           mesh.Gates{MinSuccessRate: 0.99, MaxP99Millis: 500, MinRequests: 20},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Spec (-want +got):\n%s", diff)
	}
}

// TestSpecRoundTrip: a Rollout's spec through the engine's and back is
// the same spec (the Kubernetes-only fields are left alone).
func TestSpecRoundTrip(t *testing.T) {
	for _, edit := range []func(*v1alpha1.RolloutSpec){
		func(*v1alpha1.RolloutSpec) {},
		func(s *v1alpha1.RolloutSpec) { // every option unset
			s.Route, s.Steps, s.Interval, s.Timeout, s.AckTimeout, s.OnStalledClient, s.Analysis = "", nil, nil, nil, nil, "", nil
		},
		func(s *v1alpha1.RolloutSpec) {
			n := int32(3)
			s.Replicas = &n
			s.Analysis = &v1alpha1.AnalysisGates{MaxP99Latency: &metav1.Duration{Duration: 250 * time.Millisecond}}
			s.Paused, s.Abort = true, true
		},
	} {
		ro := example(t)
		edit(&ro.Spec)
		want := ro.Spec.DeepCopy()
		s, err := Spec(ro)
		if err != nil {
			t.Fatal(err)
		}
		got := ro.Spec.DeepCopy()
		got.Steps, got.Interval, got.Analysis, got.Replicas = nil, nil, nil, nil
		FromSpec(s, got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

// TestEngineSpecRoundTrip: the engine's spec, as Start fills it in, through
// a Rollout and back is the same spec, but for what only the local runtime
// has (the target's command, artifact and environment, its revision).
func TestEngineSpecRoundTrip(t *testing.T) {
	in := &mesh.RolloutSpec{
		Service: "echo-server", Route: "echo-server-route",
		Target: mesh.TaskSetSpec{Service: "echo-server", Version: "1.1", DesiredCount: 4},
		Steps:  []int{5, 25, 100}, IntervalMillis: 15_000, TimeoutMillis: 300_000, AckTimeoutMillis: 10_000,
		OnStalledClient: mesh.StalledRollback, Force: true, Rollback: true,
		Gates: mesh.Gates{MinSuccessRate: 0.995, MaxP99Millis: 123.5, MinRequests: 7},
	}
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "echo-server", Namespace: "echo"}}
	FromSpec(in, &ro.Spec)
	got, err := Spec(ro)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestSpecRefusals(t *testing.T) {
	tests := []struct {
		edit func(*v1alpha1.RolloutSpec)
		want string
	}{
		{func(s *v1alpha1.RolloutSpec) { s.Steps = []int32{50, 10, 100} }, "spec.steps[1]: steps must be ascending, got 10 after 50"},
		{func(s *v1alpha1.RolloutSpec) { s.Steps = []int32{10, 50} }, "spec.steps[1]: the last step must be 100, got 50"},
		{func(s *v1alpha1.RolloutSpec) { v := "lots"; s.Analysis.MinSuccessRate = &v }, `spec.analysis.minSuccessRate: must be a decimal within 0..1, e.g. "0.99", got "lots"`},
		{func(s *v1alpha1.RolloutSpec) { s.OnStalledClient = "Wait" }, `spec.onStalledClient: must be Pause, Proceed or Rollback, got "Wait"`},
	}
	for _, tt := range tests {
		ro := example(t)
		tt.edit(&ro.Spec)
		_, err := Spec(ro)
		if err == nil || !strings.Contains(err.Error(), tt.want) || mesh.ErrorCode(err) != mesh.EInvalid {
			t.Errorf("Spec: %v, want EInvalid %q", err, tt.want)
		}
	}
}

func fullStatus() *mesh.RolloutStatus {
	return &mesh.RolloutStatus{
		Phase: mesh.PhasePaused, StepIndex: 1, Weight: 50,
		OldVirtualNode: "echo-server-0-9", NewVirtualNode: "echo-server-1-0",
		OldTaskSet: "echo-server-0-9", NewTaskSet: "echo-server-1-0", OldVersion: "0.9", NewVersion: "1.0",
		RouteVersion: "42", PhaseSince: "2026-12-01T12:00:01.123456789Z", StartedAt: "2026-12-01T11:59:00Z",
		Paused: true, Promote: true, Abort: false,
		Message: "Paused at 50% (in Shifting)", Reason: "",
		Analysis:       &mesh.Analysis{Requests: 1000, Errors: 3, SuccessRate: 0.997, P99Millis: 12.25, Passed: true, Judged: true, Detail: "ok"},
		StalledClients: []string{"echo/echo-client-1@7"},
		Events: []mesh.RolloutEvent{
			{Time: "2026-12-01T11:59:00Z", Phase: mesh.PhasePending, Message: "Deploying version 1.0"},
			{Time: "2026-12-01T12:00:01.123456789Z", Phase: mesh.PhasePaused, Message: "Paused at 50% (in Shifting)"},
		},
		Revision: 2, Route: "echo-server-route", StoreRevision: 42, WaitSince: "2026-12-01T12:00:01.123456789Z",
		ResumePhase: mesh.PhaseShifting,
		History: []mesh.TaskSetSpec{{Service: "echo-server", VirtualNode: "echo-server-0-9", Version: "0.9", Revision: 1,
			Command: []string{"/x"}, Artifact: "sha256:09", Env: map[string]string{"A": "b"}, DesiredCount: 2, Port: 50051}},
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, in := range []*mesh.RolloutStatus{fullStatus(), {Phase: mesh.PhasePending, StepIndex: -1}} {
		var out v1alpha1.RolloutStatus
		FromStatus(in, 3, 3, t0, &out)
		if diff := cmp.Diff(in, Status(&out, "echo-server")); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
	// An empty status (a Rollout just created) reads as Pending before the
	// first step, as the engine's own.
	if got := Status(&v1alpha1.RolloutStatus{}, "x"); got.Phase != mesh.PhasePending || got.StepIndex != -1 {
		t.Errorf("empty status = %s %d, want Pending -1", got.Phase, got.StepIndex)
	}
}

func TestFromStatusColumnsAndConditions(t *testing.T) {
	var out v1alpha1.RolloutStatus
	st := fullStatus()
	FromStatus(st, 3, 3, t0, &out)
	if out.Step != "2/3" || out.Weight != 50 || out.Phase != "Paused" || out.ObservedGeneration != 3 {
		t.Errorf("step %q weight %d phase %q generation %d, want 2/3 50 Paused 3", out.Step, out.Weight, out.Phase, out.ObservedGeneration)
	}
	cond := func(typ string) metav1.Condition {
		for _, c := range out.Conditions {
			if c.Type == typ {
				return c
			}
		}
		t.Fatalf("no condition %s in %+v", typ, out.Conditions)
		return metav1.Condition{}
	}
	if c := cond(v1alpha1.ConditionPaused); c.Status != metav1.ConditionTrue || c.Reason != "StalledClients" {
		t.Errorf("Paused = %+v, want True StalledClients", c)
	}
	if c := cond(v1alpha1.ConditionProgressing); c.Status != metav1.ConditionTrue || c.Reason != "Shifting" {
		t.Errorf("Progressing = %+v, want True Shifting (the phase it resumes to)", c)
	}
	// Unchanged conditions keep their transition time; changed ones move.
	st.Phase, st.StalledClients, st.FinishedAt = mesh.PhaseSucceeded, nil, "x"
	FromStatus(st, 3, 3, t0.Add(time.Minute), &out)
	if c := cond(v1alpha1.ConditionProgressing); c.Status != metav1.ConditionFalse || c.Reason != "Succeeded" || !c.LastTransitionTime.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("Progressing = %+v, want False Succeeded, moved", c)
	}
	FromStatus(st, 4, 3, t0.Add(2*time.Minute), &out)
	if c := cond(v1alpha1.ConditionProgressing); !c.LastTransitionTime.Time.Equal(t0.Add(time.Minute)) || c.ObservedGeneration != 4 {
		t.Errorf("Progressing = %+v, want the same transition time and generation 4", c)
	}
}

func TestApplyControls(t *testing.T) {
	tests := []struct {
		name        string
		st          mesh.RolloutStatus
		spec        v1alpha1.RolloutSpec
		specChanged bool
		want        mesh.RolloutStatus
		selfPaused  bool
		refused     string
	}{
		{name: "pause", st: mesh.RolloutStatus{Phase: mesh.PhaseBaking}, spec: v1alpha1.RolloutSpec{Paused: true}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhaseBaking, Paused: true}},
		{name: "resume", st: mesh.RolloutStatus{Phase: mesh.PhasePaused, Paused: true, ResumePhase: mesh.PhaseBaking}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhasePaused, ResumePhase: mesh.PhaseBaking}},
		{name: "the engine's pause is kept and mirrored",
			st:   mesh.RolloutStatus{Phase: mesh.PhasePaused, Paused: true, ResumePhase: mesh.PhaseShifting, StalledClients: []string{"a@1"}},
			want: mesh.RolloutStatus{Phase: mesh.PhasePaused, Paused: true, ResumePhase: mesh.PhaseShifting, StalledClients: []string{"a@1"}}, selfPaused: true},
		{name: "abort", st: mesh.RolloutStatus{Phase: mesh.PhaseShifting}, spec: v1alpha1.RolloutSpec{Abort: true}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhaseShifting, Abort: true}},
		{name: "abort too late", st: mesh.RolloutStatus{Phase: mesh.PhaseRetiring, NewVersion: "1.0", OldVersion: "0.9"}, spec: v1alpha1.RolloutSpec{Abort: true}, specChanged: true,
			want:    mesh.RolloutStatus{Phase: mesh.PhaseRetiring, NewVersion: "1.0", OldVersion: "0.9"},
			refused: "too late to abort the rollout of echo-server: version 1.0 already takes all traffic and version 0.9 is being retired"},
		{name: "promote while paused", st: mesh.RolloutStatus{Phase: mesh.PhasePaused, Paused: true, ResumePhase: mesh.PhaseBaking},
			spec: v1alpha1.RolloutSpec{Promote: true, Paused: true}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhasePaused, Promote: true, Paused: true, ResumePhase: mesh.PhaseBaking}},
		{name: "promote while rolling back", st: mesh.RolloutStatus{Phase: mesh.PhaseRollingBack}, spec: v1alpha1.RolloutSpec{Promote: true}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhaseRollingBack}, refused: "the rollout of echo-server is rolling back; it cannot be promoted"},
		{name: "ended", st: mesh.RolloutStatus{Phase: mesh.PhaseSucceeded}, spec: v1alpha1.RolloutSpec{Abort: true, Paused: true}, specChanged: true,
			want: mesh.RolloutStatus{Phase: mesh.PhaseSucceeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.st
			self, refused := ApplyControls(&tt.spec, tt.specChanged, "echo-server", &st)
			if diff := cmp.Diff(tt.want, st); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if self != tt.selfPaused || refused != tt.refused {
				t.Errorf("selfPaused %v refused %q, want %v %q", self, refused, tt.selfPaused, tt.refused)
			}
		})
	}
}
