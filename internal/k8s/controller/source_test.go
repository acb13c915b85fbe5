package controller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

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
