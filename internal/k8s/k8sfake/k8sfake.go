// Package k8sfake is a cluster for tests of the Kubernetes side of gmesh:
// client-go's fake clientsets standing in for the API server (the one part
// a unit test cannot have), with the App Mesh kinds and gmesh's Rollout
// filed under their resources, and a count of the watches the informers opened. The fake
// tracker has no resource versions, so a change made between an informer's
// list and its watch would be lost: tests wait for every watch
// (WaitWatches) before they change anything.
package k8sfake

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
)

// WatchesPerSource is how many watches a controller.Source opens: six App
// Mesh kinds, Namespaces and Pods.
const WatchesPerSource = 8

// Cluster is a fake cluster.
type Cluster struct {
	Kube *kubefake.Clientset
	Dyn  *dynamicfake.FakeDynamicClient

	mu      sync.Mutex
	watches int
}

// New returns a cluster holding the App Mesh objects of appmeshYAML
// (documents separated by "\n---\n") and the core objects.
func New(t testing.TB, appmeshYAML string, core ...runtime.Object) *Cluster {
	t.Helper()
	c := &Cluster{
		Kube: kubefake.NewClientset(core...),
		Dyn:  dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), ListKinds()),
	}
	for _, obj := range Objects(t, appmeshYAML) {
		c.Create(t, obj)
	}
	c.Kube.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.Kube.Tracker().Watch(a.GetResource(), a.GetNamespace())
		c.countWatch()
		return true, w, err
	})
	c.Dyn.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.Dyn.Tracker().Watch(a.GetResource(), a.GetNamespace())
		c.countWatch()
		return true, w, err
	})
	return c
}

// kinds are the custom kinds the fake cluster serves: App Mesh's, and
// gmesh's Rollout.
func kinds() map[string]schema.GroupVersionResource {
	out := map[string]schema.GroupVersionResource{"Rollout": rollouts.GVR}
	for _, k := range controller.Kinds {
		out[string(k.Kind)] = k.GVR
	}
	return out
}

// ListKinds maps the custom resources the fake cluster serves to their
// list kinds.
func ListKinds() map[schema.GroupVersionResource]string {
	out := map[schema.GroupVersionResource]string{}
	for kind, gvr := range kinds() {
		out[gvr] = kind + "List"
	}
	return out
}

// Create adds an App Mesh object or a Rollout, by resource (the fake
// client's guess from the kind would file a Mesh under "meshs").
func (c *Cluster) Create(t testing.TB, obj *unstructured.Unstructured) {
	t.Helper()
	gvr, ok := kinds()[obj.GetKind()]
	if !ok {
		t.Fatalf("%s %s: not an App Mesh kind or a Rollout", obj.GetKind(), obj.GetName())
	}
	if err := c.Dyn.Tracker().Create(gvr, obj, obj.GetNamespace()); err != nil {
		t.Fatalf("add %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

func (c *Cluster) countWatch() {
	c.mu.Lock()
	c.watches++
	c.mu.Unlock()
}

// WaitWatches waits until n watches are open.
func (c *Cluster) WaitWatches(ctx context.Context, t testing.TB, n int) {
	t.Helper()
	PollUntil(ctx, t, fmt.Sprintf("%d watches open", n), func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.watches >= n, nil
	})
}

// PollUntil calls cond every few milliseconds until it returns true or ctx
// ends.
func PollUntil(ctx context.Context, t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached after %d tries: %v", what, i+1, ctx.Err())
		case <-tick.C:
		}
	}
}

// Objects decodes App Mesh manifests (documents separated by "\n---\n")
// into unstructured objects.
func Objects(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(doc) != "" {
			out = append(out, Object(t, doc))
		}
	}
	return out
}

// Object decodes one YAML document into an unstructured object.
func Object(t testing.TB, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return u
}

// Namespace is a namespace with labels.
func Namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// Pod is a running pod at ip, Ready or not.
func Pod(ns, name, ip string, ready bool, labels map[string]string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}},
		},
	}
}
