package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
)

// brokenManifests are a router gmesh refuses (no listeners), a virtual
// service on it (accepted, but translation leaves it out) and a node with
// STRICT TLS on an http listener (refused: gmesh serves mTLS as grpc).
const brokenManifests = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: broken, namespace: echo, generation: 3}
spec:
  routes:
    - name: r
      grpcRoute:
        match: {serviceName: x.Y}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: broken, namespace: echo, generation: 2}
spec:
  awsName: broken.echo.local
  provider:
    virtualRouter:
      virtualRouterRef: {name: broken}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: strict, namespace: echo, generation: 1}
spec:
  podSelector: {matchLabels: {app: strict}}
  listeners:
    - portMapping: {port: 8080, protocol: http}
      tls:
        mode: STRICT
        certificate: {file: {certificateChain: /c, privateKey: /k}}
`

// statusOf reads an object's gmesh status from the fake API server.
func statusOf(ctx context.Context, t testing.TB, c *fakeCluster, gvr schema.GroupVersionResource, ns, name string) v1beta2.GmeshStatus {
	t.Helper()
	u, err := c.Dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st v1beta2.GmeshStatus
	if m, ok := u.Object["status"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st); err != nil {
			t.Fatalf("decode status of %s %s/%s: %v", gvr.Resource, ns, name, err)
		}
	}
	return st
}

// TestBadObjectReportedRestServed: refused and untranslatable objects are
// reported in their status (reason, field, observedGeneration) by the
// leader, while the rest of the mesh is served; status is written only
// when it changes.
func TestBadObjectReportedRestServed(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	e1 := startEcho(t, "127.0.0.51", 0, "0.9")
	c := newFakeCluster(t, echoManifests(e1.port)+"\n---\n"+brokenManifests,
		echoNamespace(), pod("echo", "echo-a", e1.ip, true, echoLabels))
	cp := startCP(t, c, controller.Config{Status: &controller.StatusConfig{
		Namespace: "gmesh-system", Identity: "replica-0",
		LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
	}})
	pollUntil(ctx, t, "ready", func() (bool, error) { return cp.Ready(), nil })

	// The good part of the mesh is served.
	client := dialXDS(t, cp.XDSAddr(), "echo/client-0", echoTarget)
	if ip, err := said(ctx, client); err != nil || ip != e1.ip {
		t.Fatalf("got reply from %q (err %v), want %s", ip, err, e1.ip)
	}
	snap := cp.Source().Last()
	for _, l := range snap.Resources.Listeners {
		if l.GetName() == "broken.echo.local" {
			t.Fatal("the virtual service on a refused router was served")
		}
	}

	type want struct {
		gvr                  schema.GroupVersionResource
		name                 string
		generation           int64
		accepted, translated metav1.ConditionStatus
		reason, inMessage    string // of the Accepted or, if accepted, Translated condition
	}
	for _, w := range []want{
		{controller.GVRVirtualRouters, "broken", 3, metav1.ConditionFalse, metav1.ConditionFalse, v1beta2.ReasonInvalidValue, "spec.listeners"},
		{controller.GVRVirtualServices, "broken", 2, metav1.ConditionTrue, metav1.ConditionFalse, v1beta2.ReasonSkipped, "broken.echo.local"},
		{controller.GVRVirtualNodes, "strict", 1, metav1.ConditionFalse, metav1.ConditionFalse, v1beta2.ReasonUnsupported, "spec.listeners[0].tls.mode"},
		{controller.GVRVirtualNodes, "echo-server-0-9", 1, metav1.ConditionTrue, metav1.ConditionTrue, v1beta2.ReasonPublished, "published"},
		{controller.GVRVirtualServices, "echo-server", 1, metav1.ConditionTrue, metav1.ConditionTrue, v1beta2.ReasonPublished, "published"},
	} {
		t.Run(w.gvr.Resource+"/"+w.name, func(t *testing.T) {
			var st v1beta2.GmeshStatus
			pollUntil(ctx, t, "status written", func() (bool, error) {
				st = statusOf(ctx, t, c, w.gvr, "echo", w.name)
				return len(st.Conditions) >= 2, nil
			})
			if st.ObservedGeneration == nil || *st.ObservedGeneration != w.generation {
				t.Errorf("got observedGeneration %v, want %d", st.ObservedGeneration, w.generation)
			}
			acc := meta.FindStatusCondition(st.Conditions, v1beta2.ConditionAccepted)
			tr := meta.FindStatusCondition(st.Conditions, v1beta2.ConditionTranslated)
			if acc == nil || tr == nil {
				t.Fatalf("got conditions %+v, want Accepted and Translated", st.Conditions)
			}
			if acc.Status != w.accepted || tr.Status != w.translated {
				t.Errorf("got Accepted %s, Translated %s, want %s, %s", acc.Status, tr.Status, w.accepted, w.translated)
			}
			cond := acc
			if w.accepted == metav1.ConditionTrue {
				cond = tr
			}
			if cond.Reason != w.reason || !strings.Contains(cond.Message, w.inMessage) {
				t.Errorf("got %s reason %q message %q, want reason %q and a message naming %q", cond.Type, cond.Reason, cond.Message, w.reason, w.inMessage)
			}
			if cond.ObservedGeneration != w.generation {
				t.Errorf("got condition observedGeneration %d, want %d", cond.ObservedGeneration, w.generation)
			}
		})
	}

	// Fields accepted but not honoured are reported.
	st := statusOf(ctx, t, c, controller.GVRVirtualNodes, "echo", "echo-server-0-9")
	var fields []string
	for _, u := range st.UnhonouredFields {
		fields = append(fields, u.Field)
	}
	if !strings.Contains(strings.Join(fields, ","), "spec.logging") {
		t.Errorf("got unhonoured fields %v, want spec.logging among them", fields)
	}
	if st.GmeshName != "echo-server-0-9.echo" || st.Mesh != "echo" {
		t.Errorf("got gmesh name %q in mesh %q, want echo-server-0-9.echo in echo", st.GmeshName, st.Mesh)
	}

	// The client that made the call is counted as having ACKed the node's
	// cluster, the service's and the router's route configuration.
	for _, o := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{controller.GVRVirtualNodes, "echo-server-0-9"}, {controller.GVRVirtualServices, "echo-server"}, {controller.GVRVirtualRouters, "echo-server"}} {
		pollUntil(ctx, t, o.gvr.Resource+" "+o.name+" ACKed by the client", func() (bool, error) {
			st := statusOf(ctx, t, c, o.gvr, "echo", o.name)
			acked := meta.FindStatusCondition(st.Conditions, v1beta2.ConditionACKed)
			return acked != nil && acked.Status == metav1.ConditionTrue && st.Clients != nil && st.Clients.Total == 1 && st.Clients.ACKed == 1, nil
		})
	}
	if st := statusOf(ctx, t, c, controller.GVRVirtualRouters, "echo", "broken"); meta.FindStatusCondition(st.Conditions, v1beta2.ConditionACKed) != nil || st.Clients != nil {
		t.Errorf("a refused router reports clients: %+v", st)
	}

	// The leader holds the Lease.
	lease, err := c.Kube.CoordinationV1().Leases("gmesh-system").Get(ctx, "gmesh-controlplane", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	if got := lease.Spec.HolderIdentity; got == nil || *got != "replica-0" {
		t.Errorf("got lease holder %v, want replica-0", got)
	}

	// Everything is written: writing again changes nothing, once the
	// informer cache holds the writes the leader may still be making (an
	// ACK burst is written half a second later).
	pollUntil(ctx, t, "a status pass over an unchanged snapshot that writes nothing", func() (bool, error) {
		return cp.Status().WriteAll(ctx, cp.Source().Last()) == 0, nil
	})
}

// TestOnlyLeaderWritesStatus: of two replicas on one cluster, only the
// Lease holder writes status; when it stops, the other takes the Lease and
// reports the next change.
func TestOnlyLeaderWritesStatus(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	c := newFakeCluster(t, echoManifests(50051)+"\n---\n"+brokenManifests, echoNamespace())
	replica := func(id string) *running {
		return startCP(t, c, controller.Config{Status: &controller.StatusConfig{
			Namespace: "gmesh-system", Identity: id,
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond,
		}})
	}
	replicas := map[string]*running{"replica-0": replica("replica-0"), "replica-1": replica("replica-1")}
	holder := func() string {
		lease, err := c.Kube.CoordinationV1().Leases("gmesh-system").Get(ctx, "gmesh-controlplane", metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	pollUntil(ctx, t, "status written", func() (bool, error) {
		st := statusOf(ctx, t, c, controller.GVRVirtualRouters, "echo", "broken")
		return len(st.Conditions) == 2 && holder() != "", nil
	})
	leader := holder()
	var other string
	for id, r := range replicas {
		if id == leader {
			continue
		}
		other = id
		if n := r.Status().Writes(); n != 0 {
			t.Fatalf("%s does not hold the Lease but wrote status %d times", id, n)
		}
	}
	if replicas[leader].Status().Writes() == 0 {
		t.Fatalf("the leader %s wrote no status", leader)
	}

	// The leader stops (and releases the Lease); the other takes over.
	if err := replicas[leader].stop(); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, other+" holds the Lease", func() (bool, error) { return holder() == other, nil })
	c.WaitWatches(ctx, t, 2*watchesPerSource)
	// The router is fixed: a new generation with a listener.
	vr, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Get(ctx, "broken", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vr.SetGeneration(4)
	if err := unstructuredSet(vr.Object, []any{map[string]any{"portMapping": map[string]any{"port": int64(8080), "protocol": "grpc"}}}, "spec", "listeners"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dyn.Resource(controller.GVRVirtualRouters).Namespace("echo").Update(ctx, vr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the new leader reports generation 4", func() (bool, error) {
		st := statusOf(ctx, t, c, controller.GVRVirtualRouters, "echo", "broken")
		acc := meta.FindStatusCondition(st.Conditions, v1beta2.ConditionAccepted)
		return st.ObservedGeneration != nil && *st.ObservedGeneration == 4 && acc != nil && acc.Status == metav1.ConditionTrue, nil
	})
	if replicas[other].Status().Writes() == 0 {
		t.Fatalf("the new leader %s wrote no status", other)
	}
}

func unstructuredSet(obj map[string]any, value any, fields ...string) error {
	return unstructured.SetNestedField(obj, value, fields...)
}
