package webhook_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// harness is the webhooks served over HTTPS on 127.0.0.1 against a fake
// cluster.
type harness struct {
	kube   *kubefake.Clientset
	w      *webhook.Webhooks
	objs   *staticObjects
	client *http.Client

	mu      sync.Mutex
	watches int
}

func (h *harness) url(path string) string { return "https://" + h.w.Addr() + path }

func controlPlaneService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: cpNamespace, Name: cpService},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: "webhook", Port: 443}, {Name: "xds", Port: 18000},
		}},
	}
}

// startWebhooks runs the webhooks (and, if lead, the leader's certificate
// loop) until the test ends, and waits until they serve a certificate.
func startWebhooks(t *testing.T, objs *staticObjects, lead bool, mod func(*webhook.Options), core ...runtime.Object) *harness {
	t.Helper()
	h := &harness{objs: objs}
	h.kube = kubefake.NewClientset(append(webhookConfigs(), core...)...)
	h.kube.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := h.kube.Tracker().Watch(a.GetResource(), a.GetNamespace())
		h.mu.Lock()
		h.watches++
		h.mu.Unlock()
		return true, w, err
	})
	opts := webhook.Options{Addr: "127.0.0.1:0", Namespace: cpNamespace, Settle: -1, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	w, err := webhook.New(h.kube, nil, objs, nil, opts)
	if err != nil {
		t.Fatalf("webhook.New: %v", err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	tctx := testContext(t, 30*time.Second)
	// The fake has no resource versions: a Secret made between the
	// informer's list and its watch would be missed.
	pollUntil(tctx, t, "secret watch open", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.watches >= 1
	})
	if lead {
		wg.Add(1)
		go func() { defer wg.Done(); w.Lead(ctx) }()
		pollUntil(tctx, t, "certificate served", w.Ready)
		h.client = tlsClient(t, getSecret(t, h.kube).Data[webhook.KeyCACert])
	}
	return h
}

func TestServesTheSecretsCertificateAndReloads(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	leader := startWebhooks(t, &staticObjects{}, true, nil)
	req := &admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, Operation: admissionv1.Create}
	if resp := review(ctx, t, leader.client, leader.url(webhook.PathValidate), req); !resp.Allowed {
		t.Fatalf("a kind not ours was refused: %+v", resp.Result)
	}

	// A second replica on the same cluster that does not lead serves the
	// leader's Secret once its informer has it.
	follower := startWebhooks(t, &staticObjects{}, false, nil)
	if follower.w.Ready() {
		t.Fatal("a replica with no Secret is Ready")
	}
	s := getSecret(t, leader.kube)
	s.ResourceVersion = ""
	if _, err := follower.kube.CoreV1().Secrets(cpNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "follower loads the secret", follower.w.Ready)
	review(ctx, t, leader.client, follower.url(webhook.PathInject), &admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Operation: admissionv1.Delete,
	})

	// The Secret deleted: the leader makes a new CA, and both replicas
	// serve the new certificate, which the old CA does not verify.
	old := getSecret(t, leader.kube)
	if err := leader.kube.CoreV1().Secrets(cpNamespace).Delete(ctx, webhook.DefaultSecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var renewed *corev1.Secret
	pollUntil(ctx, t, "leader makes a new secret", func() bool {
		s, err := leader.kube.CoreV1().Secrets(cpNamespace).Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
		renewed = s
		return err == nil
	})
	if string(renewed.Data[webhook.KeyCACert]) == string(old.Data[webhook.KeyCACert]) {
		t.Fatal("the new secret has the old CA")
	}
	newClient := tlsClient(t, renewed.Data[webhook.KeyCACert])
	pollUntil(ctx, t, "leader serves the new certificate", func() bool {
		c, err := tls.Dial("tcp", leader.w.Addr(), newClient.Transport.(*http.Transport).TLSClientConfig)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	_, err := tls.Dial("tcp", leader.w.Addr(), leader.client.Transport.(*http.Transport).TLSClientConfig)
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("a client trusting only the old CA: got %v, want a certificate verification error", err)
	}
}

func TestHandlerRefusesBadRequests(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	h := startWebhooks(t, &staticObjects{}, true, nil)
	for _, tc := range []struct {
		name, method, ctype, body string
		want                      int
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"YAML", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType},
		{"not JSON", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"v1beta1 review", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`, http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tc.method, h.url(webhook.PathInject), strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("got %s, want %d", resp.Status, tc.want)
			}
		})
	}
}

// --- injection

func injectNamespaces() []runtime.Object {
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	return []runtime.Object{
		ns("echo", map[string]string{webhook.LabelInject: webhook.ValueEnabled}),
		ns("legacy", map[string]string{webhook.LabelAppMeshInject: webhook.ValueEnabled}),
		ns("plain", nil),
		ns("off", map[string]string{webhook.LabelInject: webhook.ValueDisabled, webhook.LabelAppMeshInject: webhook.ValueEnabled}),
	}
}

// testPod is a Deployment's pod: generateName, no name.
func testPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "echo-client-7d4b9-"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "wait", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "echo-client", Env: []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}},
				{Name: "other", Image: "other"},
			},
		},
	}
}

func podRequest(t testing.TB, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace, Operation: admissionv1.Create,
		Object: runtime.RawExtension{Raw: raw},
	}
}

// applyPatch applies a response's JSON patch to pod.
func applyPatch(t testing.TB, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if len(resp.Patch) == 0 {
		return pod
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", resp.Patch, err)
	}
	raw, _ := json.Marshal(pod)
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", resp.Patch, err)
	}
	var patched corev1.Pod
	if err := json.Unmarshal(out, &patched); err != nil {
		t.Fatal(err)
	}
	return &patched
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

// checkInjected checks that c has the downward API variables before the
// bootstrap, and a bootstrap naming xdsAddr and the node id template.
func checkInjected(t testing.TB, c corev1.Container, xdsAddr string) {
	t.Helper()
	idx := map[string]int{}
	for i, e := range c.Env {
		idx[e.Name] = i
	}
	env := envOf(c)
	for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		e, ok := env[name]
		if !ok {
			t.Errorf("container %s: no %s", c.Name, name)
			continue
		}
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			if e.Value == "" { // the container's own is kept as it is
				t.Errorf("container %s: %s = %+v, want fieldRef %s", c.Name, name, e, path)
			}
		}
		if idx[name] > idx[bootstrap.EnvConfig] {
			t.Errorf("container %s: %s comes after %s: $(%s) would not expand", c.Name, name, bootstrap.EnvConfig, name)
		}
	}
	bs, ok := env[bootstrap.EnvConfig]
	if !ok {
		t.Fatalf("container %s: no %s", c.Name, bootstrap.EnvConfig)
	}
	var doc struct {
		XDSServers []struct {
			ServerURI string `json:"server_uri"`
		} `json:"xds_servers"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
	}
	if err := json.Unmarshal([]byte(bs.Value), &doc); err != nil {
		t.Fatalf("container %s: %s is not JSON: %v", c.Name, bootstrap.EnvConfig, err)
	}
	if len(doc.XDSServers) != 1 || doc.XDSServers[0].ServerURI != xdsAddr {
		t.Errorf("container %s: xds_servers %+v, want one at %s", c.Name, doc.XDSServers, xdsAddr)
	}
	if doc.Node.ID != "$(POD_NAMESPACE)/$(POD_NAME)" {
		t.Errorf("container %s: node id %q, want $(POD_NAMESPACE)/$(POD_NAME)", c.Name, doc.Node.ID)
	}
}

func TestInjection(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	core := append(injectNamespaces(), controlPlaneService())
	h := startWebhooks(t, &staticObjects{}, true, nil, core...)
	const xdsAddr = "10.96.0.10:18000" // the Service's ClusterIP and xds port

	for _, tc := range []struct {
		name   string
		pod    func() *corev1.Pod
		inject bool
	}{
		{"labelled namespace", func() *corev1.Pod { return testPod("echo") }, true},
		{"App Mesh's label", func() *corev1.Pod { return testPod("legacy") }, true},
		{"unlabelled namespace", func() *corev1.Pod { return testPod("plain") }, false},
		{"namespace disabled overrides App Mesh's label", func() *corev1.Pod { return testPod("off") }, false},
		{"pod opts out", func() *corev1.Pod {
			p := testPod("echo")
			p.Annotations = map[string]string{webhook.LabelInject: webhook.ValueDisabled}
			return p
		}, false},
		{"pod opts out by label", func() *corev1.Pod {
			p := testPod("echo")
			p.Labels = map[string]string{webhook.LabelInject: webhook.ValueDisabled}
			return p
		}, false},
		{"pod opts out with App Mesh's annotation", func() *corev1.Pod {
			p := testPod("legacy")
			p.Annotations = map[string]string{webhook.LabelAppMeshInject: webhook.ValueDisabled}
			return p
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := tc.pod()
			resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod))
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if !tc.inject {
				if len(resp.Patch) != 0 {
					t.Fatalf("got patch %s, want none", resp.Patch)
				}
				return
			}
			patched := applyPatch(t, pod, resp)
			for _, c := range append(patched.Spec.InitContainers, patched.Spec.Containers...) {
				checkInjected(t, c, xdsAddr)
			}
			if got := envOf(patched.Spec.Containers[0])["GREETING"].Value; got != "hi" {
				t.Errorf("the container's own env lost: GREETING=%q", got)
			}
			if len(patched.Spec.Containers) != 2 || len(patched.Spec.InitContainers) != 1 || len(patched.Spec.Volumes) != 0 {
				t.Errorf("injection added containers or volumes: %+v", patched.Spec)
			}
			// Reinvocation (reinvocationPolicy: IfNeeded) changes nothing.
			again := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, patched))
			if !again.Allowed || len(again.Patch) != 0 {
				t.Errorf("reinvocation: allowed %v, patch %s; want allowed, no patch", again.Allowed, again.Patch)
			}
		})
	}

	t.Run("container that sets the variables itself", func(t *testing.T) {
		pod := testPod("echo")
		pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env,
			corev1.EnvVar{Name: "POD_NAME", Value: "fixed"},
			corev1.EnvVar{Name: bootstrap.EnvConfig, Value: `{"mine":true}`})
		pod.Spec.Containers[1].Env = []corev1.EnvVar{{Name: bootstrap.EnvFile, Value: "/etc/bootstrap.json"}}
		patched := applyPatch(t, pod, review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod)))
		app := envOf(patched.Spec.Containers[0])
		if app["POD_NAME"].Value != "fixed" || app[bootstrap.EnvConfig].Value != `{"mine":true}` {
			t.Errorf("the container's own variables were changed: %+v", patched.Spec.Containers[0].Env)
		}
		if n := len(patched.Spec.Containers[0].Env); n != 4 {
			t.Errorf("container app has %d env entries, want 4 (its 3 and POD_NAMESPACE): %+v", n, patched.Spec.Containers[0].Env)
		}
		if _, ok := envOf(patched.Spec.Containers[1])[bootstrap.EnvConfig]; ok {
			t.Errorf("a container that names a bootstrap file got %s too", bootstrap.EnvConfig)
		}
		checkInjected(t, patched.Spec.InitContainers[0], xdsAddr)
	})

	t.Run("update is not injected", func(t *testing.T) {
		req := podRequest(t, testPod("echo"))
		req.Operation = admissionv1.Update
		if resp := review(ctx, t, h.client, h.url(webhook.PathInject), req); len(resp.Patch) != 0 {
			t.Errorf("update patched: %s", resp.Patch)
		}
	})
}

func TestInjectionAddress(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	t.Run("flag", func(t *testing.T) {
		h := startWebhooks(t, &staticObjects{}, true, func(o *webhook.Options) {
			o.XDSAddress = "gmesh-controlplane.gmesh-system.svc:18000"
		}, injectNamespaces()...)
		pod := testPod("echo")
		patched := applyPatch(t, pod, review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod)))
		checkInjected(t, patched.Spec.Containers[0], "gmesh-controlplane.gmesh-system.svc:18000")
	})
	t.Run("no service", func(t *testing.T) {
		h := startWebhooks(t, &staticObjects{}, true, nil, injectNamespaces()...)
		resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, testPod("echo")))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, `gmesh-system/gmesh-controlplane`) || !strings.Contains(resp.Result.Message, "--xds-address") {
			t.Errorf("without the Service: allowed %v, %+v; want refused naming the Service and --xds-address", resp.Allowed, resp.Result)
		}
	})
}
