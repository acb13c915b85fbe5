package xds_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	rbacconfigpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// FuzzTranslateAuthz decodes a manifest, gives every registry-discovered
// virtual node one listening task, translates, and checks every STRICT
// node's RBAC policy against a plain reading of App Mesh's rule (written
// here without mesh.Routing, as an oracle): a node is admitted exactly when
// its backends list a virtual service whose provider is the node or whose
// router has a route targeting it. Admission is evaluated for the IDs a
// caller could present (candidateIDs): a node's workloads are admitted in
// the local form (/vn/NODE) and the Kubernetes form (/ns/NS/sa/SA/vn/NODE,
// any namespace and service account), as pki.ParseID reads them, and no
// other shape. Translation must not panic, and the
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
			var backends *rbacconfigpb.Policy
			for name, p := range rules.GetPolicies() {
				if strings.HasPrefix(name, "gmesh: only virtual nodes") || strings.HasPrefix(name, "gmesh: no virtual service") {
					backends = p
				}
			}
			if backends == nil {
				t.Fatalf("%s (%s): no backends policy in %v", addr, vn.Metadata.Name, keys(rules.GetPolicies()))
			}
			// Every caller identity a workload of any node could present,
			// and shapes that are nobody's, against a plain reading of the
			// rule: the health checker, and every workload of a node
			// listing a service that reaches vn, local or on Kubernetes
			// (any namespace and service account).
			callers := map[string]bool{}
			for _, n := range oracleCallers(rs, vn) {
				callers[n] = true
			}
			hc := "spiffe://" + vn.Metadata.Mesh + ".gmesh.local/cp/health-checker"
			for _, id := range candidateIDs(rs) {
				want := id == hc
				if pid, err := pki.ParseID(id); err == nil && pid.Component == "" && pid.Mesh == vn.Metadata.Mesh && callers[pid.VirtualNode] {
					want = true
				}
				got := !principalMatches(t, backends.GetPrincipals()[0], id)
				if got != want {
					t.Fatalf("%s (%s): %s admitted %v, want %v (callers %v)", addr, vn.Metadata.Name, id, got, want, oracleCallers(rs, vn))
				}
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

// candidateIDs are the IDs a fuzzed mesh's callers could present: for
// every virtual node and mesh named in rs, the local and Kubernetes forms,
// and near misses (another path shape, a longer name, another key).
func candidateIDs(rs []*mesh.Resource) []string {
	meshes := map[string]bool{"other": true}
	nodes := map[string]bool{}
	for _, r := range rs {
		meshes[r.Metadata.Mesh] = true
		if r.Kind == mesh.KindVirtualNode {
			nodes[r.Metadata.Name] = true
		}
	}
	var out []string
	for m := range meshes {
		td := "spiffe://" + m + ".gmesh.local"
		out = append(out, td+"/cp/health-checker", td+"/ns/a/sa/b/cp/health-checker")
		for n := range nodes {
			out = append(out,
				td+"/vn/"+n,
				td+"/ns/default/sa/default/vn/"+n,
				td+"/ns/team-b/sa/svc.v2/vn/"+n,
				td+"/ns/a/sa/b/vn/"+n+"/x",
				td+"/vn/"+n+"x",
				td+"/ns/a/sa/b/vn/"+n+"x",
				td+"/ns/a/vn/"+n,
				td+"/sa/b/vn/"+n,
				td+"/ns/a/sa/b/c/vn/"+n,
				td+"/ns/A/sa/b/vn/"+n,
				td+"/cp/"+n,
				"spiffe://"+m+"xgmesh.local/vn/"+n,
			)
		}
	}
	slices.Sort(out)
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
