package rollouts

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// echoObject decodes the object of kind from the echo example's
// echo-server.yaml into out, strictly.
func echoObject(t *testing.T, kind string, out any) {
	t.Helper()
	data, err := os.ReadFile("../../../examples/kubernetes/echo/echo-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if bytes.Contains(doc, []byte("\nkind: "+kind+"\n")) {
			if err := yaml.UnmarshalStrict(doc, out); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no %s in the echo example", kind)
}

var marks = map[string]string{"gmesh.dev/service": "echo-server", "gmesh.dev/revision": "2"}

func TestNewDeploymentImages(t *testing.T) {
	var stable appsv1.Deployment
	echoObject(t, "Deployment", &stable)
	ro := example(t)
	d, err := NewDeployment(&stable, ro, "echo-server-1-0", marks)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "echo-server-1-0" || d.Namespace != "echo" || d.Labels["gmesh.dev/revision"] != "2" {
		t.Errorf("metadata = %+v", d.ObjectMeta)
	}
	// Only the image and the version differ from the stable Deployment.
	want := stable.Spec.DeepCopy()
	want.Selector.MatchLabels["version"] = "1.0"
	want.Template.Labels["version"] = "1.0"
	want.Template.Spec.Containers[0].Image = "gmesh.local/echo-server:1.0"
	if diff := cmp.Diff(*want, d.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if stable.Spec.Template.Spec.Containers[0].Image != "gmesh.local/echo-server:0.9" || stable.Spec.Selector.MatchLabels["version"] != "0.9" {
		t.Error("NewDeployment changed the stable Deployment")
	}
	n := int32(5)
	ro.Spec.Replicas = &n
	if d, err := NewDeployment(&stable, ro, "echo-server-1-0", nil); err != nil || *d.Spec.Replicas != 5 {
		t.Errorf("replicas: %v, %v, want 5", d.Spec.Replicas, err)
	}
}

func TestNewDeploymentTemplatePatch(t *testing.T) {
	var stable appsv1.Deployment
	echoObject(t, "Deployment", &stable)
	ro := example(t)
	ro.Spec.Images = nil
	ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"echo-server","image":"gmesh.local/echo-server:1.0","env":[{"name":"GREETING","value":"Hi"}]}]}}`)}
	d, err := NewDeployment(&stable, ro, "echo-server-1-0", marks)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "gmesh.local/echo-server:1.0" || len(d.Spec.Template.Spec.Containers) != 1 {
		t.Errorf("containers = %+v", d.Spec.Template.Spec.Containers)
	}
	// A strategic merge: the env list is merged by name, the stable's kept.
	want := append([]corev1.EnvVar{{Name: "GREETING", Value: "Hi"}}, stable.Spec.Template.Spec.Containers[0].Env...)
	if diff := cmp.Diff(want, c.Env, cmpSortEnv()); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if c.ReadinessProbe == nil || d.Spec.Template.Labels["version"] != "1.0" || d.Spec.Template.Labels["app"] != "echo-server" {
		t.Errorf("probe %v labels %v, want the stable's probe and version 1.0", c.ReadinessProbe, d.Spec.Template.Labels)
	}
}

func cmpSortEnv() cmp.Option {
	return cmp.Transformer("sortEnv", func(in []corev1.EnvVar) map[string]string {
		out := map[string]string{}
		for _, e := range in {
			out[e.Name] = e.Value
		}
		return out
	})
}

func TestNewDeploymentRefusals(t *testing.T) {
	tests := []struct {
		name string
		edit func(*appsv1.Deployment, *runtime.RawExtension) *runtime.RawExtension
		imgs bool
		want string
	}{
		{name: "unknown container", imgs: true, edit: func(*appsv1.Deployment, *runtime.RawExtension) *runtime.RawExtension { return nil },
			want: `spec.images[0].container: Deployment echo-server-0-9 has no container "server"`},
		{name: "stable pods without a version label", imgs: true, edit: func(d *appsv1.Deployment, _ *runtime.RawExtension) *runtime.RawExtension {
			delete(d.Spec.Template.Labels, "version")
			return nil
		}, want: `spec.stableDeployment: the pods of Deployment echo-server-0-9 have no "version" label`},
		{name: "patch that does not apply", edit: func(*appsv1.Deployment, *runtime.RawExtension) *runtime.RawExtension {
			return &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":"x"}}`)}
		}, want: "spec.templatePatch: does not apply to the pod template of Deployment echo-server-0-9"},
		{name: "patch that leaves the selector", edit: func(*appsv1.Deployment, *runtime.RawExtension) *runtime.RawExtension {
			return &runtime.RawExtension{Raw: []byte(`{"metadata":{"labels":{"app":"other"}}}`)}
		}, want: "do not match the selector of Deployment echo-server-0-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stable appsv1.Deployment
			echoObject(t, "Deployment", &stable)
			ro := example(t)
			if tt.imgs {
				ro.Spec.Images[0].Container = "server"
			} else {
				ro.Spec.Images = nil
			}
			if p := tt.edit(&stable, nil); p != nil {
				ro.Spec.TemplatePatch = p
			}
			_, err := NewDeployment(&stable, ro, "echo-server-1-0", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || mesh.ErrorCode(err) != mesh.EInvalid {
				t.Errorf("NewDeployment: %v, want EInvalid %q", err, tt.want)
			}
		})
	}
}

func TestNewVirtualNode(t *testing.T) {
	var stable v1beta2.VirtualNode
	echoObject(t, "VirtualNode", &stable)
	aws := "echo-server-0-9_echo"
	stable.Spec.AWSName = &aws
	vn, err := NewVirtualNode(&stable, "echo-server-1-0", "1.0", marks)
	if err != nil {
		t.Fatal(err)
	}
	want := stable.Spec.DeepCopy()
	want.AWSName = nil
	want.PodSelector.MatchLabels = map[string]string{"app": "echo-server", "version": "1.0"}
	if diff := cmp.Diff(*want, vn.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if vn.Name != "echo-server-1-0" || vn.Namespace != "echo" || vn.Labels["gmesh.dev/service"] != "echo-server" || stable.Spec.PodSelector.MatchLabels["version"] != "0.9" {
		t.Errorf("node %s/%s labels %v; stable selector %v", vn.Namespace, vn.Name, vn.Labels, stable.Spec.PodSelector.MatchLabels)
	}
	delete(stable.Spec.PodSelector.MatchLabels, "version")
	if _, err := NewVirtualNode(&stable, "echo-server-1-0", "1.0", nil); err == nil || !strings.Contains(err.Error(), `spec.podSelector.matchLabels: VirtualNode echo-server-0-9 does not select its pods by the "version" label, so it would also select the new version's pods`) {
		t.Errorf("NewVirtualNode without a version selector: %v", err)
	}
}

func TestAdoptStable(t *testing.T) {
	node, err := StableNode("echo-server-route", []mesh.WeightedTarget{{VirtualNode: "echo-server-0-9", Weight: 100}, {VirtualNode: "old", Weight: 0}})
	if err != nil || node != "echo-server-0-9" {
		t.Errorf("StableNode = %q, %v, want echo-server-0-9", node, err)
	}
	_, err = StableNode("echo-server-route", []mesh.WeightedTarget{{VirtualNode: "a", Weight: 50}, {VirtualNode: "b", Weight: 50}})
	if err == nil || !strings.Contains(err.Error(), "spec.stableDeployment: route echo-server-route sends traffic to 2 virtual nodes [a b]") {
		t.Errorf("StableNode of a split: %v", err)
	}

	var vn v1beta2.VirtualNode
	echoObject(t, "VirtualNode", &vn)
	var stable appsv1.Deployment
	echoObject(t, "Deployment", &stable)
	other := stable.DeepCopy()
	other.Name, other.Spec.Template.Labels = "echo-client-0-1", map[string]string{"app": "echo-client", "version": "0.1"}
	elsewhere := stable.DeepCopy()
	elsewhere.Namespace = "other"
	got, err := AdoptDeployment(&vn, []*appsv1.Deployment{other, &stable, elsewhere})
	if err != nil || got.Name != "echo-server-0-9" || got.Namespace != "echo" {
		t.Errorf("AdoptDeployment = %v, %v, want echo/echo-server-0-9", got, err)
	}
	twin := stable.DeepCopy()
	twin.Name = "echo-server-0-9-copy"
	if _, err := AdoptDeployment(&vn, []*appsv1.Deployment{&stable, twin}); err == nil || !strings.Contains(err.Error(), "2 Deployments [echo-server-0-9 echo-server-0-9-copy] run pods that VirtualNode echo-server-0-9 selects; name the stable one") {
		t.Errorf("AdoptDeployment of two: %v", err)
	}
}
