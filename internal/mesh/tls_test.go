package mesh

import (
	"strings"
	"testing"
)

// tlsNode is a virtual node with every TLS field gmesh accepts.
const tlsNode = `apiVersion: gmesh.dev/v1
kind: Mesh
metadata: {name: echo}
---
apiVersion: gmesh.dev/v1
kind: VirtualService
metadata: {name: echo-server.echo.local, mesh: echo}
spec: {provider: {virtualNode: {virtualNodeName: server}}}
---
apiVersion: gmesh.dev/v1
kind: VirtualService
metadata: {name: other.echo.local, mesh: echo}
spec: {provider: {virtualNode: {virtualNodeName: server}}}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: server, mesh: echo}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      tls:
        mode: STRICT
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: client, mesh: echo}
spec:
  backendDefaults:
    clientPolicy:
      tls:
        ports: [50051]
  backends:
    - virtualService:
        virtualServiceName: echo-server.echo.local
    - virtualService:
        virtualServiceName: other.echo.local
        clientPolicy:
          tls:
            enforce: false
`

func TestTLSFieldsDecode(t *testing.T) {
	rs, err := apply("tls.yaml", []byte(tlsNode), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]*VirtualNodeSpec{}
	for _, r := range rs {
		if s, ok := r.Spec.(*VirtualNodeSpec); ok {
			specs[r.Metadata.Name] = s
		}
	}
	server, client := specs["server"], specs["client"]
	if got := server.TLSMode(); got != TLSStrict {
		t.Errorf("server TLSMode() = %q, want STRICT", got)
	}
	if got := client.TLSMode(); got != TLSDisabled {
		t.Errorf("client TLSMode() = %q, want DISABLED", got)
	}
	var nodes []*Resource
	for _, r := range rs {
		nodes = append(nodes, r)
	}
	if !MeshTLS(nodes, "echo") || MeshTLS(nodes, "other") {
		t.Errorf("MeshTLS: echo %v, other %v; want true, false", MeshTLS(nodes, "echo"), MeshTLS(nodes, "other"))
	}
	if !server.NeedsIdentity() || !client.NeedsIdentity() {
		t.Errorf("NeedsIdentity: server %v, client %v; want both true", server.NeedsIdentity(), client.NeedsIdentity())
	}
	p := client.BackendTLS("echo-server.echo.local")
	if !p.Enforced() || !p.AppliesTo(50051) || p.AppliesTo(8080) {
		t.Errorf("echo-server backend policy %+v: want the defaults, enforced on 50051 only", p)
	}
	if p := client.BackendTLS("other.echo.local"); p.Enforced() {
		t.Errorf("other backend policy %+v: want its own, not enforced", p)
	}
	if p := server.BackendTLS("x"); p != nil || p.Enforced() {
		t.Errorf("node without policies: BackendTLS = %+v, want nil", p)
	}
	plain := &VirtualNodeSpec{Listeners: []Listener{{PortMapping: PortMapping{Port: 1, Protocol: ProtocolGRPC}, TLS: &ListenerTLS{Mode: TLSDisabled}}}}
	if plain.NeedsIdentity() {
		t.Error("a DISABLED listener needs an identity")
	}
}

func TestTLSValidation(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(tlsNode, old) {
			t.Fatalf("tlsNode has no %q", old)
		}
		return strings.Replace(tlsNode, old, new, 1)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"bad mode", edit("mode: STRICT", "mode: strict"),
			`document 4: spec.listeners[0].tls.mode: must be one of STRICT, PERMISSIVE, DISABLED, got "strict"`},
		{"no mode", edit("mode: STRICT", `mode: ""`),
			"document 4: spec.listeners[0].tls.mode: required: one of STRICT, PERMISSIVE, DISABLED"},
		{"strict on http", edit("{port: 50051, protocol: grpc}\n      tls:", "{port: 50051, protocol: http}\n      tls:"),
			`document 4: spec.listeners[0].tls.mode: STRICT needs protocol grpc`},
		{"certificate", edit("mode: STRICT", "mode: STRICT\n        certificate: {sds: {secretName: x}}"),
			"document 4: spec.listeners[0].tls.certificate: not supported: gmesh issues every workload's certificate from the mesh's CA"},
		{"listener SAN not a SPIFFE ID", edit("        mode: STRICT\n", "        mode: STRICT\n        validation: {subjectAlternativeNames: {match: {exact: [\"spiffe://echo.gmesh.local/vn/a\", a.example]}}}\n"),
			`document 4: spec.listeners[0].tls.validation.subjectAlternativeNames.match.exact[1]: "a.example" can never match: gmesh's workload certificates carry only a SPIFFE ID`},
		{"listener SANs on PERMISSIVE", edit("        mode: STRICT\n", "        mode: PERMISSIVE\n        validation: {subjectAlternativeNames: {match: {exact: [\"spiffe://echo.gmesh.local/vn/a\"]}}}\n"),
			"document 4: spec.listeners[0].tls.validation: needs mode STRICT: a PERMISSIVE listener serves plain text"},
		{"listener trust", edit("        mode: STRICT\n", "        mode: STRICT\n        validation: {trust: {file: {certificateChain: /ca.pem}}}\n"),
			"document 4: spec.listeners[0].tls.validation.trust: not supported"},
		{"trust", edit("            enforce: false", "            validation: {trust: {file: {certificateChain: /ca.pem}}}"),
			"document 5: spec.backends[1].virtualService.clientPolicy.tls.validation.trust: not supported"},
		{"empty SAN list", edit("            enforce: false", "            validation: {subjectAlternativeNames: {match: {exact: []}}}"),
			"document 5: spec.backends[1].virtualService.clientPolicy.tls.validation.subjectAlternativeNames.match.exact: required"},
		{"duplicate SAN", edit("            enforce: false", "            validation: {subjectAlternativeNames: {match: {exact: [a, a]}}}"),
			`document 5: spec.backends[1].virtualService.clientPolicy.tls.validation.subjectAlternativeNames.match.exact[1]: duplicate "a"`},
		{"client SANs", edit("            enforce: false", "            validation: {subjectAlternativeNames: {match: {exact: [a]}}}"),
			"document 5: spec.backends[1].virtualService.clientPolicy.tls.validation.subjectAlternativeNames: not supported yet"},
		{"second listener", edit("        mode: STRICT\n", "        mode: STRICT\n    - portMapping: {port: 50052, protocol: grpc}\n      tls: {mode: PERMISSIVE}\n"),
			"document 4: spec.listeners[1].tls.mode: only the first listener may have TLS"},
		{"port 0", edit("ports: [50051]", "ports: [0]"),
			"document 5: spec.backendDefaults.clientPolicy.tls.ports[0]: must be 1..65535, got 0"},
		{"duplicate port", edit("ports: [50051]", "ports: [50051, 50051]"),
			"document 5: spec.backendDefaults.clientPolicy.tls.ports[1]: duplicate port 50051"},
		{"backend certificate", edit("            enforce: false", "            enforce: false\n            certificate: {file: {certificateChain: c, privateKey: k}}"),
			"document 5: spec.backends[1].virtualService.clientPolicy.tls.certificate: not supported"},
		{"unknown field", edit("enforce: false", "enforced: false"),
			`document 5: spec.backends[1].virtualService.clientPolicy.tls.enforced: unknown field; did you mean "enforce"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply("tls.yaml", []byte(tc.data), nil, nil)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

func TestGatewayTargetRefusesClientPolicy(t *testing.T) {
	stack := readEchoStack(t)
	const target = "virtualServiceName: echo-client.echo.local"
	i := strings.LastIndex(stack, target)
	if i < 0 {
		t.Fatalf("echo-stack.yaml has no %q", target)
	}
	// The gateway route's target is the last mention of echo-client.
	line := stack[strings.LastIndex(stack[:i], "\n")+1 : i]
	data := stack[:i] + target + "\n" + line + "clientPolicy: {tls: {enforce: true}}" + stack[i+len(target):]
	_, err := apply("stack.yaml", []byte(data), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "action.target.virtualService.clientPolicy: not allowed on a gateway route's target") {
		t.Errorf("got %v, want the gateway target's clientPolicy refused", err)
	}
}

func TestListeningEndpoints(t *testing.T) {
	vn := &Resource{Kind: KindVirtualNode, Metadata: Metadata{Name: "n", Mesh: "m"}, Spec: &VirtualNodeSpec{
		ServiceDiscovery: &ServiceDiscovery{Registry: &RegistryDiscovery{ServiceName: "s"}}}}
	ep := func(id string, st TaskState, h HealthStatus, mod func(*Endpoint)) *Endpoint {
		e := &Endpoint{ID: id, Mesh: "m", Service: "s", Address: "127.0.0.2", Port: 1, State: st, Health: h}
		if mod != nil {
			mod(e)
		}
		return e
	}
	eps := []*Endpoint{
		ep("pending", TaskPending, HealthUnknown, nil),
		ep("running-unhealthy", TaskRunning, HealthUnhealthy, nil),
		ep("stopping", TaskStopping, HealthHealthy, nil),
		ep("stopped", TaskStopped, HealthUnknown, nil),
		ep("other-mesh", TaskRunning, HealthHealthy, func(e *Endpoint) { e.Mesh = "x" }),
		ep("other-service", TaskRunning, HealthHealthy, func(e *Endpoint) { e.Service = "x" }),
		ep("no-address", TaskRunning, HealthHealthy, func(e *Endpoint) { e.Address = "" }),
	}
	var got []string
	for _, e := range ListeningEndpoints(vn, eps) {
		got = append(got, e.ID)
	}
	want := []string{"pending", "running-unhealthy", "stopping"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ListeningEndpoints = %v, want %v", got, want)
	}
}

// TestListenerSANsAccepted: a STRICT listener may list the SPIFFE IDs its
// callers must have (enforced by the node's RBAC filter).
func TestListenerSANsAccepted(t *testing.T) {
	data := strings.Replace(tlsNode, "        mode: STRICT\n",
		"        mode: STRICT\n        validation: {subjectAlternativeNames: {match: {exact: [\"spiffe://echo.gmesh.local/vn/echo-client\"]}}}\n", 1)
	if data == tlsNode {
		t.Fatal("tlsNode has no STRICT listener to edit")
	}
	rs, err := apply("tls.yaml", []byte(data), nil, nil)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	for _, r := range rs {
		if got := r.VirtualNode().ListenerSANs(); len(got) > 0 {
			if got[0] != "spiffe://echo.gmesh.local/vn/echo-client" {
				t.Errorf("ListenerSANs = %v", got)
			}
			return
		}
	}
	t.Error("no node kept its listener's SANs")
}
