// Package appmesh converts App Mesh's Kubernetes objects
// (appmesh.k8s.aws/v1beta2, see api/appmesh/v1beta2) into gmesh's domain
// resources (internal/mesh), object by object.
//
// Convert takes every object of the six kinds, the labels of each
// namespace and the pod IPs of each VirtualNode as plain data, and
// returns one Result per object: the resources it became, the fields it
// carries that gmesh accepts but does not act on (reported in the object's
// status, never silently dropped), and the errors that made gmesh refuse
// it, each naming the object and the field path. A refused object is
// reported alone: it never stops the conversion of the others. Objects
// that refer to a refused object still convert (their reference names the
// gmesh resource the refused object would have become), unless it has no
// valid gmesh name; whether the whole mesh is consistent is the
// translation's business, as for `gmesh apply`. Result.ApplyTo writes a
// result into the object's status.
//
// Names: App Mesh named a node, router, gateway and gateway route
// spec.awsName, else NAME_NAMESPACE, a service spec.awsName, else
// NAME.NAMESPACE, a mesh spec.awsName, else its name. gmesh's names have
// no '_' (they are DNS names), so gmesh spells App Mesh's '_' as '.':
// color-green_howto-k8s-grpc is color-green.howto-k8s-grpc (namespaces
// have no '.', so two objects never share a default name). A virtual
// service keeps its name as is: it is the name clients dial. A router's
// inline route is the gmesh Route ROUTE.ROUTER. ARN references are
// resolved by App Mesh name within the ARN's mesh.
package appmesh

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Input is the cluster state a conversion reads.
type Input struct {
	Meshes          []v1beta2.Mesh
	VirtualNodes    []v1beta2.VirtualNode
	VirtualRouters  []v1beta2.VirtualRouter
	VirtualServices []v1beta2.VirtualService
	VirtualGateways []v1beta2.VirtualGateway
	GatewayRoutes   []v1beta2.GatewayRoute
	// NamespaceLabels are the labels of each namespace, for the meshes'
	// and gateways' namespace selectors. A namespace missing here has no
	// labels.
	NamespaceLabels map[string]map[string]string
	// ReadyPodIPs are the IPs of the Ready (and not terminating) pods each
	// VirtualNode's podSelector selects, by the node's namespace and name:
	// the node's serving endpoints (State RUNNING, Health HEALTHY).
	ReadyPodIPs map[types.NamespacedName][]string
	// StartingPodIPs are the IPs of the selected pods that are starting:
	// Running or Pending with an IP, not Ready, not terminating. They are
	// endpoints that do not serve (State RUNNING, Health UNKNOWN, as a local
	// task before its first health check): in no EDS and no gateway's
	// backends, but listening, so in a mesh with TLS on each gets its server
	// Listener, which a STRICT pod's grpc-go xDS server needs before it
	// serves, and so before its readiness probe can pass.
	StartingPodIPs map[types.NamespacedName][]string
	// TerminatingPodIPs are the IPs of the selected pods that are being
	// deleted while still Running (or Pending) with an IP. They are
	// draining endpoints (State STOPPING, Draining), as a local task that
	// drains: out of EDS at once, their server Listener kept while the pod
	// drains (without it grpc-go's xDS server stops serving and closes its
	// connections).
	TerminatingPodIPs map[types.NamespacedName][]string
}

// Object identifies a Kubernetes object.
type Object struct {
	Kind      mesh.Kind // the App Mesh kind of the same name
	Namespace string    // "" for a Mesh
	Name      string
}

func (o Object) String() string {
	k := strings.ToLower(string(o.Kind))
	if o.Namespace == "" {
		return k + " " + o.Name
	}
	return k + " " + o.Namespace + "/" + o.Name
}

// FieldError is why gmesh refused an object, or one route of a router.
type FieldError struct {
	Object Object
	// Field is the path in the object ("spec.routes[0].tcpRoute").
	Field string
	// Reason is the Accepted condition's reason (v1beta2.ReasonRefused,
	// ReasonNoMesh, ReasonDanglingRef, ReasonUnsupported,
	// ReasonInvalidValue).
	Reason  string
	Message string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Object, e.Field, e.Message)
}

// Result is what one object converted into.
type Result struct {
	Object Object
	// Mesh and Name are the object's gmesh mesh and name ("" when they
	// could not be worked out).
	Mesh, Name string
	// Resources are the gmesh resources the object became: none when it
	// was refused; a VirtualRouter gives its router and then one Route per
	// accepted route.
	Resources []*mesh.Resource
	// Endpoints are a VirtualNode's endpoints: one per selected pod with an
	// IP (Input.ReadyPodIPs, StartingPodIPs, TerminatingPodIPs), on its
	// first listener's port; only the Ready pods' serve
	// (mesh.Endpoint.Serving).
	Endpoints []*mesh.Endpoint
	// Routes maps a VirtualRouter's accepted route names to their gmesh
	// names.
	Routes map[string]string
	// VirtualGateway is a GatewayRoute's gateway (gmesh name).
	VirtualGateway string
	// Unhonoured lists the fields gmesh accepted but does not act on.
	Unhonoured []v1beta2.UnhonouredField
	// Errors are why gmesh refused the object (Resources is then empty)
	// or, for a VirtualRouter, some of its routes.
	Errors []*FieldError
}

// Refused reports whether the whole object was refused.
func (r *Result) Refused() bool { return len(r.Errors) > 0 && len(r.Resources) == 0 }

// Results are the results of a conversion, in kind order (mesh.Kinds),
// then by namespace and name.
type Results []*Result

// Resources returns every accepted resource.
func (rs Results) Resources() []*mesh.Resource {
	var out []*mesh.Resource
	for _, r := range rs {
		out = append(out, r.Resources...)
	}
	return out
}

// Endpoints returns every endpoint.
func (rs Results) Endpoints() []*mesh.Endpoint {
	var out []*mesh.Endpoint
	for _, r := range rs {
		out = append(out, r.Endpoints...)
	}
	return out
}

// Errors returns every refusal.
func (rs Results) Errors() []*FieldError {
	var out []*FieldError
	for _, r := range rs {
		out = append(out, r.Errors...)
	}
	return out
}

// Find returns the result of an object, or nil.
func (rs Results) Find(kind mesh.Kind, namespace, name string) *Result {
	for _, r := range rs {
		if r.Object == (Object{Kind: kind, Namespace: namespace, Name: name}) {
			return r
		}
	}
	return nil
}

// Convert converts every object of in. It never fails as a whole: each
// object's problems are in its own Result.
func Convert(in Input) Results {
	c := newConverter(in)
	var out Results
	for i := range in.Meshes {
		out = append(out, c.mesh(&in.Meshes[i]))
	}
	for i := range in.VirtualNodes {
		out = append(out, c.virtualNode(&in.VirtualNodes[i]))
	}
	for i := range in.VirtualRouters {
		out = append(out, c.virtualRouter(&in.VirtualRouters[i]))
	}
	for i := range in.VirtualServices {
		out = append(out, c.virtualService(&in.VirtualServices[i]))
	}
	for i := range in.VirtualGateways {
		out = append(out, c.virtualGateway(&in.VirtualGateways[i]))
	}
	for i := range in.GatewayRoutes {
		out = append(out, c.gatewayRoute(&in.GatewayRoutes[i]))
	}
	order := map[mesh.Kind]int{}
	for i, k := range mesh.Kinds {
		order[k] = i
	}
	slices.SortStableFunc(out, func(a, b *Result) int {
		return cmp.Or(cmp.Compare(order[a.Object.Kind], order[b.Object.Kind]),
			cmp.Compare(a.Object.Namespace, b.Object.Namespace), cmp.Compare(a.Object.Name, b.Object.Name))
	})
	claimRouteNames(out)
	for _, r := range out {
		if len(r.Errors) > 0 && r.Object.Kind != mesh.KindVirtualRouter {
			r.Resources, r.Endpoints = nil, nil
		}
		slices.SortFunc(r.Unhonoured, func(a, b v1beta2.UnhonouredField) int { return cmp.Compare(a.Field, b.Field) })
	}
	return out
}

// result collects one object's conversion.
type result struct {
	*Result
}

func newResult(o Object) result { return result{&Result{Object: o}} }

func (r result) fail(field, reason, format string, args ...any) {
	r.Errors = append(r.Errors, &FieldError{Object: r.Object, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (r result) report(field, format string, args ...any) {
	for _, u := range r.Unhonoured {
		if u.Field == field {
			return
		}
	}
	r.Unhonoured = append(r.Unhonoured, v1beta2.UnhonouredField{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// validate runs gmesh's own checks on a converted resource as a backstop:
// the conversion checks what it can with Kubernetes field paths first, so
// a failure here is reported on spec with gmesh's own path. TLS is the
// exception: gmesh's model is the one rule of what TLS it supports, and a
// node's TLS fields have the same paths in both (listeners and backends
// convert one for one, in order), so a TLS failure is reported on its own
// field, as Unsupported.
func (r result) validate(res *mesh.Resource) bool {
	mesh.Default(res)
	err := mesh.Validate(res)
	if err == nil {
		return true
	}
	var es mesh.Errors
	switch e := err.(type) {
	case mesh.Errors:
		es = e
	case *mesh.Error:
		es = mesh.Errors{e}
	default:
		r.fail("spec", v1beta2.ReasonInvalidValue, "%v", err)
		return false
	}
	for _, e := range es {
		if res.Kind == mesh.KindVirtualNode && isTLSField(e.Field) {
			r.fail(e.Field, v1beta2.ReasonUnsupported, "%s", e.Message)
			continue
		}
		r.fail("spec", v1beta2.ReasonInvalidValue, "gmesh %s %s: %s: %s", strings.ToLower(string(res.Kind)), res.Metadata.Name, e.Field, e.Message)
	}
	return false
}

// isTLSField reports whether a gmesh field path is in a listener's tls or
// a client policy's tls.
func isTLSField(field string) bool {
	return strings.HasSuffix(field, ".tls") || strings.Contains(field, ".tls.")
}

func newResource(kind mesh.Kind, meshName, name string, spec any) *mesh.Resource {
	return &mesh.Resource{APIVersion: mesh.APIVersion, Kind: kind, Metadata: mesh.Metadata{Name: name, Mesh: meshName}, Spec: spec}
}

// claimRouteNames refuses a route whose gmesh name ROUTE.ROUTER another
// router's route already has in the same mesh (route "a.b" of router "c"
// and route "a" of router "b.c"); the first router by namespace and name
// keeps it.
func claimRouteNames(rs Results) {
	type key struct{ mesh, name string }
	taken := map[key]Object{}
	for _, r := range rs {
		if r.Object.Kind != mesh.KindVirtualRouter {
			continue
		}
		kept := r.Resources[:0]
		for _, res := range r.Resources {
			k := key{res.Metadata.Mesh, res.Metadata.Name}
			if res.Kind != mesh.KindRoute {
				kept = append(kept, res)
				continue
			}
			if prev, ok := taken[k]; ok {
				for rn, gn := range r.Routes {
					if gn == res.Metadata.Name {
						delete(r.Routes, rn)
						result{r}.fail("spec.routes", v1beta2.ReasonInvalidValue, "route %q: gmesh name %q is already a route of %s: rename the route", rn, gn, prev)
					}
				}
				continue
			}
			taken[k] = r.Object
			kept = append(kept, res)
		}
		r.Resources = kept
	}
}
