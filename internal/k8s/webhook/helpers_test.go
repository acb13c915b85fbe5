package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

const (
	cpNamespace = "gmesh-system"
	cpService   = "gmesh-controlplane"
)

func testContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GMESH_WEBHOOK_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// pollUntil calls cond every few milliseconds until it returns true or ctx
// ends.
func pollUntil(ctx context.Context, t testing.TB, what string, cond func() bool) {
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

// webhookConfigs are the two configurations as deploy/kubernetes has
// them, without caBundle, plus a webhook of someone else's that must not
// be touched.
func webhookConfigs() []runtime.Object {
	svc := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: cpNamespace, Name: cpService, Path: &path}}
	}
	other := "https://example.invalid/hook"
	return []runtime.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhook.MutatingConfigName},
			Webhooks: []admissionregistrationv1.MutatingWebhook{
				{Name: "inject.gmesh.dev", ClientConfig: svc(webhook.PathInject)},
				{Name: "appmesh-inject.gmesh.dev", ClientConfig: svc(webhook.PathInject)},
			},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhook.ValidatingConfigName},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{
				{Name: "other.example.com", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &other}},
				{Name: "validate.appmesh.gmesh.dev", ClientConfig: svc(webhook.PathValidate)},
			},
		},
	}
}

// caBundles returns every webhook's caBundle by webhook name.
func caBundles(t testing.TB, kube *kubefake.Clientset) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	m, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.MutatingConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range m.Webhooks {
		out[w.Name] = w.ClientConfig.CABundle
	}
	v, err := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, webhook.ValidatingConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range v.Webhooks {
		out[w.Name] = w.ClientConfig.CABundle
	}
	return out
}

func getSecret(t testing.TB, kube *kubefake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := kube.CoreV1().Secrets(cpNamespace).Get(context.Background(), webhook.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret: %v", err)
	}
	return s
}

func parseLeaf(t testing.TB, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(s.Data[webhook.KeyTLSCert], s.Data[webhook.KeyTLSKey])
	if err != nil {
		t.Fatalf("secret's key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// verifyLeaf checks that the secret's serving certificate verifies with
// its CA bundle for the Service's name at now.
func verifyLeaf(t testing.TB, s *corev1.Secret, now time.Time) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.Data[webhook.KeyCACert]) {
		t.Fatal("ca.crt: no certificate")
	}
	leaf := parseLeaf(t, s)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: cpService + "." + cpNamespace + ".svc", CurrentTime: now}); err != nil {
		t.Fatalf("serving certificate does not verify with ca.crt: %v", err)
	}
}

// staticObjects is a fixed cluster state.
type staticObjects struct {
	in  appmesh.Input
	err error
}

func (s *staticObjects) AppMeshObjects() (appmesh.Input, error) { return s.in, s.err }

// decodeInput reads App Mesh manifests (and Namespaces) into an input.
func decodeInput(t testing.TB, manifests string) appmesh.Input {
	t.Helper()
	var in appmesh.Input
	if err := appmesh.Decode("test.yaml", []byte(manifests), &in); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return in
}

// review sends one AdmissionReview over HTTPS and returns the response.
func review(ctx context.Context, t testing.TB, client *http.Client, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	if req.UID == "" {
		req.UID = types.UID(fmt.Sprintf("uid-%d", time.Now().UnixNano()))
	}
	body, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		t.Fatal(err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s: %s", url, resp.Status, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode the response %s: %v", b, err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Errorf("response is a %s %s, want admission.k8s.io/v1 AdmissionReview", out.APIVersion, out.Kind)
	}
	if out.Response == nil {
		t.Fatalf("no response in %s", b)
	}
	if out.Response.UID != req.UID {
		t.Errorf("response uid %q, want the request's %q", out.Response.UID, req.UID)
	}
	return out.Response
}

// tlsClient trusts the PEM bundle and expects the Service's name.
func tlsClient(t testing.TB, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in the bundle")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: cpService + "." + cpNamespace + ".svc", MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
