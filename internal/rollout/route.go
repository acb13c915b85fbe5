package rollout

import (
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// action returns the route's weighted action (mesh.RouteSpec.Action).
func action(spec *mesh.RouteSpec) *mesh.RouteAction { return spec.Action() }

func hasTarget(r *mesh.Resource, node string) bool { return r.Route().HasTarget(node) }

// absent marks a node that must not be a target.
const absent = -1

// withWeights returns a copy of route whose targets for the nodes in want
// have the given weights (absent: removed; missing ones are added after the
// existing targets, with the port of the first of want's nodes already
// there). Other targets are left alone. changed reports whether anything
// differs from route.
func withWeights(route *mesh.Resource, want []nodeWeight) (out *mesh.Resource, changed bool) {
	spec := cloneSpec(route.Spec.(*mesh.RouteSpec))
	a := action(spec)
	port := 0
	for _, t := range a.WeightedTargets {
		for _, w := range want {
			if t.VirtualNode == w.node && port == 0 {
				port = t.Port
			}
		}
	}
	var ts []mesh.WeightedTarget
	seen := map[string]bool{}
	for _, t := range a.WeightedTargets {
		w, ok := find(want, t.VirtualNode)
		if !ok {
			ts = append(ts, t)
			continue
		}
		seen[t.VirtualNode] = true
		if w == absent {
			changed = true
			continue
		}
		if t.Weight != w {
			changed = true
			t.Weight = w
		}
		ts = append(ts, t)
	}
	for _, w := range want {
		if w.weight != absent && !seen[w.node] {
			ts = append(ts, mesh.WeightedTarget{VirtualNode: w.node, Weight: w.weight, Port: port})
			changed = true
		}
	}
	a.WeightedTargets = ts
	return update(route, spec), changed
}

type nodeWeight struct {
	node   string
	weight int
}

func find(ws []nodeWeight, node string) (int, bool) {
	for _, w := range ws {
		if w.node == node {
			return w.weight, true
		}
	}
	return 0, false
}
