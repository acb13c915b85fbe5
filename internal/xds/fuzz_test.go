package xds_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// FuzzTranslateAuthz decodes a manifest, gives every registry-discovered
// virtual node one listening task, translates, and checks every STRICT
// node's RBAC policy against a plain reading of App Mesh's rule (written
// here without mesh.Routing, as an oracle): a node is admitted exactly when
// its backends list a virtual service whose provider is the node or whose
// router has a route targeting it. Translation must not panic, and the
// health checker is always admitted. Seeds: the echo stack, STRICT, with
// extra callers.
func FuzzTranslateAuthz(f *testing.F) {
	stack, err := os.ReadFile("../stack/echo.yaml")
	if err != nil {
		f.Fatal(err)
	}
	strict := strings.Replace(string(stack), "    - portMapping: {port: 50051, protocol: grpc}\n", "    - portMapping: {port: 50051, protocol: grpc}\n      tls: {mode: STRICT}\n", 1)
	if strict == string(stack) {
		f.Fatal("echo.yaml: no echo-server listener to make STRICT")
	}
	f.Add([]byte(strict))
	f.Add([]byte(strict + `---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: reader, mesh: echo}
spec:
  listeners: [{portMapping: {port: 7000, protocol: grpc}, tls: {mode: STRICT}}]
  serviceDiscovery: {registry: {serviceName: reader}}
  backends: [{virtualService: {virtualServiceName: echo-server.echo.local}}, {virtualService: {virtualServiceName: echo-client.echo.local}}]
`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := mesh.Decode("fuzz.yaml", data)
		if err != nil || mesh.DefaultAndValidate(rs...) != nil {
			return
		}
		var eps []*mesh.Endpoint
		for i, r := range rs {
			spec := r.VirtualNode()
			if spec == nil || len(spec.Listeners) == 0 || spec.ServiceDiscovery.Selector() == nil {
				continue
			}
			sel := spec.ServiceDiscovery.Selector()
			attrs := map[string]string{}
			for _, a := range sel.Attributes {
				attrs[a.Key] = a.Value
			}
			eps = append(eps, &mesh.Endpoint{ID: fmt.Sprintf("t%d", i), Mesh: r.Metadata.Mesh, Service: sel.ServiceName,
				Address: fmt.Sprintf("127.1.%d.%d", i/250, i%250+1), Port: spec.Listeners[0].PortMapping.Port,
				Attributes: attrs, State: mesh.TaskRunning, Health: mesh.HealthHealthy})
		}
		res, _ := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps}) // a partial translation is fine
		if res == nil {
			t.Fatal("Translate returned no resources")
		}
		byAddr := map[string]*mesh.Resource{}
		for _, r := range rs {
			if r.Kind != mesh.KindVirtualNode {
				continue
			}
			for _, e := range mesh.ListeningEndpoints(r, eps) {
				addr := fmt.Sprintf("%s:%d", e.Address, e.Port)
				if byAddr[addr] == nil {
					byAddr[addr] = r
				}
			}
		}
		for _, l := range res.Listeners {
			addr, ok := strings.CutPrefix(l.GetName(), "grpc/server?xds.resource.listening_address=")
			if !ok {
				continue
			}
			vn := byAddr[addr]
			if vn == nil {
				t.Fatalf("server listener %s: no node listens there", addr)
			}
			rules := rbacRules(t, l)
			if (rules != nil) != (vn.VirtualNode().TLSMode() == mesh.TLSStrict) {
				t.Fatalf("%s (%s): rbac %v with mode %s", addr, vn.Metadata.Name, rules != nil, vn.VirtualNode().TLSMode())
			}
			if rules == nil {
				continue
			}
			var got []string
			for name, p := range rules.GetPolicies() {
				if strings.HasPrefix(name, "gmesh: only virtual nodes") || strings.HasPrefix(name, "gmesh: no virtual service") {
					got = admitted(t, p)
				}
			}
			want := []string{"spiffe://" + vn.Metadata.Mesh + ".gmesh.local/cp/health-checker"}
			for _, n := range oracleCallers(rs, vn) {
				want = append(want, xds.NodeID(vn.Metadata.Mesh, n).String())
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s (%s): admitted %v, want %v", addr, vn.Metadata.Name, got, want)
			}
		}
	})
}

// oracleCallers reads App Mesh's rule plainly: the nodes of vn's mesh whose
// backends list a service that vn provides or that a route of the
// service's router targets vn from.
func oracleCallers(rs []*mesh.Resource, vn *mesh.Resource) []string {
	m, node := vn.Metadata.Mesh, vn.Metadata.Name
	routers := map[string]bool{} // routers with a route targeting node
	for _, r := range rs {
		if s := r.Route(); s != nil && r.Metadata.Mesh == m && s.HasTarget(node) {
			routers[s.VirtualRouterName] = true
		}
	}
	services := map[string]bool{}
	for _, r := range rs {
		s := r.VirtualService()
		if s == nil || r.Metadata.Mesh != m || s.Provider == nil {
			continue
		}
		p := s.Provider
		if p.VirtualNode != nil && p.VirtualNode.VirtualNodeName == node ||
			p.VirtualRouter != nil && routers[p.VirtualRouter.VirtualRouterName] && routerExists(rs, m, p.VirtualRouter.VirtualRouterName) {
			services[r.Metadata.Name] = true
		}
	}
	var out []string
	for _, r := range rs {
		s := r.VirtualNode()
		if s == nil || r.Metadata.Mesh != m {
			continue
		}
		for _, b := range s.Backends {
			if b.VirtualService != nil && services[b.VirtualService.VirtualServiceName] {
				out = append(out, r.Metadata.Name)
				break
			}
		}
	}
	return out
}

func routerExists(rs []*mesh.Resource, m, name string) bool {
	for _, r := range rs {
		if r.Kind == mesh.KindVirtualRouter && r.Metadata.Mesh == m && r.Metadata.Name == name {
			return true
		}
	}
	return false
}
