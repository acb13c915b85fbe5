package rolloutctl_test

import (
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestEndpoints: the pods a Deployment selects are its task set's
// endpoints, with their state, health and metrics address.
func TestEndpoints(t *testing.T) {
	deps := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	lbls := map[string]string{"app": "echo-server", "version": "1.0"}
	_ = deps.Add(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo-server-1-0"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name:  "echo-server",
				Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 50051}, {Name: "metrics", ContainerPort: 9102}},
			}}}},
		},
	})
	ready := k8sfake.Pod(ns, "a", "10.0.0.1", true, lbls)
	unready := k8sfake.Pod(ns, "b", "10.0.0.2", false, lbls)
	leaving := k8sfake.Pod(ns, "c", "10.0.0.3", true, lbls)
	leaving.DeletionTimestamp = &metav1.Time{}
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "d", Labels: lbls}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	other := k8sfake.Pod(ns, "e", "10.0.0.5", true, map[string]string{"app": "echo-server", "version": "0.9"})
	for _, p := range []*corev1.Pod{ready, unready, leaving, pending, other} {
		_ = pods.Add(p)
	}
	eps := rolloutctl.NewEndpoints(appslisters.NewDeploymentLister(deps), corelisters.NewPodLister(pods)).List(ns, "echo-server")
	want := map[string]string{
		"a": "RUNNING HEALTHY 10.0.0.1:50051 metrics 10.0.0.1:9102",
		"b": "RUNNING UNHEALTHY 10.0.0.2:50051 metrics 10.0.0.2:9102",
		"c": "STOPPING UNKNOWN 10.0.0.3:50051 metrics 10.0.0.3:9102",
		"d": "PENDING UNKNOWN :50051 metrics ",
	}
	if len(eps) != len(want) {
		t.Fatalf("%d endpoints, want %d: %+v", len(eps), len(want), eps)
	}
	for _, ep := range eps {
		got := string(ep.State) + " " + string(ep.Health) + " " + ep.Address + ":" + strconv.Itoa(ep.Port) + " metrics " + ep.MetricsAddr
		if got != want[ep.ID] || ep.Attributes[mesh.AttrTaskSet] != "echo-server-1-0" || ep.Attributes[mesh.AttrVersion] != "1.0" {
			t.Errorf("pod %s: %s %v, want %s", ep.ID, got, ep.Attributes, want[ep.ID])
		}
	}
}
