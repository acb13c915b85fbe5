package gatewaypod_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
)

// shop is the mesh of these tests: a VirtualGateway gw in namespace shop
// whose route (prefix gwPrefix) targets the virtual service web, whose
// router splits web-route between virtual nodes web-v1 (port p1) and
// web-v2 (port p2) by w1 and w2.
func shop(p1, p2, w1, w2 int, gwPrefix string) string {
	return fmt.Sprintf(`
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: shop}
spec:
  namespaceSelector: {matchLabels: {mesh: shop}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web-v1, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web, version: v1}}
  listeners:
    - portMapping: {port: %d, protocol: http}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web-v2, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web, version: v2}}
  listeners:
    - portMapping: {port: %d, protocol: http}
---
%s
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  provider:
    virtualRouter: {virtualRouterRef: {name: web}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw, namespace: shop}
spec:
  namespaceSelector: {matchLabels: {gateway: gw}}
  podSelector: {matchLabels: {app: gw}}
  listeners:
    - portMapping: {port: 8080, protocol: http}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: gw-route, namespace: shop}
spec:
  httpRoute:
    match: {prefix: %q}
    action:
      target:
        virtualService: {virtualServiceRef: {name: web}}
`, p1, p2, router(w1, w2), gwPrefix)
}

// router is the web router with web-route split w1/w2.
func router(w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: web, namespace: shop}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
  routes:
    - name: web-route
      httpRoute:
        match: {prefix: /}
        action:
          weightedTargets:
            - virtualNodeRef: {name: web-v1}
              weight: %d
            - virtualNodeRef: {name: web-v2}
              weight: %d`, w1, w2)
}

var (
	shopNS = namespace("shop", map[string]string{"mesh": "shop", "gateway": "gw"})
	v1     = map[string]string{"app": "web", "version": "v1"}
	v2     = map[string]string{"app": "web", "version": "v2"}
)

// waitReady waits until the pod's /readyz answers 200.
func waitReady(ctx context.Context, t *testing.T, p *runningPod) {
	t.Helper()
	pollUntil(ctx, t, "/readyz 200", func() (bool, error) {
		code, _, err := get(ctx, "http://"+p.HealthAddr()+"/readyz")
		return err == nil && code == http.StatusOK, nil
	})
}

// answers sends n requests to url through the gateway and counts the
// answers by "NODE IP"; any other status fails the test.
func answers(ctx context.Context, t *testing.T, url string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for range n {
		code, body, err := get(ctx, url)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %q %v, want 200", url, code, body, err)
		}
		f := strings.Fields(body)
		out[f[0]+" "+f[1]]++
	}
	return out
}

// TestWeightedSplit: the gateway sends the route's traffic to the router's
// weighted targets by weight, to the Ready pods of each node only: a pod
// not Ready yet, one Pending with an IP and one terminating (endpoints
// that listen but do not serve) get nothing.
func TestWeightedSplit(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	startBackend(t, "web-v1", "127.0.0.4", p1) // its pod is not Ready
	startBackend(t, "web-v1", "127.0.0.5", p1) // its pod is Pending
	startBackend(t, "web-v1", "127.0.0.6", p1) // its pod is terminating
	startBackend(t, "web-v2", "127.0.0.3", p2)
	pending := pod("shop", "web-v1-c", "127.0.0.5", false, v1)
	pending.Status.Phase = corev1.PodPending
	terminating := pod("shop", "web-v1-d", "127.0.0.6", true, v1)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Unix(1_700_000_000, 0)}
	terminating.Finalizers = []string{"test/keep"}
	c := k8sfake.New(t, shop(p1, p2, 80, 20, "/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
		pod("shop", "web-v1-b", "127.0.0.4", false, v1),
		pending, terminating,
		pod("shop", "web-v2-a", "127.0.0.3", true, v2),
	)
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{})
	waitReady(ctx, t, gw)

	const n = 500
	got := answers(ctx, t, "http://"+gw.Addr()+"/?name=Yusuke", n)
	if got["web-v1 127.0.0.4"] != 0 {
		t.Errorf("got %d answers from the pod that is not Ready, want 0", got["web-v1 127.0.0.4"])
	}
	// 20% of 500 is 100, sd about 9: 50..150 is far outside chance.
	if v2 := got["web-v2 127.0.0.3"]; v2 < 50 || v2 > 150 {
		t.Errorf("got %v: %d of %d answers from web-v2, want about %d (weight 20 of 100)", got, v2, n, n/5)
	}
	if got["web-v1 127.0.0.2"]+got["web-v2 127.0.0.3"] != n {
		t.Errorf("got %v, want every answer from web-v1 127.0.0.2 or web-v2 127.0.0.3", got)
	}
	if s := gw.Gateway().Stats(); len(s) != 2 {
		t.Errorf("got backends %v, want the two Ready pods", s)
	}
}

// TestFollowsRouteEdit: a router edited from 100/0 to 0/100 moves the
// gateway's traffic.
func TestFollowsRouteEdit(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	startBackend(t, "web-v2", "127.0.0.3", p2)
	c := k8sfake.New(t, shop(p1, p2, 100, 0, "/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
		pod("shop", "web-v2-a", "127.0.0.3", true, v2),
	)
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{})
	waitReady(ctx, t, gw)
	c.WaitWatches(ctx, t, k8sfake.WatchesPerSource)
	url := "http://" + gw.Addr() + "/"
	if got := answers(ctx, t, url, 50); got["web-v1 127.0.0.2"] != 50 {
		t.Fatalf("got %v before the edit, want all 50 from web-v1", got)
	}

	edited := appmeshObject(t, router(0, 100))
	if _, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("shop").Update(ctx, edited, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// After the rebuild every request goes to web-v2.
	inARow := 0
	pollUntil(ctx, t, "all traffic on web-v2", func() (bool, error) {
		got := answers(ctx, t, url, 1)
		if got["web-v2 127.0.0.3"] == 1 {
			inARow++
		} else {
			inARow = 0
		}
		return inARow == 50, nil
	})
}

// TestNotReadyPodLeaves: a pod that turns NotReady gets no more requests,
// without waiting for the debounce (an hour here).
func TestNotReadyPodLeaves(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2", "127.0.0.4"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	startBackend(t, "web-v1", "127.0.0.4", p1)
	startBackend(t, "web-v2", "127.0.0.3", p2)
	c := k8sfake.New(t, shop(p1, p2, 100, 0, "/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
		pod("shop", "web-v1-b", "127.0.0.4", true, v1),
	)
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{Source: controller.Options{Debounce: time.Hour, MaxDelay: time.Hour}})
	waitReady(ctx, t, gw)
	c.WaitWatches(ctx, t, k8sfake.WatchesPerSource)
	url := "http://" + gw.Addr() + "/"
	seen := map[string]int{}
	pollUntil(ctx, t, "both pods answer", func() (bool, error) {
		for k, v := range answers(ctx, t, url, 1) {
			seen[k] += v
		}
		return seen["web-v1 127.0.0.2"] > 0 && seen["web-v1 127.0.0.4"] > 0, nil
	})

	notReady := pod("shop", "web-v1-b", "127.0.0.4", false, v1)
	if _, err := c.Kube.CoreV1().Pods("shop").UpdateStatus(ctx, notReady, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	inARow := 0
	pollUntil(ctx, t, "only the Ready pod answers", func() (bool, error) {
		if answers(ctx, t, url, 1)["web-v1 127.0.0.2"] == 1 {
			inARow++
		} else {
			inARow = 0
		}
		return inARow == 50, nil
	})
	if s := gw.Gateway().Stats(); len(s) != 1 {
		t.Errorf("got backends %v, want only web-v1's Ready pod", s)
	}
}

// TestNoMatchingRoute404: a request no gateway route matches is answered
// 404 by the gateway; a matching one has its prefix rewritten to /.
func TestNoMatchingRoute404(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	c := k8sfake.New(t, shop(p1, p2, 100, 0, "/web/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
	)
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{})
	waitReady(ctx, t, gw)

	code, body, err := get(ctx, "http://"+gw.Addr()+"/shop/cart")
	if err != nil || code != http.StatusNotFound || !strings.Contains(body, "no gateway route matches") {
		t.Errorf("GET /shop/cart: %d %q %v, want 404 naming no gateway route", code, body, err)
	}
	code, body, err = get(ctx, "http://"+gw.Addr()+"/web/cart")
	if err != nil || code != http.StatusOK || body != "web-v1 127.0.0.2 /cart" {
		t.Errorf("GET /web/cart: %d %q %v, want 200 %q", code, body, err, "web-v1 127.0.0.2 /cart")
	}
}

// TestReadyWaitsForVirtualGateway: /readyz fails, naming why, while the
// virtual gateway is not in the cluster, and passes once it is.
func TestReadyWaitsForVirtualGateway(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	c := k8sfake.New(t, shop(p1, p2, 100, 0, "/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
	)
	gw := startPod(t, c, "shop/other-gw", gatewaypod.Config{})
	pollUntil(ctx, t, "first rebuild", func() (bool, error) { return gw.Source().Last() != nil, nil })
	code, body, err := get(ctx, "http://"+gw.HealthAddr()+"/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "virtual gateway shop/other-gw is not in the cluster") {
		t.Errorf("/readyz: %d %q %v, want 503 naming the missing virtual gateway", code, body, err)
	}
	if code, _, err := get(ctx, "http://"+gw.HealthAddr()+"/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz: %d %v, want 200", code, err)
	}
	if code, _, err := get(ctx, "http://"+gw.Addr()+"/"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET / without a virtual gateway: %d %v, want 404", code, err)
	}

	c.WaitWatches(ctx, t, k8sfake.WatchesPerSource)
	c.Create(t, appmeshObject(t, `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: other-gw, namespace: shop}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
`))
	c.Create(t, appmeshObject(t, `
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: other-route, namespace: shop}
spec:
  virtualGatewayRef: {name: other-gw}
  httpRoute:
    match: {prefix: /}
    action:
      target:
        virtualService: {virtualServiceRef: {name: web}}
`))
	waitReady(ctx, t, gw)
	if code, body, err := get(ctx, "http://"+gw.Addr()+"/"); err != nil || code != http.StatusOK {
		t.Errorf("GET /: %d %q %v, want 200", code, body, err)
	}
}

// TestRefusedVirtualGateway: a virtual gateway gmesh refuses routes
// nothing and fails /readyz naming the refused field.
func TestRefusedVirtualGateway(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	startBackend(t, "web-v1", "127.0.0.2", p1)
	strict := strings.Replace(shop(p1, p2, 100, 0, "/"), "    - portMapping: {port: 8080, protocol: http}\n---\napiVersion: appmesh.k8s.aws/v1beta2\nkind: GatewayRoute",
		"    - portMapping: {port: 8080, protocol: http}\n      tls: {mode: STRICT, certificate: {file: {certificateChain: /c.pem, privateKey: /k.pem}}}\n---\napiVersion: appmesh.k8s.aws/v1beta2\nkind: GatewayRoute", 1)
	if strict == shop(p1, p2, 100, 0, "/") {
		t.Fatal("the test's edit of the virtual gateway's listener did not apply")
	}
	c := k8sfake.New(t, strict, shopNS, pod("shop", "web-v1-a", "127.0.0.2", true, v1))
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{})
	pollUntil(ctx, t, "first rebuild", func() (bool, error) { return gw.Source().Last() != nil, nil })
	code, body, err := get(ctx, "http://"+gw.HealthAddr()+"/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "virtual gateway shop/gw was refused") || !strings.Contains(body, "spec.listeners[0].tls.mode") {
		t.Errorf("/readyz: %d %q %v, want 503 naming the refused field", code, body, err)
	}
	if code, _, err := get(ctx, "http://"+gw.Addr()+"/"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET / through a refused virtual gateway: %d %v, want 404", code, err)
	}
}

// TestGracefulShutdown: when Run's context ends, /readyz fails at once
// while the gateway still serves for the drain delay; then the listener
// closes, a request in flight still gets its answer, and Run returns
// leaving no goroutine behind.
func TestGracefulShutdown(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	p1, p2 := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	be := startBackend(t, "web-v1", "127.0.0.2", p1)
	ignore := goleak.IgnoreCurrent()
	c := k8sfake.New(t, shop(p1, p2, 100, 0, "/"), shopNS,
		pod("shop", "web-v1-a", "127.0.0.2", true, v1),
	)
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	gw := startPod(t, c, "shop/gw", gatewaypod.Config{DrainDelay: 5 * time.Second, Clock: clk})
	waitReady(ctx, t, gw)
	addr := gw.Addr()

	type reply struct {
		code int
		body string
		err  error
	}
	slow := make(chan reply, 1)
	go func() {
		code, body, err := get(ctx, "http://"+addr+"/slow")
		slow <- reply{code, body, err}
	}()
	select {
	case <-be.inSlow:
	case <-ctx.Done():
		t.Fatal("the slow request never reached the backend")
	}

	stopped := make(chan error, 1)
	go func() { stopped <- gw.stop() }()
	pollUntil(ctx, t, "/readyz 503 while draining", func() (bool, error) {
		code, body, err := get(ctx, "http://"+gw.HealthAddr()+"/readyz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down"), nil
	})
	// Draining: new requests are still served.
	if code, body, err := get(ctx, "http://"+addr+"/"); err != nil || code != http.StatusOK {
		t.Fatalf("GET / while draining: %d %q %v, want 200", code, body, err)
	}
	pollUntil(ctx, t, "drain timer armed", func() (bool, error) { return clk.Timers() > 0, nil })
	clk.Advance(5 * time.Second)
	pollUntil(ctx, t, "listener closed", func() (bool, error) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true, nil
		}
		conn.Close()
		return false, nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with a request in flight", err)
	default:
	}
	close(be.release)
	r := <-slow
	if r.err != nil || r.code != http.StatusOK || r.body != "web-v1 127.0.0.2 /slow" {
		t.Errorf("in-flight request: %d %q %v, want 200 %q", r.code, r.body, r.err, "web-v1 127.0.0.2 /slow")
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Run: %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after the in-flight request finished")
	}
	if err := goleak.Find(ignore); err != nil {
		t.Fatal(err)
	}
}

func TestParseVirtualGateway(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "echo/echo-gateway", want: "echo/echo-gateway"},
		{in: "echo-gateway", err: `virtual gateway "echo-gateway": want NAMESPACE/NAME, e.g. echo/echo-gateway`},
		{in: "/echo-gateway", err: `want NAMESPACE/NAME`},
		{in: "echo/", err: `want NAMESPACE/NAME`},
		{in: "a/b/c", err: `want NAMESPACE/NAME`},
		{in: "Echo/gw", err: `virtual gateway "Echo/gw": namespace "Echo": a lowercase RFC 1123 label`},
		{in: "echo/gw_1", err: `virtual gateway "echo/gw_1": name "gw_1": a lowercase RFC 1123 subdomain`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := gatewaypod.ParseVirtualGateway(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v, want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != nn("echo", "echo-gateway") || got.String() != tc.want {
				t.Fatalf("got %v, %v, want %s", got, err, tc.want)
			}
		})
	}
}
