package k8stest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/k8stest"
)

var saidRE = regexp.MustCompile(`\(Said ([0-9.]+), Version 0\.9\)`)

// TestServices checks that ClusterIP Services route on the real cluster
// (kube-proxy), on every path gmesh uses: the host to a Service of two
// pods, reaching both, and to its NodePort on the node IP; a pod to a Service (echo-client in a pod calling
// echo-server's ClusterIP); a pod's in-cluster API client through the
// `kubernetes` Service; and the API server to an admission webhook behind a
// Service (443 -> 9443). Every call is bounded in count and time and dials
// only the cluster's pod and Service addresses.
func TestServices(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no real cluster")
	}
	k8stest.RequireHost(t)
	const (
		serverRef = "gmesh.local/echo-server:0.9"
		clientRef = "gmesh.local/echo-client:k8stest"
		probeRef  = "gmesh.local/svcprobe:k8stest"
	)
	dir := t.TempDir()
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer bcancel()
	var tarballs []string
	for _, img := range []struct{ pkg, ref string }{
		{"github.com/gmesh-dev/gmesh/cmd/echo-server", serverRef},
		{"github.com/gmesh-dev/gmesh/cmd/echo-client", clientRef},
		{"github.com/gmesh-dev/gmesh/internal/k8stest/svcprobe", probeRef},
	} {
		out := filepath.Join(dir, filepath.Base(img.pkg)+".tar")
		if err := k8stest.BuildGoImage(bctx, "", img.pkg, "", k8stest.ImageSpec{Ref: img.ref}, out); err != nil {
			t.Fatal(err)
		}
		tarballs = append(tarballs, out)
	}

	c := k8stest.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, tb := range tarballs {
		if err := c.LoadImage(ctx, tb); err != nil {
			t.Fatal(err)
		}
	}
	cs := c.Client()
	_, svcNet, _ := net.ParseCIDR(k8stest.ServiceCIDR)

	// echo-server, 2 replicas, behind a ClusterIP Service.
	start := time.Now()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, echoServerDeployment(serverRef, 2), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the deployment: %v", err)
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-server", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort, // a ClusterIP, and a port on the node IP
			Selector: map[string]string{"app": "echo-server"},
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: 50051, TargetPort: intstr.FromString("grpc")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create the service: %v", err)
	}
	clusterIP := svc.Spec.ClusterIP
	if ip := net.ParseIP(clusterIP); ip == nil || !svcNet.Contains(ip) {
		t.Fatalf("echo-server's ClusterIP: got %q, want an address in %s", clusterIP, k8stest.ServiceCIDR)
	}
	ips := waitReadyPods(ctx, t, c, "app=echo-server", 2)
	t.Logf("2 echo-server pods Ready %s after the create: %v; ClusterIP %s", time.Since(start).Round(time.Millisecond), ips, clusterIP)

	t.Run("host to ClusterIP reaches both pods", func(t *testing.T) {
		// A new connection per call: kube-proxy picks an endpoint per
		// connection, each with probability 1/2, so 40 answered calls miss
		// a pod with probability 2^-39. The first calls may precede
		// kube-proxy's sync of the endpoints (refused): at most 100 calls,
		// 100 ms apart, within 30 s.
		said := map[string]int{}
		var lastErr error
		target := net.JoinHostPort(clusterIP, "50051")
		calls, answered := 0, 0
		hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
		defer hcancel()
		err := poll(hctx, func() (bool, error) {
			if calls++; calls > 100 {
				return false, fmt.Errorf("%d calls", calls-1)
			}
			msg, err := echoOnce(hctx, target)
			if err != nil {
				lastErr = err
				return false, nil
			}
			m := saidRE.FindStringSubmatch(msg)
			if m == nil {
				return false, fmt.Errorf("Echo through %s: got %q, want a reply saying the pod's address", target, msg)
			}
			said[m[1]]++
			answered++
			return len(said) == 2 || answered == 40, nil
		})
		if err != nil {
			lastErr = fmt.Errorf("%w (last call: %v)", err, lastErr)
		}
		for _, ip := range ips {
			if said[ip] == 0 {
				t.Errorf("Echo through the ClusterIP %s never reached pod %s: replies came from %v (last error %v)", target, ip, said, lastErr)
			}
		}
		t.Logf("replies through %s by pod: %v (%d calls)", target, said, calls)
	})

	t.Run("host to NodePort on the node IP", func(t *testing.T) {
		// NodePorts open on the node IP only (kube-proxy's
		// nodePortAddresses), as a gateway Service of type NodePort or
		// LoadBalancer would be reached from the host.
		target := net.JoinHostPort(k8stest.NodeIP, fmt.Sprint(svc.Spec.Ports[0].NodePort))
		var msg string
		var err error
		for i := 0; i < 5; i++ {
			if msg, err = echoOnce(ctx, target); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("Echo through the NodePort %s: %v", target, err)
		}
		if m := saidRE.FindStringSubmatch(msg); m == nil || (m[1] != ips[0] && m[1] != ips[1]) {
			t.Fatalf("Echo through the NodePort %s: got %q, want a reply said by one of the pods %v", target, msg, ips)
		}
	})

	t.Run("pod to ClusterIP", func(t *testing.T) {
		// echo-client in a pod dials echo-server's ClusterIP; it is Ready
		// (/readyz) once that gRPC connection is. The host then asks it for
		// an Echo at its pod address.
		grace := int64(1)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-client", Namespace: "default", Labels: map[string]string{"app": "echo-client"}},
			Spec: corev1.PodSpec{
				AutomountServiceAccountToken:  ptr(false),
				EnableServiceLinks:            ptr(false),
				TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{
					Name: "echo-client", Image: clientRef, ImagePullPolicy: corev1.PullNever,
					Args:  []string{"--echo-host", net.JoinHostPort(clusterIP, "50051"), "--port", "8080"},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}},
			},
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create the echo-client pod: %v", err)
		}
		clientIP := waitReadyPods(ctx, t, c, "app=echo-client", 1)[0]
		url := "http://" + net.JoinHostPort(clientIP, "8080") + "/?name=svc"
		var code int
		var body string
		var err error
		for i := 0; i < 5; i++ {
			code, body, err = httpGet(ctx, url)
			if err == nil && code == http.StatusOK {
				break
			}
		}
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: got %d %q (%v), want 200", url, code, body, err)
		}
		m := saidRE.FindStringSubmatch(body)
		if !strings.HasPrefix(body, "Response from the server: Hello, svc-san!") || m == nil || (m[1] != ips[0] && m[1] != ips[1]) {
			t.Fatalf("GET %s: got %q, want a reply said by one of the pods %v", url, body, ips)
		}
		t.Logf("echo-client pod %s -> %s -> pod %s", clientIP, clusterIP, m[1])
	})

	t.Run("in-cluster client through the kubernetes Service", func(t *testing.T) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "incluster", Namespace: "default"},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "svcprobe", Image: probeRef, ImagePullPolicy: corev1.PullNever, Args: []string{"incluster"},
				}},
			},
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create the incluster pod: %v", err)
		}
		var phase corev1.PodPhase
		err := poll(ctx, func() (bool, error) {
			p, err := cs.CoreV1().Pods("default").Get(ctx, "incluster", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			phase = p.Status.Phase
			return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
		})
		logs, lerr := cs.CoreV1().Pods("default").GetLogs("incluster", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil || phase != corev1.PodSucceeded {
			t.Fatalf("the incluster pod: phase %s (%v), log %q (%v)", phase, err, logs, lerr)
		}
		want := fmt.Sprintf("in-cluster client at https://%s is system:serviceaccount:default:default", net.JoinHostPort(k8stest.KubernetesServiceIP, "443"))
		if got := strings.TrimSpace(string(logs)); got != want {
			t.Errorf("the incluster pod's log: got %q, want %q", got, want)
		}
	})

	t.Run("API server to a webhook Service", func(t *testing.T) {
		testWebhookService(ctx, t, c, probeRef)
	})
}

// testWebhookService runs svcprobe's webhook behind a Service (443 -> 9443)
// and registers it for ConfigMaps labelled for it: the API server, on the
// host, calls it through the Service's ClusterIP and kube-proxy (it resolves
// a webhook's service to its ClusterIP; --enable-aggregator-routing is off).
func testWebhookService(ctx context.Context, t *testing.T, c *k8stest.Cluster, probeRef string) {
	cs := c.Client()
	caPEM, crtPEM, keyPEM, err := webhookCerts("svcprobe-webhook.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "svcprobe-webhook-tls", Namespace: "default"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": crtPEM, "tls.key": keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the webhook's secret: %v", err)
	}
	labels := map[string]string{"app": "svcprobe-webhook"}
	grace := int64(1)
	if _, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "svcprobe-webhook", Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "webhook", Image: probeRef, ImagePullPolicy: corev1.PullNever, Args: []string{"webhook"},
				Ports:        []corev1.ContainerPort{{Name: "webhook", ContainerPort: 9443}},
				VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9443)}},
					PeriodSeconds: 1,
				},
			}},
			Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "svcprobe-webhook-tls"}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the webhook pod: %v", err)
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "svcprobe-webhook", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromString("webhook")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the webhook service: %v", err)
	}
	waitReadyPods(ctx, t, c, "app=svcprobe-webhook", 1)

	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	selector := map[string]string{"gmesh-k8stest/webhook": "svcprobe"}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "svcprobe"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "svcprobe.gmesh.local",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Namespace: "default", Name: "svcprobe-webhook", Path: ptr("/validate"), Port: ptr(int32(443))},
				CABundle: caPEM,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: selector},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(5)),
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the webhook configuration: %v", err)
	}

	// Until kube-proxy has the endpoint (within its 1 s minimum sync) and
	// the API server has the configuration, a create fails to call the
	// webhook or is not sent to it; then the webhook's denial comes back.
	cm := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: selector}}
	}
	var lastErr error
	tries, created := 0, 0
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	err = poll(pctx, func() (bool, error) {
		if tries++; tries > 100 {
			return false, fmt.Errorf("%d creates", tries-1)
		}
		name := fmt.Sprintf("denied-%d", tries)
		_, lastErr = cs.CoreV1().ConfigMaps("default").Create(pctx, cm(name), metav1.CreateOptions{})
		if lastErr == nil {
			created++ // the API server does not call the webhook yet
		}
		return lastErr != nil && strings.Contains(lastErr.Error(), "denied by svcprobe: "+name), nil
	})
	if err != nil {
		t.Fatalf("a labelled ConfigMap was never denied by the webhook through its Service (%v): last result %v", err, lastErr)
	}
	t.Logf("the webhook denied through its Service at create %d (%d before it admitted without calling it, the others failed to call it): %v", tries, created, lastErr)
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm("allowed"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create an allowed ConfigMap through the webhook: %v", err)
	}
}

// echoOnce calls Echo on target over a connection of its own.
func echoOnce(ctx context.Context, target string) (string, error) {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(conn).Echo(rctx, &echov1.EchoRequest{Name: "svc"})
	if err != nil {
		return "", err
	}
	return resp.GetMessage(), nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// webhookCerts makes a CA and a serving certificate for dnsName, as PEM.
func webhookCerts(dnsName string) (caPEM, crtPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "svcprobe-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func ptr[T any](v T) *T { return &v }
