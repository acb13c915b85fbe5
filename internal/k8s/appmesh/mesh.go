package appmesh

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func (c *converter) mesh(m *v1beta2.Mesh) *Result {
	r, _ := c.start(Object{Kind: mesh.KindMesh, Name: m.Name}, m.Finalizers)
	r.Mesh = r.Name
	spec := &mesh.MeshSpec{}
	if sel := m.Spec.NamespaceSelector; sel != nil {
		if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
			r.fail("spec.namespaceSelector", v1beta2.ReasonInvalidValue, "%v", err)
		}
	} else {
		r.report("spec.namespaceSelector", "absent: the mesh selects no namespace, so only objects whose spec.meshRef names it join it")
	}
	if ef := m.Spec.EgressFilter; ef != nil {
		spec.EgressFilter = &mesh.EgressFilter{Type: string(ef.Type)}
		if ef.Type == v1beta2.EgressFilterTypeDropAll {
			r.report("spec.egressFilter.type", "%s", whyDropAll)
		}
	}
	if m.Spec.MeshOwner != nil {
		r.report("spec.meshOwner", "%s", whyMeshOwner)
	}
	if sd := m.Spec.ServiceDiscovery; sd != nil && sd.IpPreference != nil {
		r.report("spec.meshServiceDiscovery.ipPreference", "%s", whyIPPreference)
	}
	if len(r.Errors) == 0 {
		res := newResource(mesh.KindMesh, "", r.Name, spec)
		if r.validate(res) {
			r.Resources = append(r.Resources, res)
		}
	}
	return r.Result
}
