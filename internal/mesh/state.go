package mesh

import (
	"fmt"
	"sort"
	"strings"
)

// State is a whole mesh configuration at one store revision: every resource
// by identity. It is what the store snapshots, what xDS translates and what
// ValidateState checks for dangling references.
type State struct {
	Revision  uint64
	Resources map[Ref]*Resource
}

// NewState returns an empty state.
func NewState() *State { return &State{Resources: make(map[Ref]*Resource)} }

// Get returns the resource ref names, or nil.
func (s *State) Get(ref Ref) *Resource { return s.Resources[ref] }

// List returns the resources of kind in meshName ("" = every mesh), sorted
// by mesh, then name. An empty kind lists every kind, in Kinds order.
func (s *State) List(kind Kind, meshName string) []*Resource {
	var out []*Resource
	for ref, r := range s.Resources {
		if (kind == "" || ref.Kind == kind) && (meshName == "" || ref.Mesh == meshName || (ref.Kind == KindMesh && ref.Name == meshName)) {
			out = append(out, r)
		}
	}
	SortResources(out)
	return out
}

// SortResources sorts rs by kind (in Kinds order), mesh and name.
func SortResources(rs []*Resource) {
	sort.Slice(rs, func(i, j int) bool { return lessRef(rs[i].Ref(), rs[j].Ref()) })
}

var kindOrder = func() map[Kind]int {
	m := make(map[Kind]int, len(Kinds))
	for i, k := range Kinds {
		m[k] = i
	}
	return m
}()

func lessRef(a, b Ref) bool {
	if a.Kind != b.Kind {
		return kindOrder[a.Kind] < kindOrder[b.Kind]
	}
	if a.Mesh != b.Mesh {
		return a.Mesh < b.Mesh
	}
	return a.Name < b.Name
}

// Put stores r (not a copy) under its identity.
func (s *State) Put(r *Resource) { s.Resources[r.Ref()] = r }

// Delete removes ref and reports whether it was there.
func (s *State) Delete(ref Ref) bool {
	_, ok := s.Resources[ref]
	delete(s.Resources, ref)
	return ok
}

// Len returns the number of resources.
func (s *State) Len() int { return len(s.Resources) }

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := &State{Revision: s.Revision, Resources: make(map[Ref]*Resource, len(s.Resources))}
	for ref, r := range s.Resources {
		c.Resources[ref] = r.Clone()
	}
	return c
}

// Copy returns a copy of s that shares its resources: for building the next
// state when resources are treated as immutable.
func (s *State) Copy() *State {
	c := &State{Revision: s.Revision, Resources: make(map[Ref]*Resource, len(s.Resources)+1)}
	for ref, r := range s.Resources {
		c.Resources[ref] = r
	}
	return c
}

// Reference is a field of one resource that names another.
type Reference struct {
	Field  string // path in the referring resource, e.g. "spec.grpcRoute.action.weightedTargets[0].virtualNode"
	Target Ref
}

// References returns every resource r refers to: its mesh, and the
// resources its spec names (all in r's mesh).
func References(r *Resource) []Reference {
	m := r.Metadata.Mesh
	if r.Kind == KindMesh || m == "" {
		return nil
	}
	refs := []Reference{{Field: "metadata.mesh", Target: Ref{Kind: KindMesh, Name: m}}}
	add := func(field string, k Kind, name string) {
		if name != "" {
			refs = append(refs, Reference{Field: field, Target: Ref{Kind: k, Mesh: m, Name: name}})
		}
	}
	switch s := r.Spec.(type) {
	case *VirtualNodeSpec:
		for i, b := range s.Backends {
			if b.VirtualService != nil {
				add(fmt.Sprintf("spec.backends[%d].virtualService.virtualServiceName", i), KindVirtualService, b.VirtualService.VirtualServiceName)
			}
		}
	case *RouteSpec:
		add("spec.virtualRouterName", KindVirtualRouter, s.VirtualRouterName)
		targets := func(field string, a RouteAction) {
			for i, t := range a.WeightedTargets {
				add(fmt.Sprintf("%s.action.weightedTargets[%d].virtualNode", field, i), KindVirtualNode, t.VirtualNode)
			}
		}
		if s.GRPCRoute != nil {
			targets("spec.grpcRoute", s.GRPCRoute.Action)
		}
		if s.HTTPRoute != nil {
			targets("spec.httpRoute", s.HTTPRoute.Action)
		}
		if s.HTTP2Route != nil {
			targets("spec.http2Route", s.HTTP2Route.Action)
		}
	case *VirtualServiceSpec:
		if p := s.Provider; p != nil {
			if p.VirtualRouter != nil {
				add("spec.provider.virtualRouter.virtualRouterName", KindVirtualRouter, p.VirtualRouter.VirtualRouterName)
			}
			if p.VirtualNode != nil {
				add("spec.provider.virtualNode.virtualNodeName", KindVirtualNode, p.VirtualNode.VirtualNodeName)
			}
		}
	case *GatewayRouteSpec:
		add("spec.virtualGatewayName", KindVirtualGateway, s.VirtualGatewayName)
		if s.HTTPRoute != nil {
			add("spec.httpRoute.action.target.virtualService.virtualServiceName", KindVirtualService, s.HTTPRoute.Action.Target.VirtualService.VirtualServiceName)
		}
		if s.HTTP2Route != nil {
			add("spec.http2Route.action.target.virtualService.virtualServiceName", KindVirtualService, s.HTTP2Route.Action.Target.VirtualService.VirtualServiceName)
		}
		if s.GRPCRoute != nil {
			add("spec.grpcRoute.action.target.virtualService.virtualServiceName", KindVirtualService, s.GRPCRoute.Action.Target.VirtualService.VirtualServiceName)
		}
	case *ServiceSpec:
		add("spec.virtualNode", KindVirtualNode, s.VirtualNode)
	case *TaskSetSpec:
		add("spec.service", KindService, s.Service)
	case *RolloutSpec:
		add("spec.service", KindService, s.Service)
	}
	return refs
}

// sorted returns s's resources in SortResources order.
func (s *State) sorted() []*Resource {
	rs := make([]*Resource, 0, len(s.Resources))
	for _, r := range s.Resources {
		rs = append(rs, r)
	}
	SortResources(rs)
	return rs
}

// ValidateState checks s as a whole: every reference resolves (a resource's
// mesh exists; a route's router and every weighted target's node; a virtual
// service's provider; a gateway route's gateway and target; a node's backend
// virtual services; a Service's node; a TaskSet's and a Rollout's service),
// and no two meshes declare the same virtual service name (it is the xDS
// listener name clients dial). It returns every problem as Errors (EInvalid).
// MaxResourcesPerMesh bounds one mesh: every change re-validates and
// re-translates the whole mesh, so an unbounded one would make every apply
// slower without limit.
const MaxResourcesPerMesh = 20000

func ValidateState(s *State) error {
	var errs Errors
	vsNames := map[string]*Resource{}
	perMesh := map[string]int{}
	for _, r := range s.sorted() {
		if r.Metadata.Mesh != "" {
			perMesh[r.Metadata.Mesh]++
			if perMesh[r.Metadata.Mesh] == MaxResourcesPerMesh+1 {
				errs = append(errs, r.errAt("metadata.mesh", "mesh %s would hold more than %d resources, the limit per mesh", r.Metadata.Mesh, MaxResourcesPerMesh))
			}
		}
		for _, ref := range References(r) {
			if s.Resources[ref.Target] != nil {
				continue
			}
			if ref.Target.Kind == KindMesh {
				errs = append(errs, r.errAt(ref.Field, "mesh %s not found; create it first (kind: Mesh)", ref.Target.Name))
				continue
			}
			errs = append(errs, r.errAt(ref.Field, "%s %s not found in mesh %s", ref.Target.Kind.lower(), ref.Target.Name, ref.Target.Mesh))
		}
		if r.Kind == KindVirtualService {
			if prev, ok := vsNames[r.Metadata.Name]; ok {
				// Blame the one being applied (it has a source), else the later.
				blamed, other := r, prev
				if prev.Source != nil && r.Source == nil {
					blamed, other = prev, r
				}
				errs = append(errs, blamed.errAt("metadata.name", "virtual service name %s is already used in mesh %s; virtual service names are the names clients dial and must be unique across meshes", r.Metadata.Name, other.Metadata.Mesh))
			} else {
				vsNames[r.Metadata.Name] = r
			}
		}
	}
	if len(errs) > 0 {
		return CapErrors(errs)
	}
	return nil
}

// CheckDeletes reports, as EInUse Errors, every deleted resource that a
// resource of next (the state after the deletes) still refers to, such as a
// virtual node a route still targets or a mesh that still has resources.
func CheckDeletes(next *State, deleted []Ref) error {
	if len(deleted) == 0 {
		return nil
	}
	gone := make(map[Ref]bool, len(deleted))
	for _, ref := range deleted {
		if next.Resources[ref] == nil {
			gone[ref] = true
		}
	}
	type referrer struct {
		r     *Resource
		field string
	}
	users := map[Ref][]referrer{}
	for _, r := range next.sorted() {
		for _, ref := range References(r) {
			if gone[ref.Target] {
				users[ref.Target] = append(users[ref.Target], referrer{r, ref.Field})
			}
		}
	}
	var errs Errors
	for _, ref := range deleted {
		us := users[ref]
		if len(us) == 0 {
			continue
		}
		delete(users, ref) // report each ref once
		var msg string
		switch {
		case ref.Kind == KindMesh:
			names := make([]string, 0, 5)
			for i, u := range us {
				if i == 5 {
					names = append(names, "...")
					break
				}
				names = append(names, u.r.Kind.lower()+" "+u.r.Metadata.Name)
			}
			msg = fmt.Sprintf("mesh %s still has %d resource(s) (%s); delete them first", ref.Name, len(us), strings.Join(names, ", "))
		default:
			u := us[0]
			var what string
			switch {
			case u.r.Kind == KindRoute && ref.Kind == KindVirtualNode:
				what = fmt.Sprintf("is still a target of route %s; remove it from the route first", refName(u.r.Ref()))
			case u.r.Kind == KindVirtualService && strings.HasPrefix(u.field, "spec.provider"):
				what = fmt.Sprintf("still provides virtual service %s; change or delete the virtual service first", refName(u.r.Ref()))
			default:
				what = fmt.Sprintf("is still referred to by %s %s (%s); remove the reference first", u.r.Kind.lower(), refName(u.r.Ref()), u.field)
			}
			if len(us) > 1 {
				what += fmt.Sprintf(" (and %d more)", len(us)-1)
			}
			msg = fmt.Sprintf("%s %s %s", ref.Kind.lower(), ref.Name, what)
		}
		errs = append(errs, &Error{Code: EInUse, Message: msg})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
