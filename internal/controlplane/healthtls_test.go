package controlplane

import (
	"path/filepath"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

func TestHealthCredsOnlyForStrictNodes(t *testing.T) {
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	node := func(name, service, mode string) *mesh.Resource {
		l := mesh.Listener{PortMapping: mesh.PortMapping{Port: 1, Protocol: mesh.ProtocolGRPC}}
		if mode != "" {
			l.TLS = &mesh.ListenerTLS{Mode: mode}
		}
		return &mesh.Resource{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: name, Mesh: "echo"}, Spec: &mesh.VirtualNodeSpec{
			Listeners:        []mesh.Listener{l},
			ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: service}},
		}}
	}
	st := mesh.NewState()
	st.Put(node("strict", "a", mesh.TLSStrict))
	st.Put(node("permissive", "b", mesh.TLSPermissive))
	st.Put(node("plain", "c", ""))

	if f := (&healthIdentities{}).credsFunc(st); f != nil {
		t.Error("without a CA: got a creds func, want none (plain checks)")
	}
	f := (&healthIdentities{ca: ca}).credsFunc(st)
	for _, tc := range []struct {
		mesh, service, wantKey string
	}{
		{"echo", "a", "spiffe://echo.gmesh.local/vn/strict"},
		{"echo", "b", ""},
		{"echo", "c", ""},
		{"other", "a", ""},
	} {
		creds, key := f(&mesh.Endpoint{Mesh: tc.mesh, Service: tc.service})
		if key != tc.wantKey || (creds != nil) != (tc.wantKey != "") {
			t.Errorf("%s/%s: creds %v, key %q; want key %q", tc.mesh, tc.service, creds, key, tc.wantKey)
		}
	}
}
