package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

const echoTarget = "xds:///echo-server.echo.local"

// Health check of the test's virtual nodes: a failing endpoint leaves EDS
// after fastUnhealthy checks fastInterval apart.
const (
	fastInterval  = 200 * time.Millisecond
	fastUnhealthy = 2
)

// fastNode is a virtual node selecting echo-server tasks of version with
// a fast gRPC health check.
func fastNode(t testing.TB, name, version string) *mesh.Resource {
	t.Helper()
	return decodeOne(t, fmt.Sprintf(`
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: %s, mesh: echo}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      healthCheck:
        protocol: grpc
        intervalMillis: %d
        timeoutMillis: 150
        healthyThreshold: 2
        unhealthyThreshold: %d
  serviceDiscovery:
    registry:
      serviceName: echo-server
      attributes: [{key: version, value: %q}]
`, name, fastInterval.Milliseconds(), fastUnhealthy, version))
}

// splitRoute is the echo-server route with weights over the 0.9 and 1.0
// nodes.
func splitRoute(t testing.TB, w09, w10 int) *mesh.Resource {
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
        - {virtualNode: echo-server-0-9, weight: %d}
        - {virtualNode: echo-server-1-0, weight: %d}
`, w09, w10))
}

// echoTask is a real echo server on a loopback address.
type echoTask struct {
	srv     *echo.Server
	ip      string
	version string
	// ctx ends at cleanup, cutting a drain started by unhealthy short.
	ctx context.Context
}

// startEchoTask serves an echo server of version on ip:0 until the test
// ends.
func startEchoTask(t testing.TB, ip, version string) *echoTask {
	t.Helper()
	srv, err := echo.NewServer(echo.ServerConfig{
		Addr:    net.JoinHostPort(ip, "0"),
		Version: version,
		// Health turns NOT_SERVING at once on Shutdown; calls are still
		// answered until the drain delay ends (see unhealthy).
		DrainDelay:      time.Minute,
		ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("echo.NewServer(%s): %v", ip, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		cancel()
		srv.Shutdown(ctx)
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Errorf("echo server %s did not stop", ip)
		}
	})
	return &echoTask{srv: srv, ip: ip, version: version, ctx: ctx}
}

// unhealthy turns the server's health NOT_SERVING while it keeps
// answering Echo calls (the first part of its drain).
func (e *echoTask) unhealthy() {
	go e.srv.Shutdown(e.ctx)
}

func (e *echoTask) endpoint(id string) *mesh.Endpoint {
	port := e.srv.Addr().(*net.TCPAddr).Port
	return &mesh.Endpoint{
		ID: id, Mesh: "echo", Service: "echo-server", Address: e.ip, Port: port,
		Attributes: map[string]string{mesh.AttrVersion: e.version, mesh.AttrTaskSet: "echo-server-" + strings.ReplaceAll(e.version, ".", "-")},
		State:      mesh.TaskRunning,
	}
}

// dialXDS returns an echo client of the virtual service through its own
// xDS client with node id nodeID.
func dialXDS(t testing.TB, cpAddr, nodeID string) echov1.EchoServiceClient {
	t.Helper()
	bs, err := bootstrap.JSON(cpAddr, nodeID, nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatalf("xDS resolver: %v", err)
	}
	cc, err := grpc.NewClient(echoTarget, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatalf("NewClient(%s): %v", echoTarget, err)
	}
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoServiceClient(cc)
}

// said makes one Echo call and returns who answered: "<ip> <version>".
func said(ctx context.Context, c echov1.EchoServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"}, grpc.WaitForReady(true))
	if err != nil {
		return "", err
	}
	msg := resp.GetMessage()
	i, j := strings.Index(msg, "(Said "), strings.LastIndex(msg, ", Version ")
	if i < 0 || j < i || !strings.HasSuffix(msg, ")") {
		return "", fmt.Errorf("unexpected reply %q", msg)
	}
	return msg[i+len("(Said "):j] + " " + strings.TrimSuffix(msg[j+len(", Version "):], ")"), nil
}

// waitHealth polls until the endpoint id has health want.
func waitHealth(ctx context.Context, t testing.TB, c *controlplane.Client, id string, want mesh.HealthStatus) {
	t.Helper()
	pollUntil(ctx, t, fmt.Sprintf("endpoint %s %s", id, want), func() (bool, error) {
		eps, err := c.Endpoints(ctx, "echo", "echo-server")
		if err != nil {
			return false, err
		}
		for _, ep := range eps {
			if ep.ID == id {
				return ep.Health == want, nil
			}
		}
		return false, nil
	})
}

// TestEndToEnd runs the control plane with the echo stack, real echo
// servers registered through the admin API and a real grpc-go xDS client:
// replies arrive, an endpoint that turns NOT_SERVING stops getting traffic
// within interval × threshold, and a route change is ACKed and visible in
// status.
func TestEndToEnd(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	cp := startCP(t, "")
	c := cp.client

	// The route lists 1.0 at weight 0 from the start: grpc-go then keeps
	// its cluster (see xds.PinHeader), so a later weight change never picks
	// a cluster the client has not added yet.
	rs := append(echoStack(t, true), fastNode(t, "echo-server-1-0", "1.0"))
	for i, r := range rs {
		switch {
		case r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-0-9":
			rs[i] = fastNode(t, "echo-server-0-9", "0.9")
		case r.Kind == mesh.KindRoute && r.Metadata.Name == "echo-server-route":
			rs[i] = splitRoute(t, 100, 0)
		}
	}
	if _, _, err := c.Apply(ctx, "stack.yaml", rs, false); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	a := startEchoTask(t, "127.0.0.2", "0.9")
	b := startEchoTask(t, "127.0.0.3", "0.9")
	v10 := startEchoTask(t, "127.0.0.4", "1.0")
	tasks := map[string]*echoTask{"task-a": a, "task-b": b, "task-c": v10}
	for _, id := range []string{"task-a", "task-b", "task-c"} {
		if err := c.Register(ctx, tasks[id].endpoint(id)); err != nil {
			t.Fatalf("Register(%s): %v", id, err)
		}
	}
	for id := range tasks {
		waitHealth(ctx, t, c, id, mesh.HealthHealthy)
	}

	const nodeID = "e2e-client-1"
	client := dialXDS(t, cp.Addr(), nodeID)
	aName, bName := a.ip+" 0.9", b.ip+" 0.9"

	// Both 0.9 tasks answer; 1.0 gets nothing at weight 0.
	seen := map[string]int{}
	pollUntil(ctx, t, "replies from both 0.9 tasks", func() (bool, error) {
		who, err := said(ctx, client)
		if err != nil {
			return false, err
		}
		seen[who]++
		return seen[aName] > 0 && seen[bName] > 0, nil
	})
	if n := seen[v10.ip+" 1.0"]; n > 0 {
		t.Errorf("version 1.0 at weight 0 answered %d calls, want 0", n)
	}

	t.Run("NOT_SERVING leaves traffic", func(t *testing.T) {
		flipped := time.Now()
		a.unhealthy()
		// Poll until a run of calls all reach b, remembering a's last reply.
		const run = 50
		var lastA time.Time
		inARow := 0
		pollUntil(ctx, t, "traffic off the NOT_SERVING task", func() (bool, error) {
			who, err := said(ctx, client)
			if err != nil {
				return false, err
			}
			switch who {
			case bName:
				inARow++
			case aName:
				lastA, inARow = time.Now(), 0
			default:
				return false, fmt.Errorf("reply from %q, want %q or %q", who, aName, bName)
			}
			return inARow >= run, nil
		})
		// The bound: interval × threshold, plus one interval for the
		// checker's phase, plus slack for EDS and a loaded machine.
		bound := fastInterval*fastUnhealthy + fastInterval + 2*time.Second
		t.Logf("last reply from the NOT_SERVING task: %v after the flip (bound %v)", lastA.Sub(flipped).Round(time.Millisecond), bound)
		if !lastA.IsZero() {
			if d := lastA.Sub(flipped); d > bound {
				t.Errorf("the NOT_SERVING task still answered %v after the flip, want at most %v", d.Round(time.Millisecond), bound)
			}
		}
		waitHealth(ctx, t, c, "task-a", mesh.HealthUnhealthy)
		const n = 200
		for i := range n {
			who, err := said(ctx, client)
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			if who != bName {
				t.Fatalf("call %d of %d after the flip answered by %q, want %q", i+1, n, who, bName)
			}
		}
	})

	t.Run("route change is ACKed", func(t *testing.T) {
		resp, _, err := c.Apply(ctx, "route.yaml", []*mesh.Resource{splitRoute(t, 50, 50)}, false)
		if err != nil {
			t.Fatalf("Apply(route 50/50): %v", err)
		}
		if got := resp.Results; len(got) != 1 || got[0] != "configured" {
			t.Fatalf("Apply results = %q, want [configured]", got)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ack, err := c.API().WaitACK(wctx, &meshv1.WaitACKRequest{Version: fmt.Sprint(resp.Revision)})
		if err != nil {
			t.Fatalf("WaitACK(%d): %v", resp.Revision, err)
		}
		if ack.Clients < 1 {
			t.Errorf("WaitACK clients = %d, want >= 1", ack.Clients)
		}
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.PublishedRevision < resp.Revision {
			t.Errorf("status published revision = %d, want >= %d", st.PublishedRevision, resp.Revision)
		}
		var found bool
		for _, cl := range st.Clients {
			if cl.NodeID != nodeID {
				continue
			}
			found = true
			for _, typ := range xds.TypeURLs {
				got, want := cl.Types[typ].ACKedVersion, st.PublishedVersions[typ]
				if typ == xds.RouteType && got != want {
					t.Errorf("client %s ACKed %s version %q, want the published %q", nodeID, typ, got, want)
				}
				if got == "" {
					t.Errorf("client %s has ACKed no %s version", nodeID, typ)
				}
			}
			if cl.LastNACK != nil {
				t.Errorf("client %s last NACK = %+v, want none", nodeID, cl.LastNACK)
			}
		}
		if !found {
			t.Errorf("status clients = %+v, want one with node id %s", st.Clients, nodeID)
		}
		// The new weights carry traffic: 1.0 answers soon.
		v10Name := v10.ip + " 1.0"
		calls := 0
		pollUntil(ctx, t, "a reply from 1.0 after 50/50", func() (bool, error) {
			who, err := said(ctx, client)
			if err != nil {
				return false, err
			}
			if who == aName {
				return false, errors.New("the unhealthy task answered")
			}
			calls++
			return who == v10Name, nil
		})
		if calls > 50 {
			t.Errorf("1.0 first answered call %d at 50%%, want it within 50", calls)
		}
	})

	t.Run("WaitACK of a future revision times out", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := c.API().WaitACK(wctx, &meshv1.WaitACKRequest{Version: strconv.FormatUint(cp.Store().Revision()+100, 10)})
		if err == nil {
			t.Error("WaitACK of a revision never written: got nil, want a deadline error")
		}
	})
}
