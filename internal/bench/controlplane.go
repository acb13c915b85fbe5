package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// ColdStart measures n times: a new xDS ClientConn (its own xDS client and
// node id) to its first successful call through the mesh; and, as the
// baseline, a new passthrough ClientConn to its first call on one server.
func ColdStart(ctx context.Context, m *Mesh, direct string, n int) (viaMesh, viaDirect []time.Duration, err error) {
	for range n {
		t0 := time.Now()
		opt, err := m.Resolver(m.NodeID())
		if err != nil {
			return nil, nil, err
		}
		cc, err := grpc.NewClient(Target, grpc.WithTransportCredentials(insecure.NewCredentials()), opt)
		if err != nil {
			return nil, nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = Ready(cctx, echov1.NewEchoServiceClient(cc))
		cancel()
		viaMesh = append(viaMesh, time.Since(t0))
		cc.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("cold start through the mesh: %w", err)
		}

		t0 = time.Now()
		cc, err = DialPassthrough(direct)
		if err != nil {
			return nil, nil, err
		}
		cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		err = Ready(cctx, echov1.NewEchoServiceClient(cc))
		cancel()
		viaDirect = append(viaDirect, time.Since(t0))
		cc.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("cold start direct: %w", err)
		}
	}
	slices.Sort(viaMesh)
	slices.Sort(viaDirect)
	return viaMesh, viaDirect, nil
}

// ChangeCost is the cost of one kind of configuration change, per change.
type ChangeCost struct {
	Changes   int
	Clients   int
	Lat       []time.Duration // sorted: apply -> last client's ACK (or the step timed)
	CPU       time.Duration   // per change, whole process
	Allocs    float64         // per change
	Bytes     float64         // heap bytes allocated per change
	WireBytes float64         // bytes the control plane sent per change per client
}

// WeightChange applies n route weight changes (60/40 and 40/60 in turn)
// through the admin API with the given clients connected (through the
// counting proxy) and times each until every client has ACKed. CPU and
// allocations are the whole process's: store, translation, publish, and
// the in-process clients parsing the update.
func WeightChange(ctx context.Context, m *Mesh, clients, n int) (*ChangeCost, error) {
	var ccs []*grpc.ClientConn
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	for range clients {
		cc, err := m.DialCounted()
		if err != nil {
			return nil, err
		}
		ccs = append(ccs, cc)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = Ready(cctx, echov1.NewEchoServiceClient(cc))
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if err := m.WaitRoutes(ctx); err != nil {
		return nil, err
	}
	out := &ChangeCost{Changes: n, Clients: clients}
	runtime.GC()
	down0 := m.Proxy.Down.Load()
	u0 := ReadUsage()
	for i := range n {
		w := 40 + (i%2)*20
		t0 := time.Now()
		if err := m.SetWeights(ctx, w, 100-w); err != nil {
			return nil, err
		}
		if err := m.WaitRoutes(ctx); err != nil {
			return nil, err
		}
		out.Lat = append(out.Lat, time.Since(t0))
	}
	d := ReadUsage().Sub(u0)
	out.CPU = d.CPU / time.Duration(n)
	out.Allocs = float64(d.Mallocs) / float64(n)
	out.Bytes = float64(d.Bytes) / float64(n)
	out.WireBytes = float64(m.Proxy.Down.Load()-down0) / float64(n) / float64(max(1, clients))
	slices.Sort(out.Lat)
	// Leave the mesh at 50/50 for whoever runs next.
	if err := m.SetWeights(ctx, 50, 50); err != nil {
		return nil, err
	}
	return out, m.WaitRoutes(ctx)
}

// TrafficFollows flips the route between 100/0 and 0/100 n times with one
// client calling back to back, and times each flip until the client's calls
// are answered by the newly weighted version (and, beside it, until the
// client ACKed). Returns traffic and ACK times, sorted.
func TrafficFollows(ctx context.Context, m *Mesh, n int) (traffic, ack []time.Duration, err error) {
	cc, err := m.Dial()
	if err != nil {
		return nil, nil, err
	}
	defer cc.Close()
	client := echov1.NewEchoServiceClient(cc)
	if err := Ready(ctx, client); err != nil {
		return nil, nil, err
	}
	req := &echov1.EchoRequest{Name: PayloadName}
	for i := range n + 1 {
		w09, want := 100, "0.9"
		if i%2 == 1 {
			w09, want = 0, "1.0"
		}
		t0 := time.Now()
		if err := m.SetWeights(ctx, w09, 100-w09); err != nil {
			return nil, nil, err
		}
		acked := make(chan time.Duration, 1)
		go func() {
			if err := m.WaitRoutes(ctx); err != nil {
				acked <- -1
				return
			}
			acked <- time.Since(t0)
		}()
		deadline := t0.Add(10 * time.Second)
		for {
			resp, err := client.Echo(ctx, req)
			if err == nil && strings.HasSuffix(resp.GetMessage(), "Version "+want+")") {
				break
			}
			if time.Now().After(deadline) {
				return nil, nil, fmt.Errorf("traffic did not move to %s within 10s (last: %v %v)", want, resp.GetMessage(), err)
			}
		}
		d := time.Since(t0)
		a := <-acked
		if a < 0 {
			return nil, nil, errors.New("wait for ACK failed")
		}
		if i == 0 { // the first sets the starting point
			continue
		}
		traffic = append(traffic, d)
		ack = append(ack, a)
	}
	slices.Sort(traffic)
	slices.Sort(ack)
	if err := m.SetWeights(ctx, 50, 50); err != nil {
		return nil, nil, err
	}
	return traffic, ack, m.WaitRoutes(ctx)
}

// BigMesh is a mesh of services*2 virtual nodes (versions a and b of each
// service, split wa/100-wa by its route) with perNode healthy endpoints each.
func BigMesh(services, perNode int) ([]*mesh.Resource, []*mesh.Endpoint) {
	const meshName = "big"
	rs := []*mesh.Resource{{Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: meshName}, Spec: &mesh.MeshSpec{}}}
	var eps []*mesh.Endpoint
	for s := range services {
		svc := fmt.Sprintf("svc-%d", s)
		for _, v := range []string{"a", "b"} {
			rs = append(rs, &mesh.Resource{
				Kind:     mesh.KindVirtualNode,
				Metadata: mesh.Metadata{Name: svc + "-" + v, Mesh: meshName},
				Spec: &mesh.VirtualNodeSpec{
					Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: mesh.ProtocolGRPC}}},
					ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{
						ServiceName: svc, Attributes: []mesh.Attribute{{Key: mesh.AttrVersion, Value: v}},
					}},
				},
			})
			for i := range perNode {
				k := len(eps)
				eps = append(eps, &mesh.Endpoint{
					ID: fmt.Sprintf("%s-%s-%d", svc, v, i), Mesh: meshName, Service: svc,
					Address: fmt.Sprintf("10.%d.%d.%d", k>>16&255, k>>8&255, k&255), Port: 50051,
					Attributes: map[string]string{mesh.AttrVersion: v},
					State:      mesh.TaskRunning, Health: mesh.HealthHealthy,
				})
			}
		}
		rs = append(rs,
			&mesh.Resource{Kind: mesh.KindVirtualRouter, Metadata: mesh.Metadata{Name: svc, Mesh: meshName}, Spec: &mesh.VirtualRouterSpec{
				Listeners: []mesh.RouterListener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: mesh.ProtocolGRPC}}},
			}},
			&mesh.Resource{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: svc + "-route", Mesh: meshName}, Spec: &mesh.RouteSpec{
				VirtualRouterName: svc,
				GRPCRoute: &mesh.GRPCRoute{
					Match: mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
					Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{
						{VirtualNode: svc + "-a", Weight: 50}, {VirtualNode: svc + "-b", Weight: 50},
					}},
				},
			}},
			&mesh.Resource{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: svc + ".big.local", Mesh: meshName}, Spec: &mesh.VirtualServiceSpec{
				Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: svc}},
			}},
		)
	}
	mesh.SortResources(rs)
	return rs, eps
}

// TranslatePublishCost times n changes of xds.Translate + Publish on a
// fresh xDS server (no clients): each change flips the weights of one
// route of rs. Returns the translate and total times (sorted) and the cost
// per change.
func TranslatePublishCost(rs []*mesh.Resource, eps []*mesh.Endpoint, n int) (translate []time.Duration, cost *ChangeCost, err error) {
	srv := xdsserver.New(nil, xdsserver.Options{})
	defer srv.Close()
	// The route to shift: echo-server's in the echo stack (which also has
	// echo-client's), else the first route.
	var route *mesh.Resource
	for _, r := range rs {
		if r.Kind == mesh.KindRoute && (route == nil || r.Metadata.Name == "echo-server-route") {
			route = r
		}
	}
	if route == nil {
		return nil, nil, errors.New("no route")
	}
	first, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
	if err != nil {
		return nil, nil, err
	}
	if err := srv.Publish(first, 1); err != nil {
		return nil, nil, err
	}
	cost = &ChangeCost{Changes: n}
	runtime.GC()
	u0 := ReadUsage()
	for i := range n {
		rev := uint64(i + 2)
		w := 40 + (i%2)*20
		wt := route.Route().GRPCRoute.Action.WeightedTargets
		wt[0].Weight, wt[1].Weight = w, 100-w
		t0 := time.Now()
		res, err := xds.Translate(xds.Input{Revision: rev, Resources: rs, Endpoints: eps})
		if err != nil {
			return nil, nil, err
		}
		translate = append(translate, time.Since(t0))
		if err := srv.Publish(res, rev); err != nil {
			return nil, nil, err
		}
		cost.Lat = append(cost.Lat, time.Since(t0))
	}
	d := ReadUsage().Sub(u0)
	cost.CPU = d.CPU / time.Duration(n)
	cost.Allocs = float64(d.Mallocs) / float64(n)
	cost.Bytes = float64(d.Bytes) / float64(n)
	slices.Sort(translate)
	slices.Sort(cost.Lat)
	return translate, cost, nil
}

// ChildEnv, when set in a process's environment, makes the bench test
// binary or cmd/gmesh-bench run as a light-client child (RunChild) instead.
// Its value is "addr,clients,perConn".
const ChildEnv = "GMESH_BENCH_LIGHT_CHILD"

// lightSubs are the resources the echo service's client subscribes to.
var lightSubs = map[string][]string{
	xds.ListenerType: {"echo-server.echo.local"},
	xds.RouteType:    {"echo/echo-server.echo.local"},
	xds.ClusterType:  {"echo/echo-server-0-9", "echo/echo-server-1-0"},
	xds.EndpointType: {"echo/echo-server-0-9", "echo/echo-server-1-0"},
}

// lightClient is a minimal state-of-the-world ADS client: one stream, the
// echo service's four resources, an ACK for every response. first is
// signalled once all four types arrived.
func lightClient(ctx context.Context, conn *grpc.ClientConn, nodeID string, first chan<- struct{}) error {
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corepb.Node{Id: nodeID}
	for _, typeURL := range xds.TypeURLs {
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: lightSubs[typeURL]}); err != nil {
			return err
		}
	}
	go func() {
		seen := map[string]bool{}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			if !seen[resp.GetTypeUrl()] {
				seen[resp.GetTypeUrl()] = true
				if len(seen) == len(xds.TypeURLs) {
					first <- struct{}{}
				}
			}
			ack := &discoverypb.DiscoveryRequest{
				TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
				ResponseNonce: resp.GetNonce(), ResourceNames: lightSubs[resp.GetTypeUrl()],
			}
			if err := stream.Send(ack); err != nil {
				return
			}
		}
	}()
	return nil
}

// RunChild is the light-client child: it connects the clients ChildEnv
// asks for, prints "ready" once each has all four types, and holds them
// until its stdin closes. Returns the exit code.
func RunChild() int {
	parts := strings.Split(os.Getenv(ChildEnv), ",")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bad", ChildEnv)
		return 2
	}
	n, _ := strconv.Atoi(parts[1])
	per, _ := strconv.Atoi(parts[2])
	per = max(per, 1)
	ctx := context.Background()
	first := make(chan struct{}, n)
	var conn *grpc.ClientConn
	for i := range n {
		if i%per == 0 {
			c, err := grpc.NewClient("passthrough:///"+parts[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			conn = c
		}
		if err := lightClient(ctx, conn, fmt.Sprintf("light-%d-%d", os.Getpid(), i), first); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	for range n {
		<-first
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// ClientMemory is the control plane's memory per connected client.
type ClientMemory struct {
	Clients, PerConn int
	// HeapPer and StackPer are the live heap (after GC) and goroutine stack
	// growth per client, in bytes; GoroutinesPer the goroutines per client.
	HeapPer, StackPer, GoroutinesPer float64
}

// MeasureClientMemory connects n light ADS clients (perConn streams per
// connection; 1 = a connection each, as grpc-go does) from a child process
// (exe, which must honour ChildEnv) to the control plane's own address, and
// returns the growth of this process's live heap and stacks per client.
func MeasureClientMemory(ctx context.Context, m *Mesh, exe string, n, perConn int) (*ClientMemory, error) {
	before := liveMem()
	g0 := runtime.NumGoroutine()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", ChildEnv, m.CP.Addr(), n, perConn))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return nil, fmt.Errorf("light-client child: %q %v", line, err)
	}
	// Let every ACK land, then measure (liveMem collects garbage first).
	rev, _ := m.CP.XDS().Published()
	for _, t := range xds.TypeURLs {
		if err := m.CP.XDS().WaitConverged(ctx, t, rev); err != nil {
			return nil, err
		}
	}
	after := liveMem()
	g1 := runtime.NumGoroutine()
	return &ClientMemory{
		Clients: n, PerConn: perConn,
		HeapPer:       float64(after.heap-before.heap) / float64(n),
		StackPer:      float64(after.stack-before.stack) / float64(n),
		GoroutinesPer: float64(g1-g0) / float64(n),
	}, nil
}

type mem struct{ heap, stack int64 }

func liveMem() mem {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return mem{heap: int64(ms.HeapAlloc), stack: int64(ms.StackInuse)}
}
