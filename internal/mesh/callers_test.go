package mesh_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func TestCallers(t *testing.T) {
	vn := func(name string, backends ...string) *mesh.Resource {
		s := &mesh.VirtualNodeSpec{}
		for _, b := range backends {
			s.Backends = append(s.Backends, mesh.Backend{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: b}})
		}
		return &mesh.Resource{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: name, Mesh: "m"}, Spec: s}
	}
	vs := func(name string, p mesh.VirtualServiceProvider) *mesh.Resource {
		return &mesh.Resource{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: name, Mesh: "m"}, Spec: &mesh.VirtualServiceSpec{Provider: &p}}
	}
	st := mesh.NewState()
	for _, r := range []*mesh.Resource{
		vn("server-1"), vn("server-2"), vn("lonely"), vn("db"),
		vn("client", "server.m", "nowhere.m"),
		vn("admin", "db.m"),
		vn("both", "db.m", "server.m"),
		// Same backend name in another mesh: not a caller.
		{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: "stranger", Mesh: "other"}, Spec: &mesh.VirtualNodeSpec{
			Backends: []mesh.Backend{{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: "server.m"}}}}},
		{Kind: mesh.KindVirtualRouter, Metadata: mesh.Metadata{Name: "server", Mesh: "m"}, Spec: &mesh.VirtualRouterSpec{}},
		{Kind: mesh.KindRoute, Metadata: mesh.Metadata{Name: "r", Mesh: "m"}, Spec: &mesh.RouteSpec{
			VirtualRouterName: "server",
			GRPCRoute: &mesh.GRPCRoute{Action: mesh.RouteAction{WeightedTargets: []mesh.WeightedTarget{
				{VirtualNode: "server-1", Weight: 100}, {VirtualNode: "server-2", Weight: 0}}}},
		}},
		vs("server.m", mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "server"}}),
		vs("db.m", mesh.VirtualServiceProvider{VirtualNode: &mesh.ProviderRef{VirtualNodeName: "db"}}),
		// A service whose router does not exist reaches nothing.
		vs("broken.m", mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "missing"}}),
	} {
		st.Put(r)
	}
	got := mesh.NewRouting(st).Callers("m")
	want := map[string]mesh.Callers{
		// server-2 at weight 0 admits the same callers as server-1.
		"server-1": {Services: []string{"server.m"}, Nodes: []string{"both", "client"}},
		"server-2": {Services: []string{"server.m"}, Nodes: []string{"both", "client"}},
		"db":       {Services: []string{"db.m"}, Nodes: []string{"admin", "both"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Callers (-want +got):\n%s", diff)
	}
	if _, ok := got["lonely"]; ok {
		t.Errorf("got callers for lonely, which no service reaches")
	}
}
