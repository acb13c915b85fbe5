package rolloutctl_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestRolloutToNewVersion: the echo example's echo-server goes from 0.9
// to 1.0 through 10, 50 and 100%, each step waiting on a generation of
// the router; at the end only 1.0 is routed to and the old Deployment and
// VirtualNode are gone.
func TestRolloutToNewVersion(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.applyRollout("echo-server", nil)
	ro := k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) {
		t.Fatalf("phase %s (%s); events:\n%s", ro.Status.Phase, ro.Status.Reason, events(ro))
	}
	for _, want := range []string{"Step 1/3 (10%) passed", "Step 2/3 (50%) passed", "Version 0.9 retired"} {
		if !hasEvent(ro, want) {
			t.Errorf("no event %q; events:\n%s", want, events(ro))
		}
	}
	if got := k.routeTargets(); got != "echo-server-1-0=100" {
		t.Errorf("route targets %s, want echo-server-1-0=100", got)
	}
	for what, want := range map[string]bool{
		"deployment/echo-server-0-9": false, "virtualnode/echo-server-0-9": false,
		"deployment/echo-server-1-0": true, "virtualnode/echo-server-1-0": true,
	} {
		if got := k.exists(what); got != want {
			t.Errorf("%s exists: %v, want %v", what, got, want)
		}
	}
	d, err := k.c.Kube.AppsV1().Deployments(ns).Get(k.ctx, "echo-server-1-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "gmesh.local/echo-server:1.0" || d.Spec.Template.Labels["version"] != "1.0" || *d.Spec.Replicas != 2 {
		t.Errorf("new Deployment: image %s, labels %v, replicas %d", img, d.Spec.Template.Labels, *d.Spec.Replicas)
	}
	st := ro.Status
	if st.Target == nil || st.Target.Version != "1.0" || st.ObservedGeneration != ro.Generation || st.Weight != 100 || st.Step != "3/3" {
		t.Errorf("status: target %+v, observedGeneration %d (generation %d), weight %d, step %q", st.Target, st.ObservedGeneration, ro.Generation, st.Weight, st.Step)
	}
	if len(st.History) != 2 || st.History[0].Version != "0.9" || st.History[1].Version != "1.0" {
		t.Errorf("history %+v", st.History)
	}
	// Each entry records its Deployment's pod template, so that gmesh
	// rollback can run 0.9 again although its Deployment is gone.
	for _, h := range st.History {
		if h.Template == nil || !strings.Contains(string(h.Template.Raw), "gmesh.local/echo-server:"+h.Version) {
			t.Errorf("history entry %d (version %s) records template %v, want its Deployment's, with image echo-server:%s", h.Revision, h.Version, h.Template, h.Version)
		}
	}
	if back, prev, err := rollouts.RollbackSpec(ro); err != nil || prev.Version != "0.9" || back.Version != "0.9" {
		t.Errorf("the rollback to the previous revision: %+v, %+v, %v; want version 0.9", back, prev, err)
	}
	// Each step's wait is on the router's generation after its write:
	// the weight-0 target, 10, 50, 100.
	gens := k.conv.check(t)
	if len(gens) != 3 || gens[0] < 2 || !increasing(gens) {
		t.Errorf("waited on router generations %v, want the three of 10%%, 50%% and 100%% (the weight-0 write is not waited on)", gens)
	}
	if scrapes := k.metrics.scrapes.Load(); scrapes < 3 {
		t.Errorf("%d scrapes of the new pods' /metrics", scrapes)
	}
}

func increasing(s []int64) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

// TestRollbackOnFailedAnalysis: the new version's calls fail: the first
// bake rolls back, the new Deployment and VirtualNode are deleted, and the
// route is 0.9's alone again.
func TestRollbackOnFailedAnalysis(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.metrics.bad.Store(true)
	k.applyRollout("echo-server", nil)
	ro := k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseRolledBack) || !strings.Contains(ro.Status.Reason, "analysis of version 1.0 at 10% failed") {
		t.Fatalf("phase %s (%s), want RolledBack on the analysis; events:\n%s", ro.Status.Phase, ro.Status.Reason, events(ro))
	}
	if got := k.routeTargets(); got != "echo-server-0-9=100" {
		t.Errorf("route targets %s, want echo-server-0-9=100", got)
	}
	for what, want := range map[string]bool{
		"deployment/echo-server-0-9": true, "virtualnode/echo-server-0-9": true,
		"deployment/echo-server-1-0": false, "virtualnode/echo-server-1-0": false,
	} {
		if got := k.exists(what); got != want {
			t.Errorf("%s exists: %v, want %v", what, got, want)
		}
	}
	k.conv.check(t)
}

// TestAbort: spec.abort during a bake rolls back; once the rollout ended,
// a new target begins as the next rollout.
func TestAbort(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.applyRollout("echo-server", func(ro *v1alpha1.Rollout) { ro.Spec.Interval.Duration = time.Minute })
	k.waitPhase("echo-server", mesh.PhaseBaking)
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Abort = true })
	ro := k.waitPhase("echo-server", mesh.PhaseAborted, mesh.PhaseRolledBack, mesh.PhaseFailed, mesh.PhaseSucceeded)
	if ro.Status.Phase != string(mesh.PhaseAborted) {
		t.Fatalf("phase %s, want Aborted; events:\n%s", ro.Status.Phase, events(ro))
	}
	if got := k.routeTargets(); got != "echo-server-0-9=100" || k.exists("deployment/echo-server-1-0") {
		t.Errorf("after the abort: route %s, new Deployment left: %v", got, k.exists("deployment/echo-server-1-0"))
	}
	// The same version again, the abort taken back (kubectl apply of the
	// manifest with abort: false): a new rollout of it, aborted in turn.
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Abort = false })
	ro = k.waitRollout("echo-server", "the same target retried", func(ro *v1alpha1.Rollout) bool {
		return ro.Status.Revision == 2 && ro.Status.Phase == string(mesh.PhaseBaking)
	})
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Abort = true })
	if ro = k.waitPhase("echo-server", mesh.PhaseAborted, mesh.PhaseRolledBack, mesh.PhaseFailed, mesh.PhaseSucceeded); ro.Status.Phase != string(mesh.PhaseAborted) {
		t.Fatalf("the retried rollout ended %s, want Aborted; events:\n%s", ro.Status.Phase, events(ro))
	}
	// The next version, with the abort taken back.
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) {
		s.Abort, s.Version, s.Interval.Duration = false, "1.1", 100*time.Millisecond
		s.Images[0].Image = "gmesh.local/echo-server:1.1"
	})
	ro = k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) || ro.Status.NewVersion != "1.1" || k.routeTargets() != "echo-server-1-1=100" {
		t.Fatalf("third rollout: phase %s version %s route %s; events:\n%s", ro.Status.Phase, ro.Status.NewVersion, k.routeTargets(), events(ro))
	}
	if ro.Status.Revision != 3 {
		t.Errorf("revision %d, want 3", ro.Status.Revision)
	}
	k.conv.check(t)
}

// TestPauseResume: spec.paused holds a bake's weight until it is false
// again. A pause the engine makes itself (clients that do not ACK,
// onStalledClient: Pause) is mirrored into spec.paused, and resumed by
// setting it to false.
func TestPauseResume(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.applyRollout("echo-server", func(ro *v1alpha1.Rollout) {
		ro.Spec.Interval.Duration = 300 * time.Millisecond
		ro.Spec.AckTimeout.Duration = 200 * time.Millisecond
	})
	k.waitPhase("echo-server", mesh.PhaseBaking)
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Paused = true })
	ro := k.waitPhase("echo-server", mesh.PhasePaused)
	if ro.Status.ResumePhase != string(mesh.PhaseBaking) || ro.Status.Weight != 10 {
		t.Errorf("paused in %s at %d%%, want Baking at 10%%", ro.Status.ResumePhase, ro.Status.Weight)
	}
	// The runtime looks at the paused rollout again after its bake would
	// have ended (300 ms), twice, and leaves it paused.
	paused, before := time.Now(), r.rt.Passes()
	k8sfake.PollUntil(k.ctx, t, "two passes of the runtime after the bake would have ended", func() (bool, error) {
		r.rt.Notify()
		return time.Since(paused) > 500*time.Millisecond && r.rt.Passes() >= before+2, nil
	})
	if ro := k.rollout("echo-server"); ro.Status.Phase != string(mesh.PhasePaused) || k.routeTargets() != "echo-server-0-9=90,echo-server-1-0=10" {
		t.Fatalf("while paused: phase %s, route %s", ro.Status.Phase, k.routeTargets())
	}
	// The clients stop ACKing: the next step pauses by itself.
	k.conv.hold.Store(true)
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Paused = false })
	k.waitRollout("echo-server", "the stalled pause mirrored into spec.paused", func(ro *v1alpha1.Rollout) bool {
		return ro.Status.Phase == string(mesh.PhasePaused) && len(ro.Status.StalledClients) > 0 && ro.Spec.Paused
	})
	k.conv.hold.Store(false)
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Paused = false })
	ro = k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) {
		t.Fatalf("phase %s (%s); events:\n%s", ro.Status.Phase, ro.Status.Reason, events(ro))
	}
	for _, want := range []string{"Resumed at 10%", "have not acknowledged the route at 50%", "Resumed at 50%"} {
		if !hasEvent(ro, want) {
			t.Errorf("no event %q; events:\n%s", want, events(ro))
		}
	}
	k.conv.check(t)
}

// TestControlRefused: an abort once the new version takes all traffic is
// refused, and the condition says why.
func TestControlRefused(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.conv.hold.Store(true) // Retiring waits for the ACKs of 100%
	k.applyRollout("echo-server", func(ro *v1alpha1.Rollout) {
		ro.Spec.Steps = []int32{100}
		ro.Spec.OnStalledClient = v1alpha1.StalledProceed
		ro.Spec.AckTimeout.Duration = 100 * time.Millisecond
	})
	k.waitPhase("echo-server", mesh.PhaseRetiring)
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Abort = true })
	k.waitRollout("echo-server", "ControlRefused", func(ro *v1alpha1.Rollout) bool {
		for _, c := range ro.Status.Conditions {
			if c.Type == v1alpha1.ConditionControlRefused && c.Status == "True" && strings.Contains(c.Message, "too late to abort") {
				return true
			}
		}
		return false
	})
	k.conv.hold.Store(false)
	if ro := k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseAborted, mesh.PhaseRolledBack); ro.Status.Phase != string(mesh.PhaseSucceeded) {
		t.Errorf("phase %s, want Succeeded", ro.Status.Phase)
	}
}

// TestMissingStableDeployment: a Rollout naming a Deployment that does not
// exist fails with the reason, and nothing is created.
func TestMissingStableDeployment(t *testing.T) {
	k := newCluster(t)
	r := k.replica("cp-0")
	k.start(r.watches)
	k.lead(r)
	k.applyRollout("echo-server", func(ro *v1alpha1.Rollout) { ro.Spec.StableDeployment = "echo-server-0-8" })
	ro := k.waitPhase("echo-server", mesh.PhaseFailed, mesh.PhaseSucceeded, mesh.PhaseRolledBack)
	if ro.Status.Phase != string(mesh.PhaseFailed) || ro.Status.Reason != "the stable Deployment echo-server-0-8 does not exist in namespace echo" {
		t.Fatalf("phase %s, reason %q", ro.Status.Phase, ro.Status.Reason)
	}
	if k.exists("deployment/echo-server-1-0") || k.exists("virtualnode/echo-server-1-0") || k.routeTargets() != "echo-server-0-9=100" {
		t.Errorf("a refused rollout changed the cluster")
	}
	// Adopting instead: the stable Deployment unset is found from the route.
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.StableDeployment = ""; s.Route = "" })
	if ro := k.rollout("echo-server"); ro.Status.Phase != string(mesh.PhaseFailed) {
		t.Fatalf("phase %s", ro.Status.Phase)
	}
	// The target did not change, so the failure stands; a new version begins.
	k.patch("echo-server", func(s *v1alpha1.RolloutSpec) { s.Version = "1.0.1" })
	ro = k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) || k.routeTargets() != "echo-server-1-0-1=100" {
		t.Fatalf("adopted: phase %s route %s; events:\n%s", ro.Status.Phase, k.routeTargets(), events(ro))
	}
}
