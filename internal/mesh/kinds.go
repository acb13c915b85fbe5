package mesh

import (
	"reflect"
	"strings"
)

// kindInfo describes how a kind is spelled on the command line and what Go
// types hold its spec and status.
type kindInfo struct {
	plural string
	short  []string
	spec   reflect.Type // the spec's struct type (Spec holds a pointer to it)
	status reflect.Type // nil: the kind has no typed status
}

var kindInfos = map[Kind]kindInfo{
	KindMesh:           {plural: "meshes", spec: reflect.TypeFor[MeshSpec]()},
	KindVirtualNode:    {plural: "virtualnodes", short: []string{"vn", "vns"}, spec: reflect.TypeFor[VirtualNodeSpec]()},
	KindVirtualRouter:  {plural: "virtualrouters", short: []string{"vr", "vrs"}, spec: reflect.TypeFor[VirtualRouterSpec]()},
	KindRoute:          {plural: "routes", short: []string{"rt"}, spec: reflect.TypeFor[RouteSpec]()},
	KindVirtualService: {plural: "virtualservices", short: []string{"vs", "vss"}, spec: reflect.TypeFor[VirtualServiceSpec]()},
	KindVirtualGateway: {plural: "virtualgateways", short: []string{"vg", "vgs"}, spec: reflect.TypeFor[VirtualGatewaySpec]()},
	KindGatewayRoute:   {plural: "gatewayroutes", short: []string{"gr", "grs"}, spec: reflect.TypeFor[GatewayRouteSpec]()},
	KindService:        {plural: "services", short: []string{"svc", "svcs"}, spec: reflect.TypeFor[ServiceSpec]()},
	KindTaskSet:        {plural: "tasksets", short: []string{"ts"}, spec: reflect.TypeFor[TaskSetSpec]()},
	KindRollout:        {plural: "rollouts", short: []string{"ro"}, spec: reflect.TypeFor[RolloutSpec](), status: reflect.TypeFor[RolloutStatus]()},
}

// kindNames maps every accepted spelling (lower case) to its kind.
var kindNames = func() map[string]Kind {
	m := make(map[string]Kind)
	for k, info := range kindInfos {
		m[strings.ToLower(string(k))] = k
		m[info.plural] = k
		for _, s := range info.short {
			m[s] = k
		}
	}
	return m
}()

// ParseKind resolves a kind as a user types it: case-insensitive, singular
// or plural, or a short name (vn, vr, vs, vg, gr, svc, ts, ...). An unknown
// name is EInvalid and lists the kinds.
func ParseKind(s string) (Kind, error) {
	if k, ok := kindNames[strings.ToLower(strings.TrimSpace(s))]; ok {
		return k, nil
	}
	return "", Errorf(EInvalid, "unknown kind %q; want one of %s", s, kindList())
}

// Valid reports whether k is one of Kinds (exact spelling).
func (k Kind) Valid() bool {
	_, ok := kindInfos[k]
	return ok
}

// Plural returns k's lower-case plural ("virtualnodes").
func (k Kind) Plural() string { return kindInfos[k].plural }

// ShortNames returns k's short names ("vn"), if any.
func (k Kind) ShortNames() []string { return append([]string(nil), kindInfos[k].short...) }

// Namespaced reports whether resources of kind k live in a mesh (every kind
// but Mesh).
func (k Kind) Namespaced() bool { return k != KindMesh }

// lower is k as it appears in messages ("virtualnode").
func (k Kind) lower() string { return strings.ToLower(string(k)) }

func kindList() string {
	var b strings.Builder
	for i, k := range Kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(k))
		if sh := kindInfos[k].short; len(sh) > 0 {
			b.WriteString(" (" + sh[0] + ")")
		}
	}
	return b.String()
}

// NewSpec returns a new zero spec of kind k (*VirtualNodeSpec, ...), or nil
// for an unknown kind.
func NewSpec(k Kind) any {
	info, ok := kindInfos[k]
	if !ok {
		return nil
	}
	return reflect.New(info.spec).Interface()
}

// New returns a resource of kind in mesh named name. spec may be the kind's
// spec as a pointer or a value (a value is copied), or nil for an empty spec.
// For a Mesh, meshName is ignored.
func New(kind Kind, meshName, name string, spec any) *Resource {
	if kind == KindMesh {
		meshName = ""
	}
	r := &Resource{APIVersion: APIVersion, Kind: kind, Metadata: Metadata{Name: name, Mesh: meshName}}
	if spec == nil {
		r.Spec = NewSpec(kind)
		return r
	}
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer {
		p := reflect.New(v.Type())
		p.Elem().Set(v)
		spec = p.Interface()
	}
	r.Spec = spec
	return r
}

// Mesh returns r's spec if r is a Mesh, else nil. (The mesh r belongs to is
// r.Metadata.Mesh.)
func (r *Resource) Mesh() *MeshSpec { s, _ := r.Spec.(*MeshSpec); return s }

// VirtualNode returns r's spec if r is a VirtualNode, else nil.
func (r *Resource) VirtualNode() *VirtualNodeSpec { s, _ := r.Spec.(*VirtualNodeSpec); return s }

// VirtualRouter returns r's spec if r is a VirtualRouter, else nil.
func (r *Resource) VirtualRouter() *VirtualRouterSpec { s, _ := r.Spec.(*VirtualRouterSpec); return s }

// Route returns r's spec if r is a Route, else nil.
func (r *Resource) Route() *RouteSpec { s, _ := r.Spec.(*RouteSpec); return s }

// VirtualService returns r's spec if r is a VirtualService, else nil.
func (r *Resource) VirtualService() *VirtualServiceSpec {
	s, _ := r.Spec.(*VirtualServiceSpec)
	return s
}

// VirtualGateway returns r's spec if r is a VirtualGateway, else nil.
func (r *Resource) VirtualGateway() *VirtualGatewaySpec {
	s, _ := r.Spec.(*VirtualGatewaySpec)
	return s
}

// GatewayRoute returns r's spec if r is a GatewayRoute, else nil.
func (r *Resource) GatewayRoute() *GatewayRouteSpec { s, _ := r.Spec.(*GatewayRouteSpec); return s }

// Service returns r's spec if r is a Service, else nil.
func (r *Resource) Service() *ServiceSpec { s, _ := r.Spec.(*ServiceSpec); return s }

// TaskSet returns r's spec if r is a TaskSet, else nil.
func (r *Resource) TaskSet() *TaskSetSpec { s, _ := r.Spec.(*TaskSetSpec); return s }

// Rollout returns r's spec if r is a Rollout, else nil.
func (r *Resource) Rollout() *RolloutSpec { s, _ := r.Spec.(*RolloutSpec); return s }

// RolloutStatus returns r's status if r is a Rollout with a status, else nil.
func (r *Resource) RolloutStatus() *RolloutStatus { s, _ := r.Status.(*RolloutStatus); return s }
