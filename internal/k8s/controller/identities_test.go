package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// identityManifests: mesh "secure" (TLS on, see secureTLS) with the
// namespace shop, mesh "plain" with the namespace open.
const identityManifests = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: secure, generation: 1}
spec:
  namespaceSelector: {matchLabels: {mesh: secure}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: plain, generation: 1}
spec:
  namespaceSelector: {matchLabels: {mesh: plain}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: cart, namespace: shop, uid: cart-uid, generation: 1}
spec:
  podSelector: {matchLabels: {app: cart}}
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: cart-canary, namespace: shop, uid: canary-uid, generation: 1}
spec:
  podSelector: {matchLabels: {app: cart, track: canary}}
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: idle, namespace: shop, uid: idle-uid, generation: 1}
spec:
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web, namespace: open, uid: web-uid, generation: 1}
spec:
  podSelector: {matchLabels: {app: web}}
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
`

// secureTLS turns TLS on in mesh "secure" (the conversion does not carry
// App Mesh's TLS settings yet).
func secureTLS(t *testing.T) {
	controller.SetMeshTLS(t, func(nodes []*mesh.Resource, m string) bool {
		return m == "secure" || mesh.MeshTLS(nodes, m)
	})
}

// podAs is a pod in a phase, running as a service account.
func podAs(ns, name, sa string, phase corev1.PodPhase, labels map[string]string) *corev1.Pod {
	p := pod(ns, name, "", false, labels)
	p.Spec.ServiceAccountName = sa
	p.Status.Phase = phase
	if phase == corev1.PodRunning {
		p.Status.PodIP = "10.0.0.1"
	}
	return p
}

func TestIdentityWants(t *testing.T) {
	secureTLS(t)
	ctx := testContext(t, 30*time.Second)
	c := newFakeCluster(t, identityManifests,
		namespace("shop", map[string]string{"mesh": "secure"}), namespace("open", map[string]string{"mesh": "plain"}),
		podAs("shop", "cart-1", "", corev1.PodRunning, map[string]string{"app": "cart"}),
		podAs("shop", "cart-2", "billing", corev1.PodPending, map[string]string{"app": "cart"}),
		podAs("shop", "cart-3", "old", corev1.PodSucceeded, map[string]string{"app": "cart"}),
		podAs("shop", "cart-4", "gone", corev1.PodFailed, map[string]string{"app": "cart"}),
		podAs("open", "web-1", "web", corev1.PodRunning, map[string]string{"app": "web"}),
	)

	unsynced := controller.NewSource(c.Kube, c.Dyn, &recorder{}, controller.Options{})
	if _, err := unsynced.IdentityWants(); err == nil || !strings.Contains(err.Error(), "not synced") {
		t.Errorf("before the informers synced: got %v, want an error", err)
	}

	src := runSource(t, c, &recorder{}, controller.Options{})
	changes := src.IdentityChanges()
	pollUntil(ctx, t, "ready", func() (bool, error) { return src.Ready(), nil })
	c.WaitWatches(ctx, t, watchesPerSource)

	cart := identity.Want{Namespace: "shop", VirtualNode: "cart", UID: "cart-uid", Mesh: "secure", Node: "cart.shop",
		ServiceAccounts: []string{"billing", "default"}}
	canary := identity.Want{Namespace: "shop", VirtualNode: "cart-canary", UID: "canary-uid", Mesh: "secure", Node: "cart-canary.shop"}
	got, err := src.IdentityWants()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]identity.Want{cart, canary}, got); diff != "" {
		t.Errorf("IdentityWants (-want +got):\n%s", diff)
	}

	// The webhook's question for a pod being created.
	w, ok, err := src.PodIdentity("shop", map[string]string{"app": "cart", "pod-template-hash": "abc"})
	if err != nil || !ok {
		t.Fatalf("PodIdentity of a cart pod: %v, %v", ok, err)
	}
	if diff := cmp.Diff(cart, w); diff != "" {
		t.Errorf("PodIdentity (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		ns     string
		labels map[string]string
	}{
		{"open", map[string]string{"app": "web"}},   // TLS off
		{"shop", map[string]string{"app": "other"}}, // no node
		{"open", map[string]string{"app": "cart"}},  // cart is in shop
	} {
		if w, ok, err := src.PodIdentity(tt.ns, tt.labels); ok || err != nil {
			t.Errorf("PodIdentity(%s, %v) = %+v, %v, %v; want none", tt.ns, tt.labels, w, ok, err)
		}
	}
	_, ok, err = src.PodIdentity("shop", map[string]string{"app": "cart", "track": "canary"})
	if ok || err == nil || !strings.Contains(err.Error(), "shop/cart, shop/cart-canary") {
		t.Errorf("a pod two nodes select: %v, %v; want an error naming both", ok, err)
	}

	// A pending pod with a new service account: a change, then a Want.
	drain(changes)
	p := podAs("shop", "cart-5", "audit", corev1.PodPending, map[string]string{"app": "cart"})
	if _, err := c.Kube.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-ctx.Done():
		t.Fatal("no identity change for a new pod")
	}
	pollUntil(ctx, t, "audit in cart's want", func() (bool, error) {
		ws, err := src.IdentityWants()
		return err == nil && len(ws) > 0 && cmp.Equal(ws[0].ServiceAccounts, []string{"audit", "billing", "default"}), err
	})

	// A status-only update of a node is no change; its spec is.
	drain(changes)
	vn, err := c.Dyn.Resource(controller.GVRVirtualNodes).Namespace("shop").Get(ctx, "idle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vn.Object["spec"].(map[string]any)["podSelector"] = map[string]any{"matchLabels": map[string]any{"app": "idle"}}
	vn.SetGeneration(2)
	if _, err := c.Dyn.Resource(controller.GVRVirtualNodes).Namespace("shop").Update(ctx, vn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-ctx.Done():
		t.Fatal("no identity change for a node's new podSelector")
	}
	pollUntil(ctx, t, "idle's want", func() (bool, error) {
		ws, err := src.IdentityWants()
		return err == nil && len(ws) == 3 && ws[2].VirtualNode == "idle" && len(ws[2].ServiceAccounts) == 0, err
	})
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestCatchUp: a Source whose informers have not seen the API server's
// Mesh and VirtualNodes reports, after its bounded wait, the object it
// lacks; once its informers have synced, CatchUp returns at once.
func TestCatchUp(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	c := newFakeCluster(t, identityManifests, namespace("shop", map[string]string{"mesh": "secure"}))
	stale := controller.NewSource(c.Kube, c.Dyn, &recorder{}, controller.Options{})
	if err := stale.CatchUp(ctx, "shop"); err == nil || !strings.Contains(err.Error(), "has not seen") {
		t.Errorf("CatchUp without informers: %v, want an error naming what the cache lacks", err)
	} else {
		t.Log(err)
	}
	src := runSource(t, c, &recorder{}, controller.Options{})
	pollUntil(ctx, t, "ready", func() (bool, error) { return src.Ready(), nil })
	if err := src.CatchUp(ctx, "shop"); err != nil {
		t.Errorf("CatchUp after the informers synced: %v", err)
	}
}
