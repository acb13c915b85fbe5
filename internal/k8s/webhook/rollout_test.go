package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

// rolloutMeshYAML is the echo example's mesh with a router of three
// routes: the one the example Rollout shifts, and two others.
const rolloutMeshYAML = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: echo}
spec:
  namespaceSelector: {matchLabels: {mesh: echo}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server-0-9, namespace: echo}
spec:
  podSelector: {matchLabels: {app: echo-server, version: "0.9"}}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: echo-server, namespace: echo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
  routes:
    - name: echo-server-route
      grpcRoute:
        match: {serviceName: proto.echo.EchoService}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
    - name: echo-server-admin
      grpcRoute:
        match: {serviceName: proto.echo.Admin}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
    - name: echo-server-health
      grpcRoute:
        match: {serviceName: grpc.health.v1.Health}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 100
`

// echoDeployment is the example's stable Deployment, with a second
// container.
func echoDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "echo-server", "version": "0.9"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server-0-9"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "echo-server", Image: "gmesh.local/echo-server:0.9"},
					{Name: "metrics", Image: "gmesh.local/metrics:1"},
				}},
			},
		},
	}
}

// exampleRollout is api/gmesh/v1alpha1/testdata/echo-rollout.yaml, the
// Rollout docs/kubernetes-rollouts.md shows, changed by mod.
func exampleRollout(t testing.TB, mod func(*v1alpha1.Rollout)) *v1alpha1.Rollout {
	t.Helper()
	b, err := os.ReadFile("../../../api/gmesh/v1alpha1/testdata/echo-rollout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ro v1alpha1.Rollout
	if err := yaml.UnmarshalStrict(b, &ro); err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&ro)
	}
	return &ro
}

// running sets the status of a rollout at its first step's bake.
func running(ro *v1alpha1.Rollout) {
	ro.Status = v1alpha1.RolloutStatus{Phase: "Baking", Step: "1/3", StepIndex: 0, Weight: 10,
		OldVersion: "0.9", NewVersion: ro.Spec.Version, Route: "echo-server-route", Revision: 2,
		OldVirtualNode: "echo-server-0-9", NewVirtualNode: "echo-server-1-0", OldTaskSet: "echo-server-0-9", NewTaskSet: "echo-server-1-0"}
}

// retiring sets the status of a rollout whose new version took all traffic.
func retiring(ro *v1alpha1.Rollout) {
	running(ro)
	ro.Status.Phase, ro.Status.Step, ro.Status.StepIndex, ro.Status.Weight = "Retiring", "3/3", 2, 100
}

// succeeded sets the status of a rollout that ended.
func succeeded(ro *v1alpha1.Rollout) {
	running(ro)
	ro.Status.Phase, ro.Status.Step, ro.Status.StepIndex, ro.Status.Weight = "Succeeded", "3/3", 2, 100
}

func toUnstructured(t testing.TB, ro *v1alpha1.Rollout) *unstructured.Unstructured {
	t.Helper()
	ro = ro.DeepCopy()
	ro.APIVersion, ro.Kind = v1alpha1.SchemeGroupVersion.String(), "Rollout"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// rolloutRequest is the review of a Rollout's op; old is the stored
// object of an update.
func rolloutRequest(t testing.TB, op admissionv1.Operation, ro, old *v1alpha1.Rollout) *admissionv1.AdmissionRequest {
	t.Helper()
	raw := func(ro *v1alpha1.Rollout) []byte {
		b, err := json.Marshal(toUnstructured(t, ro))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	req := &admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: v1alpha1.GroupName, Version: "v1alpha1", Kind: "Rollout"},
		Resource:  metav1.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: "rollouts"},
		Namespace: ro.Namespace, Name: ro.Name, Operation: op,
	}
	switch op {
	case admissionv1.Delete:
		req.OldObject = runtime.RawExtension{Raw: raw(ro)}
	default:
		req.Object = runtime.RawExtension{Raw: raw(ro)}
	}
	if old != nil {
		req.OldObject = runtime.RawExtension{Raw: raw(old)}
	}
	return req
}

// nopConsumer takes the source's rebuilds and does nothing with them.
type nopConsumer struct{}

func (nopConsumer) Consume(context.Context, *controller.Snapshot) error { return nil }

// startOnCluster runs, on a k8sfake cluster holding the echo mesh, the
// stable Deployment and rollouts, the control plane's Source (the
// validator's caches) and the webhooks as the leader, with the Rollout
// reads on the cluster's clients, and returns them once they serve.
func startOnCluster(t *testing.T, mod func(*webhook.Options), rollouts ...*v1alpha1.Rollout) *harness {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	core := append(webhookConfigs(), kubeNamespace("echo", map[string]string{"mesh": "echo"}), echoDeployment())
	c := k8sfake.New(t, rolloutMeshYAML, core...)
	for _, ro := range rollouts {
		c.Create(t, toUnstructured(t, ro))
	}
	src := controller.NewSourceFor(c.Kube, c.Dyn, nopConsumer{}, controller.Options{Logger: testLogger(t)})
	opts := webhook.Options{Addr: "127.0.0.1:0", Namespace: cpNamespace, Settle: -1, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	w, err := webhook.New(c.Kube, c.Dyn, src, src.Namespaces(), opts)
	if err != nil {
		t.Fatalf("webhook.New: %v", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := src.Run(runCtx); err != nil {
			t.Errorf("source: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := w.Run(runCtx); err != nil {
			t.Errorf("webhooks: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The source's watches and the Secret's.
	c.WaitWatches(ctx, t, k8sfake.WatchesPerSource+1)
	wg.Add(1)
	go func() { defer wg.Done(); w.Lead(runCtx) }()
	pollUntil(ctx, t, "certificate served and caches synced", func() bool {
		_, err := src.AppMeshObjects()
		return w.Ready() && src.Ready() && err == nil
	})
	h := &harness{kube: c.Kube, w: w}
	h.client = tlsClient(t, getSecret(t, c.Kube).Data[webhook.KeyCACert])
	return h
}

func kubeNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// wantRefused checks a 422 whose message carries each of want and whose
// causes name fields.
func wantRefused(t *testing.T, resp *admissionv1.AdmissionResponse, fields []string, want ...string) {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("admitted (warnings %q), want refused with %q", resp.Warnings, want)
	}
	if resp.Result == nil || resp.Result.Code != 422 || resp.Result.Reason != metav1.StatusReasonInvalid {
		t.Fatalf("result %+v, want 422 Invalid", resp.Result)
	}
	for _, w := range want {
		if !strings.Contains(resp.Result.Message, w) {
			t.Errorf("message\n  %s\nwant it to contain\n  %s", resp.Result.Message, w)
		}
	}
	d := resp.Result.Details
	if d == nil || d.Group != v1alpha1.GroupName || d.Kind != "Rollout" {
		t.Fatalf("details %+v, want the Rollout's", d)
	}
	var got []string
	for _, c := range d.Causes {
		got = append(got, c.Field)
	}
	if strings.Join(got, " ") != strings.Join(fields, " ") {
		t.Errorf("causes on %q, want %q", got, fields)
	}
}

func wantAdmitted(t *testing.T, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	if !resp.Allowed || len(resp.Warnings) > 0 {
		t.Errorf("allowed %v, %+v, warnings %q; want admitted without warnings", resp.Allowed, resp.Result, resp.Warnings)
	}
}

func TestRolloutAdmitsAValidRollout(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	// Earlier rollouts of the same route that ended do not hold it.
	h := startOnCluster(t, nil,
		exampleRollout(t, func(ro *v1alpha1.Rollout) { ro.Name = "echo-server-0-9"; ro.Spec.Version = "0.9"; succeeded(ro) }),
		exampleRollout(t, func(ro *v1alpha1.Rollout) { ro.Name = "echo-server-bad"; running(ro); ro.Status.Phase = "RolledBack" }),
	)
	for name, ro := range map[string]*v1alpha1.Rollout{
		"the example": exampleRollout(t, nil),
		"route and stable Deployment found by the engine": exampleRollout(t, func(ro *v1alpha1.Rollout) {
			ro.Spec.Route, ro.Spec.StableDeployment = "", ""
		}),
		"a template patch": exampleRollout(t, func(ro *v1alpha1.Rollout) {
			ro.Spec.Images = nil
			ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"echo-server","env":[{"name":"X","value":"1"}]}]}}`)}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			wantAdmitted(t, review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Create, ro, nil)))
		})
	}
	// Deletes are not validated.
	wantAdmitted(t, review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Delete, exampleRollout(t, running), nil)))
}

func TestRolloutRefusals(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	// echo-server is baking 1.0 on echo-server-route; echo-admin is
	// retiring 0.9 on echo-server-admin.
	h := startOnCluster(t, nil,
		exampleRollout(t, running),
		exampleRollout(t, func(ro *v1alpha1.Rollout) {
			ro.Name, ro.Spec.Route = "echo-admin", "echo-server-admin"
			retiring(ro)
		}),
	)
	second := func(mod func(*v1alpha1.Rollout)) *v1alpha1.Rollout {
		return exampleRollout(t, func(ro *v1alpha1.Rollout) {
			ro.Name, ro.Spec.Route, ro.Spec.Version = "echo-server-health", "echo-server-health", "1.1"
			if mod != nil {
				mod(ro)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		ro     *v1alpha1.Rollout
		fields []string
		want   []string
	}{
		{
			name:   "router missing",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.VirtualRouterRef.Name = "echo-srv" }),
			fields: []string{"spec.virtualRouterRef.name"},
			want:   []string{`Rollout "echo/echo-server-health" refused by gmesh: spec.virtualRouterRef.name: virtualrouter echo/echo-srv not found`},
		},
		{
			name:   "route missing",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.Route = "echo-route" }),
			fields: []string{"spec.route"},
			want:   []string{`spec.route: virtualrouter echo/echo-server has no route "echo-route"; its routes: echo-server-route, echo-server-admin, echo-server-health`},
		},
		{
			name:   "stable Deployment missing",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.StableDeployment = "echo-server-0-8" }),
			fields: []string{"spec.stableDeployment"},
			want:   []string{`spec.stableDeployment: deployment "echo-server-0-8" not found in namespace echo`},
		},
		{
			name: "container missing",
			ro: second(func(ro *v1alpha1.Rollout) {
				ro.Spec.Images = []v1alpha1.ContainerImage{{Container: "metrics", Image: "m:2"}, {Container: "echo", Image: "e:2"}}
			}),
			fields: []string{"spec.images[1].container"},
			want:   []string{`spec.images[1].container: deployment echo/echo-server-0-9 has no container "echo"; its containers: echo-server, metrics`},
		},
		{
			name:   "a second rollout of a route being shifted",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.Route = "echo-server-route" }),
			fields: []string{"spec.route"},
			want: []string{`spec.route: route echo-server-route of virtualrouter echo/echo-server is already being shifted by rollout echo/echo-server (Baking, step 1/3, version 1.0): ` +
				`wait for it to end, or abort it (kubectl -n echo patch rollout echo-server --type merge -p '{"spec":{"abort":true}}')`},
		},
		{
			name:   "a second rollout of a route whose rollout is too late to abort",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.Route = "echo-server-admin" }),
			fields: []string{"spec.route"},
			want: []string{`spec.route: route echo-server-admin of virtualrouter echo/echo-server is already being shifted by rollout echo/echo-admin (Retiring, step 3/3, version 1.0): ` +
				`wait for it to end (too late to abort the rollout of echo-admin: version 1.0 already takes all traffic and version 0.9 is being retired)`},
		},
		{
			name:   "a rollout of a route not named, on a router with rollouts running",
			ro:     second(func(ro *v1alpha1.Rollout) { ro.Spec.Route = "" }),
			fields: []string{"spec.virtualRouterRef.name", "spec.virtualRouterRef.name"},
			want: []string{
				`spec.virtualRouterRef.name: rollout echo/echo-server (Baking, step 1/3, version 1.0) is already shifting a route of virtualrouter echo/echo-server, maybe the same (set spec.route to tell them apart)`,
				`rollout echo/echo-admin (Retiring, step 3/3, version 1.0)`,
			},
		},
		{
			name: "every problem at once",
			ro: second(func(ro *v1alpha1.Rollout) {
				ro.Spec.Route, ro.Spec.StableDeployment = "echo-server-routes", "echo-server-0-8"
			}),
			fields: []string{"spec.route", "spec.stableDeployment"},
			want:   []string{`spec.route: virtualrouter echo/echo-server has no route "echo-server-routes"`, `; spec.stableDeployment: deployment "echo-server-0-8" not found`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantRefused(t, review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Create, tc.ro, nil)), tc.fields, tc.want...)
		})
	}
	// The route no rollout shifts is free.
	wantAdmitted(t, review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Create, second(nil), nil)))
}

func TestRolloutNamingAMissingDeploymentIsRefused(t *testing.T) {
	// Issue 13: "a Rollout naming a Deployment that does not exist is
	// refused at admission". The example Rollout on a cluster that has
	// the mesh but not the Deployment.
	ctx := testContext(t, 60*time.Second)
	h := startOnCluster(t, nil)
	if err := h.kube.AppsV1().Deployments("echo").Delete(ctx, "echo-server-0-9", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Create, exampleRollout(t, nil), nil))
	wantRefused(t, resp, []string{"spec.stableDeployment"},
		`Rollout "echo/echo-server" refused by gmesh: spec.stableDeployment: deployment "echo-server-0-9" not found in namespace echo`)
}

func TestRolloutUpdates(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	h := startOnCluster(t, nil)
	inProgress := "rollout echo/echo-server is in progress (Baking, step 1/3, version 1.0): change its target once it ends, or abort it (spec.abort: true)"
	for _, tc := range []struct {
		name     string
		old, new func(*v1alpha1.Rollout)
		fields   []string // nil: admitted
		want     string
	}{
		{
			name: "new version of a running rollout",
			old:  running, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.1" },
			fields: []string{"spec.version"},
			want:   `Rollout "echo/echo-server" refused by gmesh: spec.version: ` + inProgress,
		},
		{
			name: "new images and replicas of a running rollout",
			old:  running,
			new: func(ro *v1alpha1.Rollout) {
				ro.Spec.Images[0].Image = "gmesh.local/echo-server:1.0.1"
				n := int32(3)
				ro.Spec.Replicas = &n
			},
			fields: []string{"spec.images", "spec.replicas"},
			want:   "spec.images, spec.replicas: " + inProgress,
		},
		{
			name: "every target field of a running rollout",
			old:  running,
			new: func(ro *v1alpha1.Rollout) {
				ro.Spec.VirtualRouterRef.Name, ro.Spec.Route, ro.Spec.StableDeployment = "r", "x", "d"
				ro.Spec.Images = nil
				ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: []byte(`{"metadata":{"labels":{"a":"b"}}}`)}
			},
			fields: []string{"spec.virtualRouterRef.name", "spec.route", "spec.stableDeployment", "spec.images", "spec.templatePatch"},
			want:   "spec.virtualRouterRef.name, spec.route, spec.stableDeployment, spec.images, spec.templatePatch: rollout echo/echo-server is in progress",
		},
		{
			name: "new version of a retiring rollout",
			old:  retiring, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.1" },
			fields: []string{"spec.version"},
			want: "spec.version: rollout echo/echo-server is in progress (Retiring, step 3/3, version 1.0): change its target once it ends " +
				"(too late to abort the rollout of echo-server: version 1.0 already takes all traffic and version 0.9 is being retired)",
		},
		{
			name:   "new version of a rollout being aborted",
			old:    func(ro *v1alpha1.Rollout) { running(ro); ro.Spec.Abort = true },
			new:    func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.1" },
			fields: []string{"spec.version"},
			want:   "spec.version: rollout echo/echo-server is in progress (Baking, step 1/3, version 1.0): change its target once it ends (it is being aborted)",
		},
		{name: "pause", old: running, new: func(ro *v1alpha1.Rollout) { ro.Spec.Paused = true }},
		{name: "resume", old: func(ro *v1alpha1.Rollout) { running(ro); ro.Spec.Paused = true }, new: func(ro *v1alpha1.Rollout) { ro.Spec.Paused = false }},
		{name: "promote", old: running, new: func(ro *v1alpha1.Rollout) { ro.Spec.Promote = true }},
		{name: "abort", old: running, new: func(ro *v1alpha1.Rollout) { ro.Spec.Abort = true }},
		{name: "status", old: running, new: func(ro *v1alpha1.Rollout) { ro.Status.Phase = "Shifting"; ro.Status.Weight = 50 }},
		{name: "labels", old: running, new: func(ro *v1alpha1.Rollout) { ro.Labels = map[string]string{"team": "echo"} }},
		{name: "options other than the target", old: running, new: func(ro *v1alpha1.Rollout) {
			ro.Spec.Interval = &metav1.Duration{Duration: time.Minute}
			ro.Spec.OnStalledClient = v1alpha1.StalledProceed
		}},
		{
			name: "the route the rollout resolved, set",
			old:  func(ro *v1alpha1.Rollout) { running(ro); ro.Spec.Route = "" },
			new:  func(ro *v1alpha1.Rollout) { ro.Spec.Route = "echo-server-route" },
		},
		{
			name: "images reordered",
			old: func(ro *v1alpha1.Rollout) {
				running(ro)
				ro.Spec.Images = append(ro.Spec.Images, v1alpha1.ContainerImage{Container: "metrics", Image: "gmesh.local/metrics:2"})
			},
			new: func(ro *v1alpha1.Rollout) {
				ro.Spec.Images = []v1alpha1.ContainerImage{{Container: "metrics", Image: "gmesh.local/metrics:2"}, {Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}}
			},
		},
		{
			name: "the same template patch, spelt otherwise",
			old: func(ro *v1alpha1.Rollout) {
				running(ro)
				ro.Spec.Images = nil
				ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: []byte(`{"metadata":{"labels":{"a":"b","c":"d"}}}`)}
			},
			new: func(ro *v1alpha1.Rollout) {
				ro.Spec.Images = nil
				ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: []byte(`{"metadata": {"labels": {"c": "d", "a": "b"}}}`)}
			},
		},
		{name: "new version of a finished rollout", old: succeeded, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.1" }},
		{name: "new version of a rolled back rollout", old: func(ro *v1alpha1.Rollout) { running(ro); ro.Status.Phase = "RolledBack" }, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.0.1" }},
		{name: "new version of a rollout not begun yet", old: func(*v1alpha1.Rollout) {}, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version = "1.1" }},
		{
			name: "a finished rollout's new target is checked as a new rollout",
			old:  succeeded, new: func(ro *v1alpha1.Rollout) { ro.Spec.Version, ro.Spec.StableDeployment = "1.1", "echo-server-0-8" },
			fields: []string{"spec.stableDeployment"},
			want:   `spec.stableDeployment: deployment "echo-server-0-8" not found in namespace echo`,
		},
		{
			name: "a running rollout being deleted",
			old:  running,
			new: func(ro *v1alpha1.Rollout) {
				now := metav1.Now()
				ro.DeletionTimestamp = &now
				ro.Spec.Version = "1.1"
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := exampleRollout(t, tc.old)
			cur := old.DeepCopy()
			tc.new(cur)
			resp := review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Update, cur, old))
			if tc.fields == nil {
				wantAdmitted(t, resp)
				return
			}
			wantRefused(t, resp, tc.fields, tc.want)
		})
	}
	t.Run("status subresource", func(t *testing.T) {
		old := exampleRollout(t, running)
		cur := old.DeepCopy()
		cur.Spec.Version = "2.0"
		req := rolloutRequest(t, admissionv1.Update, cur, old)
		req.SubResource = "status"
		wantAdmitted(t, review(ctx, t, h.client, h.url(webhook.PathValidate), req))
	})
}

func TestRolloutWarnOnly(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	h := startOnCluster(t, func(o *webhook.Options) { o.WarnOnly = true }, exampleRollout(t, running))
	// A second rollout of the route, from a Deployment that is not there.
	ro := exampleRollout(t, func(ro *v1alpha1.Rollout) { ro.Name, ro.Spec.StableDeployment = "echo-server-2", "echo-server-0-8" })
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Create, ro, nil))
	if !resp.Allowed || len(resp.Warnings) != 1 ||
		!strings.Contains(resp.Warnings[0], `spec.stableDeployment: deployment "echo-server-0-8" not found in namespace echo`) ||
		!strings.Contains(resp.Warnings[0], `spec.route: route echo-server-route of virtualrouter echo/echo-server is already being shifted by rollout echo/echo-server`) {
		t.Errorf("create: allowed %v, warnings %q; want admitted with one warning naming both problems", resp.Allowed, resp.Warnings)
	}
	// A new target for the running one.
	old := exampleRollout(t, running)
	cur := old.DeepCopy()
	cur.Spec.Version = "1.1"
	resp = review(ctx, t, h.client, h.url(webhook.PathValidate), rolloutRequest(t, admissionv1.Update, cur, old))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "spec.version: rollout echo/echo-server is in progress (Baking, step 1/3, version 1.0)") {
		t.Errorf("update: allowed %v, warnings %q; want admitted with the refusal as a warning", resp.Allowed, resp.Warnings)
	}
}

// fakeReads are Rollout reads that fail or count.
type fakeReads struct {
	deployments map[string]*appsv1.Deployment
	rollouts    []v1alpha1.Rollout
	err         error
	calls       int
}

func (f *fakeReads) Deployment(_ context.Context, ns, name string) (*appsv1.Deployment, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if d, ok := f.deployments[ns+"/"+name]; ok {
		return d, nil
	}
	return nil, apierrors.NewNotFound(appsv1.Resource("deployments"), name)
}

func (f *fakeReads) Rollouts(context.Context, string) ([]v1alpha1.Rollout, error) {
	f.calls++
	return f.rollouts, f.err
}

func TestRolloutValidationWaitsForTheCaches(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	clk := clock.NewFake(time.Now())
	before := decodeInput(t, without(rolloutMeshYAML, "kind: VirtualRouter"))
	after := decodeInput(t, rolloutMeshYAML)
	objs := &countingObjects{read: func(n int) *staticObjects {
		if n == 1 {
			return &staticObjects{in: before}
		}
		return &staticObjects{in: after}
	}}
	reads := &fakeReads{deployments: map[string]*appsv1.Deployment{"echo/echo-server-0-9": echoDeployment()}}
	v := webhook.NewValidator(objs, webhook.ValidatorOptions{Settle: time.Second, Reads: reads, Clock: clk, Logger: testLogger(t)})
	done := make(chan *admissionv1.AdmissionResponse, 1)
	go func() { done <- v.Review(ctx, rolloutRequest(t, admissionv1.Create, exampleRollout(t, nil), nil)) }()
	pollUntil(ctx, t, "validator waiting", func() bool { return clk.Timers() == 1 })
	clk.Advance(100 * time.Millisecond)
	select {
	case resp := <-done:
		if !resp.Allowed {
			t.Errorf("refused although the router reached the cache within the settle time: %+v", resp.Result)
		}
	case <-ctx.Done():
		t.Fatal("no answer")
	}
	if objs.n != 2 || reads.calls != 2 {
		t.Errorf("read the caches %d times and the API %d times, want 2 and 2 (the API once: it does not lag)", objs.n, reads.calls)
	}
	// The API server unreachable: retry, not a refusal.
	reads.err = errors.New("connection refused")
	resp := v.Review(ctx, rolloutRequest(t, admissionv1.Create, exampleRollout(t, nil), nil))
	if resp.Allowed || resp.Result.Code != 503 || !strings.Contains(resp.Result.Message, "retry") {
		t.Errorf("API unreachable: allowed %v, %+v; want 503 asking to retry", resp.Allowed, resp.Result)
	}
	// Without reads, Rollouts are admitted with a warning.
	v = webhook.NewValidator(&staticObjects{in: after}, webhook.ValidatorOptions{Settle: -1, Logger: testLogger(t)})
	resp = v.Review(ctx, rolloutRequest(t, admissionv1.Create, exampleRollout(t, nil), nil))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "admitted unchecked") {
		t.Errorf("no reads: allowed %v, warnings %q; want admitted with a warning", resp.Allowed, resp.Warnings)
	}
}
