package rollouts

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/crdtest"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// echoRouter is the echo example's VirtualRouter echo-server.
func echoRouter(t *testing.T) *v1beta2.VirtualRouter {
	t.Helper()
	data, err := os.ReadFile("../../../examples/kubernetes/echo/echo-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if !bytes.Contains(doc, []byte("kind: VirtualRouter")) {
			continue
		}
		var vr v1beta2.VirtualRouter
		if err := yaml.UnmarshalStrict(doc, &vr); err != nil {
			t.Fatal(err)
		}
		return &vr
	}
	t.Fatal("no VirtualRouter in the echo example")
	return nil
}

// TestRouteTargetsSteps writes a rollout's route changes (a weight-0
// target, the steps, the new version alone) into the echo example's
// router: each is read back as written, leaves the rest of the router as
// it was, and is admitted by the VirtualRouter CRD.
func TestRouteTargetsSteps(t *testing.T) {
	crd, err := crdtest.Load("../../../deploy/kubernetes/crds/appmesh.k8s.aws_virtualrouters.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vr := echoRouter(t)
	got, err := RouteTargets(vr, "echo-server-route")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]mesh.WeightedTarget{{VirtualNode: "echo-server-0-9", Weight: 100}}, got); diff != "" {
		t.Fatalf("targets (-want +got):\n%s", diff)
	}
	steps := [][]mesh.WeightedTarget{
		{{VirtualNode: "echo-server-0-9", Weight: 100}, {VirtualNode: "echo-server-1-0", Weight: 0}},
		{{VirtualNode: "echo-server-0-9", Weight: 90}, {VirtualNode: "echo-server-1-0", Weight: 10}},
		{{VirtualNode: "echo-server-0-9", Weight: 50}, {VirtualNode: "echo-server-1-0", Weight: 50, Port: 50051}},
		{{VirtualNode: "echo-server-1-0", Weight: 100}},
	}
	cur := vr
	for _, want := range steps {
		next, err := SetRouteTargets(cur, "echo-server-route", want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := RouteTargets(next, "echo-server-route")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("targets read back (-want +got):\n%s", diff)
		}
		// Nothing but the targets changed, and the input is untouched.
		rest := next.DeepCopy()
		rest.Spec.Routes[0].GRPCRoute.Action.WeightedTargets = vr.Spec.Routes[0].GRPCRoute.Action.WeightedTargets
		if diff := cmp.Diff(vr, rest); diff != "" {
			t.Errorf("the rest of the router changed (-want +got):\n%s", diff)
		}
		if cur.Spec.Routes[0].GRPCRoute.Action.WeightedTargets[0].VirtualNodeRef.Name != "echo-server-0-9" {
			t.Error("SetRouteTargets changed its input")
		}
		b, err := json.Marshal(next)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any // integers as int64, as the API server decodes
		if err := utiljson.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		obj["apiVersion"], obj["kind"] = "appmesh.k8s.aws/v1beta2", "VirtualRouter"
		msgs, err := crd.Admit(obj, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			t.Errorf("the API server would refuse the router at %v: %q", want, msgs)
		}
		cur = next
	}
}

func TestRouteTargetsRefusals(t *testing.T) {
	ns, arn := "other", "arn:aws:appmesh:eu-west-1:111122223333:mesh/echo/virtualNode/x"
	tests := []struct {
		name  string
		edit  func(vr *v1beta2.VirtualRouter)
		route string
		want  string
		code  string
	}{
		{name: "no such route", route: "nope", want: "virtual router echo/echo-server has no route nope", code: mesh.ENotFound},
		{name: "target in another namespace", route: "echo-server-route", code: mesh.EInvalid,
			edit: func(vr *v1beta2.VirtualRouter) {
				vr.Spec.Routes[0].GRPCRoute.Action.WeightedTargets[0].VirtualNodeRef.Namespace = &ns
			},
			want: "spec.routes[0].grpcRoute.action.weightedTargets[0].virtualNodeRef.namespace: route echo-server-route of virtual router echo-server targets a virtual node in namespace other"},
		{name: "target by ARN", route: "echo-server-route", code: mesh.EInvalid,
			edit: func(vr *v1beta2.VirtualRouter) {
				vr.Spec.Routes[0].GRPCRoute.Action.WeightedTargets[0] = v1beta2.WeightedTarget{VirtualNodeARN: &arn, Weight: 100}
			},
			want: "targets a virtual node by ARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vr := echoRouter(t)
			if tt.edit != nil {
				tt.edit(vr)
			}
			_, err := SetRouteTargets(vr, tt.route, []mesh.WeightedTarget{{VirtualNode: "x", Weight: 100}})
			if err == nil || !strings.Contains(err.Error(), tt.want) || mesh.ErrorCode(err) != tt.code {
				t.Errorf("SetRouteTargets: %v, want %s %q", err, tt.code, tt.want)
			}
		})
	}
}
