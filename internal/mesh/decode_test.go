package mesh

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readEchoStack(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/echo-stack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// apply runs what the store runs on a manifest: decode, default, validate,
// then the cross-reference checks over existing plus the decoded resources
// minus deletes.
func apply(file string, data []byte, existing *State, deletes []Ref) ([]*Resource, error) {
	rs, err := Decode(file, data)
	if err != nil {
		return nil, err
	}
	if err := DefaultAndValidate(rs...); err != nil {
		return nil, err
	}
	next := NewState()
	if existing != nil {
		next = existing.Copy()
	}
	for _, r := range rs {
		next.Put(r)
	}
	for _, ref := range deletes {
		next.Delete(ref)
	}
	if err := CheckDeletes(next, deletes); err != nil {
		return nil, err
	}
	if err := ValidateState(next); err != nil {
		return nil, err
	}
	return rs, nil
}

func stateOf(t testing.TB, data string) *State {
	t.Helper()
	rs, err := apply("base.yaml", []byte(data), nil, nil)
	if err != nil {
		t.Fatalf("base state: %v", err)
	}
	s := NewState()
	for _, r := range rs {
		r.Source = nil
		s.Put(r)
	}
	return s
}

var ignoreSource = cmpopts.IgnoreFields(Resource{}, "Source")

func TestEchoStackDecodesAndValidates(t *testing.T) {
	rs, err := apply("echo-stack.yaml", []byte(readEchoStack(t)), nil, nil)
	if err != nil {
		t.Fatalf("echo-stack.yaml: %v", err)
	}
	if got, want := len(rs), 11; got != want {
		t.Fatalf("got %d resources, want %d", got, want)
	}
	counts := map[Kind]int{}
	for _, r := range rs {
		counts[r.Kind]++
	}
	want := map[Kind]int{KindMesh: 1, KindVirtualNode: 2, KindVirtualRouter: 1, KindRoute: 1, KindVirtualService: 2, KindVirtualGateway: 1, KindGatewayRoute: 1, KindService: 2}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
	route := rs[3].Route()
	if route == nil {
		t.Fatalf("document 4: got %T, want *RouteSpec", rs[3].Spec)
	}
	if got, want := route.GRPCRoute.RetryPolicy.PerRetryTimeout.Std().String(), "1s"; got != want {
		t.Errorf("perRetryTimeout: got %s, want %s", got, want)
	}
	vn := rs[1].VirtualNode()
	if got, want := vn.ServiceDiscovery.Selector().Attributes[0].Value, "0.9"; got != want {
		t.Errorf("version attribute: got %q, want %q", got, want)
	}
	if src := rs[10].Source; src == nil || src.File != "echo-stack.yaml" || src.Doc != 11 {
		t.Errorf("source of the last resource: got %+v, want echo-stack.yaml document 11", src)
	}
	if got := rs[10].Service().Env["ECHO_HOST"]; got != "xds:///echo-server.echo.local" {
		t.Errorf("ECHO_HOST: got %q", got)
	}
}

func TestRoundTrip(t *testing.T) {
	rs, err := apply("echo-stack.yaml", []byte(readEchoStack(t)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		r.Metadata.ResourceVersion = "42"
		r.Metadata.CreatedAt = "2026-01-02T03:04:05.123456789Z"
		r.Metadata.UpdatedAt = "2026-01-02T03:04:06Z"
		if i == 0 {
			r.Metadata.Labels = map[string]string{"on": "yes", "n": "0.10", "empty": ""}
		}
	}
	ro := New(KindRollout, "echo", "echo-server", RolloutSpec{Service: "echo-server", Target: TaskSetSpec{Version: "1.0", Command: []string{"/bin/echo-server"}, Env: map[string]string{"A": "1"}}})
	Default(ro)
	ro.Status = &RolloutStatus{Phase: PhaseBaking, StepIndex: 0, Weight: 50, Analysis: &Analysis{Requests: 100, SuccessRate: 0.995, P99Millis: 12.5, Passed: true, Judged: true}, Events: []RolloutEvent{{Time: "t", Phase: PhaseShifting, Message: "weight 50"}}}
	ts := New(KindTaskSet, "echo", "echo-server-1-0", &TaskSetSpec{Service: "echo-server", Command: []string{"x"}, Port: 50051})
	ts.Status = map[string]any{"running": "2"}
	rs = append(rs, ro, ts)

	for _, tc := range []struct {
		name   string
		encode func([]*Resource) ([]byte, error)
	}{
		{"yaml", EncodeYAML},
		{"json", EncodeJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.encode(rs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode("out."+tc.name, b)
			if err != nil {
				t.Fatalf("decode of encoded output: %v\n%s", err, b)
			}
			if diff := cmp.Diff(rs, got, ignoreSource); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if err := DefaultAndValidate(got...); err != nil {
				t.Errorf("re-decoded resources do not validate: %v", err)
			}
			one, err := tc.encode(rs[4:5])
			if err != nil {
				t.Fatal(err)
			}
			got, err = Decode("one."+tc.name, one)
			if err != nil || len(got) != 1 {
				t.Fatalf("decode of one resource: got %d, %v; want 1, nil", len(got), err)
			}
		})
	}
}

func TestParseKind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kind
	}{
		{"mesh", KindMesh}, {"Meshes", KindMesh},
		{"virtualnode", KindVirtualNode}, {"VirtualNodes", KindVirtualNode}, {"vn", KindVirtualNode},
		{"virtualrouter", KindVirtualRouter}, {"vr", KindVirtualRouter},
		{"route", KindRoute}, {"ROUTES", KindRoute},
		{"virtualservice", KindVirtualService}, {"vs", KindVirtualService},
		{"virtualgateway", KindVirtualGateway}, {"vg", KindVirtualGateway},
		{"gatewayroute", KindGatewayRoute}, {"gr", KindGatewayRoute},
		{"service", KindService}, {"services", KindService}, {"svc", KindService},
		{"taskset", KindTaskSet}, {"ts", KindTaskSet},
		{"rollout", KindRollout}, {"rollouts", KindRollout},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseKind(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("ParseKind(%q): got %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	_, err := ParseKind("pods")
	if ErrorCode(err) != EInvalid || !strings.Contains(err.Error(), "VirtualNode (vn)") {
		t.Errorf("ParseKind(pods): got %v, want EInvalid listing the kinds", err)
	}
}

func TestAccessorsAndClone(t *testing.T) {
	r := New(KindRoute, "echo", "r", RouteSpec{VirtualRouterName: "vr", GRPCRoute: &GRPCRoute{Action: RouteAction{WeightedTargets: []WeightedTarget{{VirtualNode: "a", Weight: 1}}}}})
	if r.Route() == nil || r.VirtualNode() != nil || r.Mesh() != nil {
		t.Fatalf("accessors: got route %v, node %v, mesh %v; want only a route", r.Route(), r.VirtualNode(), r.Mesh())
	}
	for _, k := range Kinds {
		if NewSpec(k) == nil {
			t.Errorf("NewSpec(%s): got nil", k)
		}
	}
	c := r.Clone()
	c.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 99
	if got := r.Route().GRPCRoute.Action.WeightedTargets[0].Weight; got != 1 {
		t.Errorf("clone shares memory: original weight got %d, want 1", got)
	}
	if diff := cmp.Diff(r, r.DeepCopy()); diff != "" {
		t.Errorf("DeepCopy differs:\n%s", diff)
	}
	if m := New(KindMesh, "ignored", "m", nil); m.Metadata.Mesh != "" || m.Mesh() == nil {
		t.Errorf("New(Mesh): got mesh %q spec %T, want no mesh and *MeshSpec", m.Metadata.Mesh, m.Spec)
	}
}

func TestDefaults(t *testing.T) {
	vn := New(KindVirtualNode, "m", "n", &VirtualNodeSpec{Listeners: []Listener{{PortMapping: PortMapping{Port: 1, Protocol: "grpc"}, HealthCheck: &HealthCheck{}}}})
	svc := New(KindService, "m", "s", nil)
	ro := New(KindRollout, "m", "s", nil)
	for _, r := range []*Resource{vn, svc, ro} {
		Default(r)
	}
	if diff := cmp.Diff(&HealthCheck{Protocol: "grpc", IntervalMillis: 5000, TimeoutMillis: 2000, HealthyThreshold: 2, UnhealthyThreshold: 3}, vn.VirtualNode().Listeners[0].HealthCheck); diff != "" {
		t.Errorf("health check defaults (-want +got):\n%s", diff)
	}
	if s := svc.Service(); s.DesiredCount != 1 || s.MetricsPath != "/metrics" {
		t.Errorf("service defaults: got desiredCount %d metricsPath %q, want 1 /metrics", s.DesiredCount, s.MetricsPath)
	}
	want := &RolloutSpec{Steps: []int{50, 100}, IntervalMillis: 15000, TimeoutMillis: 300000, AckTimeoutMillis: 10000, OnStalledClient: StalledPause, Gates: Gates{MinSuccessRate: 0.99, MaxP99Millis: 500, MinRequests: 20}}
	if diff := cmp.Diff(want, ro.Rollout()); diff != "" {
		t.Errorf("rollout defaults (-want +got):\n%s", diff)
	}
}

const rolloutDoc = `
---
apiVersion: gmesh.dev/v1
kind: Rollout
metadata: {name: echo-server, mesh: echo}
spec:
  service: echo-server
  steps: STEPS
`

// TestBadInput is the table of bad manifests and operations: each must fail
// with an error that names the file, the document and the field.
func TestBadInput(t *testing.T) {
	stack := readEchoStack(t)
	edit := func(old, new string) string {
		if !strings.Contains(stack, old) {
			t.Fatalf("echo-stack.yaml has no %q", old)
		}
		return strings.Replace(stack, old, new, 1)
	}
	echoState := stateOf(t, stack)
	otherMesh := stateOf(t, `
apiVersion: gmesh.dev/v1
kind: Mesh
metadata: {name: other}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: node, mesh: other}
spec: {}
---
apiVersion: gmesh.dev/v1
kind: VirtualService
metadata: {name: echo-server.echo.local, mesh: other}
spec: {provider: {virtualNode: {virtualNodeName: node}}}
`)
	big := "# " + strings.Repeat("x", 5<<20) + "\n"

	for _, tc := range []struct {
		name     string
		file     string
		data     string
		existing *State
		deletes  []Ref
		code     string // default EInvalid
		want     string // the error text must contain this
	}{
		{name: "unknown field", data: edit("      serviceName: proto.echo.EchoService", "      serviceNme: proto.echo.EchoService"),
			want: `stack.yaml: document 4: spec.grpcRoute.match.serviceNme: unknown field; did you mean "serviceName"?`},
		{name: "unknown top-level field", data: edit("kind: Mesh\n", "kind: Mesh\nspecs: {}\n"),
			want: "stack.yaml: document 1: specs: unknown field"},
		{name: "wrong type", data: edit("port: 50051\n        protocol: grpc\n      healthCheck", `port: "fifty"`+"\n        protocol: grpc\n      healthCheck"),
			want: `stack.yaml: document 2: spec.listeners[0].portMapping.port: must be an integer, got string "fifty"`},
		{name: "list where object expected", data: edit("  provider:\n    virtualNode:", "  provider: []\n  x:\n    virtualNode:"),
			want: "stack.yaml: document 7: spec.provider: must be an object, got a list"},
		{name: "unquoted version attribute", data: edit(`          value: "0.9"`, `          value: 0.9`),
			want: `stack.yaml: document 2: spec.serviceDiscovery.registry.attributes[0].value: must be a string, got number 0.9 (quote it: "0.9")`},
		{name: "missing required router name", data: edit("  virtualRouterName: echo-server\n", ""),
			want: "stack.yaml: document 4: spec.virtualRouterName: required"},
		{name: "missing name", data: edit("  name: echo-gateway\n", ""),
			want: "stack.yaml: document 8: metadata.name: required"},
		{name: "missing mesh", data: edit("  name: echo-gateway\n  mesh: echo\n", "  name: echo-gateway\n"),
			want: "stack.yaml: document 8: metadata.mesh: required"},
		{name: "missing metadata", data: "apiVersion: gmesh.dev/v1\nkind: Mesh\n",
			want: "stack.yaml: document 1: metadata: required"},
		{name: "missing apiVersion", data: "kind: Mesh\nmetadata: {name: a}\n",
			want: "stack.yaml: document 1: apiVersion: required"},
		{name: "weight 150", data: edit("weight: 100", "weight: 150"),
			want: "stack.yaml: document 4: spec.grpcRoute.action.weightedTargets[0].weight: must be 0..100, got 150"},
		{name: "all weights 0", data: edit("weight: 100", "weight: 0"),
			want: "stack.yaml: document 4: spec.grpcRoute.action.weightedTargets: weights are all 0"},
		{name: "route to a missing node", data: edit("- virtualNode: echo-server-0-9", "- virtualNode: echo-server-1-0"),
			want: "stack.yaml: document 4: spec.grpcRoute.action.weightedTargets[0].virtualNode: virtualnode echo-server-1-0 not found in mesh echo"},
		{name: "route to a missing router", data: edit("  virtualRouterName: echo-server\n  grpcRoute", "  virtualRouterName: echo-srv\n  grpcRoute"),
			want: "stack.yaml: document 4: spec.virtualRouterName: virtualrouter echo-srv not found in mesh echo"},
		{name: "virtual service without provider", data: edit("  provider:\n    virtualNode:\n      virtualNodeName: echo-client\n", "  {}\n"),
			want: "stack.yaml: document 7: spec.provider: required"},
		{name: "virtual service with two providers", data: edit("    virtualNode:\n      virtualNodeName: echo-client\n", "    virtualNode:\n      virtualNodeName: echo-client\n    virtualRouter:\n      virtualRouterName: echo-server\n"),
			want: "stack.yaml: document 7: spec.provider: exactly one of virtualRouter, virtualNode is allowed, got both"},
		{name: "provider missing", data: edit("      virtualNodeName: echo-client\n", "      virtualNodeName: nobody\n"),
			want: "stack.yaml: document 7: spec.provider.virtualNode.virtualNodeName: virtualnode nobody not found in mesh echo"},
		{name: "backend missing", data: edit("        virtualServiceName: echo-server.echo.local\n---", "        virtualServiceName: nowhere.echo.local\n---"),
			want: "stack.yaml: document 6: spec.backends[0].virtualService.virtualServiceName: virtualservice nowhere.echo.local not found in mesh echo"},
		{name: "gateway route target missing", data: edit("          virtualServiceName: echo-client.echo.local", "          virtualServiceName: web.echo.local"),
			want: "stack.yaml: document 9: spec.httpRoute.action.target.virtualService.virtualServiceName: virtualservice web.echo.local not found in mesh echo"},
		{name: "service node missing", data: edit("  virtualNode: echo-client\n", "  virtualNode: echo-client-2\n"),
			want: "stack.yaml: document 11: spec.virtualNode: virtualnode echo-client-2 not found in mesh echo"},
		{name: "mesh missing", data: edit("  name: echo-gateway\n  mesh: echo\n", "  name: echo-gateway\n  mesh: web\n"),
			want: "stack.yaml: document 8: metadata.mesh: mesh web not found"},
		{name: "duplicate names in one file", data: stack + "---\napiVersion: gmesh.dev/v1\nkind: VirtualRouter\nmetadata: {name: echo-server, mesh: echo}\nspec: {}\n",
			want: "stack.yaml: document 12: metadata.name: duplicate virtualrouter echo/echo-server: already defined (document 3)"},
		{name: "virtual service name used in another mesh", data: stack, existing: otherMesh,
			want: "stack.yaml: document 5: metadata.name: virtual service name echo-server.echo.local is already used in mesh other"},
		{name: "delete a node a route targets", data: "", existing: echoState, deletes: []Ref{{Kind: KindVirtualNode, Mesh: "echo", Name: "echo-server-0-9"}}, code: EInUse,
			want: "virtualnode echo-server-0-9 is still a target of route echo/echo-server-route; remove it from the route first"},
		{name: "delete a router a virtual service uses", data: "", existing: echoState, deletes: []Ref{{Kind: KindVirtualRouter, Mesh: "echo", Name: "echo-server"}}, code: EInUse,
			want: "virtualrouter echo-server is still referred to by route echo/echo-server-route (spec.virtualRouterName)"},
		{name: "delete a mesh with resources", data: "", existing: echoState, deletes: []Ref{{Kind: KindMesh, Name: "echo"}}, code: EInUse,
			want: "mesh echo still has 10 resource(s)"},
		{name: "oversized file", file: "big.yaml", data: big,
			want: "big.yaml: file is 5 MiB, over the 4 MiB limit"},
		{name: "App Mesh apiVersion", data: edit("apiVersion: gmesh.dev/v1\nkind: Mesh", "apiVersion: appmesh.k8s.aws/v1beta2\nkind: Mesh"),
			want: `stack.yaml: document 1: apiVersion: must be gmesh.dev/v1, got "appmesh.k8s.aws/v1beta2"`},
		{name: "bad kind", data: edit("kind: VirtualGateway", "kind: LoadBalancer"),
			want: `stack.yaml: document 8: kind: unknown kind "LoadBalancer"; want one of Mesh,`},
		{name: "kind in lower case", data: edit("kind: VirtualGateway", "kind: virtualgateway"),
			want: `stack.yaml: document 8: kind: unknown kind "virtualgateway"; did you mean "VirtualGateway"?`},
		{name: "bad protocol", data: edit("        protocol: grpc\n      healthCheck:", "        protocol: grcp\n      healthCheck:"),
			want: `stack.yaml: document 2: spec.listeners[0].portMapping.protocol: must be one of grpc, http, http2, tcp, got "grcp"`},
		{name: "gateway tcp protocol", data: edit("        port: 8080\n        protocol: http\n---\napiVersion: gmesh.dev/v1\nkind: GatewayRoute", "        port: 8080\n        protocol: tcp\n---\napiVersion: gmesh.dev/v1\nkind: GatewayRoute"),
			want: `stack.yaml: document 8: spec.listeners[0].portMapping.protocol: must be one of http, http2, grpc, got "tcp"`},
		{name: "bad port", data: edit("  port: 8080\n  env", "  port: 70000\n  env"),
			want: "stack.yaml: document 11: spec.port: must be a port 1..65535, got 70000"},
		{name: "bad name", data: edit("  name: echo-gateway", "  name: Echo_Gateway"),
			want: `stack.yaml: document 8: metadata.name: must be lower-case letters, digits, '-' and '.'`},
		{name: "health threshold", data: edit("        healthyThreshold: 2", "        healthyThreshold: 1"),
			want: "stack.yaml: document 2: spec.listeners[0].healthCheck.healthyThreshold: must be 2..10, got 1"},
		{name: "health interval", data: edit("        intervalMillis: 5000", "        intervalMillis: 50"),
			want: "stack.yaml: document 2: spec.listeners[0].healthCheck.intervalMillis: must be 100..300000, got 50"},
		{name: "http health check without path", data: edit("        path: /healthz\n", ""),
			want: "stack.yaml: document 6: spec.listeners[0].healthCheck.path: required for an http health check"},
		{name: "bad retry event", data: edit("[unavailable, cancelled, deadline-exceeded]", "[unavailable, server-error]"),
			want: `stack.yaml: document 4: spec.grpcRoute.retryPolicy.grpcRetryEvents[1]: must be one of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, got "server-error"`},
		{name: "bad duration unit", data: edit("        value: 1\n        unit: s", "        value: 1\n        unit: m"),
			want: `stack.yaml: document 4: spec.grpcRoute.retryPolicy.perRetryTimeout.unit: must be ms or s, got "m"`},
		{name: "two route kinds", data: edit("  grpcRoute:\n", "  httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: echo-server-0-9, weight: 1}]}}\n  grpcRoute:\n"),
			want: "stack.yaml: document 4: spec: exactly one of grpcRoute, httpRoute, http2Route is required, got 2"},
		{name: "program with package and command", data: edit("    package: ./cmd/echo-client\n", "    package: ./cmd/echo-client\n    command: [echo]\n"),
			want: "stack.yaml: document 11: spec.program: exactly one of package, command is allowed, got both"},
		{name: "rollout steps not ending at 100", data: stack + strings.Replace(rolloutDoc, "STEPS", "[10, 50]", 1),
			want: "stack.yaml: document 12: spec.steps[1]: the last step must be 100, got 50"},
		{name: "rollout steps descending", data: stack + strings.Replace(rolloutDoc, "STEPS", "[50, 20, 100]", 1),
			want: "stack.yaml: document 12: spec.steps[1]: steps must be ascending, got 20 after 50"},
		{name: "rollout of a missing service", data: strings.Replace(strings.Replace(stack+rolloutDoc, "STEPS", "[100]", 1), "  service: echo-server\n", "  service: nope\n", 1),
			want: "stack.yaml: document 12: spec.service: service nope not found in mesh echo"},
		{name: "YAML syntax error with line", data: "apiVersion: gmesh.dev/v1\nkind: Mesh\nmetadata:\n  name: a\n---\nkind: Mesh\nmetadata:\n  name: [unclosed\n",
			want: "stack.yaml: document 2: invalid YAML: yaml: line 8:"},
		{name: "YAML duplicate key", data: "apiVersion: gmesh.dev/v1\nkind: Mesh\nmetadata:\n  name: a\n  name: b\n",
			want: `stack.yaml: document 1: invalid YAML: yaml: unmarshal errors: line 5: key "name" already set in map`},
		{name: "JSON wrong type", file: "stack.json", data: `{"apiVersion": "gmesh.dev/v1", "kind": "Mesh", "metadata": {"name": "a", "labels": {"x": 1}}}`,
			want: `stack.json: document 1: metadata.labels.x: must be a string, got number 1`},
		{name: "JSON syntax error", file: "stack.json", data: "[\n{\"kind\": \"Mesh\",\n \"metadata\": }\n]",
			want: "stack.json: document 1: invalid JSON at line 3, column 14"},
		{name: "list item error", data: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: gmesh.dev/v1\n  kind: Mesh\n  metadata: {name: a}\n- apiVersion: gmesh.dev/v1\n  kind: Mesh\n  metadata: {name: b, nam: c}\n",
			want: `stack.yaml: document 1: items[1].metadata.nam: unknown field; did you mean "name"?`},
		{name: "TaskSet of a missing service", data: stack + "---\napiVersion: gmesh.dev/v1\nkind: TaskSet\nmetadata: {name: ts1, mesh: echo}\nspec: {service: web, command: [x], port: 1, desiredCount: 1}\n",
			want: "stack.yaml: document 12: spec.service: service web not found in mesh echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := tc.file
			if file == "" {
				file = "stack.yaml"
			}
			_, err := apply(file, []byte(tc.data), tc.existing, tc.deletes)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
			code := tc.code
			if code == "" {
				code = EInvalid
			}
			if got := ErrorCode(err); got != code {
				t.Errorf("got code %q, want %q", got, code)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Errorf("got %T, want mesh.Errors", err)
			}
		})
	}
}

func TestDecodeDocuments(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  string
		names []string
	}{
		{"empty file", "", nil},
		{"comments only", "# nothing\n---\n# still nothing\n", nil},
		{"leading separator and empty docs", "---\napiVersion: gmesh.dev/v1\nkind: Mesh\nmetadata: {name: a}\n---\n---\napiVersion: gmesh.dev/v1\nkind: Mesh\nmetadata: {name: b}\n...\n", []string{"a", "b"}},
		{"JSON array", `[{"apiVersion":"gmesh.dev/v1","kind":"Mesh","metadata":{"name":"a"}},{"apiVersion":"gmesh.dev/v1","kind":"Mesh","metadata":{"name":"b"}}]`, []string{"a", "b"}},
		{"JSON stream", `{"apiVersion":"gmesh.dev/v1","kind":"Mesh","metadata":{"name":"a"}} {"apiVersion":"gmesh.dev/v1","kind":"Mesh","metadata":{"name":"b"}}`, []string{"a", "b"}},
		{"List", "apiVersion: gmesh.dev/v1\nkind: List\nitems:\n- {apiVersion: gmesh.dev/v1, kind: Mesh, metadata: {name: a}}\n", []string{"a"}},
		{"CRLF and BOM", "\ufeffapiVersion: gmesh.dev/v1\r\nkind: Mesh\r\nmetadata: {name: a}\r\n---\r\napiVersion: gmesh.dev/v1\r\nkind: Mesh\r\nmetadata: {name: b}\r\n", []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Decode("f", []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rs {
				names = append(names, r.Metadata.Name)
			}
			if diff := cmp.Diff(tc.names, names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnmarshalJSON(t *testing.T) {
	var r Resource
	if err := r.UnmarshalJSON([]byte(`{"apiVersion":"gmesh.dev/v1","kind":"Service","metadata":{"name":"s","mesh":"m"},"spec":{"port":1}}`)); err != nil {
		t.Fatal(err)
	}
	if r.Service() == nil || r.Service().Port != 1 {
		t.Errorf("got spec %#v, want *ServiceSpec with port 1", r.Spec)
	}
	err := r.UnmarshalJSON([]byte(`{"apiVersion":"gmesh.dev/v1","kind":"Service","metadata":{"name":"s","mesh":"m"},"spec":{"prt":1}}`))
	if err == nil || !strings.Contains(err.Error(), "spec.prt: unknown field") {
		t.Errorf("got %v, want an unknown field error naming spec.prt", err)
	}
}

func TestStateList(t *testing.T) {
	s := stateOf(t, readEchoStack(t))
	var got []string
	for _, r := range s.List(KindVirtualNode, "echo") {
		got = append(got, r.Metadata.Name)
	}
	if diff := cmp.Diff([]string{"echo-client", "echo-server-0-9"}, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if got, want := len(s.List("", "")), 11; got != want {
		t.Errorf("List all: got %d, want %d", got, want)
	}
	c := s.Clone()
	c.Get(Ref{Kind: KindService, Mesh: "echo", Name: "echo-server"}).Service().DesiredCount = 9
	if got := s.Get(Ref{Kind: KindService, Mesh: "echo", Name: "echo-server"}).Service().DesiredCount; got != 2 {
		t.Errorf("Clone shares resources: got desiredCount %d, want 2", got)
	}
	if !c.Delete(Ref{Kind: KindMesh, Name: "echo"}) || c.Len() != 10 || s.Len() != 11 {
		t.Errorf("Delete: got lens %d/%d, want 10/11", c.Len(), s.Len())
	}
}
