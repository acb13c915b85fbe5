package appmesh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// FuzzConvert decodes arbitrary manifests and converts whatever decodes:
// the conversion must not panic, every refusal names an object and a
// field in lower case, and every resource it returns passes gmesh's own
// validation.
func FuzzConvert(f *testing.F) {
	for _, name := range []string{"howto-k8s-grpc.yaml", "exported-from-appmesh.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualNode\nmetadata: {name: x}\nspec: {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in Input
		_ = Decode("fuzz.yaml", data, &in)
		for _, r := range Convert(in) {
			for _, e := range r.Errors {
				msg := e.Error()
				if e.Field == "" || e.Object.Name == "" && e.Object.Kind != mesh.KindMesh {
					t.Errorf("error %q does not name its object and field", msg)
				}
				if msg != strings.ToLower(msg[:1])+msg[1:] {
					t.Errorf("error %q starts with upper case", msg)
				}
			}
			for _, res := range r.Resources {
				if err := mesh.Validate(res); err != nil {
					t.Errorf("%s: returned resource %s does not validate: %v", r.Object, res.Ref(), err)
				}
			}
		}
	})
}
