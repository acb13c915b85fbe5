package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
	"github.com/gmesh-dev/gmesh/internal/xds/server"
)

const target = "xds:///echo-server.echo.local"

// testLogger logs warnings and up to the test log, so a failing test shows
// NACKs and go-control-plane's complaints.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GMESH_XDS_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// controlPlane is an in-process xDS server on loopback.
type controlPlane struct {
	*server.Server
	addr string
}

func startControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(testLogger(t), server.Options{})
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() {
		srv.Close()
		g.Stop()
	})
	return &controlPlane{Server: srv, addr: lis.Addr().String()}
}

// echoServer is a real gRPC echo server that answers with its identity.
type echoServer struct {
	echov1.UnimplementedEchoServiceServer
	version string
	addr    string
	health  *health.Server
}

func (e *echoServer) Echo(_ context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: fmt.Sprintf("Hello, %s-san! (Said %s, Version %s)", req.GetName(), e.addr, e.version)}, nil
}

// startEcho serves on ip:0 and returns the server.
func startEcho(t testing.TB, ip, version string) *echoServer {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{version: version, addr: lis.Addr().String(), health: health.NewServer()}
	g := grpc.NewServer()
	echov1.RegisterEchoServiceServer(g, e)
	healthpb.RegisterHealthServer(g, e.health)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return e
}

func (e *echoServer) endpoint(id string) *mesh.Endpoint {
	host, port, _ := net.SplitHostPort(e.addr)
	p, _ := strconv.Atoi(port)
	return &mesh.Endpoint{
		ID: id, Mesh: "echo", Service: "echo-server", Address: host, Port: p,
		Attributes: map[string]string{mesh.AttrVersion: e.version},
		State:      mesh.TaskRunning, Health: mesh.HealthHealthy,
	}
}

// topology is the echo mesh: echo-server in versions 0.9 and 1.0 behind a
// router whose one gRPC route splits w09/w10.
func topology(w09, w10 int) []*mesh.Resource {
	node := func(name, version string) *mesh.Resource {
		return &mesh.Resource{
			Kind:     mesh.KindVirtualNode,
			Metadata: mesh.Metadata{Name: name, Mesh: "echo"},
			Spec: &mesh.VirtualNodeSpec{
				Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: mesh.ProtocolGRPC}}},
				ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{
					ServiceName: "echo-server",
					Attributes:  []mesh.Attribute{{Key: mesh.AttrVersion, Value: version}},
				}},
			},
		}
	}
	return []*mesh.Resource{
		{Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: "echo"}, Spec: &mesh.MeshSpec{}},
		node("echo-server-0-9", "0.9"),
		node("echo-server-1-0", "1.0"),
		{Kind: mesh.KindVirtualRouter, Metadata: mesh.Metadata{Name: "echo-server", Mesh: "echo"}, Spec: &mesh.VirtualRouterSpec{}},
		{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: "echo-server-route", Mesh: "echo"}, Spec: &mesh.RouteSpec{
			VirtualRouterName: "echo-server",
			GRPCRoute: &mesh.GRPCRoute{
				Match: mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
				Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{
					{VirtualNode: "echo-server-0-9", Weight: w09},
					{VirtualNode: "echo-server-1-0", Weight: w10},
				}},
				RetryPolicy: &mesh.GRPCRetryPolicy{GRPCRetryEvents: []string{"unavailable"}, MaxRetries: 2, PerRetryTimeout: mesh.Duration{Value: 1, Unit: "s"}},
			},
		}},
		{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: "echo-server.echo.local", Mesh: "echo"}, Spec: &mesh.VirtualServiceSpec{
			Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "echo-server"}},
		}},
	}
}

// publish translates and publishes the topology at rev.
func publish(t testing.TB, cp *controlPlane, rev uint64, w09, w10 int, eps ...*mesh.Endpoint) *xds.Resources {
	t.Helper()
	res, err := xds.Translate(xds.Input{Revision: rev, Resources: topology(w09, w10), Endpoints: eps})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := cp.Publish(res, rev); err != nil {
		t.Fatalf("Publish(%d): %v", rev, err)
	}
	return res
}

// dial returns a ClientConn to the echo virtual service through xDS with its
// own xDS client and node id.
func dial(t testing.TB, cp *controlPlane, nodeID string) *grpc.ClientConn {
	t.Helper()
	bs, err := bootstrap.JSON(cp.addr, nodeID, nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// call makes one Echo call and returns the answering server's version.
func call(ctx context.Context, c echov1.EchoServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"}, grpc.WaitForReady(true))
	if err != nil {
		return "", err
	}
	msg := resp.GetMessage()
	i := strings.LastIndex(msg, "Version ")
	if i < 0 {
		return "", fmt.Errorf("unexpected reply %q", msg)
	}
	return strings.TrimSuffix(msg[i+len("Version "):], ")"), nil
}

// callAddr makes one call and returns the answering server's address.
func callAddr(ctx context.Context, c echov1.EchoServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"}, grpc.WaitForReady(true))
	if err != nil {
		return "", err
	}
	msg := resp.GetMessage()
	i, j := strings.Index(msg, "(Said "), strings.Index(msg, ", Version")
	if i < 0 || j < i {
		return "", fmt.Errorf("unexpected reply %q", msg)
	}
	return msg[i+len("(Said ") : j], nil
}

// pollUntil calls cond until it returns true or ctx ends.
func pollUntil(ctx context.Context, t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached after %d tries: %v", what, i+1, ctx.Err())
		case <-tick.C:
		}
	}
}
