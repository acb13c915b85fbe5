package kubernetes_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
)

// echoMeshYAML is a small mesh whose objects all get a status.
const echoMeshYAML = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: echo, generation: 1}
spec:
  namespaceSelector: {matchLabels: {mesh: echo}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: echo-server, namespace: echo, generation: 1}
spec:
  podSelector: {matchLabels: {app: echo-server}}
  listeners:
    - portMapping: {port: 8080, protocol: grpc}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: echo-server, namespace: echo, generation: 1}
spec:
  provider:
    virtualNode:
      virtualNodeRef: {name: echo-server}
`

func echoMesh(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	return objectsOf(t, echoMeshYAML)
}

// secureMeshYAML is a mesh with TLS on: its nodes' pods get identities.
const secureMeshYAML = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: secure, generation: 1}
spec:
  namespaceSelector: {matchLabels: {mesh: secure}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: server, namespace: sec, generation: 1, uid: 5e0a1c2d-0000-4000-8000-000000000001}
spec:
  podSelector: {matchLabels: {app: server}}
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      tls:
        mode: STRICT
        certificate: {sds: {secretName: gmesh}}
`

// objectsOf decodes a multi-document YAML of App Mesh objects.
func objectsOf(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func gvrOf(t *testing.T, kind string) schema.GroupVersionResource {
	t.Helper()
	for _, k := range controller.Kinds {
		if string(k.Kind) == kind {
			return k.GVR
		}
	}
	t.Fatalf("%s: not an App Mesh kind", kind)
	return schema.GroupVersionResource{}
}

func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

func httpsClient(t *testing.T, caPEM []byte, serverName string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA in the secret")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func encodeJSON(v any) ([]byte, error) { return json.Marshal(v) }

// post sends one review and returns its response.
func post(ctx context.Context, t *testing.T, c *http.Client, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	b, err := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(hreq)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
		t.Fatalf("POST %s: %s: %s (%v)", url, resp.Status, body, err)
	}
	return out.Response
}
