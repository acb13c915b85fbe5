package appmesh

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func decodeFile(t *testing.T, file string, extra ...string) Input {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		data = append(data, []byte("\n---\n"+e)...)
	}
	var in Input
	if err := Decode(file, data, &in); err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	return in
}

// howtoPods are the Ready pods of the howto's nodes.
var howtoPods = map[types.NamespacedName][]string{
	{Namespace: "howto-k8s-grpc", Name: "front"}:             {"10.244.0.130"},
	{Namespace: "howto-k8s-grpc", Name: "color-server-blue"}: {"10.244.0.131", "10.244.0.132"},
	{Namespace: "howto-k8s-grpc", Name: "color-server-red"}:  {"10.244.0.133"},
}

// summary is a conversion's outcome as the golden file holds it.
type summary struct {
	Object     string                    `json:"object"`
	Mesh       string                    `json:"mesh,omitempty"`
	Name       string                    `json:"name,omitempty"`
	Resources  []*mesh.Resource          `json:"resources,omitempty"`
	Endpoints  []*mesh.Endpoint          `json:"endpoints,omitempty"`
	Unhonoured []v1beta2.UnhonouredField `json:"unhonoured,omitempty"`
	Errors     []string                  `json:"errors,omitempty"`
}

func summarize(rs Results) []summary {
	var out []summary
	for _, r := range rs {
		s := summary{Object: r.Object.String(), Mesh: r.Mesh, Name: r.Name, Resources: r.Resources, Endpoints: r.Endpoints, Unhonoured: r.Unhonoured}
		for _, e := range r.Errors {
			s.Errors = append(s.Errors, e.Error())
		}
		out = append(out, s)
	}
	return out
}

func TestHowtoGRPCConverts(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml")
	in.ReadyPodIPs = howtoPods
	rs := Convert(in)
	if errs := rs.Errors(); len(errs) > 0 {
		t.Fatalf("got errors %v, want none", errs)
	}
	if got, want := len(rs), 9; got != want {
		t.Fatalf("got %d results, want %d", got, want)
	}

	// The converted resources make a consistent gmesh mesh.
	st := mesh.NewState()
	for _, r := range rs.Resources() {
		st.Put(r)
	}
	if err := mesh.ValidateState(st); err != nil {
		t.Fatalf("converted mesh does not validate: %v", err)
	}

	// The 50/50 split survives.
	route := st.Get(mesh.Ref{Kind: mesh.KindRoute, Mesh: "howto-k8s-grpc", Name: "color-route.color-server.howto-k8s-grpc"})
	if route == nil {
		t.Fatal("route color-route.color-server.howto-k8s-grpc missing")
	}
	wts := route.Spec.(*mesh.RouteSpec).GRPCRoute.Action.WeightedTargets
	want := []mesh.WeightedTarget{{VirtualNode: "color-server-blue.howto-k8s-grpc", Weight: 50}, {VirtualNode: "color-server-red.howto-k8s-grpc", Weight: 50}}
	if diff := cmp.Diff(want, wts); diff != "" {
		t.Errorf("weighted targets (-want +got):\n%s", diff)
	}
	if got := len(rs.Endpoints()); got != 4 {
		t.Errorf("got %d endpoints, want 4", got)
	}

	got, err := yaml.Marshal(summarize(rs))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "howto-k8s-grpc.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantGolden, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(wantGolden), string(got)); diff != "" {
		t.Errorf("conversion differs from %s (-want +got; go test -update rewrites it):\n%s", golden, diff)
	}
}

// TestBadObjectIsRefusedAlone adds one bad object (or route) to the howto
// and checks that it alone is refused, with an error naming it and the
// field, while every howto object still converts.
func TestBadObjectIsRefusedAlone(t *testing.T) {
	tests := []struct {
		name    string
		extra   string
		object  string // the refused object
		wantErr []string
		// partial: a router keeps its good routes and itself.
		partial bool
	}{
		{
			name: "tcp route",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: tcp-router, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
  routes:
    - name: good
      grpcRoute:
        match: {serviceName: color.ColorService}
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-blue}, weight: 1}]}
    - name: raw
      tcpRoute:
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-red}, weight: 1}]}`,
			object:  "virtualrouter howto-k8s-grpc/tcp-router",
			wantErr: []string{"virtualrouter howto-k8s-grpc/tcp-router: spec.routes[1].tcpRoute: proxyless gRPC clients have no TCP routes"},
			partial: true,
		},
		{
			name: "dangling weighted target",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: dangling, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
  routes:
    - name: r
      grpcRoute:
        match: {serviceName: color.ColorService}
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-green}, weight: 100}]}`,
			object:  "virtualrouter howto-k8s-grpc/dangling",
			wantErr: []string{"virtualrouter howto-k8s-grpc/dangling: spec.routes[0].grpcRoute.action.weightedTargets[0].virtualNodeRef: virtualnode howto-k8s-grpc/color-server-green not found"},
			partial: true,
		},
		{
			name: "all weights zero",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: zero, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 9000, protocol: http}}]
  routes:
    - name: r
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-blue}, weight: 0}]}`,
			object:  "virtualrouter howto-k8s-grpc/zero",
			wantErr: []string{"spec.routes[0].httpRoute.action.weightedTargets: weights are all 0"},
			partial: true,
		},
		{
			name: "query parameter match",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: query, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 9000, protocol: http}}]
  routes:
    - name: r
      httpRoute:
        match:
          prefix: /
          queryParameters: [{name: v, match: {exact: "2"}}]
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-blue}, weight: 1}]}`,
			object:  "virtualrouter howto-k8s-grpc/query",
			wantErr: []string{"spec.routes[0].httpRoute.match.queryParameters: gmesh's routes do not match on query parameters"},
			partial: true,
		},
		{
			name: "strict tls on an http listener",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: secure, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: secure}}
  listeners:
    - portMapping: {port: 8443, protocol: http}
      tls:
        mode: STRICT
        certificate: {file: {certificateChain: /certs/chain.pem, privateKey: /certs/key.pem}}`,
			object:  "virtualnode howto-k8s-grpc/secure",
			wantErr: []string{"virtualnode howto-k8s-grpc/secure: spec.listeners[0].tls.mode: STRICT needs protocol grpc"},
		},
		{
			name: "listener validation on a permissive listener",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: secure, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: secure}}
  listeners:
    - portMapping: {port: 8443, protocol: grpc}
      tls:
        mode: PERMISSIVE
        certificate: {sds: {secretName: svc}}
        validation:
          trust: {sds: {secretName: ca}}
          subjectAlternativeNames: {match: {exact: ["spiffe://howto-k8s-grpc.gmesh.local/vn/front.howto-k8s-grpc"]}}`,
			object:  "virtualnode howto-k8s-grpc/secure",
			wantErr: []string{"virtualnode howto-k8s-grpc/secure: spec.listeners[0].tls.validation: needs mode STRICT"},
		},
		{
			name: "listener validation SAN that is no SPIFFE ID",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: secure, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: secure}}
  listeners:
    - portMapping: {port: 8443, protocol: grpc}
      tls:
        mode: STRICT
        certificate: {acm: {certificateARN: "arn:aws:acm:us-west-2:111122223333:certificate/x"}}
        validation:
          trust: {file: {certificateChain: /certs/ca.pem}}
          subjectAlternativeNames: {match: {exact: [front.howto-k8s-grpc.svc.cluster.local]}}`,
			object:  "virtualnode howto-k8s-grpc/secure",
			wantErr: []string{`virtualnode howto-k8s-grpc/secure: spec.listeners[0].tls.validation.subjectAlternativeNames.match.exact[0]: "front.howto-k8s-grpc.svc.cluster.local" can never match`},
		},
		{
			name: "client validation SANs",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: caller, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: caller}}
  backendDefaults:
    clientPolicy:
      tls:
        validation:
          trust: {file: {certificateChain: /certs/ca.pem}}
          subjectAlternativeNames: {match: {exact: ["spiffe://howto-k8s-grpc.gmesh.local/vn/front.howto-k8s-grpc"]}}`,
			object:  "virtualnode howto-k8s-grpc/caller",
			wantErr: []string{"virtualnode howto-k8s-grpc/caller: spec.backendDefaults.clientPolicy.tls.validation.subjectAlternativeNames: not supported yet"},
		},
		{
			name: "tls on a later listener",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: two, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: two}}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
    - portMapping: {port: 8443, protocol: grpc}
      tls: {mode: STRICT, certificate: {sds: {secretName: svc}}}`,
			object:  "virtualnode howto-k8s-grpc/two",
			wantErr: []string{"virtualnode howto-k8s-grpc/two: spec.listeners[1].tls.mode: only the first listener may have TLS"},
		},
		{
			name: "gateway listener strict",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: tls-gw, namespace: howto-k8s-grpc}
spec:
  namespaceSelector: {matchLabels: {mesh: howto-k8s-grpc}}
  gatewayRouteSelector: {matchLabels: {gateway: tls-gw}}
  podSelector: {matchLabels: {app: tls-gw}}
  listeners:
    - portMapping: {port: 8443, protocol: http}
      tls: {mode: STRICT, certificate: {sds: {secretName: gw}}}`,
			object:  "virtualgateway howto-k8s-grpc/tls-gw",
			wantErr: []string{"virtualgateway howto-k8s-grpc/tls-gw: spec.listeners[0].tls.mode: STRICT: gmesh's gateway serves and calls in plain text"},
		},
		{
			name: "name too long for gmesh",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: a-virtual-node-with-a-name-long-enough-to-pass-the-limit, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: long}}`,
			object:  "virtualnode howto-k8s-grpc/a-virtual-node-with-a-name-long-enough-to-pass-the-limit",
			wantErr: []string{"metadata.name: gmesh name \"a-virtual-node-with-a-name-long-enough-to-pass-the-limit.howto-k8s-grpc\" is not valid"},
		},
		{
			name: "awsName with upper case",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: upper, namespace: howto-k8s-grpc}
spec:
  awsName: Upper_Case
  podSelector: {matchLabels: {app: upper}}`,
			object:  "virtualnode howto-k8s-grpc/upper",
			wantErr: []string{"virtualnode howto-k8s-grpc/upper: spec.awsName: gmesh name \"Upper.Case\" is not valid"},
		},
		{
			name: "awsName taken",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: zz-copy, namespace: howto-k8s-grpc}
spec:
  awsName: front_howto-k8s-grpc
  podSelector: {matchLabels: {app: front}}`,
			object:  "virtualnode howto-k8s-grpc/zz-copy",
			wantErr: []string{"spec.awsName: gmesh name \"front.howto-k8s-grpc\" is already virtualnode howto-k8s-grpc/front's"},
		},
		{
			name: "namespace in no mesh",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: stray, namespace: elsewhere}
spec:
  podSelector: {matchLabels: {app: stray}}`,
			object:  "virtualnode elsewhere/stray",
			wantErr: []string{"virtualnode elsewhere/stray: metadata.namespace: no mesh's namespaceSelector selects namespace \"elsewhere\""},
		},
		{
			name: "meshRef to a missing mesh",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: lost, namespace: howto-k8s-grpc}
spec:
  meshRef: {name: other-mesh, uid: 0b1c2d3e}
  provider: {virtualNode: {virtualNodeRef: {name: front}}}`,
			object:  "virtualservice howto-k8s-grpc/lost",
			wantErr: []string{"virtualservice howto-k8s-grpc/lost: spec.meshRef.name: mesh \"other-mesh\" not found"},
		},
		{
			name: "service without provider",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: orphan, namespace: howto-k8s-grpc}
spec: {}`,
			object:  "virtualservice howto-k8s-grpc/orphan",
			wantErr: []string{"virtualservice howto-k8s-grpc/orphan: spec.provider: required by gmesh"},
		},
		{
			name: "virtual service ARN in another mesh",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: caller, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: caller}}
  backends:
    - virtualService:
        virtualServiceARN: arn:aws:appmesh:us-west-2:111122223333:mesh/other/virtualService/color.other.local`,
			object:  "virtualnode howto-k8s-grpc/caller",
			wantErr: []string{"spec.backends[0].virtualService.virtualServiceARN: \"arn:aws:appmesh:us-west-2:111122223333:mesh/other/virtualService/color.other.local\" is in mesh \"other\""},
		},
		{
			name: "gateway route header range",
			extra: `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: by-range, namespace: howto-k8s-grpc}
spec:
  httpRoute:
    match:
      prefix: /beta
      headers: [{name: x-tier, match: {range: {start: 1, end: 5}}}]
    action: {target: {virtualService: {virtualServiceRef: {name: front}}}}`,
			object:  "gatewayroute howto-k8s-grpc/by-range",
			wantErr: []string{"gatewayroute howto-k8s-grpc/by-range: spec.httpRoute.match.headers[0].match.range: gmesh's routes do not match on integer ranges"},
		},
		{
			name: "gateway route no gateway selects",
			extra: `apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {mesh: howto-k8s-grpc}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: unattached, namespace: team-b}
spec:
  grpcRoute:
    match: {serviceName: color.ColorService}
    action: {target: {virtualService: {virtualServiceRef: {name: color-server.howto-k8s-grpc.svc.cluster.local, namespace: howto-k8s-grpc}}}}`,
			object:  "gatewayroute team-b/unattached",
			wantErr: []string{"gatewayroute team-b/unattached: metadata.labels: no virtual gateway selects this route"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := decodeFile(t, "howto-k8s-grpc.yaml", tt.extra)
			in.ReadyPodIPs = howtoPods
			rs := Convert(in)
			for _, r := range rs {
				if r.Object.String() == tt.object {
					continue
				}
				if len(r.Errors) > 0 {
					t.Errorf("%s: got errors %v, want none: a bad object must not affect the others", r.Object, r.Errors)
				}
				if len(r.Resources) == 0 {
					t.Errorf("%s: got no resources, want it converted", r.Object)
				}
			}
			var bad *Result
			for _, r := range rs {
				if r.Object.String() == tt.object {
					bad = r
				}
			}
			if bad == nil {
				t.Fatalf("no result for %s", tt.object)
			}
			var msgs []string
			for _, e := range bad.Errors {
				msgs = append(msgs, e.Error())
			}
			for _, want := range tt.wantErr {
				if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
					t.Errorf("got errors %q, want one containing %q", msgs, want)
				}
			}
			for _, m := range msgs {
				if m != strings.ToLower(m[:1])+m[1:] {
					t.Errorf("error %q starts with upper case", m)
				}
			}
			if tt.partial {
				if len(bad.Resources) == 0 || bad.Resources[0].Kind != mesh.KindVirtualRouter {
					t.Errorf("got resources %v, want the router kept", bad.Resources)
				}
			} else if len(bad.Resources) > 0 {
				t.Errorf("got resources %v, want none", bad.Resources)
			}
		})
	}
}

func TestPartialRouterKeepsGoodRoutes(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: mixed, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
  routes:
    - name: good
      grpcRoute:
        match: {serviceName: color.ColorService}
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-blue}, weight: 1}]}
    - name: raw
      tcpRoute:
        action: {weightedTargets: [{virtualNodeRef: {name: color-server-red}, weight: 1}]}`)
	r := Convert(in).Find(mesh.KindVirtualRouter, "howto-k8s-grpc", "mixed")
	var names []string
	for _, res := range r.Resources {
		names = append(names, string(res.Kind)+"/"+res.Metadata.Name)
	}
	want := []string{"VirtualRouter/mixed.howto-k8s-grpc", "Route/good.mixed.howto-k8s-grpc"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"good": "good.mixed.howto-k8s-grpc"}, r.Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

func TestARNReferences(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: by-arn, namespace: howto-k8s-grpc}
spec:
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
  routes:
    - name: r
      grpcRoute:
        match: {serviceName: color.ColorService, port: 8080}
        action:
          weightedTargets:
            - virtualNodeARN: arn:aws:appmesh:us-west-2:111122223333:mesh/howto-k8s-grpc/virtualNode/color-server-blue_howto-k8s-grpc
              weight: 90
            - virtualNodeARN: arn:aws:appmesh:us-west-2:111122223333:mesh/howto-k8s-grpc/virtualNode/color-server-green_howto-k8s-grpc
              weight: 10`)
	r := Convert(in).Find(mesh.KindVirtualRouter, "howto-k8s-grpc", "by-arn")
	if len(r.Errors) != 1 {
		t.Fatalf("got errors %v, want one (the green node does not exist)", r.Errors)
	}
	want := `virtualrouter howto-k8s-grpc/by-arn: spec.routes[0].grpcRoute.action.weightedTargets[1].virtualNodeARN: no virtualNode has App Mesh name "color-server-green_howto-k8s-grpc" in mesh "howto-k8s-grpc"`
	if got := r.Errors[0].Error(); !strings.HasPrefix(got, want) {
		t.Errorf("got error %q, want it to start with %q", got, want)
	}

	// The blue ARN alone resolves to the node's gmesh name.
	in = decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: blue, namespace: howto-k8s-grpc}
spec:
  provider:
    virtualNode:
      virtualNodeARN: arn:aws:appmesh:us-west-2:111122223333:mesh/howto-k8s-grpc/virtualNode/color-server-blue_howto-k8s-grpc`)
	r = Convert(in).Find(mesh.KindVirtualService, "howto-k8s-grpc", "blue")
	if len(r.Errors) > 0 {
		t.Fatalf("got errors %v, want none", r.Errors)
	}
	got := r.Resources[0].Spec.(*mesh.VirtualServiceSpec).Provider.VirtualNode.VirtualNodeName
	if got != "color-server-blue.howto-k8s-grpc" {
		t.Errorf("got provider %q, want color-server-blue.howto-k8s-grpc", got)
	}
	if r.Name != "blue.howto-k8s-grpc" {
		t.Errorf("got name %q, want blue.howto-k8s-grpc (App Mesh's default NAME.NAMESPACE)", r.Name)
	}
}

func TestMeshMembership(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: greedy}
spec:
  namespaceSelector: {}`)
	rs := Convert(in)
	r := rs.Find(mesh.KindVirtualNode, "howto-k8s-grpc", "front")
	want := `virtualnode howto-k8s-grpc/front: metadata.namespace: namespace "howto-k8s-grpc" is selected by several meshes (greedy, howto-k8s-grpc)`
	if len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0].Error(), want) {
		t.Errorf("got errors %v, want one starting with %q", r.Errors, want)
	}
	if m := rs.Find(mesh.KindMesh, "", "greedy"); len(m.Errors) > 0 || len(m.Resources) != 1 {
		t.Errorf("mesh greedy: got errors %v, resources %d; want it converted", m.Errors, len(m.Resources))
	}
}

func TestUnhonouredFieldsAreReported(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml")
	rs := Convert(in)
	tests := []struct {
		kind   mesh.Kind
		name   string
		fields []string
	}{
		{mesh.KindVirtualNode, "front", []string{"spec.listeners[0].healthCheck", "spec.logging", "spec.serviceDiscovery.dns"}},
		{mesh.KindVirtualNode, "color-server-blue", []string{"spec.listeners[0].connectionPool", "spec.listeners[0].healthCheck", "spec.serviceDiscovery.dns"}},
		{mesh.KindVirtualNode, "color-server-red", []string{"spec.serviceDiscovery.awsCloudMap"}},
		{mesh.KindVirtualGateway, "ingress-gw", []string{"spec.logging"}},
	}
	for _, tt := range tests {
		r := rs.Find(tt.kind, "howto-k8s-grpc", tt.name)
		var got []string
		for _, u := range r.Unhonoured {
			got = append(got, u.Field)
			if u.Reason == "" {
				t.Errorf("%s: %s: no reason", r.Object, u.Field)
			}
		}
		if diff := cmp.Diff(tt.fields, got); diff != "" {
			t.Errorf("%s: unhonoured fields (-want +got):\n%s", r.Object, diff)
		}
	}
}

func TestDecodeIsStrict(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: typo, namespace: ns}
spec:
  listeners:
    - portMaping: {port: 8080, protocol: grpc}`, `unknown field "spec.listeners[0].portMaping"`},
		{"duplicate field", `apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: m}
spec:
  egressFilter: {type: DROP_ALL}
  egressFilter: {type: ALLOW_ALL}`, `key "egressFilter" already set`},
		{"unserved version", `apiVersion: appmesh.k8s.aws/v1beta1
kind: Mesh
metadata: {name: m}`, `apiVersion: appmesh.k8s.aws/v1beta1 is not served`},
		{"unknown kind", `apiVersion: appmesh.k8s.aws/v1beta2
kind: BackendGroup
metadata: {name: g, namespace: ns}`, `BackendGroup`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in Input
			err := Decode("m.yaml", []byte(tt.doc), &in)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "m.yaml: document 1") {
				t.Errorf("got error %q, want it to name m.yaml, document 1 and contain %q", err, tt.want)
			}
		})
	}
}

func TestRouteNamesCollideAcrossRouters(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: a, namespace: howto-k8s-grpc}
spec:
  awsName: b.c
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
  routes:
    - name: x.y
      grpcRoute:
        match: {serviceName: s.S}
        action: {weightedTargets: [{virtualNodeRef: {name: front}, weight: 1}]}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: b, namespace: howto-k8s-grpc}
spec:
  awsName: y.b.c
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
  routes:
    - name: x
      grpcRoute:
        match: {serviceName: s.S}
        action: {weightedTargets: [{virtualNodeRef: {name: front}, weight: 1}]}`)
	rs := Convert(in)
	if a := rs.Find(mesh.KindVirtualRouter, "howto-k8s-grpc", "a"); len(a.Errors) > 0 || len(a.Resources) != 2 {
		t.Errorf("router a: got errors %v and %d resources, want its route kept", a.Errors, len(a.Resources))
	}
	b := rs.Find(mesh.KindVirtualRouter, "howto-k8s-grpc", "b")
	want := `virtualrouter howto-k8s-grpc/b: spec.routes: route "x": gmesh name "x.y.b.c" is already a route of virtualrouter howto-k8s-grpc/a`
	if len(b.Errors) != 1 || !strings.HasPrefix(b.Errors[0].Error(), want) {
		t.Errorf("router b: got errors %v, want one starting with %q", b.Errors, want)
	}
	if len(b.Resources) != 1 || len(b.Routes) != 0 {
		t.Errorf("router b: got resources %v and routes %v, want the router alone", b.Resources, b.Routes)
	}
}

// TestExportedManifestsConvertAlike checks that objects exported from an
// App Mesh cluster (awsName and meshRef filled in, finalizers, status)
// decode strictly and give the same gmesh names as the manifests they came
// from, with App Mesh's finalizers reported.
func TestExportedManifestsConvertAlike(t *testing.T) {
	in := decodeFile(t, "exported-from-appmesh.yaml")
	// On this cluster the Mesh has another UID than the exported meshRef's.
	in.Meshes[0].UID = "11111111-2222-3333-4444-555555555555"
	rs := Convert(in)
	if errs := rs.Errors(); len(errs) > 0 {
		t.Fatalf("got errors %v, want none", errs)
	}
	var names []string
	for _, res := range rs.Resources() {
		names = append(names, string(res.Kind)+"/"+res.Metadata.Name)
	}
	want := []string{"Mesh/howto-k8s-grpc", "VirtualNode/color-server-blue.howto-k8s-grpc", "VirtualRouter/color-server.howto-k8s-grpc", "Route/color-route.color-server.howto-k8s-grpc"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	vn := rs.Find(mesh.KindVirtualNode, "howto-k8s-grpc", "color-server-blue")
	var fields []string
	for _, u := range vn.Unhonoured {
		fields = append(fields, u.Field)
	}
	if diff := cmp.Diff([]string{"metadata.finalizers[0]", "spec.meshRef.uid", "spec.serviceDiscovery.dns"}, fields); diff != "" {
		t.Errorf("unhonoured fields (-want +got):\n%s", diff)
	}
	if m := rs.Find(mesh.KindMesh, "", "howto-k8s-grpc"); len(m.Unhonoured) != 2 {
		t.Errorf("mesh: got unhonoured %v, want its two App Mesh finalizers", m.Unhonoured)
	}
}

// TestGatewayRouteMatchesAndRewrites checks that every match and rewrite
// of an App Mesh gateway route carries over.
func TestGatewayRouteMatchesAndRewrites(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: rich, namespace: howto-k8s-grpc}
spec:
  priority: 5
  httpRoute:
    match:
      prefix: /beta/
      method: GET
      hostname: {suffix: example.com}
      headers: [{name: x-beta, match: {exact: "1"}, invert: false}]
      queryParameters: [{name: tier, match: {exact: gold}}]
      port: 8088
    action:
      target:
        virtualService: {virtualServiceRef: {name: front}}
        port: 8080
      rewrite:
        prefix: {value: /v2/}
        hostname: {defaultTargetHostname: DISABLED}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: by-host, namespace: howto-k8s-grpc}
spec:
  grpcRoute:
    match:
      hostname: {exact: color.example.com}
      metadata: [{name: x-tier, match: {prefix: gold}}]
    action:
      target: {virtualService: {virtualServiceRef: {name: color-server.howto-k8s-grpc.svc.cluster.local}}}`)
	rs := Convert(in)
	r := rs.Find(mesh.KindGatewayRoute, "howto-k8s-grpc", "rich")
	if len(r.Errors) > 0 || len(r.Unhonoured) > 0 {
		t.Fatalf("got errors %v, unhonoured %v; want none", r.Errors, r.Unhonoured)
	}
	prio := 5
	want := &mesh.GatewayRouteSpec{
		VirtualGatewayName: "ingress-gw.howto-k8s-grpc",
		Priority:           &prio,
		HTTPRoute: &mesh.GatewayHTTPRoute{
			Match: mesh.GatewayHTTPMatch{
				Prefix:          "/beta/",
				Method:          "GET",
				Hostname:        &mesh.HostnameMatch{Suffix: "example.com"},
				Headers:         []mesh.MetadataMatch{{Name: "x-beta", Match: &mesh.HeaderMatch{Exact: "1"}}},
				QueryParameters: []mesh.QueryParameterMatch{{Name: "tier", Match: &mesh.QueryMatch{Exact: "gold"}}},
				Port:            8088,
			},
			Action: mesh.GatewayHTTPRouteAction{
				Target:  mesh.GatewayTarget{VirtualService: mesh.VirtualServiceBackend{VirtualServiceName: "front.howto-k8s-grpc"}, Port: 8080},
				Rewrite: &mesh.GatewayHTTPRewrite{Prefix: &mesh.PrefixRewrite{Value: "/v2/"}, Hostname: &mesh.HostnameRewrite{DefaultTargetHostname: mesh.Disabled}},
			},
		},
	}
	if diff := cmp.Diff(want, r.Resources[0].Spec); diff != "" {
		t.Errorf("gateway route spec (-want +got):\n%s", diff)
	}
	g := rs.Find(mesh.KindGatewayRoute, "howto-k8s-grpc", "by-host")
	if len(g.Errors) > 0 {
		t.Fatalf("got errors %v, want none", g.Errors)
	}
	gm := g.Resources[0].Spec.(*mesh.GatewayRouteSpec).GRPCRoute.Match
	wantMatch := mesh.GatewayGRPCMatch{Hostname: &mesh.HostnameMatch{Exact: "color.example.com"}, Metadata: []mesh.MetadataMatch{{Name: "x-tier", Match: &mesh.HeaderMatch{Prefix: "gold"}}}}
	if diff := cmp.Diff(wantMatch, gm); diff != "" {
		t.Errorf("grpc gateway match (-want +got):\n%s", diff)
	}
}

func TestApplyToStatus(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: secure, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: secure}}
  listeners:
    - portMapping: {port: 8443, protocol: http}
      tls:
        mode: STRICT
        certificate: {file: {certificateChain: /c.pem, privateKey: /k.pem}}`)
	rs := Convert(in)
	now := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))

	var st v1beta2.GmeshStatus
	rs.Find(mesh.KindVirtualNode, "howto-k8s-grpc", "front").ApplyTo(&st, 3, now)
	want := v1beta2.GmeshStatus{
		ObservedGeneration: ptr(int64(3)),
		Mesh:               "howto-k8s-grpc",
		GmeshName:          "front.howto-k8s-grpc",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 3, LastTransitionTime: now,
			Reason: "Converted", Message: "converted into gmesh's model"}},
	}
	st.UnhonouredFields = nil
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	st = v1beta2.GmeshStatus{}
	rs.Find(mesh.KindVirtualNode, "howto-k8s-grpc", "secure").ApplyTo(&st, 1, now)
	c := meta.FindStatusCondition(st.Conditions, "Accepted")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Unsupported" || !strings.HasPrefix(c.Message, "spec.listeners[0].tls.mode: STRICT needs protocol grpc") {
		t.Errorf("got condition %+v, want Accepted False, Unsupported, naming spec.listeners[0].tls.mode", c)
	}
}

func ptr[T any](v T) *T { return &v }

// TestTLSConvertsAsLocalMode: a node's listener TLS (STRICT, validation
// SANs) and client policies (enforced by default, not enforced with ports)
// convert into exactly what the same settings give with `gmesh apply` in
// local mode; App Mesh's certificate and trust sources, which its CRD
// requires, are reported, not converted.
func TestTLSConvertsAsLocalMode(t *testing.T) {
	const caller = "spiffe://howto-k8s-grpc.gmesh.local/ns/howto-k8s-grpc/sa/front/vn/front.howto-k8s-grpc"
	in := decodeFile(t, "howto-k8s-grpc.yaml", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: secure, namespace: howto-k8s-grpc}
spec:
  podSelector: {matchLabels: {app: secure}}
  listeners:
    - portMapping: {port: 8443, protocol: grpc}
      tls:
        mode: STRICT
        certificate: {file: {certificateChain: /certs/chain.pem, privateKey: /certs/key.pem}}
        validation:
          trust: {file: {certificateChain: /certs/ca.pem}}
          subjectAlternativeNames: {match: {exact: ["`+caller+`"]}}
  backends:
    - virtualService:
        virtualServiceRef: {name: front}
        clientPolicy: {tls: {enforce: false, ports: [8080], validation: {trust: {sds: {secretName: ca}}}}}
    - virtualService:
        virtualServiceRef: {name: color-server.howto-k8s-grpc.svc.cluster.local}
  backendDefaults:
    clientPolicy:
      tls:
        certificate: {sds: {secretName: client}}
        validation: {trust: {acm: {certificateAuthorityARNs: ["arn:aws:acm-pca:us-west-2:111122223333:certificate-authority/x"]}}}`)
	in.ReadyPodIPs = map[types.NamespacedName][]string{{Namespace: "howto-k8s-grpc", Name: "secure"}: {"10.244.0.140"}}
	rs := Convert(in)
	if errs := rs.Errors(); len(errs) > 0 {
		t.Fatalf("got errors %v, want none", errs)
	}
	r := rs.Find(mesh.KindVirtualNode, "howto-k8s-grpc", "secure")

	local, err := mesh.Decode("stack.yaml", []byte(`apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: secure.howto-k8s-grpc, mesh: howto-k8s-grpc}
spec:
  listeners:
    - portMapping: {port: 8443, protocol: grpc}
      tls:
        mode: STRICT
        validation:
          subjectAlternativeNames: {match: {exact: ["`+caller+`"]}}
  serviceDiscovery: {registry: {serviceName: secure.howto-k8s-grpc}}
  backends:
    - virtualService:
        virtualServiceName: front.howto-k8s-grpc
        clientPolicy: {tls: {enforce: false, ports: [8080]}}
    - virtualService: {virtualServiceName: color-server.howto-k8s-grpc.svc.cluster.local}
  backendDefaults:
    clientPolicy:
      tls: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := mesh.DefaultAndValidate(local...); err != nil {
		t.Fatal(err)
	}
	local[0].Source = nil // where local mode read it
	if diff := cmp.Diff(local[0], r.Resources[0]); diff != "" {
		t.Errorf("converted node differs from local mode's (-local +converted):\n%s", diff)
	}
	if !mesh.MeshTLS(rs.Resources(), "howto-k8s-grpc") {
		t.Error("mesh has TLS off, want on")
	}
	var reported []string
	for _, u := range r.Unhonoured {
		reported = append(reported, u.Field)
	}
	want := []string{
		"spec.backendDefaults.clientPolicy.tls.certificate",
		"spec.backendDefaults.clientPolicy.tls.validation.trust",
		"spec.backends[0].virtualService.clientPolicy.tls.validation.trust",
		"spec.listeners[0].tls.certificate",
		"spec.listeners[0].tls.validation.trust",
	}
	if diff := cmp.Diff(want, reported); diff != "" {
		t.Errorf("unhonoured fields (-want +got):\n%s", diff)
	}
	if len(r.Endpoints) != 1 || r.Endpoints[0].Address != "10.244.0.140" || r.Endpoints[0].Port != 8443 {
		t.Errorf("endpoints %v, want the pod on 8443", r.Endpoints)
	}
}

// TestPodEndpointStates: a node's Ready pods serve; its starting pods
// listen (UNKNOWN health) and its terminating pods drain, so only the Ready
// ones are serving endpoints (EDS, the gateway) while all of them listen
// (their server Listeners in a mesh with TLS on). An IP listed twice is
// one endpoint, Ready first.
func TestPodEndpointStates(t *testing.T) {
	in := decodeFile(t, "howto-k8s-grpc.yaml")
	red := types.NamespacedName{Namespace: "howto-k8s-grpc", Name: "color-server-red"}
	in.ReadyPodIPs = map[types.NamespacedName][]string{red: {"10.244.0.133"}}
	in.StartingPodIPs = map[types.NamespacedName][]string{red: {"10.244.0.134", "10.244.0.133"}}
	in.TerminatingPodIPs = map[types.NamespacedName][]string{red: {"10.244.0.135"}}
	rs := Convert(in)
	r := rs.Find(mesh.KindVirtualNode, red.Namespace, red.Name)
	type ep struct {
		Address  string
		State    mesh.TaskState
		Health   mesh.HealthStatus
		Draining bool
	}
	var got []ep
	for _, e := range r.Endpoints {
		got = append(got, ep{e.Address, e.State, e.Health, e.Draining})
	}
	want := []ep{
		{"10.244.0.133", mesh.TaskRunning, mesh.HealthHealthy, false},
		{"10.244.0.134", mesh.TaskRunning, mesh.HealthUnknown, false},
		{"10.244.0.135", mesh.TaskStopping, mesh.HealthUnknown, true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	node := r.Resources[0]
	if s := mesh.ServingEndpoints(node, rs.Endpoints()); len(s) != 1 || s[0].Address != "10.244.0.133" {
		t.Errorf("serving endpoints %v, want only the Ready pod", s)
	}
	if l := mesh.ListeningEndpoints(node, rs.Endpoints()); len(l) != 3 {
		t.Errorf("listening endpoints %v, want all three pods", l)
	}
}
