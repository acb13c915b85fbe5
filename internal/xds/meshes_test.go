package xds_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// otherTopology is the echo topology in the mesh "other" (no TLS), its
// virtual services named *.other.local; t8 of echoEndpoints serves it.
func otherTopology() []*mesh.Resource {
	rs := echoTopology(100, 0)
	for _, r := range rs {
		if r.Kind == mesh.KindMesh {
			r.Metadata.Name = "other"
			continue
		}
		r.Metadata.Mesh = "other"
		if r.Kind == mesh.KindVirtualService {
			r.Metadata.Name = strings.Replace(r.Metadata.Name, ".echo.local", ".other.local", 1)
		}
		if vn := r.VirtualNode(); vn != nil {
			for _, b := range vn.Backends {
				b.VirtualService.VirtualServiceName = strings.Replace(b.VirtualService.VirtualServiceName, ".echo.local", ".other.local", 1)
			}
		}
	}
	return rs
}

// wantMesh is the mesh a resource of the two-mesh topology belongs to, by
// its name alone.
func wantMesh(typeURL, name string) string {
	switch {
	case strings.HasPrefix(name, "grpc/server?"):
		return "echo" // only the TLS mesh has server listeners
	case typeURL == xds.ListenerType:
		return strings.TrimSuffix(name[strings.Index(name, ".")+1:], ".local")
	default:
		return name[:strings.Index(name, "/")]
	}
}

func TestTranslateRecordsMeshes(t *testing.T) {
	res, err := xds.Translate(xds.Input{Revision: 3, Resources: append(strictTopology(), otherTopology()...), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if u := res.Unrecorded(); len(u) != 0 {
		t.Errorf("resources with no recorded mesh: %v", u)
	}
	if want := map[string]bool{"echo": true}; !maps.Equal(res.TLSMeshes, want) {
		t.Errorf("TLSMeshes = %v, want %v", res.TLSMeshes, want)
	}
	count := map[string]int{}
	for typeURL, rs := range res.ByType() {
		for _, r := range rs {
			name := xds.ResourceKeyOf(typeURL, r).Name
			got, want := res.MeshOf(typeURL, name), wantMesh(typeURL, name)
			if got != want {
				t.Errorf("MeshOf(%s, %q) = %q, want %q", typeURL, name, got, want)
			}
			count[got]++
		}
	}
	if len(res.Mesh) != count["echo"]+count["other"] {
		t.Errorf("Mesh has %d entries for %d resources", len(res.Mesh), count["echo"]+count["other"])
	}
	for _, m := range []string{"echo", "other"} {
		sub := res.Subset(func(name string) bool { return name == m })
		if err := sub.Validate(); err != nil {
			t.Errorf("Subset(%s) is not consistent: %v", m, err)
		}
		n := 0
		for typeURL, rs := range sub.ByType() {
			for _, r := range rs {
				n++
				if got := sub.MeshOf(typeURL, xds.ResourceKeyOf(typeURL, r).Name); got != m {
					t.Errorf("Subset(%s) holds %s %q of mesh %q", m, typeURL, xds.ResourceKeyOf(typeURL, r).Name, got)
				}
			}
		}
		if n != count[m] || len(sub.Listeners) == 0 || len(sub.Clusters) == 0 || len(sub.Endpoints) == 0 || len(sub.Routes) == 0 {
			t.Errorf("Subset(%s): %d resources (%d listeners, %d routes, %d clusters, %d endpoints), want %d", m, n, len(sub.Listeners), len(sub.Routes), len(sub.Clusters), len(sub.Endpoints), count[m])
		}
		if got, want := sub.TLSMeshes["echo"], m == "echo"; got != want {
			t.Errorf("Subset(%s).TLSMeshes[echo] = %v, want %v", m, got, want)
		}
	}
}

// A virtual service name used in two meshes: one listener, the first
// mesh's (by ref), and the other is reported as before; the kept listener
// and its route configuration are recorded as the first mesh's.
func TestTranslateSameServiceNameTwoMeshes(t *testing.T) {
	rs := append(echoTopology(50, 50), otherTopology()...)
	rs = append(rs, &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualService,
		Metadata: mesh.Metadata{Name: "echo-server.echo.local", Mesh: "other"},
		Spec: &mesh.VirtualServiceSpec{Provider: &mesh.VirtualServiceProvider{
			VirtualNode: &mesh.ProviderRef{VirtualNodeName: "echo-server-0-9"},
		}},
	})
	res, err := xds.Translate(xds.Input{Revision: 4, Resources: rs, Endpoints: echoEndpoints()})
	var perr *xds.PartialError
	if !errors.As(err, &perr) || len(perr.Problems) != 1 || !strings.Contains(perr.Problems[0].Err.Error(), `listener "echo-server.echo.local" is also claimed by VirtualService/echo/echo-server.echo.local`) {
		t.Fatalf("Translate: got %v, want one problem: the listener is also claimed by echo's service", err)
	}
	if got := res.MeshOf(xds.ListenerType, "echo-server.echo.local"); got != "echo" {
		t.Errorf("listener echo-server.echo.local recorded in mesh %q, want echo", got)
	}
	if got := res.MeshOf(xds.RouteType, "other/echo-server.echo.local"); got != "" {
		t.Errorf("route configuration other/echo-server.echo.local recorded in %q, want none (left out)", got)
	}
	if u := res.Unrecorded(); len(u) != 0 {
		t.Errorf("resources with no recorded mesh: %v", u)
	}
}
