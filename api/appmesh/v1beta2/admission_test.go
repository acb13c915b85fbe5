package v1beta2_test

// These tests run the App Mesh CRDs through the API server's own CRD
// validation and custom resource admission code (structural schema,
// pruning of unknown fields, defaulting, OpenAPI validation and CEL rules,
// from k8s.io/apiextensions-apiserver at the cluster's version), so that a
// CRD the API server would refuse, or a rule that does not say what we
// mean, fails here rather than on a cluster.

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/crdtest"
)

const crdDir = "../../../deploy/kubernetes/crds"

func loadCRDs(t *testing.T) map[string]*crdtest.CRD {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "appmesh.k8s.aws_*.yaml"))
	if err != nil || len(files) != 6 {
		t.Fatalf("got CRD files %v (%v), want 6", files, err)
	}
	out := map[string]*crdtest.CRD{}
	for _, f := range files {
		c, err := crdtest.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		out[c.Internal.Spec.Names.Kind] = c
	}
	return out
}

func TestCRDsAreValidAndClosed(t *testing.T) {
	crds := loadCRDs(t)
	for kind, c := range crds {
		if p := c.Internal.Spec.PreserveUnknownFields; p != nil && *p {
			t.Errorf("%s: spec.preserveUnknownFields is set", kind)
		}
		var walk func(path string, s *apiextensions.JSONSchemaProps)
		walk = func(path string, s *apiextensions.JSONSchemaProps) {
			if s == nil {
				return
			}
			if s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields {
				t.Errorf("%s: %s preserves unknown fields", kind, path)
			}
			for name, p := range s.Properties {
				walk(path+"."+name, &p)
			}
			if s.Items != nil {
				walk(path+"[]", s.Items.Schema)
			}
			if s.AdditionalProperties != nil {
				walk(path+"{}", s.AdditionalProperties.Schema)
			}
		}
		walk(kind, c.Internal.Spec.Validation.OpenAPIV3Schema)
		var cols []string
		for _, col := range c.Internal.Spec.AdditionalPrinterColumns {
			cols = append(cols, col.Name)
		}
		for _, want := range []string{"Accepted", "Translated", "Age"} {
			if !slices.Contains(cols, want) {
				t.Errorf("%s: printer columns %v lack %s", kind, cols, want)
			}
		}
		if sub := c.Internal.Spec.Subresources; sub == nil || sub.Status == nil {
			t.Errorf("%s: no status subresource", kind)
		}
	}
}

// admit runs an object through what the API server does on a create (old
// nil) or update with strict field validation, and returns its complaints.
func admit(t *testing.T, crds map[string]*crdtest.CRD, obj, old map[string]any) []string {
	t.Helper()
	kind, _ := obj["kind"].(string)
	c, ok := crds[kind]
	if !ok {
		t.Fatalf("no CRD for kind %q", kind)
	}
	msgs, err := c.Admit(obj, old)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func docs(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, chunk := range bytes.Split(data, []byte("\n---")) {
		j, err := utilyaml.ToJSON(chunk)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := utiljson.Unmarshal(j, &m); err != nil {
			t.Fatal(err)
		}
		if m == nil {
			continue
		}
		out = append(out, m)
	}
	return out
}

func TestAdmissionAcceptsControllerManifests(t *testing.T) {
	crds := loadCRDs(t)
	for _, tt := range []struct {
		file string
		want int
	}{
		{"howto-k8s-grpc.yaml", 9},
		// As kubectl get -o yaml printed them on an App Mesh cluster.
		{"exported-from-appmesh.yaml", 3},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("../../../internal/k8s/appmesh/testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, obj := range docs(t, data) {
				if !strings.HasPrefix(obj["apiVersion"].(string), "appmesh.k8s.aws/") {
					continue
				}
				n++
				if msgs := admit(t, crds, obj, nil); len(msgs) > 0 {
					t.Errorf("%s %v: got %q, want it admitted", obj["kind"], obj["metadata"], msgs)
				}
			}
			if n != tt.want {
				t.Errorf("admitted %d App Mesh objects, want %d", n, tt.want)
			}
		})
	}
}

const router = `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: r, namespace: ns}
spec:
  listeners: [{portMapping: {port: 8080, protocol: grpc}}]
  routes:
`

func TestAdmissionRefusesBadManifests(t *testing.T) {
	crds := loadCRDs(t)
	tests := []struct {
		name, doc string
		want      string
	}{
		{"unknown field", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec:
  listeners: [{portMaping: {port: 8080, protocol: grpc}}]`, `unknown field "spec.listeners[0].portMaping"`},
		{"unknown protocol", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec:
  listeners: [{portMapping: {port: 8080, protocol: udp}}]`, `spec.listeners[0].portMapping.protocol: Unsupported value: "udp"`},
		{"two route kinds", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}
      httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}`,
			`spec.routes[0]: Invalid value: "object": exactly one of grpcRoute, httpRoute, http2Route, tcpRoute must be set`},
		{"no route kind", router + `    - name: a`, `spec.routes[0]: Invalid value: "object": exactly one of grpcRoute, httpRoute, http2Route, tcpRoute must be set`},
		{"weight above 100", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 101}]}}`,
			`spec.routes[0].grpcRoute.action.weightedTargets[0].weight: Invalid value: 101: spec.routes[0].grpcRoute.action.weightedTargets[0].weight in body should be less than or equal to 100`},
		{"no weighted target", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: []}}`,
			`spec.routes[0].grpcRoute.action.weightedTargets: Invalid value: 0: spec.routes[0].grpcRoute.action.weightedTargets in body should have at least 1 items`},
		{"all weights zero", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 0}]}}`,
			`spec.routes[0].grpcRoute.action: Invalid value: "object": at least one weighted target needs a weight above 0`},
		{"target with ref and ARN", router + `    - name: a
      httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, virtualNodeARN: "arn:aws:appmesh:r:1:mesh/m/virtualNode/n", weight: 1}]}}`,
			`spec.routes[0].httpRoute.action.weightedTargets[0]: Invalid value: "object": exactly one of virtualNodeRef, virtualNodeARN must be set`},
		{"duplicate route names", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}
    - name: a
      grpcRoute: {match: {serviceName: s.T}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}`,
			`spec.routes[1]: Duplicate value`},
		{"prefix and path", router + `    - name: a
      httpRoute: {match: {prefix: /, path: {exact: /x}}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}`,
			`spec.routes[0].httpRoute.match: Invalid value: "object": exactly one of prefix, path must be set`},
		{"method without service", router + `    - name: a
      grpcRoute: {match: {methodName: Get}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}`,
			`spec.routes[0].grpcRoute.match.methodName: Invalid value: "object": methodName needs serviceName`},
		{"two header match methods", router + `    - name: a
      httpRoute: {match: {prefix: /, headers: [{name: h, match: {exact: a, prefix: b}}]}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}}`,
			`spec.routes[0].httpRoute.match.headers[0].match: Invalid value: "object": exactly one of exact, prefix, range, regex, suffix must be set`},
		{"retry without events", router + `    - name: a
      grpcRoute: {match: {serviceName: s.S}, action: {weightedTargets: [{virtualNodeRef: {name: vn}, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {value: 1, unit: s}}}`,
			`spec.routes[0].grpcRoute.retryPolicy: Invalid value: "object": at least one of grpcRetryEvents, httpRetryEvents, tcpRetryEvents is required`},
		{"health check too often", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
      healthCheck: {protocol: grpc, healthyThreshold: 2, unhealthyThreshold: 2, timeoutMillis: 2000, intervalMillis: 1000}`,
			`spec.listeners[0].healthCheck.intervalMillis: Invalid value: 1000: spec.listeners[0].healthCheck.intervalMillis in body should be greater than or equal to 5000`},
		{"backend with ref and ARN", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec:
  backends: [{virtualService: {virtualServiceRef: {name: s}, virtualServiceARN: "arn:aws:appmesh:r:1:mesh/m/virtualService/s"}}]`,
			`spec.backends[0].virtualService: Invalid value: "object": exactly one of virtualServiceRef, virtualServiceARN must be set`},
		{"provider with node and router", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: s, namespace: ns}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: vn}}, virtualRouter: {virtualRouterRef: {name: r}}}`,
			`spec.provider: Invalid value: "object": exactly one of virtualNode, virtualRouter must be set`},
		{"gateway route with two kinds", `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: g, namespace: ns}
spec:
  grpcRoute: {match: {serviceName: s.S}, action: {target: {virtualService: {virtualServiceRef: {name: s}}}}}
  httpRoute: {match: {prefix: /}, action: {target: {virtualService: {virtualServiceRef: {name: s}}}}}`,
			`spec: Invalid value: "object": exactly one of grpcRoute, httpRoute, http2Route must be set`},
		{"gateway route prefix without slash", `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: g, namespace: ns}
spec:
  httpRoute: {match: {prefix: api}, action: {target: {virtualService: {virtualServiceRef: {name: s}}}}}`,
			`spec.httpRoute.match.prefix: Invalid value: "object": prefix must start with /`},
		{"gateway grpc route without service or host", `apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: g, namespace: ns}
spec:
  grpcRoute: {match: {}, action: {target: {virtualService: {virtualServiceRef: {name: s}}}}}`,
			`spec.grpcRoute.match: Invalid value: "object": at least one of serviceName, hostname must be set`},
		{"gateway listener tcp", `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: g, namespace: ns}
spec:
  listeners: [{portMapping: {port: 8088, protocol: tcp}}]`,
			`spec.listeners[0].portMapping.protocol: Unsupported value: "tcp"`},
		{"egress filter", `apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: m}
spec:
  egressFilter: {type: DENY}`,
			`spec.egressFilter.type: Unsupported value: "DENY"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := docs(t, []byte(tt.doc))
			msgs := admit(t, crds, objs[0], nil)
			if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, tt.want) }) {
				t.Errorf("got %q, want a complaint containing %q", msgs, tt.want)
			}
		})
	}
}

func TestAdmissionKeepsAWSNameImmutable(t *testing.T) {
	crds := loadCRDs(t)
	old := docs(t, []byte(`apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec: {awsName: n_ns}`))[0]
	obj := docs(t, []byte(`apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: ns}
spec: {awsName: other}`))[0]
	msgs := admit(t, crds, obj, old)
	want := `spec.awsName: Invalid value: "string": awsName is immutable`
	if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
		t.Errorf("got %q, want a complaint containing %q", msgs, want)
	}
}
