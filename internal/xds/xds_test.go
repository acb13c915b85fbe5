package xds_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// render prints resources as indented protojson, one section per type.
// protojson's whitespace is deliberately unstable; re-indenting with
// encoding/json makes it stable.
func render(t *testing.T, res *xds.Resources) []byte {
	t.Helper()
	sections := map[string][]json.RawMessage{}
	for typeURL, rs := range res.ByType() {
		key := typeURL[strings.LastIndex(typeURL, ".")+1:]
		for _, r := range rs {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
			if err != nil {
				t.Fatalf("marshal %T: %v", r, err)
			}
			sections[key] = append(sections[key], b)
		}
	}
	b, err := json.Marshal(sections)
	if err != nil {
		t.Fatalf("marshal sections: %v", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("indent: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func TestTranslateGolden(t *testing.T) {
	tests := []struct {
		name      string
		resources []*mesh.Resource
		endpoints []*mesh.Endpoint
	}{
		{"echo-50-50", echoTopology(50, 50), echoEndpoints()},
		{"echo-100-0", echoTopology(100, 0), echoEndpoints()},
		{"echo-no-endpoints", echoTopology(0, 100), nil},
		{"http-routes", httpTopology(), echoEndpoints()},
		{"echo-strict", strictTopology(), echoEndpoints()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := xds.Translate(xds.Input{Revision: 7, Resources: tt.resources, Endpoints: tt.endpoints})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			got := render(t, res)
			path := filepath.Join("testdata", tt.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run go test ./internal/xds -update): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("Translate(%s) mismatch (-want +got), refresh with -update if intended:\n%s", tt.name, diff)
			}
		})
	}
}

// httpTopology exercises HTTP matches, priorities, headers and timeouts, and
// a DNS-discovered node.
func httpTopology() []*mesh.Resource {
	rs := echoTopology(50, 50)
	p1, p2 := 1, 2
	rs = append(rs,
		&mesh.Resource{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: "web-dns", Mesh: "echo"},
			Spec: &mesh.VirtualNodeSpec{
				Listeners:        []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 8081, Protocol: mesh.ProtocolHTTP}}},
				ServiceDiscovery: &mesh.ServiceDiscovery{DNS: &mesh.DNSDiscovery{Hostname: "localhost"}},
			}},
		&mesh.Resource{Kind: mesh.KindVirtualRouter, Metadata: mesh.Metadata{Name: "web", Mesh: "echo"}, Spec: &mesh.VirtualRouterSpec{}},
		&mesh.Resource{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: "web-api", Mesh: "echo"},
			Spec: &mesh.RouteSpec{VirtualRouterName: "web", Priority: &p2, HTTPRoute: &mesh.HTTPRoute{
				Match: mesh.HTTPRouteMatch{Prefix: "/api/", Method: "get", Headers: []mesh.MetadataMatch{
					{Name: "X-Canary", Match: &mesh.HeaderMatch{Exact: "1"}},
					{Name: "x-debug", Invert: true},
				}},
				Action:      mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "echo-client", Weight: 1}}},
				RetryPolicy: &mesh.HTTPRetryPolicy{HTTPRetryEvents: []string{"server-error", "gateway-error"}, TCPRetryEvents: []string{"connection-error"}, MaxRetries: 3, PerRetryTimeout: mesh.Duration{Value: 250, Unit: "ms"}},
				Timeout:     &mesh.RouteTimeout{PerRequest: &mesh.Duration{Value: 15, Unit: "s"}, Idle: &mesh.Duration{Value: 60, Unit: "s"}},
			}}},
		&mesh.Resource{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: "web-exact", Mesh: "echo"},
			Spec: &mesh.RouteSpec{VirtualRouterName: "web", Priority: &p1, HTTP2Route: &mesh.HTTPRoute{
				Match:  mesh.HTTPRouteMatch{Path: &mesh.HeaderMatch{Exact: "/healthz"}},
				Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "web-dns", Weight: 100}}},
			}}},
		&mesh.Resource{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: "web-default", Mesh: "echo"},
			Spec: &mesh.RouteSpec{VirtualRouterName: "web", HTTPRoute: &mesh.HTTPRoute{
				Match:  mesh.HTTPRouteMatch{Path: &mesh.HeaderMatch{Regex: "/v[0-9]+/.*"}},
				Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{{VirtualNode: "web-dns", Weight: 30}, {VirtualNode: "echo-client", Weight: 70}}},
			}}},
		&mesh.Resource{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: "web.echo.local", Mesh: "echo"},
			Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "web"}}}},
	)
	return rs
}

func TestTranslateErrors(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func([]*mesh.Resource) []*mesh.Resource
		wantErr string
		// stillServed is a listener the problem must not take down.
		stillServed string
	}{
		{"all weights 0", func(rs []*mesh.Resource) []*mesh.Resource { return echoTopology(0, 0) }, "no target has a weight above 0", "echo-client.echo.local"},
		{"missing node", func(rs []*mesh.Resource) []*mesh.Resource {
			route(rs).GRPCRoute.Action.WeightedTargets[1].VirtualNode = "nope"
			return rs
		}, "VirtualNode/echo/nope does not exist", "echo-client.echo.local"},
		{"no provider", func(rs []*mesh.Resource) []*mesh.Resource {
			byName(rs, "echo-server.echo.local").Spec.(*mesh.VirtualServiceSpec).Provider = nil
			return rs
		}, "spec.provider", "echo-client.echo.local"},
		{"missing router", func(rs []*mesh.Resource) []*mesh.Resource {
			byName(rs, "echo-server.echo.local").Spec.(*mesh.VirtualServiceSpec).Provider.VirtualRouter.VirtualRouterName = "gone"
			return rs
		}, "VirtualRouter/echo/gone does not exist", "echo-client.echo.local"},
		{"bad duration unit", func(rs []*mesh.Resource) []*mesh.Resource {
			route(rs).GRPCRoute.RetryPolicy.PerRetryTimeout.Unit = "h"
			return rs
		}, `perRetryTimeout: unit "h"`, "echo-client.echo.local"},
		{"same service name in two meshes", func(rs []*mesh.Resource) []*mesh.Resource {
			dup := *byName(rs, "echo-client.echo.local")
			dup.Metadata.Mesh = "other"
			other := *byName(rs, "echo-client")
			other.Metadata.Mesh = "other"
			return append(rs, &dup, &other)
		}, `listener "echo-client.echo.local" is also claimed`, "echo-server.echo.local"},
		{"wrong spec type", func(rs []*mesh.Resource) []*mesh.Resource {
			byName(rs, "echo-client").Spec = &mesh.RouteSpec{}
			return rs
		}, "want *mesh.VirtualNodeSpec", "echo-server.echo.local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := tt.mutate(echoTopology(50, 50))
			res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: echoEndpoints()})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Translate error = %v, want one containing %q", err, tt.wantErr)
			}
			// The bad resource is left out, the rest still served.
			var pe *xds.PartialError
			if !errors.As(err, &pe) || res == nil {
				t.Fatalf("Translate = %v, %v; want the rest of the mesh and a *PartialError", res, err)
			}
			if err := res.Validate(); err != nil {
				t.Errorf("what was translated is not consistent: %v", err)
			}
			served := map[string]bool{}
			for _, l := range res.Listeners {
				served[l.GetName()] = true
			}
			if want := tt.stillServed; !served[want] {
				t.Errorf("listener %s left out too; served %v", want, served)
			}
		})
	}
}

// TestWeightChangeTouchesOnlyRoutes: a rollout step must not resend
// listeners, clusters or endpoints.
func TestWeightChangeTouchesOnlyRoutes(t *testing.T) {
	a, err := xds.Translate(xds.Input{Resources: echoTopology(90, 10), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.Translate(xds.Input{Resources: echoTopology(50, 50), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	ta, tb := a.ByType(), b.ByType()
	for _, typeURL := range xds.TypeURLs {
		same := cmp.Diff(ta[typeURL], tb[typeURL], protocmp.Transform()) == ""
		if want := typeURL != xds.RouteType; same != want {
			t.Errorf("%s unchanged = %v, want %v", typeURL, same, want)
		}
	}
}

func TestValidateCatchesInconsistency(t *testing.T) {
	res, err := xds.Translate(xds.Input{Resources: echoTopology(50, 50), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(r *xds.Resources)
		wantErr string
	}{
		{"missing route config", func(r *xds.Resources) { r.Routes = r.Routes[1:] }, "is not in the snapshot"},
		{"missing cluster", func(r *xds.Resources) { r.Clusters = r.Clusters[1:] }, "which is not in the snapshot"},
		{"missing endpoints", func(r *xds.Resources) { r.Endpoints = r.Endpoints[1:] }, "load assignment"},
		{"orphan route config", func(r *xds.Resources) { r.Listeners = r.Listeners[1:] }, "no listener refers to it"},
		{"invalid resource", func(r *xds.Resources) { r.Clusters[0].Name = "" }, "Name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &xds.Resources{}
			r.Listeners = cloneAll(res.Listeners)
			r.Routes = cloneAll(res.Routes)
			r.Clusters = cloneAll(res.Clusters)
			r.Endpoints = cloneAll(res.Endpoints)
			tt.mutate(r)
			if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func cloneAll[T proto.Message](in []T) []T {
	out := make([]T, len(in))
	for i, m := range in {
		out[i] = proto.Clone(m).(T)
	}
	return out
}

func route(rs []*mesh.Resource) *mesh.RouteSpec {
	return byName(rs, "echo-server-route").Spec.(*mesh.RouteSpec)
}

func byName(rs []*mesh.Resource, name string) *mesh.Resource {
	for _, r := range rs {
		if r.Metadata.Name == name {
			return r
		}
	}
	panic("no resource " + name)
}
