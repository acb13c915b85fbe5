package mesh

// MeshTLS reports whether the mesh has TLS on: some virtual node of it
// needs a certificate (VirtualNodeSpec.NeedsIdentity). Then every task of
// the mesh gets one, with the certificate provider in its bootstrap, so
// that any caller can present one to a STRICT node.
func MeshTLS(nodes []*Resource, meshName string) bool {
	for _, r := range nodes {
		if r.Kind != KindVirtualNode || r.Metadata.Mesh != meshName {
			continue
		}
		if s := r.VirtualNode(); s != nil && s.NeedsIdentity() {
			return true
		}
	}
	return false
}

// ListeningEndpoints returns the endpoints vn's service discovery selects
// that may be listening: registered with an address and port and not
// stopped, whatever their health. A task serving through grpc-go's xDS
// server needs its server listener before its first health check passes.
func ListeningEndpoints(vn *Resource, eps []*Endpoint) []*Endpoint {
	spec := vn.VirtualNode()
	if spec == nil {
		return nil
	}
	sel := spec.ServiceDiscovery.Selector()
	if sel == nil {
		return nil
	}
	var out []*Endpoint
	for _, e := range eps {
		if e != nil && e.Mesh == vn.Metadata.Mesh && e.Matches(sel) && e.State != TaskStopped && e.Port > 0 && e.Address != "" {
			out = append(out, e)
		}
	}
	return out
}

// ListenerSANs returns the SANs a caller of the node must have one of (its
// first listener's tls.validation), or nil for any caller. Only a STRICT
// listener may set them (validation).
func (s *VirtualNodeSpec) ListenerSANs() []string {
	if s == nil || len(s.Listeners) == 0 || s.Listeners[0].TLS == nil {
		return nil
	}
	v := s.Listeners[0].TLS.Validation
	if v == nil || v.SubjectAlternativeNames == nil {
		return nil
	}
	return v.SubjectAlternativeNames.Match.Exact
}
