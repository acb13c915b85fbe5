package controller_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// rdsClient is a bare ADS client subscribed to route configurations that
// answers each response only when the test says so: it stands for a
// client that has not ACKed yet, or NACKs.
type rdsClient struct {
	t      testing.TB
	stream discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	names  []string
}

func dialRDS(ctx context.Context, t testing.TB, addr, node string, names ...string) *rdsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.RouteType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	return &rdsClient{t: t, stream: st, names: names}
}

func (c *rdsClient) recv() *discoverypb.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("rds recv: %v", err)
	}
	return resp
}

// answer ACKs version (with the nonce of resp), or NACKs resp with nack.
func (c *rdsClient) answer(resp *discoverypb.DiscoveryResponse, version, nack string) {
	c.t.Helper()
	req := &discoverypb.DiscoveryRequest{TypeUrl: xds.RouteType, ResourceNames: c.names, VersionInfo: version, ResponseNonce: resp.GetNonce()}
	if nack != "" {
		req.ErrorDetail = &statuspb.Status{Message: nack}
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("rds send: %v", err)
	}
}

var cpLabels = map[string]string{"app.kubernetes.io/name": "gmesh", "app.kubernetes.io/component": "controlplane"}

// TestClusterConvergence: two replicas on loopback, xDS clients on both;
// the router edited to generation 2 converges only once the clients of
// both replicas ACKed it; a NACK is pending with its reason; a Ready
// replica that does not answer is pending, a NotReady or terminating one
// is skipped; a client of other routes never counts.
func TestClusterConvergence(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e := startEcho(t, "127.0.0.76", 0, "0.9")
	// One health port for every replica, each on its own address, as
	// pods have: found free on the first address.
	l, err := net.Listen("tcp", "127.0.0.71:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	terminating := pod("gmesh-system", "cp-e", "127.0.0.75", true, cpLabels)
	now := metav1.Now()
	terminating.DeletionTimestamp = &now
	terminating.Finalizers = []string{"test"}
	c := newFakeCluster(t, echoManifests(e.port),
		echoNamespace(),
		pod("echo", "echo-a", e.ip, true, echoLabels),
		pod("gmesh-system", "cp-a", "127.0.0.71", true, cpLabels),
		pod("gmesh-system", "cp-b", "127.0.0.72", true, cpLabels),
		pod("gmesh-system", "cp-d", "127.0.0.74", false, cpLabels), // not Ready: nothing listens there
		terminating, // nothing listens there either
	)
	replica := func(name, ip string) *running {
		return startCP(t, c, controller.Config{
			HealthAddr: net.JoinHostPort(ip, strconv.Itoa(port)),
			Replica:    name,
			Peers:      &controller.PeersConfig{Namespace: "gmesh-system", Port: port, Timeout: time.Second},
		})
	}
	a, b := replica("cp-a", "127.0.0.71"), replica("cp-b", "127.0.0.72")
	if a.Cluster() == nil {
		t.Fatal("Cluster() is nil with Peers set")
	}
	pollUntil(ctx, t, "ready", func() (bool, error) { return a.Ready() && b.Ready(), nil })
	c.WaitWatches(ctx, t, 2*watchesPerSource)

	// Real grpc-go clients on both replicas, and a bare one on each that
	// answers when told; a stray one on b asks for other routes only.
	for i, r := range []*running{a, b} {
		if ip, err := said(ctx, dialXDS(t, r.XDSAddr(), "echo/client-"+strconv.Itoa(i), echoTarget)); err != nil || ip != e.ip {
			t.Fatalf("got a reply from %q (err %v), want %s", ip, err, e.ip)
		}
	}
	routeConfig := xds.RouteConfigName("echo", "echo-server.echo.local")
	rawA := dialRDS(ctx, t, a.XDSAddr(), "echo/raw-a", routeConfig)
	rawB := dialRDS(ctx, t, b.XDSAddr(), "echo/raw-b", routeConfig)
	dialRDS(ctx, t, b.XDSAddr(), "echo/stray", xds.RouteConfigName("echo", "other.echo.local"))
	a1, b1 := rawA.recv(), rawB.recv()
	rawA.answer(a1, a1.GetVersionInfo(), "")
	rawB.answer(b1, b1.GetVersionInfo(), "")

	cluster := a.Cluster()
	var pending []string
	converged := func(gen int64, want ...string) func() (bool, error) {
		return func() (bool, error) {
			var done bool
			done, pending = cluster.ConvergedRouter("echo", "echo-server", gen)
			if want == nil {
				return done && len(pending) == 0, nil
			}
			return !done && slices.Equal(pending, want), nil
		}
	}
	pollUntil(ctx, t, "generation 1 converged on both replicas", converged(1))
	if done, p := cluster.ConvergedRouter("echo", "echo-server", 2); done || !slices.Equal(p, []string{
		"replica cp-a has not yet seen generation 2 of virtualrouter echo/echo-server",
		"replica cp-b has not yet seen generation 2 of virtualrouter echo/echo-server",
	}) {
		t.Fatalf("generation 2 before the edit: got %v %q, want not done, neither replica has seen it", done, p)
	}

	// The router gets a second route: generation 2, new route
	// configurations on both replicas.
	vr, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Get(ctx, "echo-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vr.SetGeneration(2)
	routes, _, _ := unstructured.NestedSlice(vr.Object, "spec", "routes")
	second := map[string]any{"name": "other", "grpcRoute": map[string]any{
		"match":  map[string]any{"serviceName": "proto.echo.Other"},
		"action": map[string]any{"weightedTargets": []any{map[string]any{"virtualNodeRef": map[string]any{"name": "echo-server-0-9"}, "weight": int64(100)}}},
	}}
	if err := unstructured.SetNestedSlice(vr.Object, append(routes, second), "spec", "routes"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Update(ctx, vr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a2, b2 := rawA.recv(), rawB.recv()
	if a2.GetVersionInfo() == a1.GetVersionInfo() || b2.GetVersionInfo() == b1.GetVersionInfo() {
		t.Fatal("the edit sent no new route configuration")
	}
	// The real clients ACK by themselves; the bare ones hold it, on both
	// replicas. Generation 1 stays converged (they ACKed it).
	pollUntil(ctx, t, "only the bare clients pending", converged(2, "echo/raw-a@"+a1.GetVersionInfo(), "echo/raw-b@"+b1.GetVersionInfo()))
	if done, p := cluster.ConvergedRouter("echo", "echo-server", 1); !done {
		t.Fatalf("generation 1 after the edit: not done, pending %q", p)
	}
	rawA.answer(a2, a2.GetVersionInfo(), "")
	pollUntil(ctx, t, "a's clients ACKed, b's bare one pending", converged(2, "echo/raw-b@"+b1.GetVersionInfo()))
	rawB.answer(b2, b1.GetVersionInfo(), "route other: unsupported")
	pollUntil(ctx, t, "the NACK pending with its reason", converged(2,
		"echo/raw-b@"+b1.GetVersionInfo()+" NACKed "+b2.GetVersionInfo()+": route other: unsupported"))
	rawB.answer(b2, b2.GetVersionInfo(), "")
	pollUntil(ctx, t, "generation 2 converged on both replicas", converged(2))

	// Each replica answers for its own clients only.
	if done, p := b.ConvergedRouter("echo", "echo-server", 2); !done || len(p) != 0 {
		t.Fatalf("replica b: got %v %q, want done", done, p)
	}

	// A Ready replica that does not answer holds convergence; once it is
	// NotReady it is skipped.
	if _, err := c.Kube.CoreV1().Pods("gmesh-system").Create(ctx, pod("gmesh-system", "cp-c", "127.0.0.73", true, cpLabels), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the silent replica pending", func() (bool, error) {
		done, p := cluster.ConvergedRouter("echo", "echo-server", 2)
		return !done && len(p) == 1 && strings.HasPrefix(p[0], "replica cp-c did not answer: "), nil
	})
	p, err := c.Kube.CoreV1().Pods("gmesh-system").Get(ctx, "cp-c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := c.Kube.CoreV1().Pods("gmesh-system").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the NotReady replica skipped", converged(2))
}

// TestConvergedRouterRefusedOrUnused: a router gmesh refuses is pending
// with why; a router no virtual service uses has no clients and is done
// at once.
func TestConvergedRouterRefusedOrUnused(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	unused := `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: unused, namespace: echo, generation: 5}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
  routes:
    - name: r
      grpcRoute:
        match: {serviceName: x.Y}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
`
	c := newFakeCluster(t, echoManifests(50051)+"\n---\n"+brokenManifests+"\n---\n"+unused, echoNamespace())
	cp := startCP(t, c, controller.Config{Replica: "cp-a"})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })
	if done, p := cp.ConvergedRouter("echo", "broken", 3); done || len(p) != 1 ||
		!strings.HasPrefix(p[0], "replica cp-a: virtualrouter echo/broken at generation 3 is not served: InvalidValue: ") || !strings.Contains(p[0], "spec.listeners") {
		t.Errorf("refused router: got %v %q, want not done, why", done, p)
	}
	if done, p := cp.ConvergedRouter("echo", "unused", 4); !done || len(p) != 0 {
		t.Errorf("unused router: got %v %q, want done", done, p)
	}
	if done, p := cp.ConvergedRouter("echo", "missing", 1); done || !slices.Equal(p, []string{"replica cp-a has not yet seen generation 1 of virtualrouter echo/missing"}) {
		t.Errorf("missing router: got %v %q, want not seen", done, p)
	}
}

// fakeConvergence records what it was asked.
type fakeConvergence struct {
	ns, name string
	gen      int64
}

func (f *fakeConvergence) ConvergedRouter(ns, name string, gen int64) (bool, []string) {
	f.ns, f.name, f.gen = ns, name, gen
	return false, []string{"echo/client-0@none"}
}

// TestConvergedRouterHandlerBadInput: a missing or invalid parameter is a
// 400 naming it; a good request gets the answer as JSON.
func TestConvergedRouterHandlerBadInput(t *testing.T) {
	f := &fakeConvergence{}
	srv := httptest.NewServer(controller.ConvergedRouterHandler(f))
	defer srv.Close()
	get := func(query string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + controller.PathConvergedRouter + "?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct{ query, names string }{
		{"", "namespace: required"},
		{"name=echo-server&generation=1", "namespace: required"},
		{"namespace=Echo_1&name=echo-server&generation=1", `namespace "Echo_1"`},
		{"namespace=echo&generation=1", "name: required"},
		{"namespace=echo&name=a/b&generation=1", `name "a/b"`},
		{"namespace=echo&name=echo-server", "generation: required"},
		{"namespace=echo&name=echo-server&generation=two", `generation "two": must be a positive integer`},
		{"namespace=echo&name=echo-server&generation=0", `generation "0": must be a positive integer`},
		{"namespace=echo&name=echo-server&generation=-3", `generation "-3": must be a positive integer`},
	} {
		code, body := get(tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.names) {
			t.Errorf("?%s: got %d %q, want 400 naming %q", tc.query, code, body, tc.names)
		}
	}
	if f.ns != "" {
		t.Fatalf("a bad request reached ConvergedRouter: %+v", f)
	}
	code, body := get("namespace=echo&name=echo-server&generation=7")
	var got struct {
		Done    bool     `json:"done"`
		Pending []string `json:"pending"`
	}
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil {
		t.Fatalf("good request: got %d %q (%v), want 200 JSON", code, body, err)
	}
	if got.Done || !slices.Equal(got.Pending, []string{"echo/client-0@none"}) || *f != (fakeConvergence{"echo", "echo-server", 7}) {
		t.Fatalf("good request: got %+v, asked %+v", got, *f)
	}
}

// TestStatusCountsEveryReplica: with Peers set, the leader's ACKed
// condition counts the xDS clients of both replicas, those that have not
// ACKed included.
func TestStatusCountsEveryReplica(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e := startEcho(t, "127.0.0.86", 0, "0.9")
	l, err := net.Listen("tcp", "127.0.0.81:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := newFakeCluster(t, echoManifests(e.port),
		echoNamespace(),
		pod("echo", "echo-a", e.ip, true, echoLabels),
		pod("gmesh-system", "cp-a", "127.0.0.81", true, cpLabels),
		pod("gmesh-system", "cp-b", "127.0.0.82", true, cpLabels),
	)
	replica := func(name, ip string) *running {
		return startCP(t, c, controller.Config{
			HealthAddr: net.JoinHostPort(ip, strconv.Itoa(port)),
			Replica:    name,
			Status: &controller.StatusConfig{Namespace: "gmesh-system", Identity: name,
				LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond},
			Peers: &controller.PeersConfig{Namespace: "gmesh-system", Port: port, Timeout: time.Second},
		})
	}
	a, b := replica("cp-a", "127.0.0.81"), replica("cp-b", "127.0.0.82")
	pollUntil(ctx, t, "ready", func() (bool, error) { return a.Ready() && b.Ready(), nil })
	routeConfig := xds.RouteConfigName("echo", "echo-server.echo.local")
	var raws []*rdsClient
	for i, r := range []*running{a, b} {
		if ip, err := said(ctx, dialXDS(t, r.XDSAddr(), "echo/client-"+strconv.Itoa(i), echoTarget)); err != nil || ip != e.ip {
			t.Fatalf("got a reply from %q (err %v), want %s", ip, err, e.ip)
		}
		raws = append(raws, dialRDS(ctx, t, r.XDSAddr(), "echo/raw-"+strconv.Itoa(i), routeConfig))
	}
	acked := func(total, acked int32, status metav1.ConditionStatus) func() (bool, error) {
		return func() (bool, error) {
			st := statusOf(ctx, t, c, controller.GVRVirtualRouters, "echo", "echo-server")
			cond := meta.FindStatusCondition(st.Conditions, v1beta2.ConditionACKed)
			return st.Clients != nil && st.Clients.Total == total && st.Clients.ACKed == acked && cond != nil && cond.Status == status, nil
		}
	}
	pollUntil(ctx, t, "4 clients over 2 replicas, 2 ACKed", acked(4, 2, metav1.ConditionUnknown))
	for _, raw := range raws {
		resp := raw.recv()
		raw.answer(resp, resp.GetVersionInfo(), "")
	}
	pollUntil(ctx, t, "4 clients over 2 replicas, all ACKed", acked(4, 4, metav1.ConditionTrue))
}
