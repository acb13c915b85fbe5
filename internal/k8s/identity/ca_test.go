package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const cpNamespace = "gmesh-system"

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// newKube is a fake clientset whose Secret writes behave as the API
// server's (resourceVersions, conflicts).
func newKube(objs ...runtime.Object) *kubefake.Clientset {
	kube := kubefake.NewClientset(objs...)
	k8sfake.APIServer(kube, dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()), secretsGVR)
	return kube
}

func getSecret(t *testing.T, kube *kubefake.Clientset, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret %s/%s: %v", ns, name, err)
	}
	return s
}

func TestLoadOrCreateCA(t *testing.T) {
	ctx := context.Background()
	kube := newKube()
	clk := clock.NewFake(t0)
	ca, err := identity.LoadOrCreateCA(ctx, kube, cpNamespace, identity.DefaultCASecret, clk)
	if err != nil {
		t.Fatal(err)
	}
	sec := getSecret(t, kube, cpNamespace, identity.DefaultCASecret)
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data[identity.CACertKey]) == 0 || len(sec.Data[identity.CAKeyKey]) == 0 {
		t.Fatalf("CA secret: type %q, keys %v; want kubernetes.io/tls with %s and %s", sec.Type, keysOf(sec.Data), identity.CACertKey, identity.CAKeyKey)
	}
	if sec.Labels[identity.LabelManaged] != "" {
		t.Errorf("CA secret labelled %s: the keeper would delete it", identity.LabelManaged)
	}
	if !ca.Cert().IsCA {
		t.Error("not a CA")
	}
	again, err := identity.LoadOrCreateCA(ctx, kube, cpNamespace, identity.DefaultCASecret, clk)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert().Equal(ca.Cert()) {
		t.Error("second LoadOrCreateCA made another CA; want the Secret's")
	}
}

// Two replicas start together: both find no Secret, both create one; the
// loser reads the winner's, and both sign with the same CA.
func TestLoadOrCreateCARace(t *testing.T) {
	ctx := context.Background()
	kube := newKube()
	misses := 2 // both replicas' first Get find nothing
	kube.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if misses > 0 {
			misses--
			return true, nil, apierrors.NewNotFound(secretsGVR.GroupResource(), identity.DefaultCASecret)
		}
		return false, nil, nil
	})
	a, err := identity.LoadOrCreateCA(ctx, kube, cpNamespace, identity.DefaultCASecret, clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.LoadOrCreateCA(ctx, kube, cpNamespace, identity.DefaultCASecret, clock.NewFake(t0))
	if err != nil {
		t.Fatalf("the replica that lost the race: %v", err)
	}
	if !a.Cert().Equal(b.Cert()) {
		t.Error("the replicas sign with different CAs")
	}
	creates := 0
	for _, act := range kube.Actions() {
		if act.GetVerb() == "create" && act.GetResource() == secretsGVR {
			creates++
		}
	}
	if creates != 2 {
		t.Errorf("%d creates, want 2 (the race happened)", creates)
	}
}

// A CA Secret that does not hold a usable CA is refused, naming the Secret
// and the key, and is never overwritten.
func TestDamagedCASecret(t *testing.T) {
	certPEM, keyPEM, err := pki.NewCAPEM(clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := pki.NewCAPEM(clock.NewFake(t0))
	if err != nil {
		t.Fatal(err)
	}
	leafCert, leafKey := notACA(t)
	where := "secret " + cpNamespace + "/" + identity.DefaultCASecret
	for _, tt := range []struct {
		name string
		data map[string][]byte
		at   time.Time
		want []string
	}{
		{"key without certificate", map[string][]byte{identity.CAKeyKey: keyPEM}, t0, []string{where, "key tls.crt", "missing"}},
		{"certificate without key", map[string][]byte{identity.CACertKey: certPEM}, t0, []string{where, "key tls.key", "missing"}},
		{"empty", map[string][]byte{}, t0, []string{where, "tls.crt and tls.key are missing"}},
		{"mismatching key", map[string][]byte{identity.CACertKey: certPEM, identity.CAKeyKey: otherKey}, t0, []string{where + " key tls.key does not match the certificate " + where + " key tls.crt"}},
		{"expired", map[string][]byte{identity.CACertKey: certPEM, identity.CAKeyKey: keyPEM}, t0.Add(11 * 365 * 24 * time.Hour), []string{where + " key tls.crt", "expired at"}},
		{"not a CA", map[string][]byte{identity.CACertKey: leafCert, identity.CAKeyKey: leafKey}, t0, []string{where + " key tls.crt", "is not a CA certificate"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cpNamespace, Name: identity.DefaultCASecret, ResourceVersion: "7"}, Type: corev1.SecretTypeOpaque, Data: tt.data}
			kube := newKube(sec)
			_, err := identity.LoadOrCreateCA(context.Background(), kube, cpNamespace, identity.DefaultCASecret, clock.NewFake(tt.at))
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range append(tt.want, "left as it is") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
			got := getSecret(t, kube, cpNamespace, identity.DefaultCASecret)
			if got.ResourceVersion != "7" || len(got.Data) != len(tt.data) {
				t.Errorf("secret changed: resourceVersion %q, keys %v", got.ResourceVersion, keysOf(got.Data))
			}
			for _, act := range kube.Actions() {
				if v := act.GetVerb(); v != "get" {
					t.Errorf("unexpected %s of the damaged secret", v)
				}
			}
		})
	}
}

// notACA is a self-signed certificate that is not a CA, and its key.
func notACA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// k8sfakeLogger logs to the test log.
func k8sfakeLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
