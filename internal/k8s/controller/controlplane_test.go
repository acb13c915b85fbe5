package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

const (
	echoTarget  = "xds:///echo-server.echo.local"
	echoCluster = "echo/echo-server-0-9.echo" // mesh/NAME.NAMESPACE
)

var echoLabels = map[string]string{"app": "echo-server", "version": "0.9"}

// echoManifests are App Mesh manifests of the echo service: one virtual
// node selecting app=echo-server,version=0.9 pods, listening on port,
// behind a router and the virtual service echo-server.echo.local.
func echoManifests(port int) string {
	return fmt.Sprintf(`
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: echo, generation: 1}
spec:
  namespaceSelector: {matchLabels: {mesh: echo}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server-0-9, namespace: echo, generation: 1}
spec:
  podSelector: {matchLabels: {app: echo-server, version: "0.9"}}
  listeners:
    - portMapping: {port: %d, protocol: grpc}
  logging:
    accessLog: {file: {path: /dev/stdout}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: echo-server, namespace: echo, generation: 1}
spec:
  listeners:
    - portMapping: {port: %d, protocol: grpc}
  routes:
    - name: echo
      grpcRoute:
        match: {serviceName: proto.echo.EchoService}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: echo-server, namespace: echo, generation: 1}
spec:
  awsName: echo-server.echo.local
  provider:
    virtualRouter:
      virtualRouterRef: {name: echo-server}
`, port, port)
}

func echoNamespace() *corev1.Namespace { return namespace("echo", map[string]string{"mesh": "echo"}) }

// edsAddrs returns the addresses of cluster's endpoints in res, sorted.
func edsAddrs(res *xds.Resources, cluster string) []string {
	var out []string
	for _, cla := range res.Endpoints {
		if cla.GetClusterName() != cluster {
			continue
		}
		for _, le := range cla.GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				out = append(out, lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	slices.Sort(out)
	return out
}

// waitPublished waits until the last snapshot published satisfies cond
// and every connected client ACKed its endpoints; it returns the snapshot.
func waitPublished(ctx context.Context, t testing.TB, cp *running, what string, cond func(*controller.Snapshot) bool) *controller.Snapshot {
	t.Helper()
	var snap *controller.Snapshot
	pollUntil(ctx, t, what, func() (bool, error) {
		snap = cp.Source().Last()
		return snap != nil && snap.Resources != nil && cond(snap), nil
	})
	if err := cp.XDS().WaitConverged(ctx, xds.EndpointType, snap.Generation); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return snap
}

// TestServesClusterOverXDS: App Mesh objects, a labelled namespace and
// pods in; a real grpc-go xDS client reaches exactly the Ready pods the
// virtual node selects.
func TestServesClusterOverXDS(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e1 := startEcho(t, "127.0.0.21", 0, "0.9")
	e2 := startEcho(t, "127.0.0.22", e1.port, "0.9")
	c := newFakeCluster(t, echoManifests(e1.port),
		echoNamespace(),
		pod("echo", "echo-a", e1.ip, true, echoLabels),
		pod("echo", "echo-b", e2.ip, true, echoLabels),
		pod("echo", "echo-not-ready", "127.0.0.23", false, echoLabels),
		pod("echo", "other", "127.0.0.24", true, map[string]string{"app": "other"}),
		pod("elsewhere", "echo-c", "127.0.0.25", true, echoLabels),
	)
	cp := startCP(t, c, controller.Config{})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })

	snap := cp.Source().Last()
	if got, want := edsAddrs(snap.Resources, echoCluster), []string{e1.ip, e2.ip}; !slices.Equal(got, want) {
		t.Fatalf("got endpoints %v, want %v", got, want)
	}
	if errs := snap.Results.Errors(); len(errs) > 0 {
		t.Fatalf("got refusals %v, want none", errs)
	}

	client := dialXDS(t, cp.XDSAddr(), "echo/client-0", echoTarget)
	seen := map[string]int{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		ip, err := said(ctx, client)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		seen[ip]++
	}
	if len(seen) != 2 {
		t.Fatalf("got replies from %v, want both %s and %s", seen, e1.ip, e2.ip)
	}
	if err := cp.XDS().WaitConverged(ctx, xds.EndpointType, snap.Generation); err != nil {
		t.Fatal(err)
	}
}

// TestPodLeavesEDSAtOnce: a pod that turns NotReady, one relabelled out of
// the node's selector, then one that gets a deletionTimestamp, leaves EDS without waiting for the debounce (an hour
// here), and calls stop reaching it.
func TestPodLeavesEDSAtOnce(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e1 := startEcho(t, "127.0.0.31", 0, "0.9")
	e2 := startEcho(t, "127.0.0.32", e1.port, "0.9")
	c := newFakeCluster(t, echoManifests(e1.port),
		echoNamespace(),
		pod("echo", "echo-a", e1.ip, true, echoLabels),
		pod("echo", "echo-b", e2.ip, true, echoLabels),
		pod("echo", "echo-c", "127.0.0.33", true, echoLabels),
	)
	cp := startCP(t, c, controller.Config{Source: controller.Options{Debounce: time.Hour, MaxDelay: time.Hour}})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })
	c.WaitWatches(ctx, t, watchesPerSource)
	client := dialXDS(t, cp.XDSAddr(), "echo/client-0", echoTarget)
	if _, err := said(ctx, client); err != nil {
		t.Fatal(err)
	}

	// echo-b turns NotReady.
	p, err := c.Kube.CoreV1().Pods("echo").Get(ctx, "echo-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := c.Kube.CoreV1().Pods("echo").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPublished(ctx, t, cp, "echo-b leaves EDS", func(s *controller.Snapshot) bool {
		return slices.Equal(edsAddrs(s.Resources, echoCluster), []string{e1.ip, "127.0.0.33"})
	})

	// echo-c is relabelled out of the node's selector.
	p, err = c.Kube.CoreV1().Pods("echo").Get(ctx, "echo-c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"app": "debugging"}
	if _, err := c.Kube.CoreV1().Pods("echo").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPublished(ctx, t, cp, "echo-c leaves EDS", func(s *controller.Snapshot) bool {
		return slices.Equal(edsAddrs(s.Resources, echoCluster), []string{e1.ip})
	})
	for i := range 50 {
		ip, err := said(ctx, client)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if ip != e1.ip {
			t.Fatalf("call %d: got a reply from %s, want only %s", i, ip, e1.ip)
		}
	}

	// echo-a starts terminating.
	p, err = c.Kube.CoreV1().Pods("echo").Get(ctx, "echo-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	if _, err := c.Kube.CoreV1().Pods("echo").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPublished(ctx, t, cp, "echo-a leaves EDS", func(s *controller.Snapshot) bool {
		return len(edsAddrs(s.Resources, echoCluster)) == 0
	})
}

// TestShutdownLeavesNoGoroutine: Run returns with a client's ADS stream
// still open and leaves no goroutine behind (the webhooks and their
// leader's loop included).
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	ignore := goleak.IgnoreCurrent()
	c := newFakeCluster(t, echoManifests(50051), append(webhookObjects(), echoNamespace(), pod("echo", "echo-a", "127.0.0.41", true, echoLabels))...)
	cp := startCP(t, c, controller.Config{HealthAddr: "127.0.0.1:0", Status: &controller.StatusConfig{
		Namespace: "gmesh-system", Identity: "replica-0",
		LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
	}, Webhook: &webhook.Options{Addr: "127.0.0.1:0", Namespace: "gmesh-system"}})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })

	conn, err := grpc.NewClient(cp.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "echo/raw"}, TypeUrl: xds.ListenerType, ResourceNames: []string{"echo-server.echo.local"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetResources()); got != 1 {
		t.Fatalf("got %d listeners, want 1", got)
	}

	if err := cp.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("the ADS stream is still open after Run returned")
	}
	conn.Close()
	if err := goleak.Find(ignore); err != nil {
		t.Fatal(err)
	}
}

// TestReadyz: /readyz fails until the informers have synced and the first
// snapshot is published; /healthz answers throughout.
func TestReadyz(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	c := newFakeCluster(t, echoManifests(50051), echoNamespace())
	release := make(chan struct{})
	c.Dyn.PrependReactor("list", "meshes", func(k8stesting.Action) (bool, runtime.Object, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return false, nil, nil // on to the tracker
	})
	cp := startCP(t, c, controller.Config{HealthAddr: "127.0.0.1:0"})
	get := func(path string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.HealthAddr()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz: got %d, want 200", got)
	}
	if got := get("/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before sync: got %d, want 503", got)
	}
	close(release)
	pollUntil(ctx, t, "/readyz 200", func() (bool, error) { return get("/readyz") == http.StatusOK, nil })
	if snap := cp.Source().Last(); snap == nil || snap.Generation != 1 {
		t.Fatalf("got snapshot %+v, want generation 1 published", snap)
	}
}

// TestRouteEditUnderTraffic: a router edited (as by kubectl apply) from
// one node to 50/50 over it and a new node moves traffic to both with no
// failed call: the new node's cluster is published pinned at weight 0
// first, so clients subscribe before any call picks it.
func TestRouteEditUnderTraffic(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e09 := startEcho(t, "127.0.0.61", 0, "0.9")
	e10 := startEcho(t, "127.0.0.62", e09.port, "1.0")
	labels10 := map[string]string{"app": "echo-server", "version": "1.0"}
	node10 := fmt.Sprintf(`
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server-1-0, namespace: echo, generation: 1}
spec:
  podSelector: {matchLabels: {app: echo-server, version: "1.0"}}
  listeners:
    - portMapping: {port: %d, protocol: grpc}
`, e09.port)
	c := newFakeCluster(t, echoManifests(e09.port)+"\n---\n"+node10,
		echoNamespace(),
		pod("echo", "echo-09", e09.ip, true, echoLabels),
		pod("echo", "echo-10", e10.ip, true, labels10),
	)
	cp := startCP(t, c, controller.Config{})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })
	c.WaitWatches(ctx, t, watchesPerSource)
	client := dialXDS(t, cp.XDSAddr(), "echo/client-0", echoTarget)
	if ip, err := said(ctx, client); err != nil || ip != e09.ip {
		t.Fatalf("got a reply from %q (err %v), want %s", ip, err, e09.ip)
	}

	// Traffic: calls one after another, none waiting for readiness, until
	// both versions answered after the edit (or 5,000 calls).
	type outcome struct {
		seen   map[string]int
		failed []error
	}
	edited := make(chan struct{})
	done := make(chan outcome, 1)
	go func() {
		o := outcome{seen: map[string]int{}}
		after := map[string]bool{}
		for i := 0; i < 5000 && len(after) < 2; i++ {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := client.Echo(cctx, &echov1.EchoRequest{Name: "Yusuke"})
			cancel()
			if err != nil {
				o.failed = append(o.failed, err)
				continue
			}
			ip := e09.ip
			if strings.Contains(resp.GetMessage(), e10.ip) {
				ip = e10.ip
			}
			o.seen[ip]++
			select {
			case <-edited:
				after[ip] = true
			default:
			}
		}
		done <- o
	}()

	vr, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Get(ctx, "echo-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vr.SetGeneration(2)
	targets := []any{
		map[string]any{"virtualNodeRef": map[string]any{"name": "echo-server-0-9"}, "weight": int64(50)},
		map[string]any{"virtualNodeRef": map[string]any{"name": "echo-server-1-0"}, "weight": int64(50)},
	}
	routes, _, _ := unstructured.NestedSlice(vr.Object, "spec", "routes")
	route := routes[0].(map[string]any)
	if err := unstructured.SetNestedSlice(route, targets, "grpcRoute", "action", "weightedTargets"); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(vr.Object, routes, "spec", "routes"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Update(ctx, vr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	close(edited)
	o := <-done
	if len(o.failed) > 0 {
		t.Fatalf("got %d failed calls, want 0; first: %v", len(o.failed), o.failed[0])
	}
	if o.seen[e10.ip] == 0 {
		t.Fatalf("got replies %v, want some from the new node %s", o.seen, e10.ip)
	}
}
