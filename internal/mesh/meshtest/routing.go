// Package meshtest holds test cases shared by the packages that route by
// the mesh: the same table of routing questions is asked of the mesh's
// resolver, of the xDS translation (by evaluating the route configurations
// it produces) and of the gateway (by sending real requests through it), so
// the three cannot disagree.
package meshtest

import (
	"net/http"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Names in every case's mesh.
const (
	Mesh    = "m"
	Service = "svc.m.local"   // provided by router "r" (or by a node, in one case)
	Other   = "other.m.local" // provided by node c
	Gateway = "gw"
	// NodeAttr is the endpoint attribute that ties an endpoint to its node:
	// node X selects registry service "svc" with NodeAttr=X.
	NodeAttr = "node"
)

// Nodes are the virtual nodes every case has.
var Nodes = []string{"a", "b", "c"}

// RoutingCase is one routing question: given these resources and these
// serving nodes, where does this request go?
type RoutingCase struct {
	Name      string
	Resources []*mesh.Resource
	// Serving lists the nodes that have a serving endpoint; nil: all.
	Serving []string
	// Request is the request. For cases that are not GatewayOnly, it is
	// what reaches Service (the gateway case adds a catch-all gateway route
	// that leaves it as is); for GatewayOnly cases it is what reaches the
	// gateway.
	Request mesh.Request
	// GatewayOnly cases are about the gateway's own routes, which the xDS
	// translation does not serve to proxyless clients.
	GatewayOnly bool
	// Want is each node's share of the request by weight (nodes that get
	// none are left out); nil: no route takes the request.
	Want map[string]int
}

// IsServing reports whether node has serving endpoints in c.
func (c *RoutingCase) IsServing(node string) bool {
	if c.Serving == nil {
		return true
	}
	for _, n := range c.Serving {
		if n == node {
			return true
		}
	}
	return false
}

// Endpoint returns a serving endpoint of node at host:port.
func Endpoint(node, id, host string, port int) *mesh.Endpoint {
	return &mesh.Endpoint{ID: id, Mesh: Mesh, Service: "svc", Address: host, Port: port,
		Attributes: map[string]string{NodeAttr: node}, State: mesh.TaskRunning, Health: mesh.HealthHealthy}
}

// AllGatewayRoute is the catch-all gateway route the gateway side adds to
// cases that are not GatewayOnly.
func AllGatewayRoute() *mesh.Resource {
	return gwRoute("all", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)
}

func node(name string) *mesh.Resource {
	return mesh.New(mesh.KindVirtualNode, Mesh, name, &mesh.VirtualNodeSpec{
		Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: mesh.ProtocolHTTP}}},
		ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{
			ServiceName: "svc", Attributes: []mesh.Attribute{{Key: NodeAttr, Value: name}}}},
	})
}

func targets(wts ...any) []mesh.WeightedTarget {
	var out []mesh.WeightedTarget
	for i := 0; i < len(wts); i += 2 {
		out = append(out, mesh.WeightedTarget{VirtualNode: wts[i].(string), Weight: wts[i+1].(int)})
	}
	return out
}

func prio(n int) *int { return &n }

func grpcRoute(name string, p *int, svc, method string, md []mesh.MetadataMatch, wts ...any) *mesh.Resource {
	return mesh.New(mesh.KindRoute, Mesh, name, &mesh.RouteSpec{VirtualRouterName: "r", Priority: p,
		GRPCRoute: &mesh.GRPCRoute{
			Match:  mesh.GRPCRouteMatch{ServiceName: svc, MethodName: method, Metadata: md},
			Action: mesh.RouteAction{WeightedTargets: targets(wts...)},
		}})
}

func httpRoute(name string, p *int, prefix string, hs []mesh.MetadataMatch, wts ...any) *mesh.Resource {
	return mesh.New(mesh.KindRoute, Mesh, name, &mesh.RouteSpec{VirtualRouterName: "r", Priority: p,
		HTTPRoute: &mesh.HTTPRoute{
			Match:  mesh.HTTPRouteMatch{Prefix: prefix, Headers: hs},
			Action: mesh.RouteAction{WeightedTargets: targets(wts...)},
		}})
}

func gwRoute(name string, p *int, m *mesh.GatewayHTTPMatch, rw *mesh.GatewayHTTPRewrite, target string) *mesh.Resource {
	return mesh.New(mesh.KindGatewayRoute, Mesh, name, &mesh.GatewayRouteSpec{VirtualGatewayName: Gateway, Priority: p,
		HTTPRoute: &mesh.GatewayHTTPRoute{Match: *m, Action: mesh.GatewayHTTPRouteAction{
			Target:  mesh.GatewayTarget{VirtualService: mesh.VirtualServiceBackend{VirtualServiceName: target}},
			Rewrite: rw,
		}}})
}

// base returns the mesh, the three nodes, router r providing Service, Other
// provided by node c, and the gateway, plus extra.
func base(extra ...*mesh.Resource) []*mesh.Resource {
	rs := []*mesh.Resource{mesh.New(mesh.KindMesh, "", Mesh, &mesh.MeshSpec{})}
	for _, n := range Nodes {
		rs = append(rs, node(n))
	}
	rs = append(rs,
		mesh.New(mesh.KindVirtualRouter, Mesh, "r", &mesh.VirtualRouterSpec{
			Listeners: []mesh.RouterListener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: mesh.ProtocolHTTP}}}}),
		mesh.New(mesh.KindVirtualService, Mesh, Other, &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
			VirtualNode: &mesh.ProviderRef{VirtualNodeName: "c"}}}),
		mesh.New(mesh.KindVirtualGateway, Mesh, Gateway, &mesh.VirtualGatewaySpec{
			Listeners: []mesh.GatewayListener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: mesh.ProtocolHTTP}}}}),
	)
	hasService := false
	for _, r := range extra {
		if r.Kind == mesh.KindVirtualService && r.Metadata.Name == Service {
			hasService = true
		}
	}
	if !hasService {
		rs = append(rs, mesh.New(mesh.KindVirtualService, Mesh, Service, &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
			VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "r"}}}))
	}
	return append(rs, extra...)
}

// echo is the gRPC call every case makes unless it says otherwise.
func echo(hdr ...string) mesh.Request {
	return call("POST", "/proto.echo.EchoService/Echo", hdr...)
}

func call(method, path string, hdr ...string) mesh.Request {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Add(hdr[i], hdr[i+1])
	}
	return mesh.Request{Method: method, Path: path, Host: Service, Header: h}
}

func present(name string) []mesh.MetadataMatch { return []mesh.MetadataMatch{{Name: name}} }

func exact(name, v string, invert bool) []mesh.MetadataMatch {
	return []mesh.MetadataMatch{{Name: name, Invert: invert, Match: &mesh.HeaderMatch{Exact: v}}}
}

// RoutingCases returns the table.
func RoutingCases() []RoutingCase {
	all := func(wts ...any) *mesh.Resource { return grpcRoute("all", nil, "", "", nil, wts...) }
	canary := []*mesh.Resource{
		grpcRoute("canary", prio(1), "proto.echo.EchoService", "", exact("x-canary", "yes", false), "b", 100),
		grpcRoute("default", prio(2), "", "", nil, "a", 100),
	}
	httpRoutes := []*mesh.Resource{
		httpRoute("api-v2", nil, "/v2/", nil, "b", 100),
		httpRoute("default", nil, "/", nil, "a", 100),
	}
	api := func(rw *mesh.GatewayHTTPRewrite) *mesh.Resource {
		return gwRoute("api", nil, &mesh.GatewayHTTPMatch{Prefix: "/api/"}, rw, Service)
	}
	return []RoutingCase{
		{Name: "one target", Resources: base(all("a", 100)), Request: echo(), Want: map[string]int{"a": 100}},
		{Name: "weights 90/10", Resources: base(all("a", 90, "b", 10)), Request: echo(), Want: map[string]int{"a": 90, "b": 10}},
		{Name: "three ways", Resources: base(all("a", 20, "b", 30, "c", 50)), Request: echo(), Want: map[string]int{"a": 20, "b": 30, "c": 50}},
		{Name: "a target at weight 0 gets nothing", Resources: base(all("a", 100, "b", 0)), Request: echo(), Want: map[string]int{"a": 100}},
		{Name: "a node without serving endpoints loses its share", Resources: base(all("a", 50, "b", 50)), Serving: []string{"a", "c"},
			Request: echo(), Want: map[string]int{"a": 50}},
		{Name: "no weighted node serving: the weights as written", Resources: base(all("a", 50, "b", 50)), Serving: []string{"c"},
			Request: echo(), Want: map[string]int{"a": 50, "b": 50}},
		{Name: "priority before name", Resources: base(
			grpcRoute("a-canary", prio(10), "", "", present("x-canary"), "b", 100),
			grpcRoute("z-all", prio(5), "", "", nil, "a", 100)),
			Request: echo("x-canary", "yes"), Want: map[string]int{"a": 100}},
		{Name: "a route with a priority before one without", Resources: base(
			grpcRoute("a-all", nil, "", "", nil, "a", 100),
			grpcRoute("z-canary", prio(1000), "", "", present("x-canary"), "b", 100)),
			Request: echo("x-canary", "1"), Want: map[string]int{"b": 100}},
		{Name: "header match", Resources: base(canary...), Request: echo("x-canary", "yes"), Want: map[string]int{"b": 100}},
		{Name: "header mismatch falls through", Resources: base(canary...), Request: echo("x-canary", "no"), Want: map[string]int{"a": 100}},
		{Name: "header absent falls through", Resources: base(canary...), Request: echo(), Want: map[string]int{"a": 100}},
		{Name: "inverted header", Resources: base(
			grpcRoute("not-beta", prio(1), "", "", exact("x-beta", "1", true), "b", 100),
			grpcRoute("default", prio(2), "", "", nil, "a", 100)),
			Request: echo("x-beta", "2"), Want: map[string]int{"b": 100}},
		{Name: "method match", Resources: base(
			grpcRoute("echo-only", prio(1), "proto.echo.EchoService", "Echo", nil, "b", 100),
			grpcRoute("default", prio(2), "", "", nil, "a", 100)),
			Request: echo(), Want: map[string]int{"b": 100}},
		{Name: "another method falls through", Resources: base(
			grpcRoute("echo-only", prio(1), "proto.echo.EchoService", "Echo", nil, "b", 100),
			grpcRoute("default", prio(2), "", "", nil, "a", 100)),
			Request: call("POST", "/proto.echo.EchoService/Other"), Want: map[string]int{"a": 100}},
		{Name: "http prefix", Resources: base(httpRoutes...), Request: call("GET", "/v2/items"), Want: map[string]int{"b": 100}},
		{Name: "http prefix falls through", Resources: base(httpRoutes...), Request: call("GET", "/v3/items"), Want: map[string]int{"a": 100}},
		{Name: "no route matches", Resources: base(grpcRoute("other", nil, "other.Service", "", nil, "a", 100)), Request: echo()},
		{Name: "a node provides the service", Resources: base(
			mesh.New(mesh.KindVirtualService, Mesh, Service, &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
				VirtualNode: &mesh.ProviderRef{VirtualNodeName: "c"}}})),
			Request: echo(), Want: map[string]int{"c": 100}},

		// The gateway's own routes.
		{Name: "gateway route by prefix", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("other", nil, &mesh.GatewayHTTPMatch{Prefix: "/other"}, nil, Other),
			gwRoute("root", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: call("GET", "/other/x"), Want: map[string]int{"c": 100}},
		{Name: "gateway route falls to the root", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("other", nil, &mesh.GatewayHTTPMatch{Prefix: "/other"}, nil, Other),
			gwRoute("root", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: call("GET", "/home"), Want: map[string]int{"a": 100}},
		{Name: "gateway route priority before specificity", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("other", prio(1), &mesh.GatewayHTTPMatch{Prefix: "/other"}, nil, Other),
			gwRoute("root", prio(0), &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: call("GET", "/other/x"), Want: map[string]int{"a": 100}},
		{Name: "gateway route by host name", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("beta", nil, &mesh.GatewayHTTPMatch{Prefix: "/", Hostname: &mesh.HostnameMatch{Exact: "beta.example"}}, nil, Other),
			gwRoute("root", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: func() mesh.Request { r := call("GET", "/"); r.Host = "Beta.Example:8080"; return r }(), Want: map[string]int{"c": 100}},
		{Name: "gateway route by header", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("tenant", nil, &mesh.GatewayHTTPMatch{Prefix: "/", Headers: exact("x-tenant", "t1", false)}, nil, Other),
			gwRoute("root", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: call("GET", "/", "X-Tenant", "t1"), Want: map[string]int{"c": 100}},
		{Name: "gateway route by method", GatewayOnly: true, Resources: base(all("a", 100),
			gwRoute("writes", nil, &mesh.GatewayHTTPMatch{Prefix: "/", Method: "POST"}, nil, Other),
			gwRoute("root", nil, &mesh.GatewayHTTPMatch{Prefix: "/"}, nil, Service)),
			Request: call("POST", "/"), Want: map[string]int{"c": 100}},
		{Name: "gateway prefix rewritten to / before the service's routes", GatewayOnly: true, Resources: base(append(httpRoutes, api(nil))...),
			Request: call("GET", "/api/v2/items"), Want: map[string]int{"b": 100}},
		{Name: "gateway prefix rewrite disabled", GatewayOnly: true, Resources: base(append(httpRoutes,
			api(&mesh.GatewayHTTPRewrite{Prefix: &mesh.PrefixRewrite{DefaultPrefix: mesh.Disabled}}))...),
			Request: call("GET", "/api/v2/items"), Want: map[string]int{"a": 100}},
		{Name: "gateway prefix rewritten to a value", GatewayOnly: true, Resources: base(append(httpRoutes,
			api(&mesh.GatewayHTTPRewrite{Prefix: &mesh.PrefixRewrite{Value: "/v2/"}}))...),
			Request: call("GET", "/api/items"), Want: map[string]int{"b": 100}},
		{Name: "no gateway route matches", GatewayOnly: true, Resources: base(all("a", 100), api(nil)),
			Request: call("GET", "/home")},
	}
}
