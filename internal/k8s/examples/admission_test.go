package examples_test

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

// applied is the cluster as the validator sees it part-way through a
// `kubectl apply -k`: the objects created so far.
type applied struct{ in appmesh.Input }

func (a *applied) AppMeshObjects() (appmesh.Input, error) { return a.in, nil }

// TestEchoExampleAdmittedInOrder sends the example's App Mesh objects to
// gmesh's validating webhook one by one, in the order `kubectl apply -k`
// creates them, each checked against only those created before it: every
// one is admitted. kustomize's default order sorts kinds it does not know
// by name, which would create the GatewayRoute before the service it
// targets and be refused; the example asks for its own order.
func TestEchoExampleAdmittedInOrder(t *testing.T) {
	ex := render(t, "examples/kubernetes/echo")
	var ns corev1.Namespace
	ex.object(t, "Namespace echo", &ns)
	state := &applied{in: appmesh.Input{NamespaceLabels: map[string]map[string]string{ns.Name: ns.Labels}}}
	v := webhook.NewValidator(state, webhook.ValidatorOptions{Settle: -1})
	if len(ex.appmesh) == 0 {
		t.Fatal("the example has no App Mesh objects")
	}
	for _, doc := range ex.appmesh {
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		raw, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		gvk := meta.GroupVersionKind()
		req := &admissionv1.AdmissionRequest{
			Operation: admissionv1.Create,
			Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Namespace: meta.Namespace, Name: meta.Name,
			Object: runtime.RawExtension{Raw: raw},
		}
		if resp := v.Review(context.Background(), req); !resp.Allowed {
			t.Errorf("%s %s/%s refused when created in the example's order: %s", gvk.Kind, meta.Namespace, meta.Name, resp.Result.Message)
		}
		if err := appmesh.Decode(gvk.Kind+" "+meta.Name, []byte(doc), &state.in); err != nil {
			t.Fatalf("decode %s %s: %v", gvk.Kind, meta.Name, err)
		}
	}
	if t.Failed() {
		order := make([]string, 0, len(ex.appmesh))
		for _, doc := range ex.appmesh {
			order = append(order, strings.SplitN(strings.SplitN(doc, "kind: ", 2)[1], "\n", 2)[0])
		}
		t.Logf("creation order: %s", strings.Join(order, ", "))
	}
}
