package controller

import (
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// SetMeshTLS replaces, until the test ends, how the identities tell that
// a mesh has TLS on (mesh.MeshTLS): the App Mesh conversion does not carry
// TLS settings into the converted nodes yet.
func SetMeshTLS(t testing.TB, f func(nodes []*mesh.Resource, meshName string) bool) {
	old := meshTLS
	meshTLS = f
	t.Cleanup(func() { meshTLS = old })
}
