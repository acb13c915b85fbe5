package kubernetes_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
)

var (
	gvrDeployments = appsv1.SchemeGroupVersion.WithResource("deployments")
	gvrPods        = corev1.SchemeGroupVersion.WithResource("pods")
)

// rolloutYAML is a service behind a router, and a Rollout of it whose
// steps the test's xDS clients never ACK.
const rolloutYAML = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-api-1, namespace: echo, generation: 1, resourceVersion: "1"}
spec:
  podSelector: {matchLabels: {app: echo-api, version: "1"}}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: echo-api, namespace: echo, generation: 1, resourceVersion: "1"}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
  routes:
    - name: api
      grpcRoute:
        match: {serviceName: api.API}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-api-1}
              weight: 100
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: echo-api, namespace: echo, generation: 1, resourceVersion: "1"}
spec:
  provider:
    virtualRouter:
      virtualRouterRef: {name: echo-api}
---
apiVersion: gmesh.dev/v1alpha1
kind: Rollout
metadata: {name: echo-api, namespace: echo, generation: 1, resourceVersion: "1"}
spec:
  virtualRouterRef: {name: echo-api}
  version: "2"
  images: [{container: api, image: api:2}]
  steps: [50, 100]
  timeout: 1s
  ackTimeout: 100ms
  onStalledClient: Pause
`

func rolloutObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(rolloutYAML, "\n---\n") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// rolloutDeployment is the Rollout's stable Deployment.
func rolloutDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	one := int32(1)
	lbls := map[string]string{"app": "echo-api", "version": "1"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-api-1", Namespace: "echo", Generation: 1, ResourceVersion: "1"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "api:1"}}},
			},
		},
	}
}

// neverACKed is xDS clients that never ACK.
type neverACKed struct{}

func (neverACKed) ConvergedRouter(string, string, int64) (bool, []string) {
	return false, []string{"echo/client@none"}
}

// kubelet keeps each Deployment's pods of namespace echo, Ready, through
// the tracker: its calls are not the control plane's.
func kubelet(ctx context.Context, t *testing.T, kube *kubefake.Clientset) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	tr := kube.Tracker()
	for {
		dl, err1 := tr.List(gvrDeployments, appsv1.SchemeGroupVersion.WithKind("Deployment"), "echo")
		pl, err2 := tr.List(gvrPods, corev1.SchemeGroupVersion.WithKind("Pod"), "echo")
		if err1 == nil && err2 == nil {
			want := map[string]bool{}
			for _, d := range dl.(*appsv1.DeploymentList).Items {
				n := 1
				if d.Spec.Replicas != nil {
					n = int(*d.Spec.Replicas)
				}
				for i := range n {
					name := fmt.Sprintf("%s-%d", d.Name, i)
					want[name] = true
					if _, err := tr.Get(gvrPods, "echo", name); err == nil {
						continue
					}
					p := &corev1.Pod{
						ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: name, Labels: d.Spec.Template.Labels},
						Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.0.0.%d", 10+i),
							Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
					}
					_ = tr.Create(gvrPods, p, "echo")
				}
			}
			for _, p := range pl.(*corev1.PodList).Items {
				if strings.HasPrefix(p.Name, "echo-api-") && !want[p.Name] {
					_ = tr.Delete(gvrPods, "echo", p.Name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func getRollout(t *testing.T, dyn *dynamicfake.FakeDynamicClient) *v1alpha1.Rollout {
	t.Helper()
	obj, err := dyn.Tracker().Get(rollouts.GVR, "echo", "echo-api")
	if err != nil {
		t.Fatal(err)
	}
	var ro v1alpha1.Rollout
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &ro); err != nil {
		t.Fatal(err)
	}
	return &ro
}

// abortRollout sets spec.abort as a user would, through the tracker (with
// the resourceVersion and generation the API server would give).
func abortRollout(t *testing.T, dyn *dynamicfake.FakeDynamicClient) {
	t.Helper()
	obj, err := dyn.Tracker().Get(rollouts.GVR, "echo", "echo-api")
	if err != nil {
		t.Fatal(err)
	}
	u := obj.(*unstructured.Unstructured).DeepCopy()
	if err := unstructured.SetNestedField(u.Object, true, "spec", "abort"); err != nil {
		t.Fatal(err)
	}
	u.SetResourceVersion("user-1")
	u.SetGeneration(u.GetGeneration() + 1)
	if err := dyn.Tracker().Update(rollouts.GVR, u, "echo"); err != nil {
		t.Fatal(err)
	}
}
