package xds_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// authzTopology is the strict echo topology plus: echo-server 0.9
// PERMISSIVE, echo-client STRICT (reached through echo-client.echo.local,
// which no node lists), a second caller "reader" listing echo-server, an
// "intruder" with no backends, and a STRICT "orphan" no service reaches.
func authzTopology() ([]*mesh.Resource, []*mesh.Endpoint) {
	rs := strictTopology()
	for _, r := range rs {
		switch r.Metadata.Name {
		case "echo-server-0-9":
			r.VirtualNode().Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSPermissive}
		case "echo-client":
			if r.Kind == mesh.KindVirtualNode {
				r.VirtualNode().Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
			}
		}
	}
	vn := func(name string, strict bool, backends ...string) *mesh.Resource {
		s := &mesh.VirtualNodeSpec{
			Listeners:        []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 7000, Protocol: mesh.ProtocolGRPC}}},
			ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: name}},
		}
		if strict {
			s.Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
		}
		for _, b := range backends {
			s.Backends = append(s.Backends, mesh.Backend{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: b}})
		}
		return &mesh.Resource{APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: name, Mesh: "echo"}, Spec: s}
	}
	rs = append(rs, vn("reader", false, "echo-server.echo.local"), vn("intruder", false), vn("orphan", true))
	eps := append(echoEndpoints(), &mesh.Endpoint{ID: "t9", Mesh: "echo", Service: "orphan", Address: "127.0.0.31", Port: 7000,
		State: mesh.TaskRunning, Health: mesh.HealthHealthy})
	return rs, eps
}

// httpFilters returns the filters of a server listener's connection manager.
func httpFilters(t *testing.T, l *listenerpb.Listener) []*hcmpb.HttpFilter {
	t.Helper()
	hcm := &hcmpb.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatalf("%s: %v", l.GetName(), err)
	}
	return hcm.GetHttpFilters()
}

// rbacRules returns the server listener's RBAC rules, nil without a filter,
// and checks that the router stays last.
func rbacRules(t *testing.T, l *listenerpb.Listener) *rbacconfigpb.RBAC {
	t.Helper()
	fs := httpFilters(t, l)
	if len(fs) == 0 || fs[len(fs)-1].GetName() != wellknown.Router {
		t.Fatalf("%s: http filters %v: want the router last", l.GetName(), fs)
	}
	if len(fs) == 1 {
		return nil
	}
	if len(fs) != 2 || fs[0].GetName() != wellknown.HTTPRoleBasedAccessControl {
		t.Fatalf("%s: http filters %v: want rbac, router", l.GetName(), fs)
	}
	cfg := &rbacpb.RBAC{}
	if err := fs[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatalf("%s: %v", l.GetName(), err)
	}
	return cfg.GetRules()
}

// admitted reads the principals a backends policy (deny all but these)
// lets through: an exact principal as its ID, a regular expression as
// "~" and the expression (see nodeRE).
func admitted(t *testing.T, p *rbacconfigpb.Policy) []string {
	t.Helper()
	if len(p.GetPermissions()) != 1 || !p.GetPermissions()[0].GetAny() || len(p.GetPrincipals()) != 1 {
		t.Fatalf("policy %v: want any permission and one principal", p)
	}
	out := principalNames(p.GetPrincipals()[0].GetNotId().GetOrIds().GetIds())
	slices.Sort(out)
	return out
}

// principalNames describes authenticated principals as admitted does.
func principalNames(ids []*rbacconfigpb.Principal) []string {
	var out []string
	for _, id := range ids {
		m := id.GetAuthenticated().GetPrincipalName()
		if re := m.GetSafeRegex(); re != nil {
			out = append(out, "~"+re.GetRegex())
			continue
		}
		out = append(out, m.GetExact())
	}
	return out
}

// nodeRE is how admitted shows the principal of node's workloads.
func nodeRE(meshName, node string) string { return "~" + pki.NodePattern(meshName, node) }

// principalMatches evaluates an RBAC principal for a caller over mTLS
// whose certificate's one URI SAN is id (gRFC A41).
func principalMatches(t *testing.T, p *rbacconfigpb.Principal, id string) bool {
	t.Helper()
	switch x := p.GetIdentifier().(type) {
	case *rbacconfigpb.Principal_Any:
		return x.Any
	case *rbacconfigpb.Principal_Authenticated_:
		return x.Authenticated.GetPrincipalName() == nil || stringMatches(t, x.Authenticated.GetPrincipalName(), id)
	case *rbacconfigpb.Principal_NotId:
		return !principalMatches(t, x.NotId, id)
	case *rbacconfigpb.Principal_OrIds:
		for _, q := range x.OrIds.GetIds() {
			if principalMatches(t, q, id) {
				return true
			}
		}
		return false
	case *rbacconfigpb.Principal_AndIds:
		for _, q := range x.AndIds.GetIds() {
			if !principalMatches(t, q, id) {
				return false
			}
		}
		return true
	default:
		t.Fatalf("principal %v: not evaluated by this test", p)
		return false
	}
}

// deniedBy returns the policies of a DENY engine that deny a call to path
// from id, sorted.
func deniedBy(t *testing.T, rules *rbacconfigpb.RBAC, id, path string) []string {
	t.Helper()
	var out []string
	for name, p := range rules.GetPolicies() {
		principal := false
		for _, q := range p.GetPrincipals() {
			principal = principal || principalMatches(t, q, id)
		}
		permission := false
		for _, q := range p.GetPermissions() {
			permission = permission || permissionMatches(t, q, path)
		}
		if principal && permission {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func permissionMatches(t *testing.T, p *rbacconfigpb.Permission, path string) bool {
	t.Helper()
	switch x := p.GetRule().(type) {
	case *rbacconfigpb.Permission_Any:
		return x.Any
	case *rbacconfigpb.Permission_NotRule:
		return !permissionMatches(t, x.NotRule, path)
	case *rbacconfigpb.Permission_UrlPath:
		return stringMatches(t, x.UrlPath.GetPath(), path)
	default:
		t.Fatalf("permission %v: not evaluated by this test", p)
		return false
	}
}

func TestTranslateAuthz(t *testing.T) {
	rs, eps := authzTopology()
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	const hc = "spiffe://echo.gmesh.local/cp/health-checker"
	const healthPolicy = "gmesh: the control plane's health checker may call only grpc.health.v1.Health"
	type want struct {
		policy   string
		admitted []string // nil: no rbac filter
	}
	server := want{
		policy:   "gmesh: only virtual nodes whose backends list echo-server.echo.local may call echo-server-1-0",
		admitted: []string{hc, nodeRE("echo", "echo-client"), nodeRE("echo", "reader")},
	}
	wants := map[string]want{
		// PERMISSIVE serves plain text: no identity to authorize.
		"127.0.0.11:50051": {}, "127.0.0.12:50051": {},
		"127.0.0.13:50051": server, "127.0.0.14:50051": server, "127.0.0.15:50051": server, "127.0.0.16:50051": server,
		// Nobody lists echo-client.echo.local: the health checker only.
		"127.0.0.21:8080": {
			policy:   "gmesh: only virtual nodes whose backends list echo-client.echo.local may call echo-client",
			admitted: []string{hc},
		},
		"127.0.0.31:7000": {
			policy:   "gmesh: no virtual service routes to orphan, so no virtual node may call it",
			admitted: []string{hc},
		},
	}
	got := 0
	for _, l := range res.Listeners {
		addr, ok := strings.CutPrefix(l.GetName(), "grpc/server?xds.resource.listening_address=")
		if !ok {
			continue
		}
		got++
		w, ok := wants[addr]
		if !ok {
			t.Errorf("unexpected server listener %s", l.GetName())
			continue
		}
		rules := rbacRules(t, l)
		if w.admitted == nil {
			if rules != nil {
				t.Errorf("%s: rbac rules %v, want none", addr, rules)
			}
			continue
		}
		if rules == nil {
			t.Errorf("%s: no rbac filter, want one", addr)
			continue
		}
		if rules.GetAction() != rbacconfigpb.RBAC_DENY || len(rules.GetPolicies()) != 2 {
			t.Errorf("%s: action %v with %d policies, want DENY with 2", addr, rules.GetAction(), len(rules.GetPolicies()))
		}
		p := rules.GetPolicies()[w.policy]
		if p == nil {
			t.Errorf("%s: no policy %q in %v", addr, w.policy, keys(rules.GetPolicies()))
			continue
		}
		if diff := cmp.Diff(w.admitted, admitted(t, p)); diff != "" {
			t.Errorf("%s: admitted (-want +got):\n%s", addr, diff)
		}
		h := rules.GetPolicies()[healthPolicy]
		if h.GetPrincipals()[0].GetAuthenticated().GetPrincipalName().GetExact() != hc ||
			h.GetPermissions()[0].GetNotRule().GetUrlPath().GetPath().GetPrefix() != "/grpc.health.v1.Health/" {
			t.Errorf("%s: health policy %v: want the health checker denied all but /grpc.health.v1.Health/", addr, h)
		}
		a := rules.GetAuditLoggingOptions()
		if a.GetAuditCondition() != rbacconfigpb.RBAC_AuditLoggingOptions_ON_DENY || len(a.GetLoggerConfigs()) != 1 ||
			!strings.HasSuffix(a.GetLoggerConfigs()[0].GetAuditLogger().GetTypedConfig().GetTypeUrl(), "StdoutAuditLog") {
			t.Errorf("%s: audit logging %v, want the stdout logger on deny", addr, a)
		}
	}
	if got != len(wants) {
		t.Errorf("got %d server listeners, want %d", got, len(wants))
	}
}

// TestTranslateAuthzIdentities evaluates echo-server-1-0's policy for
// callers presenting each form of ID: a Kubernetes pod of an admitted node
// is admitted whatever its namespace and service account; any other node,
// path shape or trust domain is denied.
func TestTranslateAuthzIdentities(t *testing.T) {
	rs, eps := authzTopology()
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	var rules *rbacconfigpb.RBAC
	for _, l := range res.Listeners {
		if l.GetName() == "grpc/server?xds.resource.listening_address=127.0.0.13:50051" {
			rules = rbacRules(t, l)
		}
	}
	if rules == nil {
		t.Fatal("no server listener for 127.0.0.13:50051")
	}
	backends := xds.BackendsPolicy("echo-server-1-0", []string{"echo-server.echo.local"})
	const (
		health = "/grpc.health.v1.Health/Check"
		echo   = "/echo.EchoService/Echo"
	)
	tests := []struct {
		id, path string
		want     []string // the policies that deny; none: admitted
	}{
		{"spiffe://echo.gmesh.local/vn/echo-client", echo, nil},
		{"spiffe://echo.gmesh.local/ns/echo/sa/default/vn/echo-client", echo, nil},
		{"spiffe://echo.gmesh.local/ns/team-b/sa/reader.v2/vn/reader", echo, nil},
		{"spiffe://echo.gmesh.local/cp/health-checker", health, nil},
		{"spiffe://echo.gmesh.local/cp/health-checker", echo, []string{"gmesh: the control plane's health checker may call only grpc.health.v1.Health"}},
		// Another node, in either form.
		{"spiffe://echo.gmesh.local/vn/intruder", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/echo/sa/default/vn/intruder", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/echo/sa/default/vn/intruder", health, []string{backends}},
		// Shapes that are not a workload of echo-client.
		{"spiffe://echo.gmesh.local/ns/a/sa/b/vn/echo-client/x", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/vn/echo-clientx", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/a/sa/b/vn/echo-clientx", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/a/vn/echo-client", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/sa/b/vn/echo-client", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/a/sa/b/c/vn/echo-client", echo, []string{backends}},
		{"spiffe://echo.gmesh.local/ns/a/sa/b/cp/health-checker", health, []string{backends}},
		// Another trust domain.
		{"spiffe://other.gmesh.local/vn/echo-client", echo, []string{backends}},
		{"spiffe://other.gmesh.local/ns/a/sa/b/vn/echo-client", echo, []string{backends}},
		{"spiffe://echoxgmesh.local/ns/a/sa/b/vn/echo-client", echo, []string{backends}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, deniedBy(t, rules, tt.id, tt.path)); diff != "" {
			t.Errorf("%s calling %s: denying policies (-want +got):\n%s", tt.id, tt.path, diff)
		}
	}
}

// TestTranslateAuthzFollowsBackends: adding a backend to a node admits it
// at the next translation; removing it takes it out again.
func TestTranslateAuthzFollowsBackends(t *testing.T) {
	rs, eps := authzTopology()
	policyOf := func() []string {
		res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range res.Listeners {
			if l.GetName() == "grpc/server?xds.resource.listening_address=127.0.0.13:50051" {
				return admitted(t, rbacRules(t, l).GetPolicies()[xds.BackendsPolicy("echo-server-1-0", []string{"echo-server.echo.local"})])
			}
		}
		t.Fatal("no server listener for 127.0.0.13:50051")
		return nil
	}
	intruder := nodeRE("echo", "intruder")
	if slices.Contains(policyOf(), intruder) {
		t.Fatalf("intruder admitted before it lists echo-server")
	}
	var spec *mesh.VirtualNodeSpec
	for _, r := range rs {
		if r.Metadata.Name == "intruder" {
			spec = r.VirtualNode()
		}
	}
	spec.Backends = []mesh.Backend{{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: "echo-server.echo.local"}}}
	if !slices.Contains(policyOf(), intruder) {
		t.Errorf("intruder not admitted after listing echo-server.echo.local")
	}
	spec.Backends = nil
	if slices.Contains(policyOf(), intruder) {
		t.Errorf("intruder still admitted after its backend was removed")
	}
}

// TestTranslateAuthzValidation: a STRICT listener's tls.validation adds a
// deny policy for backend callers without one of its SANs, disjoint from
// the backends policy (it matches only backend callers).
func TestTranslateAuthzValidation(t *testing.T) {
	rs, eps := authzTopology()
	sans := []string{"spiffe://echo.gmesh.local/vn/echo-client"}
	for _, r := range rs {
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-1-0" {
			r.VirtualNode().Listeners[0].TLS.Validation = &mesh.TLSValidation{SubjectAlternativeNames: &mesh.SubjectAlternativeNames{
				Match: mesh.SubjectAlternativeNameMatch{Exact: sans}}}
		}
	}
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Listeners {
		if l.GetName() != "grpc/server?xds.resource.listening_address=127.0.0.13:50051" {
			continue
		}
		rules := rbacRules(t, l)
		p := rules.GetPolicies()[xds.ValidationPolicy("echo-server-1-0", sans)]
		if p == nil {
			t.Fatalf("no validation policy in %v", keys(rules.GetPolicies()))
		}
		and := p.GetPrincipals()[0].GetAndIds().GetIds()
		if len(and) != 2 {
			t.Fatalf("validation principals %v: want callers and not SANs", p.GetPrincipals())
		}
		callers := principalNames(and[0].GetOrIds().GetIds())
		allowed := principalNames(and[1].GetNotId().GetOrIds().GetIds())
		if diff := cmp.Diff([]string{nodeRE("echo", "echo-client"), nodeRE("echo", "reader")}, callers); diff != "" {
			t.Errorf("validation applies to (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(sans, allowed); diff != "" {
			t.Errorf("validation admits (-want +got):\n%s", diff)
		}
		return
	}
	t.Fatal("no server listener for 127.0.0.13:50051")
}

// TestTranslateAuthzStable: translating the same input twice gives the same
// bytes. The RBAC policies are a map, and grpc-go's xDS server drains every
// connection of a listener whose bytes changed, so a policy marshalled in
// random map order would drop a STRICT node's connections on every publish
// (and resend every listener).
func TestTranslateAuthzStable(t *testing.T) {
	rs, eps := authzTopology()
	opts := proto.MarshalOptions{Deterministic: true}
	var first map[string][]byte
	for i := 0; i < 20; i++ {
		res, err := xds.Translate(xds.Input{Revision: 1, Resources: rs, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		for _, l := range res.Listeners {
			b, err := opts.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			got[l.GetName()] = b
		}
		if first == nil {
			first = got
			continue
		}
		for name, b := range got {
			if !bytes.Equal(b, first[name]) {
				t.Fatalf("translation %d: listener %s differs from the first translation's", i, name)
			}
		}
	}
}
