package xds_test

import (
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// echoTopology is the reference setup: echo-server in two versions behind a
// router with one gRPC route, and echo-client provided by its node.
func echoTopology(w09, w10 int) []*mesh.Resource {
	prio := 10
	node := func(name, version string, port int, protocol string, hc *mesh.HealthCheck, od *mesh.OutlierDetection) *mesh.Resource {
		return &mesh.Resource{
			APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualNode,
			Metadata: mesh.Metadata{Name: name, Mesh: "echo"},
			Spec: &mesh.VirtualNodeSpec{
				Listeners: []mesh.Listener{{
					PortMapping:      mesh.PortMapping{Port: port, Protocol: protocol},
					HealthCheck:      hc,
					OutlierDetection: od,
				}},
				ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{
					ServiceName: serviceOf(name),
					Attributes:  attrs(version),
				}},
			},
		}
	}
	grpcHC := &mesh.HealthCheck{Protocol: mesh.ProtocolGRPC, IntervalMillis: 1000, TimeoutMillis: 500, HealthyThreshold: 2, UnhealthyThreshold: 2}
	od := &mesh.OutlierDetection{MaxServerErrors: 5, Interval: mesh.Duration{Value: 10, Unit: "s"}, BaseEjectionDuration: mesh.Duration{Value: 30, Unit: "s"}, MaxEjectionPercent: 50}
	client := node("echo-client", "", 8080, mesh.ProtocolHTTP, nil, nil)
	client.Spec.(*mesh.VirtualNodeSpec).Backends = []mesh.Backend{{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: "echo-server.echo.local"}}}
	return []*mesh.Resource{
		{APIVersion: mesh.APIVersion, Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: "echo"}, Spec: &mesh.MeshSpec{}},
		node("echo-server-0-9", "0.9", 50051, mesh.ProtocolGRPC, grpcHC, od),
		node("echo-server-1-0", "1.0", 50051, mesh.ProtocolGRPC, grpcHC, od),
		client,
		{
			APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualRouter,
			Metadata: mesh.Metadata{Name: "echo-server", Mesh: "echo"},
			Spec:     &mesh.VirtualRouterSpec{Listeners: []mesh.RouterListener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: mesh.ProtocolGRPC}}}},
		},
		{
			APIVersion: mesh.APIVersion, Kind: mesh.KindRoute,
			Metadata: mesh.Metadata{Name: "echo-server-route", Mesh: "echo"},
			Spec: &mesh.RouteSpec{
				VirtualRouterName: "echo-server",
				Priority:          &prio,
				GRPCRoute: &mesh.GRPCRoute{
					Match: mesh.GRPCRouteMatch{ServiceName: "proto.echo.EchoService"},
					Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{
						{VirtualNode: "echo-server-0-9", Weight: w09},
						{VirtualNode: "echo-server-1-0", Weight: w10},
					}},
					RetryPolicy: &mesh.GRPCRetryPolicy{
						GRPCRetryEvents: []string{"unavailable"},
						MaxRetries:      2,
						PerRetryTimeout: mesh.Duration{Value: 1, Unit: "s"},
					},
				},
			},
		},
		{
			APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualService,
			Metadata: mesh.Metadata{Name: "echo-server.echo.local", Mesh: "echo"},
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
				VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "echo-server"},
			}},
		},
		{
			APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualService,
			Metadata: mesh.Metadata{Name: "echo-client.echo.local", Mesh: "echo"},
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
				VirtualNode: &mesh.ProviderRef{VirtualNodeName: "echo-client"},
			}},
		},
	}
}

func serviceOf(node string) string {
	if node == "echo-client" {
		return "echo-client"
	}
	return "echo-server"
}

func attrs(version string) []mesh.Attribute {
	if version == "" {
		return nil
	}
	return []mesh.Attribute{{Key: mesh.AttrVersion, Value: version}}
}

// echoEndpoints: two serving 0.9 tasks, one serving 1.0 task plus an
// unhealthy and a draining one, and a client task.
func echoEndpoints() []*mesh.Endpoint {
	ep := func(id, service, version, addr string, port int, health mesh.HealthStatus, draining bool) *mesh.Endpoint {
		a := map[string]string{}
		if version != "" {
			a[mesh.AttrVersion] = version
		}
		return &mesh.Endpoint{ID: id, Mesh: "echo", Service: service, Address: addr, Port: port, Attributes: a,
			State: mesh.TaskRunning, Health: health, Draining: draining}
	}
	return []*mesh.Endpoint{
		ep("t1", "echo-server", "0.9", "127.0.0.11", 50051, mesh.HealthHealthy, false),
		ep("t2", "echo-server", "0.9", "127.0.0.12", 50051, mesh.HealthHealthy, false),
		ep("t3", "echo-server", "1.0", "127.0.0.13", 50051, mesh.HealthHealthy, false),
		ep("t4", "echo-server", "1.0", "127.0.0.14", 50051, mesh.HealthUnhealthy, false),
		ep("t5", "echo-server", "1.0", "127.0.0.15", 50051, mesh.HealthHealthy, true),
		ep("t6", "echo-client", "", "127.0.0.21", 8080, mesh.HealthHealthy, false),
		{ID: "t7", Mesh: "echo", Service: "echo-server", Address: "127.0.0.16", Port: 50051,
			Attributes: map[string]string{mesh.AttrVersion: "1.0"}, State: mesh.TaskPending, Health: mesh.HealthUnknown},
		{ID: "t8", Mesh: "other", Service: "echo-server", Address: "127.0.0.17", Port: 50051,
			Attributes: map[string]string{mesh.AttrVersion: "0.9"}, State: mesh.TaskRunning, Health: mesh.HealthHealthy},
	}
}
