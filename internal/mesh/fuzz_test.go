package mesh

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecode checks that Decode never panics, and that whatever decodes and
// validates re-encodes (YAML and JSON) and re-decodes to an equal value.
// Seeds: testdata/fuzz/* (valid and broken manifests).
func FuzzDecode(f *testing.F) {
	seeds, err := filepath.Glob("testdata/fuzz/*")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range seeds {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			continue // testdata/fuzz/FuzzDecode is go test's own corpus
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(`{"kind":"List","items":[[]]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Decode("fuzz.yaml", data)
		if err != nil {
			if _, ok := err.(Errors); !ok {
				t.Fatalf("got %T, want mesh.Errors", err)
			}
			return
		}
		if err := DefaultAndValidate(rs...); err != nil {
			return
		}
		for _, enc := range []struct {
			name string
			fn   func([]*Resource) ([]byte, error)
		}{{"yaml", EncodeYAML}, {"json", EncodeJSON}} {
			b, err := enc.fn(rs)
			if err != nil {
				t.Fatalf("%s: encode of valid resources: %v", enc.name, err)
			}
			got, err := Decode("again."+enc.name, b)
			if err != nil {
				t.Fatalf("%s: decode of encoded output: %v\n%s", enc.name, err, b)
			}
			if len(rs) == 0 && len(got) == 0 {
				continue
			}
			if diff := cmp.Diff(rs, got, ignoreSource); diff != "" {
				t.Fatalf("%s: round trip (-want +got):\n%s\n%s", enc.name, diff, b)
			}
		}
	})
}
