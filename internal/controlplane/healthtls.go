package controlplane

import (
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// healthIdentities are the health checker's certificates, one per mesh
// (its SPIFFE ID names the mesh), issued by the mesh CA when a check of a
// STRICT endpoint first needs one.
type healthIdentities struct {
	ca pki.Issuer // nil: no CA, checks of STRICT endpoints go in plain text (and fail)

	mu      sync.Mutex
	sources map[string]*pki.Source
}

func (h *healthIdentities) source(meshName string) *pki.Source {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sources[meshName]
	if !ok {
		s = pki.NewSource(h.ca, pki.HealthChecker(meshName), 0, nil)
		if h.sources == nil {
			h.sources = map[string]*pki.Source{}
		}
		h.sources[meshName] = s
	}
	return s
}

// credsFunc gives the gRPC checks of a STRICT node's endpoints mTLS: the
// health checker's certificate, and the node's SPIFFE ID required of the
// server. Other endpoints are checked in plain text, as ever.
func (h *healthIdentities) credsFunc(st *mesh.State) registry.CredsFunc {
	if h.ca == nil {
		return nil
	}
	type strict struct {
		sel  *mesh.RegistryDiscovery
		mesh string
		id   pki.ID
	}
	var nodes []strict
	for _, r := range st.List(mesh.KindVirtualNode, "") {
		spec := r.VirtualNode()
		if spec == nil || spec.TLSMode() != mesh.TLSStrict {
			continue
		}
		if sel := spec.ServiceDiscovery.Selector(); sel != nil {
			nodes = append(nodes, strict{sel: sel, mesh: r.Metadata.Mesh, id: xds.NodeID(r.Metadata.Mesh, r.Metadata.Name)})
		}
	}
	if len(nodes) == 0 {
		return nil
	}
	return func(ep *mesh.Endpoint) (credentials.TransportCredentials, string) {
		for _, n := range nodes {
			if ep.Mesh == n.mesh && ep.Matches(n.sel) {
				return credentials.NewTLS(h.source(n.mesh).ClientTLS(n.id)), n.id.String()
			}
		}
		return nil, ""
	}
}
