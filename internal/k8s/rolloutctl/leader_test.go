package rolloutctl_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

type nopConsumer struct{}

func (nopConsumer) Consume(context.Context, *controller.Snapshot) error { return nil }

// elect runs r's replica in the leader election of the control plane
// (controller.StatusWriter, whose Source is not needed here), with the
// runtime's Lead while it leads; stop ends the replica, releasing the
// Lease.
func (k *cluster) elect(r *replica, id string) (stop func()) {
	k.t.Helper()
	src := controller.NewSourceFor(k.c.Kube, k.c.Dyn, nopConsumer{}, controller.Options{})
	sw, err := controller.NewStatusWriter(k.c.Kube, k.c.Dyn, src, nil, controller.StatusConfig{
		Namespace: "gmesh-system", Identity: id,
		LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
	}, nil)
	if err != nil {
		k.t.Fatal(err)
	}
	sw.AlsoWhileLeading(r.rt.Lead)
	ctx, cancel := context.WithCancel(k.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sw.Run(ctx); err != nil {
			k.t.Errorf("%s: %v", id, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	k.t.Cleanup(stop)
	return stop
}

// TestOnlyTheLeaderDrives: of two replicas only the Lease holder drives
// the rollout; when it goes mid-bake, the other takes the Lease and
// finishes the rollout from its status (the router generations the old
// leader recorded stay valid).
func TestOnlyTheLeaderDrives(t *testing.T) {
	k := newCluster(t)
	a, b := k.replica("cp-a"), k.replica("cp-b")
	k.start(a.watches + b.watches)
	stops := []func(){k.elect(a, "cp-a"), k.elect(b, "cp-b")}
	k8sfake.PollUntil(k.ctx, t, "one replica leading", func() (bool, error) {
		return a.rt.Leading() != b.rt.Leading(), nil
	})
	leader, follower, stopLeader := a, b, stops[0]
	if b.rt.Leading() {
		leader, follower, stopLeader = b, a, stops[1]
	}
	k.applyRollout("echo-server", func(ro *v1alpha1.Rollout) { ro.Spec.Interval.Duration = 400 * time.Millisecond })
	k.waitPhase("echo-server", mesh.PhaseBaking)
	if n := follower.rt.Passes(); n != 0 {
		t.Errorf("the follower made %d passes", n)
	}
	if leader.rt.Passes() == 0 {
		t.Errorf("the leader made no pass")
	}
	stopLeader()
	// client-go runs the leading callback on a goroutine of its own: Lead
	// ends once its context (the Lease's) is cancelled, soon after.
	k8sfake.PollUntil(k.ctx, t, "the stopped replica not driving", func() (bool, error) { return !leader.rt.Leading(), nil })
	k8sfake.PollUntil(k.ctx, t, "the other replica leading", func() (bool, error) { return follower.rt.Leading(), nil })
	ro := k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) || k.routeTargets() != "echo-server-1-0=100" {
		t.Fatalf("phase %s (%s), route %s; events:\n%s", ro.Status.Phase, ro.Status.Reason, k.routeTargets(), events(ro))
	}
	if follower.rt.Passes() == 0 {
		t.Errorf("the new leader made no pass")
	}
	if k.exists("deployment/echo-server-0-9") || k.exists("virtualnode/echo-server-0-9") {
		t.Errorf("the old version is left")
	}
	k.conv.check(t)
}
