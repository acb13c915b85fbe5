// Package xds translates gmesh's mesh state (App Mesh resources plus the
// registry's endpoints) into one consistent set of xDS resources: an API
// listener and a route configuration per virtual service, a cluster per
// virtual node, and a ClusterLoadAssignment per EDS cluster.
//
// Naming (stable; other packages and clients depend on it):
//
//	Listener               <virtual service name>   (clients dial xds:///<name>)
//	RouteConfiguration     <mesh>/<virtual service>
//	Cluster                <mesh>/<virtual node>
//	ClusterLoadAssignment  <mesh>/<virtual node>    (the cluster's EDS service_name)
//
// Translation follows what grpc-go's proxyless xDS client honours and keeps
// every resource valid for Envoy too. Which routes a virtual service has, in
// which order, and which weighted nodes serve them is asked of the mesh
// package's one resolver (mesh.Routing, mesh.EffectiveTargets), the same that
// the gateway uses. Two traps shape the output: a weighted target of weight 0
// is left out of the route (grpc-go never subscribes to a weight-0 cluster,
// so pin routes keep it subscribed), and a weighted cluster with no healthy
// endpoints stalls the calls that pick it (grpc-go issue 8383), so a node
// without serving endpoints loses its share to the route's other targets
// while it has none (when no target serves, the weights stay as written).
package xds

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Type URLs of the four resource types gmesh serves.
const (
	ListenerType = resource.ListenerType
	RouteType    = resource.RouteType
	ClusterType  = resource.ClusterType
	EndpointType = resource.EndpointType
)

// TypeURLs lists the served types in the order a client needs them.
var TypeURLs = []string{ListenerType, RouteType, ClusterType, EndpointType}

// ListenerName is the listener a client dialing xds:///<virtualService> asks for.
func ListenerName(virtualService string) string { return virtualService }

// RouteConfigName names a virtual service's route configuration.
func RouteConfigName(meshName, virtualService string) string {
	return meshName + "/" + virtualService
}

// ClusterName names a virtual node's cluster; it is also the cluster's EDS
// service name.
func ClusterName(meshName, virtualNode string) string { return meshName + "/" + virtualNode }

// Input is what Translate reads: the mesh resources of a store revision and
// the registry's endpoints (all of them; Translate selects the serving ones).
type Input struct {
	Revision  uint64
	Resources []*mesh.Resource
	Endpoints []*mesh.Endpoint
	// Hold names clusters (ClusterName) whose weight is taken as 0 this
	// time: they keep their pin routes, so clients subscribe to them, but
	// get no share yet. The control plane holds a target that gains weight
	// in the same change that makes it routable at all, publishes, waits for
	// the ACKs, then publishes again without the hold: grpc-go fails calls
	// ("unknown cluster selected") when a route picks a cluster it has not
	// subscribed to yet. A hold that would leave a route with no weight at
	// all is ignored for that route.
	Hold map[string]bool
}

// Resources is one consistent set of xDS resources, each slice sorted by name.
type Resources struct {
	Revision  uint64
	Listeners []*listenerpb.Listener
	Routes    []*routepb.RouteConfiguration
	Clusters  []*clusterpb.Cluster
	Endpoints []*endpointpb.ClusterLoadAssignment
	// Mesh records the mesh each resource was translated from (Translate
	// fills it: a virtual service's listener and route configuration, a
	// virtual node's cluster, load assignment and server listeners are its
	// mesh's), so that a consumer can take one mesh's part (Subset). It is
	// not part of what clients get.
	Mesh map[ResourceKey]string
	// TLSMeshes are the translated meshes with TLS on (mesh.MeshTLS).
	TLSMeshes map[string]bool
}

// ResourceKey names one resource of a Resources: its type URL and its name
// (a load assignment's is its cluster name).
type ResourceKey struct {
	TypeURL string
	Name    string
}

// MeshOf returns the mesh the resource typeURL/name was translated from,
// "" when none is recorded.
func (r *Resources) MeshOf(typeURL, name string) string {
	return r.Mesh[ResourceKey{TypeURL: typeURL, Name: name}]
}

// record notes that typeURL/name belongs to meshName.
func (r *Resources) record(typeURL, name, meshName string) {
	if r.Mesh == nil {
		r.Mesh = map[ResourceKey]string{}
	}
	r.Mesh[ResourceKey{TypeURL: typeURL, Name: name}] = meshName
}

// Subset returns the resources of the meshes keep keeps (by MeshOf; a
// resource with no recorded mesh is left out), with their Mesh records and
// TLSMeshes. Resources refer to their own mesh's only (route
// configurations and clusters are named by mesh), so a subset of a
// consistent set is consistent. The protos are shared, not copied.
func (r *Resources) Subset(keep func(meshName string) bool) *Resources {
	out := &Resources{Revision: r.Revision}
	take := func(typeURL, name string) bool {
		m, ok := r.Mesh[ResourceKey{TypeURL: typeURL, Name: name}]
		if !ok || !keep(m) {
			return false
		}
		out.record(typeURL, name, m)
		if r.TLSMeshes[m] {
			if out.TLSMeshes == nil {
				out.TLSMeshes = map[string]bool{}
			}
			out.TLSMeshes[m] = true
		}
		return true
	}
	for _, l := range r.Listeners {
		if take(ListenerType, l.GetName()) {
			out.Listeners = append(out.Listeners, l)
		}
	}
	for _, rc := range r.Routes {
		if take(RouteType, rc.GetName()) {
			out.Routes = append(out.Routes, rc)
		}
	}
	for _, c := range r.Clusters {
		if take(ClusterType, c.GetName()) {
			out.Clusters = append(out.Clusters, c)
		}
	}
	for _, e := range r.Endpoints {
		if take(EndpointType, e.GetClusterName()) {
			out.Endpoints = append(out.Endpoints, e)
		}
	}
	return out
}

// Unrecorded lists the resources whose mesh is not recorded, as
// "TYPE/NAME", sorted.
func (r *Resources) Unrecorded() []string {
	var out []string
	for typeURL, rs := range r.ByType() {
		for _, res := range rs {
			name := resourceName(res)
			if _, ok := r.Mesh[ResourceKey{TypeURL: typeURL, Name: name}]; !ok {
				out = append(out, typeURL+"/"+name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ResourceKeyOf is the key of r, a resource of typeURL as ByType returns
// them.
func ResourceKeyOf(typeURL string, r types.Resource) ResourceKey {
	return ResourceKey{TypeURL: typeURL, Name: resourceName(r)}
}

func resourceName(r types.Resource) string {
	if e, ok := r.(*endpointpb.ClusterLoadAssignment); ok {
		return e.GetClusterName()
	}
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// ByType returns the resources keyed by type URL, as go-control-plane's
// caches take them.
func (r *Resources) ByType() map[string][]types.Resource {
	out := make(map[string][]types.Resource, 4)
	for _, l := range r.Listeners {
		out[ListenerType] = append(out[ListenerType], l)
	}
	for _, rc := range r.Routes {
		out[RouteType] = append(out[RouteType], rc)
	}
	for _, c := range r.Clusters {
		out[ClusterType] = append(out[ClusterType], c)
	}
	for _, e := range r.Endpoints {
		out[EndpointType] = append(out[EndpointType], e)
	}
	return out
}

// Validate runs every resource's own Validate (go-control-plane's generated
// rules) and checks that the set is consistent: every route configuration a
// listener names exists and is named by some listener, every cluster a route
// targets exists, every EDS cluster's service name has a load assignment and
// every load assignment belongs to a cluster. go-control-plane's
// Snapshot.Consistent cannot be used: it does not look inside API listeners.
func (r *Resources) Validate() error {
	var errs []error
	check := func(kind, name string, v interface{ Validate() error }) {
		if err := v.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", kind, name, err))
		}
	}
	for _, l := range r.Listeners {
		check("listener", l.GetName(), l)
	}
	for _, rc := range r.Routes {
		check("route configuration", rc.GetName(), rc)
	}
	for _, c := range r.Clusters {
		check("cluster", c.GetName(), c)
	}
	for _, e := range r.Endpoints {
		check("cluster load assignment", e.GetClusterName(), e)
	}
	if err := r.consistent(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Resources) consistent() error {
	var errs []error
	routes := make(map[string]bool, len(r.Routes))
	for _, rc := range r.Routes {
		if routes[rc.GetName()] {
			errs = append(errs, fmt.Errorf("duplicate route configuration %q", rc.GetName()))
		}
		routes[rc.GetName()] = false
	}
	seen := map[string]bool{}
	for _, l := range r.Listeners {
		if seen[l.GetName()] {
			errs = append(errs, fmt.Errorf("duplicate listener %q", l.GetName()))
		}
		seen[l.GetName()] = true
		name, err := rdsName(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", l.GetName(), err))
			continue
		}
		if name == "" {
			continue
		}
		if _, ok := routes[name]; !ok {
			errs = append(errs, fmt.Errorf("listener %q: route configuration %q is not in the snapshot", l.GetName(), name))
			continue
		}
		routes[name] = true
	}
	for name, used := range routes {
		if !used {
			errs = append(errs, fmt.Errorf("route configuration %q: no listener refers to it", name))
		}
	}
	clusters := make(map[string]bool, len(r.Clusters))
	eds := map[string]bool{}
	for _, c := range r.Clusters {
		if clusters[c.GetName()] {
			errs = append(errs, fmt.Errorf("duplicate cluster %q", c.GetName()))
		}
		clusters[c.GetName()] = true
		if c.GetType() == clusterpb.Cluster_EDS {
			svc := c.GetEdsClusterConfig().GetServiceName()
			if svc == "" {
				svc = c.GetName()
			}
			eds[svc] = false
		}
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, name := range routeClusters(rt) {
					if !clusters[name] {
						errs = append(errs, fmt.Errorf("route configuration %q: route %q targets cluster %q, which is not in the snapshot", rc.GetName(), rt.GetName(), name))
					}
				}
			}
		}
	}
	for _, e := range r.Endpoints {
		used, ok := eds[e.GetClusterName()]
		if !ok {
			errs = append(errs, fmt.Errorf("cluster load assignment %q: no EDS cluster refers to it", e.GetClusterName()))
			continue
		}
		if used {
			errs = append(errs, fmt.Errorf("duplicate cluster load assignment %q", e.GetClusterName()))
		}
		eds[e.GetClusterName()] = true
	}
	for name, used := range eds {
		if !used {
			errs = append(errs, fmt.Errorf("cluster %q: load assignment %q is not in the snapshot", name, name))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return cmp.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Problem is one resource a translation left out, and why.
type Problem struct {
	Ref mesh.Ref
	Err error
}

// PartialError lists the resources a translation left out; everything else
// was translated and is consistent without them.
type PartialError struct {
	Revision uint64
	Problems []Problem
}

func (e *PartialError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Err.Error()
	}
	return fmt.Sprintf("translate revision %d: left out %d resource(s): %s", e.Revision, len(e.Problems), strings.Join(msgs, "; "))
}

// Unwrap returns the problems' errors.
func (e *PartialError) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Err
	}
	return out
}

// Translate turns the mesh resources and endpoints of in into one consistent
// set of xDS resources. A resource that cannot be translated is left out and
// reported, and so is everything that needs it (a virtual service whose
// route names a node whose cluster was left out), while the rest is
// translated: one bad resource never stops the mesh from being served. The
// error is then a *PartialError, and the returned resources are still
// consistent and publishable. Translate returns no resources only when the
// whole set fails its final validation, which would be a bug here.
func Translate(in Input) (*Resources, error) {
	t := newTranslator(in)
	out := &Resources{Revision: in.Revision}
	var problems []Problem
	leftOut := map[string]bool{} // cluster names
	for _, vn := range t.nodes {
		if t.meshTLS(vn.Metadata.Mesh) {
			if out.TLSMeshes == nil {
				out.TLSMeshes = map[string]bool{}
			}
			out.TLSMeshes[vn.Metadata.Mesh] = true
		}
		c, cla, err := t.cluster(vn)
		if err == nil {
			err = c.Validate()
			if err == nil && cla != nil {
				err = cla.Validate()
			}
			if err != nil {
				err = fmt.Errorf("%s: cluster: %w", vn.Ref(), err)
			}
		}
		if err != nil {
			problems = append(problems, Problem{Ref: vn.Ref(), Err: err})
			leftOut[ClusterName(vn.Metadata.Mesh, vn.Metadata.Name)] = true
			continue
		}
		out.Clusters = append(out.Clusters, c)
		out.record(ClusterType, c.GetName(), vn.Metadata.Mesh)
		if cla != nil {
			out.Endpoints = append(out.Endpoints, cla)
			out.record(EndpointType, cla.GetClusterName(), vn.Metadata.Mesh)
		}
	}
	serverNames := map[string]bool{}
	for _, vn := range t.nodes {
		ls, err := t.serverListeners(vn, serverNames)
		if err != nil {
			problems = append(problems, Problem{Ref: vn.Ref(), Err: err})
			continue
		}
		out.Listeners = append(out.Listeners, ls...)
		for _, l := range ls {
			out.record(ListenerType, l.GetName(), vn.Metadata.Mesh)
		}
	}
	listeners := map[string]mesh.Ref{}
	for _, vs := range t.services {
		l, rc, err := t.service(vs, listeners, leftOut)
		if err != nil {
			problems = append(problems, Problem{Ref: vs.Ref(), Err: err})
			continue
		}
		listeners[vs.Metadata.Name] = vs.Ref()
		out.Listeners = append(out.Listeners, l)
		out.Routes = append(out.Routes, rc)
		out.record(ListenerType, l.GetName(), vs.Metadata.Mesh)
		out.record(RouteType, rc.GetName(), vs.Metadata.Mesh)
	}
	slices.SortFunc(out.Listeners, func(a, b *listenerpb.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Routes, func(a, b *routepb.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Clusters, func(a, b *clusterpb.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Endpoints, func(a, b *endpointpb.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("translate revision %d: %w", in.Revision, err)
	}
	if len(problems) > 0 {
		return out, &PartialError{Revision: in.Revision, Problems: problems}
	}
	return out, nil
}

// service translates one virtual service into its listener and route
// configuration, checked on their own and against what was left out.
func (t *translator) service(vs *mesh.Resource, listeners map[string]mesh.Ref, leftOut map[string]bool) (*listenerpb.Listener, *routepb.RouteConfiguration, error) {
	if prev, ok := listeners[vs.Metadata.Name]; ok {
		return nil, nil, fmt.Errorf("%s: listener %q is also claimed by %s", vs.Ref(), vs.Metadata.Name, prev)
	}
	rc, err := t.routeConfig(vs)
	if err != nil {
		return nil, nil, err
	}
	if err := rc.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: route configuration: %w", vs.Ref(), err)
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			for _, c := range routeClusters(rt) {
				if leftOut[c] {
					return nil, nil, fmt.Errorf("%s: route %q needs cluster %s, which was left out", vs.Ref(), rt.GetName(), c)
				}
			}
		}
	}
	l, err := listener(vs.Metadata.Name, rc.GetName())
	if err == nil {
		err = l.Validate()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: listener: %w", vs.Ref(), err)
	}
	return l, rc, nil
}

// translator indexes one Input.
type translator struct {
	nodes     []*mesh.Resource // VirtualNodes, sorted by ref
	services  []*mesh.Resource // VirtualServices, sorted by ref
	byRef     map[mesh.Ref]*mesh.Resource
	routing   *mesh.Routing
	endpoints []*mesh.Endpoint
	eps       map[mesh.Ref][]*mesh.Endpoint // serving endpoints by node, filled as asked
	hold      map[string]bool
	tlsMeshes map[string]bool // mesh.MeshTLS by mesh, filled as asked
	// meshCallers is mesh.Routing.Callers by mesh, filled as asked.
	meshCallers map[string]map[string]mesh.Callers
}

func newTranslator(in Input) *translator {
	t := &translator{
		byRef:     map[mesh.Ref]*mesh.Resource{},
		endpoints: in.Endpoints,
		eps:       map[mesh.Ref][]*mesh.Endpoint{},
		hold:      in.Hold,
		tlsMeshes: map[string]bool{},

		meshCallers: map[string]map[string]mesh.Callers{},
	}
	st := mesh.NewState()
	for _, r := range in.Resources {
		if r == nil {
			continue
		}
		st.Put(r)
		t.byRef[r.Ref()] = r
		switch r.Kind {
		case mesh.KindVirtualNode:
			t.nodes = append(t.nodes, r)
		case mesh.KindVirtualService:
			t.services = append(t.services, r)
		}
	}
	t.routing = mesh.NewRouting(st)
	byRef := func(a, b *mesh.Resource) int { return cmp.Compare(a.Ref().String(), b.Ref().String()) }
	slices.SortFunc(t.nodes, byRef)
	slices.SortFunc(t.services, byRef)
	return t
}

// serving returns the node's serving endpoints (mesh.ServingEndpoints).
func (t *translator) serving(vn *mesh.Resource) []*mesh.Endpoint {
	ref := vn.Ref()
	eps, ok := t.eps[ref]
	if !ok {
		eps = mesh.ServingEndpoints(vn, t.endpoints)
		t.eps[ref] = eps
	}
	return eps
}

// serves reports whether the node of meshName can take a request: it has a
// serving endpoint, or is discovered by DNS.
func (t *translator) serves(meshName string) func(node string) bool {
	return func(node string) bool {
		vn := t.byRef[mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: node}]
		return vn != nil && (mesh.DNSDiscovered(vn) || len(t.serving(vn)) > 0)
	}
}

// RoutedClusters returns every cluster some route of r may send to, pin
// routes included (so a weight-0 target counts: clients are subscribed to
// it).
func (r *Resources) RoutedClusters() map[string]bool {
	out := map[string]bool{}
	if r == nil {
		return out
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, c := range routeClusters(rt) {
					out[c] = true
				}
			}
		}
	}
	return out
}

// WeightedTargets returns the clusters that in's routes give a weight above
// 0, which a publish must not hand to clients before they are subscribed.
func WeightedTargets(in Input) map[string]bool {
	out := map[string]bool{}
	for _, r := range in.Resources {
		for _, wt := range r.Route().Targets() {
			if wt.Weight > 0 {
				out[ClusterName(r.Metadata.Mesh, wt.VirtualNode)] = true
			}
		}
	}
	return out
}
