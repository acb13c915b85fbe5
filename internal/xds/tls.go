package xds

import (
	"fmt"
	"net"
	"strconv"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// TLS in the translation (docs/security.md):
//
//   - In a mesh with TLS on (mesh.MeshTLS), every task listening for a
//     virtual node gets a server listener, named as grpc-go's xDS server asks
//     for it (bootstrap.ServerListenerName of its address), whatever its
//     health: the server serves nothing until it has one. A STRICT node's
//     carries a DownstreamTlsContext that requires a client certificate
//     chained to the mesh CA; the others serve plain text.
//   - The cluster of a STRICT node carries an UpstreamTlsContext: the caller
//     presents its own certificate and accepts only a server whose
//     certificate chains to the mesh CA and carries a SPIFFE ID of that
//     node: its local tasks' or its pods' (NodeIDMatcher).
//
// Both name the certificate provider instance of the bootstrap
// (bootstrap.CertProviderInstance) for the identity and the roots.

// transportSocketTLS is the transport socket name grpc-go requires.
const transportSocketTLS = "envoy.transport_sockets.tls"

func providerInstance() *tlspb.CertificateProviderPluginInstance {
	return &tlspb.CertificateProviderPluginInstance{InstanceName: bootstrap.CertProviderInstance}
}

func transportSocket(m proto.Message) (*corepb.TransportSocket, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("marshal tls context: %w", err)
	}
	return &corepb.TransportSocket{Name: transportSocketTLS, ConfigType: &corepb.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// upstreamTLS is the transport socket of a STRICT node's cluster: mTLS,
// accepting only a SPIFFE ID of the node (NodeIDMatcher).
func upstreamTLS(meshName, node string) (*corepb.TransportSocket, error) {
	return transportSocket(&tlspb.UpstreamTlsContext{
		CommonTlsContext: &tlspb.CommonTlsContext{
			TlsCertificateProviderInstance: providerInstance(),
			ValidationContextType: &tlspb.CommonTlsContext_ValidationContext{ValidationContext: &tlspb.CertificateValidationContext{
				CaCertificateProviderInstance: providerInstance(),
				MatchSubjectAltNames:          []*matcherpb.StringMatcher{NodeIDMatcher(meshName, node)},
			}},
		},
	})
}

// downstreamTLS is the transport socket of a STRICT node's server
// listeners: mTLS, a client certificate from the mesh CA required.
func downstreamTLS() (*corepb.TransportSocket, error) {
	return transportSocket(&tlspb.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlspb.CommonTlsContext{
			TlsCertificateProviderInstance: providerInstance(),
			ValidationContextType: &tlspb.CommonTlsContext_ValidationContext{ValidationContext: &tlspb.CertificateValidationContext{
				CaCertificateProviderInstance: providerInstance(),
			}},
		},
	})
}

// NodeID is the SPIFFE ID of a virtual node's local tasks.
func NodeID(meshName, virtualNode string) pki.ID {
	return pki.ID{Mesh: meshName, VirtualNode: virtualNode}
}

// NodeIDMatcher matches every SPIFFE ID a workload of virtualNode of
// meshName may present: its local tasks' (NodeID) and its Kubernetes pods'
// (spiffe://MESH.gmesh.local/ns/NS/sa/SA/vn/NODE, any namespace and
// service account), with pki.NodePattern as a safe_regex (RE2, anchored,
// names quoted). It is the one matcher of a node's identity: the RBAC
// principals that admit the node's workloads as callers and the SAN check
// a caller makes of the node's servers. grpc-go supports safe_regex in
// both (StringMatcherFromProto in its RBAC principal_name and in
// match_subject_alt_names).
func NodeIDMatcher(meshName, virtualNode string) *matcherpb.StringMatcher {
	return &matcherpb.StringMatcher{MatchPattern: &matcherpb.StringMatcher_SafeRegex{SafeRegex: &matcherpb.RegexMatcher{
		Regex: pki.NodePattern(meshName, virtualNode),
	}}}
}

// serverListener is the listener grpc-go's xDS server listening on
// host:port asks for: one filter chain that lets every RPC through to the
// server's own handlers (a non-forwarding route) over mTLS when strict,
// after authz (the RBAC filter; nil for none).
func serverListener(host string, port int, strict bool, authz *hcmpb.HttpFilter) (*listenerpb.Listener, error) {
	router, err := anypb.New(&routerpb.Router{})
	if err != nil {
		return nil, fmt.Errorf("marshal router filter: %w", err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var filters []*hcmpb.HttpFilter
	if authz != nil {
		filters = append(filters, authz)
	}
	filters = append(filters, &hcmpb.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: router},
	})
	// Deterministic, as the RBAC filter inside it (stableAny).
	hcm, err := stableAny(&hcmpb.HttpConnectionManager{
		CodecType:  hcmpb.HttpConnectionManager_AUTO,
		StatPrefix: addr,
		RouteSpecifier: &hcmpb.HttpConnectionManager_RouteConfig{RouteConfig: &routepb.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*routepb.VirtualHost{{
				Name:    "inbound",
				Domains: []string{"*"},
				Routes: []*routepb.Route{{
					Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routepb.Route_NonForwardingAction{NonForwardingAction: &routepb.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: filters,
	})
	if err != nil {
		return nil, fmt.Errorf("marshal http connection manager: %w", err)
	}
	fc := &listenerpb.FilterChain{
		Name: "inbound",
		Filters: []*listenerpb.Filter{{
			Name:       wellknown.HTTPConnectionManager,
			ConfigType: &listenerpb.Filter_TypedConfig{TypedConfig: hcm},
		}},
	}
	if strict {
		if fc.TransportSocket, err = downstreamTLS(); err != nil {
			return nil, err
		}
	}
	return &listenerpb.Listener{
		Name: bootstrap.ServerListenerName(addr),
		Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
			Protocol:      corepb.SocketAddress_TCP,
			Address:       host,
			PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
		}}},
		FilterChains: []*listenerpb.FilterChain{fc},
	}, nil
}

// serverListeners returns the server listeners of a node's listening tasks
// when its mesh has TLS on; names already in seen are skipped (an address
// two nodes select is served by the first).
func (t *translator) serverListeners(vn *mesh.Resource, seen map[string]bool) ([]*listenerpb.Listener, error) {
	spec := vn.VirtualNode()
	if spec == nil || !t.meshTLS(vn.Metadata.Mesh) {
		return nil, nil
	}
	strict := spec.TLSMode() == mesh.TLSStrict
	authz, err := t.authzFilter(vn)
	if err != nil {
		return nil, fmt.Errorf("%s: authorization: %w", vn.Ref(), err)
	}
	var out []*listenerpb.Listener
	for _, e := range mesh.ListeningEndpoints(vn, t.endpoints) {
		l, err := serverListener(e.Address, e.Port, strict, authz)
		if err == nil {
			err = l.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: server listener of %s: %w", vn.Ref(), e.ID, err)
		}
		if seen[l.GetName()] {
			continue
		}
		seen[l.GetName()] = true
		out = append(out, l)
	}
	return out, nil
}

// meshTLS caches mesh.MeshTLS per mesh.
func (t *translator) meshTLS(meshName string) bool {
	on, ok := t.tlsMeshes[meshName]
	if !ok {
		on = mesh.MeshTLS(t.nodes, meshName)
		t.tlsMeshes[meshName] = on
	}
	return on
}
