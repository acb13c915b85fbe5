package v1alpha1_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/crdtest"
)

const crdFile = "../../../deploy/kubernetes/crds/gmesh.dev_rollouts.yaml"

func loadCRD(t *testing.T) *crdtest.CRD {
	t.Helper()
	c, err := crdtest.Load(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func example(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile("testdata/echo-rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := utilyaml.ToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := utiljson.Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCRD(t *testing.T) {
	c := loadCRD(t)
	in := c.Internal
	if in.Spec.Group != v1alpha1.GroupName || in.Spec.Names.Plural != "rollouts" || in.Spec.Scope != "Namespaced" {
		t.Errorf("CRD %s/%s scope %s, want gmesh.dev rollouts, Namespaced", in.Spec.Group, in.Spec.Names.Plural, in.Spec.Scope)
	}
	var cols []string
	for _, col := range in.Spec.AdditionalPrinterColumns {
		if col.Priority == 0 {
			cols = append(cols, col.Name)
		}
	}
	if want := []string{"Phase", "Step", "Weight", "Message", "Age"}; !slices.Equal(cols, want) {
		t.Errorf("printer columns = %v, want %v", cols, want)
	}
	if sub := in.Spec.Subresources; sub == nil || sub.Status == nil {
		t.Error("no status subresource")
	}
	// The one open object is the pod template patch, which the API server
	// validates as part of the Deployment it makes.
	s := in.Spec.Validation.OpenAPIV3Schema
	for name, p := range s.Properties["spec"].Properties {
		if p.XPreserveUnknownFields != nil && *p.XPreserveUnknownFields && name != "templatePatch" {
			t.Errorf("spec.%s preserves unknown fields", name)
		}
	}
}

// TestExampleDecodesStrictly: the documented manifest is a v1alpha1.Rollout
// with no field the Go type lacks.
func TestExampleDecodesStrictly(t *testing.T) {
	data, err := os.ReadFile("testdata/echo-rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ro v1alpha1.Rollout
	if err := yaml.UnmarshalStrict(data, &ro); err != nil {
		t.Fatal(err)
	}
	if ro.Spec.Version != "1.0" || len(ro.Spec.Steps) != 3 || ro.Spec.Timeout.Duration.String() != "5m0s" {
		t.Errorf("decoded %+v", ro.Spec)
	}
}

func TestAdmission(t *testing.T) {
	c := loadCRD(t)
	tests := []struct {
		name string
		edit func(spec map[string]any)
		want string // "" accepted; else a substring of one complaint
	}{
		{name: "the example", edit: func(map[string]any) {}},
		{name: "defaults", edit: func(s map[string]any) {
			for _, k := range []string{"route", "stableDeployment", "steps", "interval", "timeout", "ackTimeout", "onStalledClient", "analysis"} {
				delete(s, k)
			}
		}},
		{name: "template patch", edit: func(s map[string]any) {
			delete(s, "images")
			s["templatePatch"] = map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "echo-server", "image": "x:1"}}}}
		}},
		{name: "steps not ascending", edit: func(s map[string]any) { s["steps"] = []any{50, 10, 100} },
			want: "spec.steps: Invalid value: \"array\": steps must be ascending"},
		{name: "steps repeated", edit: func(s map[string]any) { s["steps"] = []any{50, 50, 100} },
			want: "steps must be ascending"},
		{name: "last step not 100", edit: func(s map[string]any) { s["steps"] = []any{10, 50} },
			want: "spec.steps: Invalid value: \"array\": the last step must be 100"},
		{name: "step above 100", edit: func(s map[string]any) { s["steps"] = []any{50, 150} },
			want: "spec.steps[1]: Invalid value: 150: spec.steps[1] in body should be less than or equal to 100"},
		{name: "step 0", edit: func(s map[string]any) { s["steps"] = []any{0, 100} },
			want: "spec.steps[0] in body should be greater than or equal to 1"},
		{name: "no steps", edit: func(s map[string]any) { s["steps"] = []any{} },
			want: "spec.steps: Invalid value: 0: spec.steps in body should have at least 1 items"},
		{name: "both images and patch", edit: func(s map[string]any) { s["templatePatch"] = map[string]any{} },
			want: "exactly one of images, templatePatch must be set"},
		{name: "neither images nor patch", edit: func(s map[string]any) { delete(s, "images") },
			want: "exactly one of images, templatePatch must be set"},
		{name: "ack timeout beyond timeout", edit: func(s map[string]any) { s["ackTimeout"] = "10m" },
			want: "spec.ackTimeout: Invalid value: \"object\": must not exceed spec.timeout"},
		{name: "zero timeout", edit: func(s map[string]any) { s["timeout"] = "0s" },
			want: "spec.timeout: Invalid value: \"string\": must be positive, e.g. 5m"},
		{name: "negative interval", edit: func(s map[string]any) { s["interval"] = "-1s" },
			want: "spec.interval in body should match"},
		{name: "bad duration", edit: func(s map[string]any) { s["timeout"] = "five minutes" },
			want: "spec.timeout in body should match"},
		{name: "bad policy", edit: func(s map[string]any) { s["onStalledClient"] = "Wait" },
			want: `spec.onStalledClient: Unsupported value: "Wait": supported values: "Pause", "Proceed", "Rollback"`},
		{name: "success rate above 1", edit: func(s map[string]any) {
			s["analysis"] = map[string]any{"minSuccessRate": "1.5"}
		}, want: "spec.analysis.minSuccessRate in body should match"},
		{name: "zero p99", edit: func(s map[string]any) { s["analysis"] = map[string]any{"maxP99Latency": "0s"} },
			want: "spec.analysis.maxP99Latency: Invalid value: \"string\": must be positive"},
		{name: "version not a label value", edit: func(s map[string]any) { s["version"] = "1.0 beta" },
			want: "spec.version in body should match"},
		{name: "no router", edit: func(s map[string]any) { delete(s, "virtualRouterRef") },
			want: "spec.virtualRouterRef: Required value"},
		{name: "container twice", edit: func(s map[string]any) {
			s["images"] = []any{map[string]any{"container": "a", "image": "x"}, map[string]any{"container": "a", "image": "y"}}
		}, want: `spec.images[1]: Duplicate value: {"container":"a"}`},
		{name: "misspelt field", edit: func(s map[string]any) { s["stepz"] = []any{100} },
			want: `unknown field "spec.stepz"`},
		{name: "controls", edit: func(s map[string]any) { s["paused"], s["abort"], s["promote"] = true, true, true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := example(t)
			tt.edit(obj["spec"].(map[string]any))
			msgs, err := c.Admit(obj, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if len(msgs) > 0 {
					t.Fatalf("refused: %q, want accepted", msgs)
				}
				return
			}
			for _, m := range msgs {
				if strings.Contains(m, tt.want) {
					return
				}
			}
			t.Errorf("complaints %q, want one containing %q", msgs, tt.want)
		})
	}
}

// TestRollbackAdmitted: a revision made by gmesh rollback (rollback: true,
// the previous pod template as a replacing templatePatch) is admitted, and
// the pod templates recorded in status.history are kept whole (pruning
// would report them as unknown fields).
func TestRollbackAdmitted(t *testing.T) {
	c := loadCRD(t)
	obj := example(t)
	spec := obj["spec"].(map[string]any)
	delete(spec, "images")
	spec["rollback"] = true
	spec["version"] = "0.9"
	tmpl := map[string]any{
		"metadata": map[string]any{"labels": map[string]any{"app": "echo-server", "version": "0.9"}},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "echo-server", "image": "gmesh.local/echo-server:0.9",
			"env": []any{map[string]any{"name": "A", "value": "b"}}}}},
	}
	spec["templatePatch"] = map[string]any{
		"metadata": map[string]any{"$patch": "replace", "labels": tmpl["metadata"].(map[string]any)["labels"]},
		"spec":     map[string]any{"$patch": "replace", "containers": tmpl["spec"].(map[string]any)["containers"]},
	}
	obj["status"] = map[string]any{"history": []any{
		map[string]any{"revision": int64(1), "version": "0.9", "template": tmpl},
		map[string]any{"revision": int64(2), "version": "1.0"},
	}}
	msgs, err := c.Admit(obj, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) > 0 {
		t.Errorf("refused: %v", msgs)
	}
}
