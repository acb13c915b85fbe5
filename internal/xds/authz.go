package xds

import (
	"fmt"
	"strings"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	streampb "github.com/envoyproxy/go-control-plane/envoy/extensions/rbac/audit_loggers/stream/v3"
	matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// Authorization (docs/security.md): App Mesh's backends as authorization.
// A STRICT node's server listeners carry an RBAC HTTP filter (gRFC A41),
// before the router, that denies every call except from
//
//   - a virtual node whose backends list a virtual service that reaches
//     this node (mesh.Routing.Callers), by its certificate's SPIFFE ID in
//     either form, local or Kubernetes (NodeIDMatcher), and
//   - the control plane's health checker (pki.HealthChecker), which
//     presents its own certificate to STRICT nodes, for
//     grpc.health.v1.Health only;
//
// and, when the node's listener has tls.validation, only the backend
// callers with one of its SANs.
//
// The engine's action is DENY, with policies that say who is refused, and
// not ALLOW with policies that say who is admitted, because grpc-go names
// the matched policy only in a deny engine's error: a refused caller gets
// PERMISSION_DENIED "incoming RPC matched a deny policy
// "gmesh: only virtual nodes whose backends list S may call N"" (an allow
// engine says only "did not match an allow policy"). The policies are
// disjoint (the backends policy never matches the health checker or a
// backend caller, the health policy matches only the health checker, the
// validation policy only backend callers), so which one a refused call
// matched is never up to grpc-go's map order.
// Every denial is also written by the server to its standard output by
// grpc-go's stdout audit logger (gRFC A59), with the caller's SPIFFE ID.

// healthPolicy is the deny policy that confines the health checker to the
// health service.
const healthPolicy = "gmesh: the control plane's health checker may call only grpc.health.v1.Health"

// healthPathPrefix is the path prefix of grpc.health.v1.Health's methods.
const healthPathPrefix = "/grpc.health.v1.Health/"

// BackendsPolicy names the deny policy of node, reached through services:
// the name a refused caller reads in its PERMISSION_DENIED message.
func BackendsPolicy(node string, services []string) string {
	if len(services) == 0 {
		return "gmesh: no virtual service routes to " + node + ", so no virtual node may call it"
	}
	return "gmesh: only virtual nodes whose backends list " + strings.Join(services, " or ") + " may call " + node
}

// ValidationPolicy names the deny policy of node's listener tls.validation:
// a backend caller without one of sans.
func ValidationPolicy(node string, sans []string) string {
	return "gmesh: the listener tls.validation of " + node + " admits only " + strings.Join(sans, ", ")
}

// authzFilter returns the RBAC filter of vn's server listeners, or nil when
// vn is not STRICT (a PERMISSIVE or DISABLED node serves plain text: its
// callers have no identity to authorize).
func (t *translator) authzFilter(vn *mesh.Resource) (*hcmpb.HttpFilter, error) {
	spec := vn.VirtualNode()
	if spec == nil || spec.TLSMode() != mesh.TLSStrict {
		return nil, nil
	}
	meshName := vn.Metadata.Mesh
	callers := t.callers(meshName)[vn.Metadata.Name]
	hc := principal(pki.HealthChecker(meshName))
	var callerIDs []*rbacconfigpb.Principal
	for _, n := range callers.Nodes {
		callerIDs = append(callerIDs, nodePrincipal(meshName, n))
	}
	admitted := append([]*rbacconfigpb.Principal{hc}, callerIDs...)
	policies := map[string]*rbacconfigpb.Policy{
		BackendsPolicy(vn.Metadata.Name, callers.Services): {
			Permissions: anyPermission(),
			Principals:  []*rbacconfigpb.Principal{not(anyOf(admitted))},
		},
		healthPolicy: {
			Permissions: []*rbacconfigpb.Permission{{Rule: &rbacconfigpb.Permission_NotRule{NotRule: &rbacconfigpb.Permission{
				Rule: &rbacconfigpb.Permission_UrlPath{UrlPath: &matcherpb.PathMatcher{Rule: &matcherpb.PathMatcher_Path{
					Path: &matcherpb.StringMatcher{MatchPattern: &matcherpb.StringMatcher_Prefix{Prefix: healthPathPrefix}},
				}}},
			}}}},
			Principals: []*rbacconfigpb.Principal{hc},
		},
	}
	// The listener's tls.validation narrows the backend callers to those
	// with one of its SANs; the policy matches only callers the backends
	// policy lets through, so the three stay disjoint. The health checker
	// is not a backend caller: validation does not apply to it.
	if sans := spec.ListenerSANs(); len(sans) > 0 && len(callers.Nodes) > 0 {
		var sanIDs []*rbacconfigpb.Principal
		for _, san := range sans {
			sanIDs = append(sanIDs, principalName(san))
		}
		policies[ValidationPolicy(vn.Metadata.Name, sans)] = &rbacconfigpb.Policy{
			Permissions: anyPermission(),
			Principals: []*rbacconfigpb.Principal{{Identifier: &rbacconfigpb.Principal_AndIds{AndIds: &rbacconfigpb.Principal_Set{
				Ids: []*rbacconfigpb.Principal{anyOf(callerIDs), not(anyOf(sanIDs))},
			}}}},
		}
	}
	stdout, err := anypb.New(&streampb.StdoutAuditLog{})
	if err != nil {
		return nil, fmt.Errorf("marshal audit logger: %w", err)
	}
	cfg := &rbacpb.RBAC{Rules: &rbacconfigpb.RBAC{
		Action:   rbacconfigpb.RBAC_DENY,
		Policies: policies,
		AuditLoggingOptions: &rbacconfigpb.RBAC_AuditLoggingOptions{
			AuditCondition: rbacconfigpb.RBAC_AuditLoggingOptions_ON_DENY,
			LoggerConfigs: []*rbacconfigpb.RBAC_AuditLoggingOptions_AuditLoggerConfig{{
				AuditLogger: &corepb.TypedExtensionConfig{Name: "envoy.rbac.audit_loggers.stream", TypedConfig: stdout},
				// grpc-go always has the stdout logger (its RBAC
				// converter imports it); optional all the same, so a
				// server without it still enforces the policy.
				IsOptional: true,
			}},
		},
	}}
	a, err := stableAny(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshal rbac filter: %w", err)
	}
	return &hcmpb.HttpFilter{Name: wellknown.HTTPRoleBasedAccessControl, ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// stableAny packs m with map entries in sorted order. anypb.New marshals
// maps in random order, and an RBAC policy is a map: the same policy would
// give different bytes at every translation, and grpc-go's xDS server
// drains all connections of a listener whose bytes change.
func stableAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// principal matches a caller whose certificate's URI SAN is exactly id.
func principal(id pki.ID) *rbacconfigpb.Principal { return principalName(id.String()) }

// nodePrincipal matches a caller whose certificate's URI SAN is any ID of
// a workload of node (NodeIDMatcher): its local tasks' and its pods'.
func nodePrincipal(meshName, node string) *rbacconfigpb.Principal {
	return &rbacconfigpb.Principal{Identifier: &rbacconfigpb.Principal_Authenticated_{Authenticated: &rbacconfigpb.Principal_Authenticated{
		PrincipalName: NodeIDMatcher(meshName, node),
	}}}
}

// principalName matches a caller whose certificate's first URI SAN (or,
// with none, DNS SAN, or subject) is exactly name (gRFC A41).
func principalName(name string) *rbacconfigpb.Principal {
	return &rbacconfigpb.Principal{Identifier: &rbacconfigpb.Principal_Authenticated_{Authenticated: &rbacconfigpb.Principal_Authenticated{
		PrincipalName: &matcherpb.StringMatcher{MatchPattern: &matcherpb.StringMatcher_Exact{Exact: name}},
	}}}
}

func anyOf(ids []*rbacconfigpb.Principal) *rbacconfigpb.Principal {
	return &rbacconfigpb.Principal{Identifier: &rbacconfigpb.Principal_OrIds{OrIds: &rbacconfigpb.Principal_Set{Ids: ids}}}
}

func not(p *rbacconfigpb.Principal) *rbacconfigpb.Principal {
	return &rbacconfigpb.Principal{Identifier: &rbacconfigpb.Principal_NotId{NotId: p}}
}

func anyPermission() []*rbacconfigpb.Permission {
	return []*rbacconfigpb.Permission{{Rule: &rbacconfigpb.Permission_Any{Any: true}}}
}

// callers caches mesh.Routing.Callers per mesh.
func (t *translator) callers(meshName string) map[string]mesh.Callers {
	c, ok := t.meshCallers[meshName]
	if !ok {
		c = t.routing.Callers(meshName)
		t.meshCallers[meshName] = c
	}
	return c
}
