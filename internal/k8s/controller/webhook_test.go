package controller_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

// webhookObjects are what deploy/kubernetes installs for the webhooks:
// the control plane's Service and the two configurations.
func webhookObjects() []runtime.Object {
	path := func(p string) *string { return &p }
	ref := func(p string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "gmesh-system", Name: "gmesh-controlplane", Path: path(p)}}
	}
	return []runtime.Object{
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "gmesh-system", Name: "gmesh-controlplane"},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Name: "xds", Port: 18000}, {Name: "webhook", Port: 443}}},
		},
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhook.MutatingConfigName},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "inject.gmesh.dev", ClientConfig: ref(webhook.PathInject)}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhook.ValidatingConfigName},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "validate.appmesh.gmesh.dev", ClientConfig: ref(webhook.PathValidate)}},
		},
	}
}

// TestWebhooksOnTheControlPlane: the leader makes the certificates and
// sets the caBundle, /readyz waits for a certificate, the validator sees
// the informers' caches and the injector the namespaces' labels.
func TestWebhooksOnTheControlPlane(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	core := append(webhookObjects(), echoNamespace(), namespace("apps", map[string]string{webhook.LabelInject: webhook.ValueEnabled}))
	c := newFakeCluster(t, echoManifests(50051), core...)
	cp := startCP(t, c, controller.Config{
		HealthAddr: "127.0.0.1:0",
		Status: &controller.StatusConfig{Namespace: "gmesh-system", Identity: "replica-0",
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond},
		Webhook: &webhook.Options{Addr: "127.0.0.1:0", Namespace: "gmesh-system", Settle: -1},
	})
	pollUntil(ctx, t, "/readyz 200", func() (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cp.HealthAddr()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	sec, err := c.Kube.CoreV1().Secrets("gmesh-system").Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the leader made no secret: %v", err)
	}
	ca := sec.Data[webhook.KeyCACert]
	pollUntil(ctx, t, "caBundle set", func() (bool, error) {
		v, err := c.Kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, webhook.ValidatingConfigName, metav1.GetOptions{})
		return err == nil && bytes.Equal(v.Webhooks[0].ClientConfig.CABundle, ca), err
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gmesh-controlplane.gmesh-system.svc", MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	post := func(path string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
		t.Helper()
		req.UID = "1"
		b, _ := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cp.WebhookAddr()+path, bytes.NewReader(b))
		hreq.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(hreq)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &out); err != nil || out.Response == nil {
			t.Fatalf("POST %s: %s: %s (%v)", path, resp.Status, body, err)
		}
		return out.Response
	}
	vsReq := func(router string) *admissionv1.AdmissionRequest {
		raw, _ := yaml.YAMLToJSON([]byte(`apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: other, namespace: echo}
spec:
  provider:
    virtualRouter:
      virtualRouterRef: {name: ` + router + `}`))
		return &admissionv1.AdmissionRequest{
			Kind:      metav1.GroupVersionKind{Group: "appmesh.k8s.aws", Version: "v1beta2", Kind: "VirtualService"},
			Namespace: "echo", Name: "other", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		}
	}
	if resp := post(webhook.PathValidate, vsReq("echo-server")); !resp.Allowed {
		t.Errorf("a service on the cluster's router was refused: %+v", resp.Result)
	}
	if resp := post(webhook.PathValidate, vsReq("nope")); resp.Allowed || !strings.Contains(resp.Result.Message, "spec.provider.virtualRouter.virtualRouterRef: virtualrouter echo/nope not found") {
		t.Errorf("a service on a missing router: allowed %v, %+v; want refused naming the field", resp.Allowed, resp.Result)
	}
	podRaw, _ := json.Marshal(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}})
	resp := post(webhook.PathInject, &admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "apps", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: podRaw},
	})
	if !resp.Allowed || !strings.Contains(string(resp.Patch), `10.96.0.10:18000`) {
		t.Errorf("pod in a labelled namespace: allowed %v, patch %s; want a bootstrap naming 10.96.0.10:18000", resp.Allowed, resp.Patch)
	}
}
