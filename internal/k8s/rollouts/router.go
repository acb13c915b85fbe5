package rollouts

import (
	"fmt"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// The engine changes a route only in its weighted targets (rollout.Store's
// Put of a Route). On Kubernetes a route is one entry of its
// VirtualRouter's spec.routes, so that Put is an update of the router
// object: RouteTargets reads the targets the engine sees and
// SetRouteTargets writes its answer back, keeping everything else of the
// router as it is. Targets are VirtualNode names in the router's
// namespace, the names the Kubernetes Store gives the engine.

// RouteTargets returns the weighted targets of vr's route named route. A
// target the engine cannot name (a VirtualNode of another namespace, an
// ARN) is refused, naming the field: a Rollout shifts routes whose targets
// are VirtualNodes of its own namespace.
func RouteTargets(vr *v1beta2.VirtualRouter, route string) ([]mesh.WeightedTarget, error) {
	i, ts, err := routeTargets(vr, route)
	if err != nil {
		return nil, err
	}
	out := make([]mesh.WeightedTarget, 0, len(ts))
	for j, t := range ts {
		f := fmt.Sprintf("spec.routes[%d].%s[%d]", i, actionField(&vr.Spec.Routes[i]), j)
		switch {
		case t.VirtualNodeRef == nil:
			return nil, mesh.FieldError(f, "route %s of virtual router %s targets a virtual node by ARN; a Rollout shifts routes whose targets are virtualNodeRefs", route, vr.Name)
		case t.VirtualNodeRef.Namespace != nil && *t.VirtualNodeRef.Namespace != vr.Namespace:
			return nil, mesh.FieldError(f+".virtualNodeRef.namespace", "route %s of virtual router %s targets a virtual node in namespace %s; a Rollout shifts routes whose targets are in its own namespace (%s)", route, vr.Name, *t.VirtualNodeRef.Namespace, vr.Namespace)
		}
		w := mesh.WeightedTarget{VirtualNode: t.VirtualNodeRef.Name, Weight: int(t.Weight)}
		if t.Port != nil {
			w.Port = int(*t.Port)
		}
		out = append(out, w)
	}
	return out, nil
}

// SetRouteTargets returns a copy of vr whose route named route has the
// weighted targets ts; the rest of the router, and of each target that
// stays (its namespace, as written), is kept.
func SetRouteTargets(vr *v1beta2.VirtualRouter, route string, ts []mesh.WeightedTarget) (*v1beta2.VirtualRouter, error) {
	if _, err := RouteTargets(vr, route); err != nil {
		return nil, err
	}
	out := vr.DeepCopy()
	i, old, _ := routeTargets(out, route)
	byNode := map[string]v1beta2.WeightedTarget{}
	for _, t := range old {
		byNode[t.VirtualNodeRef.Name] = t
	}
	next := make([]v1beta2.WeightedTarget, 0, len(ts))
	for _, t := range ts {
		w, ok := byNode[t.VirtualNode]
		if !ok {
			w = v1beta2.WeightedTarget{VirtualNodeRef: &v1beta2.VirtualNodeReference{Name: t.VirtualNode}}
		}
		w.Weight = int64(t.Weight)
		w.Port = nil
		if t.Port != 0 {
			p := int64(t.Port)
			w.Port = &p
		}
		next = append(next, w)
	}
	r := &out.Spec.Routes[i]
	switch {
	case r.GRPCRoute != nil:
		r.GRPCRoute.Action.WeightedTargets = next
	case r.HTTPRoute != nil:
		r.HTTPRoute.Action.WeightedTargets = next
	case r.HTTP2Route != nil:
		r.HTTP2Route.Action.WeightedTargets = next
	case r.TCPRoute != nil:
		r.TCPRoute.Action.WeightedTargets = next
	}
	return out, nil
}

// routeTargets finds route in vr: its index and its weighted targets.
func routeTargets(vr *v1beta2.VirtualRouter, route string) (int, []v1beta2.WeightedTarget, error) {
	for i := range vr.Spec.Routes {
		r := &vr.Spec.Routes[i]
		if r.Name != route {
			continue
		}
		switch {
		case r.GRPCRoute != nil:
			return i, r.GRPCRoute.Action.WeightedTargets, nil
		case r.HTTPRoute != nil:
			return i, r.HTTPRoute.Action.WeightedTargets, nil
		case r.HTTP2Route != nil:
			return i, r.HTTP2Route.Action.WeightedTargets, nil
		case r.TCPRoute != nil:
			return i, r.TCPRoute.Action.WeightedTargets, nil
		}
		return 0, nil, mesh.FieldError(fmt.Sprintf("spec.routes[%d]", i), "route %s of virtual router %s has no grpcRoute, httpRoute, http2Route or tcpRoute", route, vr.Name)
	}
	return 0, nil, mesh.Errorf(mesh.ENotFound, "virtual router %s/%s has no route %s", vr.Namespace, vr.Name, route)
}

func actionField(r *v1beta2.Route) string {
	switch {
	case r.GRPCRoute != nil:
		return "grpcRoute.action.weightedTargets"
	case r.HTTPRoute != nil:
		return "httpRoute.action.weightedTargets"
	case r.HTTP2Route != nil:
		return "http2Route.action.weightedTargets"
	}
	return "tcpRoute.action.weightedTargets"
}
