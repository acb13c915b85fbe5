package webhook_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

// meshYAML is a valid mesh with one of each kind, in namespace echo.
const meshYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: echo, labels: {mesh: echo, gateway: ingress}}
---
apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: echo}
spec:
  namespaceSelector: {matchLabels: {mesh: echo}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server-1-0, namespace: echo}
spec:
  podSelector: {matchLabels: {app: echo-server, version: "1.0"}}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
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
    - name: echo
      grpcRoute:
        match: {serviceName: proto.echo.EchoService}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 50
            - virtualNodeRef: {name: echo-server-1-0}
              weight: 50
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: echo-server, namespace: echo}
spec:
  awsName: echo-server.echo.local
  provider:
    virtualRouter:
      virtualRouterRef: {name: echo-server}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: ingress, namespace: echo}
spec:
  namespaceSelector: {matchLabels: {gateway: ingress}}
  podSelector: {matchLabels: {app: ingress}}
  listeners:
    - portMapping: {port: 8088, protocol: grpc}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: echo, namespace: echo}
spec:
  grpcRoute:
    match: {serviceName: proto.echo.EchoService}
    action:
      target:
        virtualService:
          virtualServiceRef: {name: echo-server}
`

// objectRequest is the review of one App Mesh manifest.
func objectRequest(t testing.TB, op admissionv1.Operation, manifest string) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatalf("%s: %v", manifest, err)
	}
	var meta struct {
		Kind     string            `json:"kind"`
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "appmesh.k8s.aws", Version: "v1beta2", Kind: meta.Kind},
		Resource:  metav1.GroupVersionResource{Group: "appmesh.k8s.aws", Version: "v1beta2", Resource: strings.ToLower(meta.Kind) + "s"},
		Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name, Operation: op,
	}
	if op == admissionv1.Delete {
		req.OldObject = runtime.RawExtension{Raw: raw}
	} else {
		req.Object = runtime.RawExtension{Raw: raw}
	}
	return req
}

// docs splits meshYAML into its App Mesh documents.
func docs(manifests string) []string {
	var out []string
	for _, d := range strings.Split(manifests, "\n---\n") {
		if strings.Contains(d, "appmesh.k8s.aws") {
			out = append(out, d)
		}
	}
	return out
}

// without returns manifests without the document that contains marker.
func without(manifests, marker string) string {
	var keep []string
	for _, d := range strings.Split(manifests, "\n---\n") {
		if !strings.Contains(d, marker) {
			keep = append(keep, d)
		}
	}
	return strings.Join(keep, "\n---\n")
}

func TestValidationAdmitsAValidSet(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	objs := &staticObjects{in: decodeInput(t, meshYAML)}
	h := startWebhooks(t, objs, true, nil)
	for _, d := range docs(meshYAML) {
		for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
			req := objectRequest(t, op, d)
			t.Run(string(op)+" "+req.Kind.Kind+" "+req.Name, func(t *testing.T) {
				if op == admissionv1.Update {
					req.OldObject = req.Object
				}
				resp := review(ctx, t, h.client, h.url(webhook.PathValidate), req)
				if !resp.Allowed || len(resp.Warnings) > 0 {
					t.Errorf("allowed %v, %+v, warnings %q; want allowed without warnings", resp.Allowed, resp.Result, resp.Warnings)
				}
			})
		}
	}
}

func TestValidationRefusesDanglingReferences(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	objs := &staticObjects{in: decodeInput(t, meshYAML)}
	h := startWebhooks(t, objs, true, nil)
	for _, tc := range []struct {
		name, manifest string
		field, msg     string
	}{
		{
			name: "virtual service's router missing",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: other, namespace: echo}
spec:
  provider:
    virtualRouter:
      virtualRouterRef: {name: no-such-router}`,
			field: "spec.provider.virtualRouter.virtualRouterRef", msg: "virtualrouter echo/no-such-router not found",
		},
		{
			name: "virtual service's node missing",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: other, namespace: echo}
spec:
  provider:
    virtualNode:
      virtualNodeRef: {name: echo-server-2-0}`,
			field: "spec.provider.virtualNode.virtualNodeRef", msg: "virtualnode echo/echo-server-2-0 not found",
		},
		{
			name: "route's second target missing",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: echo-server, namespace: echo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
  routes:
    - name: echo
      grpcRoute:
        match: {serviceName: proto.echo.EchoService}
        action:
          weightedTargets:
            - virtualNodeRef: {name: echo-server-0-9}
              weight: 50
            - virtualNodeRef: {name: echo-server-1-1}
              weight: 50`,
			field: "spec.routes[0].grpcRoute.action.weightedTargets[1].virtualNodeRef", msg: "virtualnode echo/echo-server-1-1 not found",
		},
		{
			name: "gateway route's target missing",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: other, namespace: echo}
spec:
  grpcRoute:
    match: {serviceName: proto.echo.Other}
    action:
      target:
        virtualService:
          virtualServiceRef: {name: other}`,
			field: "spec.grpcRoute.action.target.virtualService.virtualServiceRef", msg: "virtualservice echo/other not found",
		},
		{
			name: "gateway route's gateway missing",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: other, namespace: echo}
spec:
  virtualGatewayRef: {name: egress}
  grpcRoute:
    match: {serviceName: proto.echo.Other}
    action:
      target:
        virtualService:
          virtualServiceRef: {name: echo-server}`,
			field: "spec.virtualGatewayRef", msg: "virtualgateway echo/egress not found",
		},
		{
			name: "namespace in no mesh",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: stray, namespace: outside}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}`,
			field: "metadata.namespace", msg: `no mesh's namespaceSelector selects namespace "outside"`,
		},
		{
			name: "meshRef to a mesh that is not there",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: stray, namespace: echo}
spec:
  meshRef: {name: prod}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}`,
			field: "spec.meshRef.name", msg: `mesh "prod" not found`,
		},
		{
			name: "backend in another mesh by ARN",
			manifest: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: client, namespace: echo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
  backends:
    - virtualService:
        virtualServiceARN: arn:aws:appmesh:eu-west-1:111122223333:mesh/prod/virtualService/echo-server.echo.local`,
			field: "spec.backends[0].virtualService.virtualServiceARN", msg: `"arn:aws:appmesh:eu-west-1:111122223333:mesh/prod/virtualService/echo-server.echo.local" is in mesh "prod", not this object's mesh "echo"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Create, tc.manifest))
			if resp.Allowed {
				t.Fatalf("admitted, want refused on %s", tc.field)
			}
			if resp.Result == nil || resp.Result.Code != 422 || resp.Result.Reason != metav1.StatusReasonInvalid {
				t.Errorf("result %+v, want 422 Invalid", resp.Result)
			}
			want := tc.field + ": " + tc.msg
			if !strings.Contains(resp.Result.Message, want) {
				t.Errorf("message %q, want it to contain %q", resp.Result.Message, want)
			}
			if d := resp.Result.Details; d == nil || len(d.Causes) == 0 || d.Causes[0].Field != tc.field {
				t.Errorf("details %+v, want a cause on field %s", d, tc.field)
			}
		})
	}
}

func TestValidationUpdateRefusesOnlyWhatItBrings(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	// The router's node 1.0 is gone: the router already dangles.
	objs := &staticObjects{in: decodeInput(t, without(meshYAML, "name: echo-server-1-0,"))}
	h := startWebhooks(t, objs, true, nil)
	router := ""
	for _, d := range docs(meshYAML) {
		if strings.Contains(d, "kind: VirtualRouter") {
			router = d
		}
	}
	req := objectRequest(t, admissionv1.Update, router+"\n  # relabelled")
	req.OldObject = req.Object
	if resp := review(ctx, t, h.client, h.url(webhook.PathValidate), req); !resp.Allowed {
		t.Errorf("an update that changes no reference of an object that already dangles was refused: %+v", resp.Result)
	}
	// Pointing the other target at a missing node is refused.
	req = objectRequest(t, admissionv1.Update, strings.Replace(router, "echo-server-0-9}", "echo-server-0-8}", 1))
	old := objectRequest(t, admissionv1.Update, router)
	req.OldObject = old.Object
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), req)
	if resp.Allowed || !strings.Contains(resp.Result.Message, "weightedTargets[0].virtualNodeRef: virtualnode echo/echo-server-0-8 not found") {
		t.Errorf("an update that breaks a reference: allowed %v, %+v; want refused on weightedTargets[0]", resp.Allowed, resp.Result)
	}
	if strings.Contains(resp.Result.Message, "weightedTargets[1]") {
		t.Errorf("the refusal names the problem the object already had: %q", resp.Result.Message)
	}
}

func TestValidationDeleteWarns(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	objs := &staticObjects{in: decodeInput(t, meshYAML)}
	h := startWebhooks(t, objs, true, nil)
	var node string
	for _, d := range docs(meshYAML) {
		if strings.Contains(d, "name: echo-server-1-0,") {
			node = d
		}
	}
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Delete, node))
	if !resp.Allowed {
		t.Fatalf("delete refused: %+v", resp.Result)
	}
	want := "virtualrouter echo/echo-server: spec.routes[0].grpcRoute.action.weightedTargets[1].virtualNodeRef: virtualnode echo/echo-server-1-0 not found"
	if len(resp.Warnings) != 1 || resp.Warnings[0] != want {
		t.Errorf("warnings %q, want [%q]", resp.Warnings, want)
	}
	// Deleting the Mesh leaves every object of it without one.
	resp = review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Delete, docs(meshYAML)[0]))
	if !resp.Allowed || len(resp.Warnings) != 6 {
		t.Errorf("deleting the mesh: allowed %v, %d warnings %q; want allowed with 6", resp.Allowed, len(resp.Warnings), resp.Warnings)
	}
}

func TestValidationWarnOnly(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	objs := &staticObjects{in: decodeInput(t, meshYAML)}
	h := startWebhooks(t, objs, true, func(o *webhook.Options) { o.WarnOnly = true })
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Create, `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: other, namespace: echo}
spec:
  provider:
    virtualRouter:
      virtualRouterRef: {name: later}`))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "virtualrouter echo/later not found") {
		t.Errorf("allowed %v, warnings %q; want allowed, warned", resp.Allowed, resp.Warnings)
	}
}

func TestValidationNotSynced(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	objs := &staticObjects{err: errors.New("informers not synced")}
	h := startWebhooks(t, objs, true, nil)
	resp := review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Create, docs(meshYAML)[1]))
	if resp.Allowed || resp.Result.Code != 503 || !strings.Contains(resp.Result.Message, "retry") {
		t.Errorf("allowed %v, %+v; want 503 asking to retry", resp.Allowed, resp.Result)
	}
	// Deletes are never refused.
	if resp := review(ctx, t, h.client, h.url(webhook.PathValidate), objectRequest(t, admissionv1.Delete, docs(meshYAML)[1])); !resp.Allowed {
		t.Errorf("delete refused while not synced: %+v", resp.Result)
	}
}

func TestValidationWaitsForTheCaches(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	clk := clock.NewFake(time.Now())
	before := decodeInput(t, without(meshYAML, "kind: VirtualRouter"))
	after := decodeInput(t, meshYAML)
	objs := &countingObjects{}
	objs.read = func(n int) *staticObjects {
		if n == 1 {
			return &staticObjects{in: before}
		}
		return &staticObjects{in: after}
	}
	v := webhook.NewValidator(objs, webhook.ValidatorOptions{Settle: time.Second, Clock: clk, Logger: testLogger(t)})
	var vs string
	for _, d := range docs(meshYAML) {
		if strings.Contains(d, "kind: VirtualService") {
			vs = d
		}
	}
	done := make(chan *admissionv1.AdmissionResponse, 1)
	go func() { done <- v.Review(ctx, objectRequest(t, admissionv1.Create, vs)) }()
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
	if objs.n != 2 {
		t.Errorf("read the caches %d times, want 2", objs.n)
	}
}

type countingObjects struct {
	read func(n int) *staticObjects
	n    int
}

func (c *countingObjects) AppMeshObjects() (appmesh.Input, error) {
	c.n++
	s := c.read(c.n)
	return s.in, s.err
}
