package rolloutctl_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestAttachToTheControlPlane: the runtime as `gmesh controlplane
// --kubernetes` runs it, attached to the real control plane (its Source's
// informers, its leader election) with its own clients' convergence (ControlPlane.ConvergedRouter), carries the echo
// example's Rollout out. With no xDS client connected every generation
// that was published counts as ACKed; one not published yet does not.
// Once the control plane stopped, no goroutine is left.
func TestAttachToTheControlPlane(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// The scraper's idle keep-alive connections close with their server.
		if err := goleak.Find(ignore, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop")); err != nil {
			t.Error(err)
		}
	})
	k := newCluster(t)
	b, err := os.ReadFile("../../../examples/kubernetes/echo/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range k8sfake.Objects(t, string(b)) {
		obj.SetResourceVersion("1")
		obj.SetGeneration(1)
		k.c.Create(t, obj)
	}
	if err := k.c.Kube.Tracker().Create(corev1.SchemeGroupVersion.WithResource("namespaces"), k8sfake.Namespace(ns, map[string]string{"mesh": "echo"}), ""); err != nil {
		t.Fatal(err)
	}
	cp, err := controller.New(controller.Config{
		Kube: k.c.Kube, Dynamic: k.c.Dyn,
		Source: controller.Options{Debounce: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond},
		Status: &controller.StatusConfig{Namespace: "gmesh-system", Identity: "cp-0",
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	conv := cp // this replica's clients: the test runs one
	rt, err := rolloutctl.Attach(cp, k.c.Kube, k.c.Dyn, conv, slog.New(slog.NewTextHandler(testWriter{t, "cp-0"}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(k.ctx)
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// The Source's eight watches, Rollouts and Deployments.
	k.start(k8sfake.WatchesPerSource + 2)
	k8sfake.PollUntil(k.ctx, t, "leading and published", func() (bool, error) { return rt.Leading() && cp.Ready(), nil })
	if done, pending := conv.ConvergedRouter(ns, "echo-server", 1); !done {
		t.Errorf("generation 1, published, no clients: pending %v", pending)
	}
	if done, pending := conv.ConvergedRouter(ns, "echo-server", 2); done || len(pending) != 1 {
		t.Errorf("generation 2, not published yet: done %v, pending %v", done, pending)
	}
	k.applyRollout("echo-server", nil)
	ro := k.waitPhase("echo-server", mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed)
	if ro.Status.Phase != string(mesh.PhaseSucceeded) || k.routeTargets() != "echo-server-1-0=100" {
		t.Fatalf("phase %s (%s), route %s; events:\n%s", ro.Status.Phase, ro.Status.Reason, k.routeTargets(), events(ro))
	}
	if done, _ := conv.ConvergedRouter(ns, "echo-server", ro.Status.WriteRevision); !done {
		t.Errorf("the last route write's generation %d is not converged", ro.Status.WriteRevision)
	}
}
