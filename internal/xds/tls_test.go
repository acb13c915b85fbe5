package xds_test

import (
	"strings"
	"testing"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// strictTopology is the echo topology with echo-server 1.0 STRICT: the mesh
// has TLS on, so every listening task gets a server listener; 1.0's demand
// mTLS and its cluster carries the upstream TLS context.
func strictTopology() []*mesh.Resource {
	rs := echoTopology(50, 50)
	for _, r := range rs {
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-1-0" {
			r.VirtualNode().Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
		}
	}
	return rs
}

func TestTranslateTLS(t *testing.T) {
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: strictTopology(), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*listenerpb.Listener{}
	for _, l := range res.Listeners {
		if strings.HasPrefix(l.GetName(), "grpc/server?") {
			servers[l.GetName()] = l
		}
	}
	// Every listening task of the mesh "echo", whatever its health (t4
	// unhealthy, t5 draining, t7 pending); not t8 of mesh "other".
	want := map[string]bool{ // address -> strict
		"127.0.0.11:50051": false, "127.0.0.12:50051": false,
		"127.0.0.13:50051": true, "127.0.0.14:50051": true, "127.0.0.15:50051": true, "127.0.0.16:50051": true,
		"127.0.0.21:8080": false,
	}
	if len(servers) != len(want) {
		t.Errorf("got %d server listeners, want %d: %v", len(servers), len(want), keys(servers))
	}
	for addr, strict := range want {
		l := servers["grpc/server?xds.resource.listening_address="+addr]
		if l == nil {
			t.Errorf("no server listener for %s", addr)
			continue
		}
		ts := l.GetFilterChains()[0].GetTransportSocket()
		if !strict {
			if ts != nil {
				t.Errorf("%s: transport socket %v, want none (plain text)", addr, ts)
			}
			continue
		}
		d := &tlspb.DownstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if !d.GetRequireClientCertificate().GetValue() || d.GetCommonTlsContext().GetTlsCertificateProviderInstance().GetInstanceName() != "gmesh" ||
			d.GetCommonTlsContext().GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName() != "gmesh" {
			t.Errorf("%s: downstream tls %v, want a client certificate required and the gmesh provider for identity and roots", addr, d)
		}
	}
	for _, c := range res.Clusters {
		ts := c.GetTransportSocket()
		if c.GetName() != "echo/echo-server-1-0" {
			if ts != nil {
				t.Errorf("cluster %s: transport socket %v, want none", c.GetName(), ts)
			}
			continue
		}
		u := upstream(t, c)
		sans := u.GetCommonTlsContext().GetValidationContext().GetMatchSubjectAltNames()
		if len(sans) != 1 {
			t.Errorf("cluster %s: SAN matchers %v, want one: the node's SPIFFE IDs", c.GetName(), sans)
			continue
		}
		// The caller accepts the node's local tasks and its pods, whatever
		// their namespace and service account, and no other workload.
		for id, want := range map[string]bool{
			"spiffe://echo.gmesh.local/vn/echo-server-1-0":                     true,
			"spiffe://echo.gmesh.local/ns/echo/sa/default/vn/echo-server-1-0":  true,
			"spiffe://echo.gmesh.local/ns/b/sa/c.d/vn/echo-server-1-0":         true,
			"spiffe://echo.gmesh.local/vn/echo-server-0-9":                     false,
			"spiffe://echo.gmesh.local/ns/echo/sa/default/vn/echo-server-0-9":  false,
			"spiffe://echo.gmesh.local/ns/echo/vn/echo-server-1-0":             false,
			"spiffe://echo.gmesh.local/vn/echo-server-1-0/x":                   false,
			"spiffe://other.gmesh.local/ns/echo/sa/default/vn/echo-server-1-0": false,
		} {
			if got := stringMatches(t, sans[0], id); got != want {
				t.Errorf("cluster %s: SAN matcher %v accepts %s: got %v, want %v", c.GetName(), sans[0], id, got, want)
			}
		}
	}
}

func upstream(t *testing.T, c *clusterpb.Cluster) *tlspb.UpstreamTlsContext {
	t.Helper()
	u := &tlspb.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(u); err != nil {
		t.Fatalf("cluster %s: %v", c.GetName(), err)
	}
	return u
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTranslateTLSOffUnchanged: a mesh without TLS gets no server listener
// and no transport socket (what TestTranslateGolden pins byte for byte).
func TestTranslateTLSOffUnchanged(t *testing.T) {
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: echoTopology(50, 50), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Listeners {
		if l.GetApiListener() == nil {
			t.Errorf("listener %s is not an API listener", l.GetName())
		}
	}
	for _, c := range res.Clusters {
		if c.GetTransportSocket() != nil {
			t.Errorf("cluster %s has a transport socket", c.GetName())
		}
	}
}
