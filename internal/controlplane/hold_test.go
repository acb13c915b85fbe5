package controlplane_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// onlyRoute is the echo-server route with a single target.
func onlyRoute(t testing.TB, node string) *mesh.Resource {
	t.Helper()
	return decodeOne(t, fmt.Sprintf(`
apiVersion: gmesh.dev/v1
kind: Route
metadata: {name: echo-server-route, mesh: echo}
spec:
  virtualRouterName: echo-server
  grpcRoute:
    match: {serviceName: proto.echo.EchoService}
    action:
      weightedTargets:
        - {virtualNode: %s, weight: 100}
`, node))
}

// TestNewTargetGetsWeightWithoutFailures: a route edited from 100% 0.9
// straight to 50/50 over a node it did not list before (a plain `gmesh
// apply`, not a rollout) fails no call. grpc-go fails calls that pick a
// cluster it has not subscribed to yet, so the control plane first
// publishes the new target pinned at weight 0, waits for the ACKs, then
// gives it weight.
func TestNewTargetGetsWeightWithoutFailures(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	cp := startCP(t, "")
	c := cp.client
	rs := append(echoStack(t, true), fastNode(t, "echo-server-1-0", "1.0"))
	for i, r := range rs {
		if r.Kind == mesh.KindRoute && r.Metadata.Name == "echo-server-route" {
			rs[i] = onlyRoute(t, "echo-server-0-9")
		}
	}
	if _, _, err := c.Apply(ctx, "stack.yaml", rs, false); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	old := startEchoTask(t, "127.0.0.2", "0.9")
	v10 := startEchoTask(t, "127.0.0.3", "1.0")
	for id, task := range map[string]*echoTask{"old": old, "new": v10} {
		if err := c.Register(ctx, task.endpoint(id)); err != nil {
			t.Fatalf("Register(%s): %v", id, err)
		}
		waitHealth(ctx, t, c, id, mesh.HealthHealthy)
	}
	client := dialXDS(t, cp.Addr(), "hold-client")
	pollUntil(ctx, t, "a reply from 0.9", func() (bool, error) {
		who, err := said(ctx, client)
		return err == nil && who == old.ip+" 0.9", err
	})

	// Calls run without wait-for-ready, so a call that picks an unknown
	// cluster fails instead of waiting.
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if err := echoNoWait(ctx, client); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	if _, _, err := c.Apply(ctx, "route.yaml", []*mesh.Resource{splitRoute(t, 50, 50)}, false); err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("Apply(50/50): %v", err)
	}
	pollUntil(ctx, t, "a reply from 1.0", func() (bool, error) {
		who, err := said(ctx, client)
		return err == nil && who == v10.ip+" 1.0", err
	})
	close(stop)
	wg.Wait()
	t.Logf("%d calls during the change, %d failed", calls.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d calls failed while a new target got weight; first: %v", failed.Load(), calls.Load(), firstErr.Load())
	}
}

// echoNoWait makes one Echo call that fails fast rather than waiting for a
// ready connection.
func echoNoWait(ctx context.Context, c echov1.EchoServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"})
	return err
}
