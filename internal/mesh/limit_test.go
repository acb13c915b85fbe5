package mesh

import (
	"fmt"
	"strings"
	"testing"
)

// A mesh over MaxResourcesPerMesh resources is refused with the limit named.
func TestResourcesPerMeshLimit(t *testing.T) {
	s := NewState()
	s.Put(New(KindMesh, "", "big", &MeshSpec{}))
	for i := 0; i < MaxResourcesPerMesh; i++ {
		s.Put(New(KindVirtualNode, "big", fmt.Sprintf("vn-%d", i), &VirtualNodeSpec{}))
	}
	if err := ValidateState(s); err != nil {
		t.Fatalf("a mesh at the limit was refused: %v", err)
	}
	s.Put(New(KindVirtualNode, "big", "one-too-many", &VirtualNodeSpec{}))
	err := ValidateState(s)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d resources", MaxResourcesPerMesh)) {
		t.Fatalf("got %v, want the per-mesh limit named", err)
	}
}
