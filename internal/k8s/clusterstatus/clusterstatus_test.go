package clusterstatus_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/clusterstatus"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
)

const objects = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server-0-9, namespace: echo, generation: 3}
spec:
  podSelector: {matchLabels: {app: echo-server}}
  listeners: [{portMapping: {port: 50051, protocol: grpc}}]
  logging: {accessLog: {file: {path: /dev/stdout}}}
status:
  mesh: echo
  gmeshName: echo-server-0-9.echo
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: "", observedGeneration: 3, lastTransitionTime: "2026-12-01T00:00:00Z"}
  - {type: Translated, status: "True", reason: Translated, message: "", observedGeneration: 3, lastTransitionTime: "2026-12-01T00:00:00Z"}
  - {type: ACKed, status: "False", reason: Pending, message: "1 of 2 clients ACKed", observedGeneration: 2, lastTransitionTime: "2026-12-01T00:00:00Z"}
  clients:
    total: 2
    acked: 1
    lastNACK: {client: echo/echo-client-abc, reason: "unknown cluster", time: "2026-12-01T00:00:00Z"}
  unhonouredFields:
  - {field: spec.logging, reason: "an Envoy setting"}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: echo-server, namespace: echo, generation: 1}
spec:
  listeners: [{portMapping: {port: 50051, protocol: grpc}}]
  routes:
  - name: r
    grpcRoute:
      match: {serviceName: proto.echo.EchoService}
      action:
        weightedTargets:
        - {virtualNodeRef: {name: echo-server-0-9}, weight: 90}
        - {virtualNodeRef: {name: echo-server-1-0, namespace: other}, weight: 10}
`

func TestReadAndPrint(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	holder := "gmesh-controlplane-a"
	renew := metav1.NewMicroTime(now.Add(-3 * time.Second))
	ready := func(name, ip string, ok bool) *corev1.Pod {
		st := corev1.ConditionFalse
		if ok {
			st = corev1.ConditionTrue
		}
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "echo", Labels: map[string]string{"app": "echo-server"}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
		}
	}
	kube := kubefake.NewClientset(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "gmesh-controlplane", Namespace: "gmesh-system"}, Status: appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 1}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "gmesh-controlplane", Namespace: "gmesh-system"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &renew}},
		ready("echo-server-a", "10.0.0.1", true),
		ready("echo-server-b", "10.0.0.2", false),
	)
	var objs []runtime.Object
	for _, doc := range strings.Split(objects, "\n---\n") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, u)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), controller.ListKinds(), objs...)

	r, err := clusterstatus.Read(ctx, kube, dyn, clusterstatus.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if cp := r.ControlPlane; !cp.Found || cp.Replicas != 2 || cp.Ready != 1 || cp.Leader != holder || cp.Renewed != 3*time.Second {
		t.Errorf("control plane: %+v", cp)
	}
	if len(r.Nodes) != 1 || r.Nodes[0].Selected != 2 || len(r.Nodes[0].Serving) != 1 || r.Nodes[0].Port != 50051 {
		t.Errorf("nodes: %+v, want one node with 1 of 2 pods serving on 50051", r.Nodes)
	}
	if len(r.Objects) != 2 {
		t.Fatalf("objects: %+v", r.Objects)
	}
	if c := r.Objects[0].Conditions["ACKed"]; c == nil || !c.Stale || c.Status != metav1.ConditionFalse {
		t.Errorf("ACKed condition of generation 2 on an object of generation 3: %+v, want stale False", c)
	}
	if c := r.Objects[0].Conditions["Accepted"]; c == nil || c.Stale {
		t.Errorf("Accepted condition: %+v, want current", c)
	}

	var out bytes.Buffer
	if err := r.Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Control plane: 1/2 replicas ready in gmesh-system, leader gmesh-controlplane-a (renewed 3s ago)",
		"echo/echo-server-0-9", "echo-server-0-9.echo", "False (stale)", "1/2 (last NACK from echo/echo-client-abc: unknown cluster)",
		"app=echo-server", "echo-server-a 10.0.0.1",
		"echo-server-0-9=90 other/echo-server-1-0=10",
		"VirtualNode echo/echo-server-0-9 ACKed: 1 of 2 clients ACKed",
		"VirtualNode echo/echo-server-0-9: spec.logging not honoured: an Envoy setting",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "echo-server-b") {
		t.Errorf("a NotReady pod is listed as an endpoint:\n%s", out.String())
	}
}

func TestNotInstalled(t *testing.T) {
	kube := kubefake.NewClientset()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), controller.ListKinds())
	r, err := clusterstatus.Read(context.Background(), kube, dyn, clusterstatus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.Print(&out); err != nil {
		t.Fatal(err)
	}
	if want := "Control plane: not installed in namespace gmesh-system (kubectl apply -k deploy/kubernetes)"; !strings.Contains(out.String(), want) {
		t.Errorf("got:\n%s\nwant a line %q", out.String(), want)
	}
}
