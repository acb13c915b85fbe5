package mesh

import "slices"

// HasBackend reports whether the node lists the virtual service named vs
// among its backends.
func (s *VirtualNodeSpec) HasBackend(vs string) bool {
	if s == nil {
		return false
	}
	for _, b := range s.Backends {
		if b.VirtualService != nil && b.VirtualService.VirtualServiceName == vs {
			return true
		}
	}
	return false
}

// Callers is who may call one virtual node under App Mesh's backends rule:
// a virtual node may call a virtual service only if its backends list it.
type Callers struct {
	// Services are the virtual services that reach the node: one of their
	// routes targets it (at any weight, so a version entering a rollout at
	// weight 0 already admits its callers) or the node provides them.
	// Sorted.
	Services []string
	// Nodes are the virtual nodes of the mesh whose backends list one of
	// Services. Sorted.
	Nodes []string
}

// Callers returns, for every virtual node of the mesh that some virtual
// service reaches, who may call it (nodes no service reaches are absent:
// nobody may call them). Which nodes a service reaches is the one answer
// Service gives; a service that does not resolve (a missing provider, a
// route that cannot compile) reaches nothing, as it routes nowhere.
func (rt *Routing) Callers(meshName string) map[string]Callers {
	services := map[string][]string{} // node -> services reaching it
	for _, vs := range rt.state.List(KindVirtualService, meshName) {
		sr, err := rt.Service(meshName, vs.Metadata.Name)
		if err != nil {
			continue
		}
		for _, n := range sr.Nodes() {
			services[n] = append(services[n], vs.Metadata.Name)
		}
	}
	nodes := rt.state.List(KindVirtualNode, meshName)
	out := make(map[string]Callers, len(services))
	for n, svcs := range services {
		slices.Sort(svcs)
		c := Callers{Services: slices.Compact(svcs)}
		for _, caller := range nodes {
			spec := caller.VirtualNode()
			if slices.ContainsFunc(c.Services, spec.HasBackend) {
				c.Nodes = append(c.Nodes, caller.Metadata.Name)
			}
		}
		slices.Sort(c.Nodes)
		out[n] = c
	}
	return out
}
