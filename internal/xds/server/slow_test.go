package server_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// TestStuckClientDoesNotBlockPublish: a client that subscribes and then never
// reads or ACKs must not hold up Publish, nor convergence of the others
// beyond being listed as pending.
func TestStuckClientDoesNotBlockPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	var eps []*mesh.Endpoint
	for i := range 200 { // large enough responses to fill flow-control windows
		e := fakeEndpoint(i)
		eps = append(eps, e)
	}
	publish(t, cp, 1, 50, 50, eps...)

	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typeURL := range xds.TypeURLs {
		names := map[string][]string{
			xds.ListenerType: {"echo-server.echo.local"}, xds.RouteType: {"echo/echo-server.echo.local"},
			xds.ClusterType: {"echo/echo-server-0-9", "echo/echo-server-1-0"}, xds.EndpointType: {"echo/echo-server-0-9", "echo/echo-server-1-0"},
		}[typeURL]
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "stuck"}, TypeUrl: typeURL, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(ctx, t, "stuck client known", func() (bool, error) { return len(cp.Clients()) == 1, nil })

	done := make(chan struct{})
	go func() {
		defer close(done)
		for rev := uint64(2); rev < 300; rev++ {
			w := 10 + int(rev%80)
			res, err := xds.Translate(xds.Input{Revision: rev, Resources: topology(w, 100-w), Endpoints: eps[:rev%200+1]})
			if err != nil {
				t.Error(err)
				return
			}
			if err := cp.Publish(res, rev); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Publish blocked behind a client that does not read")
	}
	if ok, pending := cp.Converged(xds.RouteType, 299); ok || len(pending) != 1 || pending[0] != "stuck@none" {
		t.Errorf("Converged = %v, %v, want false, [stuck@none]", ok, pending)
	}
}

// fakeEndpoint returns a registered, serving endpoint with no server
// behind it (the stuck client never dials).
func fakeEndpoint(i int) *mesh.Endpoint {
	v := "0.9"
	if i%2 == 1 {
		v = "1.0"
	}
	return &mesh.Endpoint{
		ID: "e" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Mesh: "echo", Service: "echo-server",
		Address: "127.0.1." + itoa(i%250+1), Port: 50000 + i,
		Attributes: map[string]string{mesh.AttrVersion: v}, State: mesh.TaskRunning, Health: mesh.HealthHealthy,
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestConvergedForCountsOnlySubscribers: a client that never ACKs holds the
// convergence of the route configurations it subscribed to, and of no other.
func TestConvergedForCountsOnlySubscribers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	publish(t, cp, 1, 50, 50, fakeEndpoint(0))
	stuck := func(node string, routeConfigs ...string) {
		conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.RouteType, ResourceNames: routeConfigs}); err != nil {
			t.Fatal(err)
		}
	}
	stuck("elsewhere", "echo/other.echo.local")
	pollUntil(ctx, t, "the client is known", func() (bool, error) { return len(cp.Clients()) == 1, nil })
	publish(t, cp, 2, 90, 10, fakeEndpoint(0))
	echoRoutes := []string{"echo/echo-server.echo.local"}
	if done, pending := cp.ConvergedFor(xds.RouteType, 2, echoRoutes); !done {
		t.Errorf("ConvergedFor(echo-server's routes) = false, %v; want true: the stuck client never asked for them", pending)
	}
	if done, pending := cp.Converged(xds.RouteType, 2); done || len(pending) != 1 || pending[0] != "elsewhere@none" {
		t.Errorf("Converged(all) = %v, %v; want false, [elsewhere@none]", done, pending)
	}
	stuck("subscriber", "echo/echo-server.echo.local")
	pollUntil(ctx, t, "the second client is known", func() (bool, error) { return len(cp.Clients()) == 2, nil })
	if done, pending := cp.ConvergedFor(xds.RouteType, 2, echoRoutes); done || len(pending) != 1 || pending[0] != "subscriber@none" {
		t.Errorf("ConvergedFor(echo-server's routes) = %v, %v; want false, [subscriber@none]", done, pending)
	}
}
