package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu   sync.Mutex
	gens []uint64
	last *xds.Resources
}

func (r *recorder) Publish(res *xds.Resources, gen uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gens = append(r.gens, gen)
	r.last = res
	return nil
}

func (r *recorder) get() ([]uint64, *xds.Resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.gens...), r.last
}

// runSource runs a Source on c until the test ends.
func runSource(t *testing.T, c *fakeCluster, pub controller.Publisher, opts controller.Options) *controller.Source {
	t.Helper()
	opts.Logger = testLogger(t)
	s := controller.NewSource(c.Kube, c.Dyn, pub, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Source.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Source.Run did not return within 30s of cancel")
		}
	})
	return s
}

// TestDebounceBurst: a burst of 50 new virtual nodes publishes nothing
// until the debounce has passed since the last change, then one snapshot
// with all of them; generations increase by one per publish.
func TestDebounceBurst(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	const debounce = 100 * time.Millisecond
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	c := newFakeCluster(t, echoManifests(50051), echoNamespace())
	rec := &recorder{}
	src := runSource(t, c, rec, controller.Options{Debounce: debounce, MaxDelay: 10 * debounce, Clock: clk})
	pollUntil(ctx, t, "ready", func() (bool, error) { return src.Ready(), nil })
	c.WaitWatches(ctx, t, watchesPerSource)
	if gens, _ := rec.get(); len(gens) != 1 {
		t.Fatalf("got %d publishes after start, want 1", len(gens))
	}

	const burst = 50
	nodes := c.Dyn.Resource(controller.GVRVirtualNodes).Namespace("echo")
	for i := range burst {
		obj := appmeshObject(t, fmt.Sprintf(`
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: burst-%d, namespace: echo, generation: 1}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
`, i))
		if _, err := nodes.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The first change armed the debounce; nothing is published while the
	// clock stands still.
	pollUntil(ctx, t, "debounce armed", func() (bool, error) { return clk.Timers() > 0, nil })
	if gens, _ := rec.get(); len(gens) != 1 {
		t.Fatalf("got %d publishes during the burst, want 1 (the first)", len(gens))
	}
	pollUntil(ctx, t, "burst published", func() (bool, error) {
		_, last := rec.get()
		if len(last.Clusters) == burst+1 {
			return true, nil
		}
		if clk.Timers() > 0 {
			clk.Advance(debounce)
		}
		return false, nil
	})
	gens, _ := rec.get()
	// One publish for the burst; a notification still in flight when the
	// clock moved may add one more.
	if len(gens) > 3 {
		t.Fatalf("got %d publishes (generations %v) for a burst of %d, want at most 3", len(gens), gens, burst)
	}
	for i, g := range gens {
		if g != uint64(i+1) {
			t.Fatalf("got generations %v, want 1, 2, ...", gens)
		}
	}
}

// serverListenerAddrs returns the addresses of the server listeners in res
// (grpc-go xDS servers' listeners), sorted.
func serverListenerAddrs(res *xds.Resources) []string {
	var out []string
	for _, l := range res.Listeners {
		if addr, ok := strings.CutPrefix(l.GetName(), "grpc/server?xds.resource.listening_address="); ok {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// TestStartingPodGetsServerListener: in a mesh with TLS on (a STRICT
// node), a selected pod that is not Ready yet (Running, or Pending with an
// IP) and one that is terminating get their server Listener, which a
// STRICT pod's grpc-go xDS server needs before it serves (and so before it
// can turn Ready), but are in no EDS; the Ready pod is in both. Once the
// starting pod turns Ready it is in EDS too.
func TestStartingPodGetsServerListener(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	manifests := strings.Replace(echoManifests(50051), "    - portMapping: {port: 50051, protocol: grpc}\n  logging:",
		"    - portMapping: {port: 50051, protocol: grpc}\n      tls: {mode: STRICT, certificate: {sds: {secretName: echo}}}\n  logging:", 1)
	if manifests == echoManifests(50051) {
		t.Fatal("the test's edit of the virtual node's listener did not apply")
	}
	pending := pod("echo", "echo-pending", "127.0.0.63", false, echoLabels)
	pending.Status.Phase = corev1.PodPending
	terminating := pod("echo", "echo-terminating", "127.0.0.64", true, echoLabels)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Unix(1_700_000_000, 0)}
	terminating.Finalizers = []string{"test/keep"}
	c := newFakeCluster(t, manifests, echoNamespace(),
		pod("echo", "echo-ready", "127.0.0.61", true, echoLabels),
		pod("echo", "echo-starting", "127.0.0.62", false, echoLabels),
		pending, terminating,
		pod("echo", "echo-no-ip", "", false, echoLabels),
	)
	rec := &recorder{}
	src := runSource(t, c, rec, controller.Options{Debounce: 10 * time.Millisecond})
	pollUntil(ctx, t, "ready", func() (bool, error) { return src.Ready(), nil })
	c.WaitWatches(ctx, t, watchesPerSource)

	_, res := rec.get()
	if errs := src.Last().Results.Errors(); len(errs) > 0 {
		t.Fatalf("got refusals %v, want none", errs)
	}
	wantListeners := []string{"127.0.0.61:50051", "127.0.0.62:50051", "127.0.0.63:50051", "127.0.0.64:50051"}
	if got := serverListenerAddrs(res); !slices.Equal(got, wantListeners) {
		t.Errorf("server listeners %v, want %v", got, wantListeners)
	}
	if got, want := edsAddrs(res, echoCluster), []string{"127.0.0.61"}; !slices.Equal(got, want) {
		t.Errorf("EDS %v, want only the Ready pod %v", got, want)
	}

	// echo-starting turns Ready: it joins EDS and keeps its listener.
	p, err := c.Kube.CoreV1().Pods("echo").Get(ctx, "echo-starting", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions[0].Status = corev1.ConditionTrue
	if _, err := c.Kube.CoreV1().Pods("echo").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "echo-starting in EDS", func() (bool, error) {
		_, res := rec.get()
		return slices.Equal(edsAddrs(res, echoCluster), []string{"127.0.0.61", "127.0.0.62"}), nil
	})
	if _, res := rec.get(); !slices.Equal(serverListenerAddrs(res), wantListeners) {
		t.Errorf("server listeners %v, want %v", serverListenerAddrs(res), wantListeners)
	}

	// The pod's IP goes away (it finished): no listener, no endpoint.
	p.Status.Phase = corev1.PodSucceeded
	if _, err := c.Kube.CoreV1().Pods("echo").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "echo-starting gone", func() (bool, error) {
		_, res := rec.get()
		return !slices.Contains(serverListenerAddrs(res), "127.0.0.62:50051") && slices.Equal(edsAddrs(res, echoCluster), []string{"127.0.0.61"}), nil
	})
}

// TestNoTLSNoServerListeners: without TLS in the mesh, starting pods change
// nothing that is published: no server listeners, EDS the Ready pods.
func TestNoTLSNoServerListeners(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	c := newFakeCluster(t, echoManifests(50051), echoNamespace(),
		pod("echo", "echo-ready", "127.0.0.71", true, echoLabels),
		pod("echo", "echo-starting", "127.0.0.72", false, echoLabels),
	)
	rec := &recorder{}
	src := runSource(t, c, rec, controller.Options{Debounce: 10 * time.Millisecond})
	pollUntil(ctx, t, "ready", func() (bool, error) { return src.Ready(), nil })
	_, res := rec.get()
	if got := serverListenerAddrs(res); len(got) != 0 {
		t.Errorf("server listeners %v, want none", got)
	}
	if got, want := edsAddrs(res, echoCluster), []string{"127.0.0.71"}; !slices.Equal(got, want) {
		t.Errorf("EDS %v, want %v", got, want)
	}
}
