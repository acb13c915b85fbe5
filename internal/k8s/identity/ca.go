package identity

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// The keys of the CA Secret: a kubernetes.io/tls Secret's, so that
// `kubectl create secret tls gmesh-ca --cert=ca.crt --key=ca.key` makes
// one. CACertKey holds the CA certificate, optionally followed by its
// parents (all of them go into the trust bundle); CAKeyKey its private key
// (PKCS #8, SEC 1 EC or PKCS #1 RSA).
const (
	CACertKey = corev1.TLSCertKey       // "tls.crt"
	CAKeyKey  = corev1.TLSPrivateKeyKey // "tls.key"
)

// LoadOrCreateCA returns the mesh CA kept in the Secret namespace/name
// (DefaultCASecret in the control plane's namespace). When the Secret does
// not exist it makes a new CA (pki.NewCAPEM) and creates the Secret; when
// another replica created it first, it reads theirs, so every replica signs
// with the same CA. A Secret that exists but does not hold a usable CA (a
// key without its certificate or the other way round, a key that does not
// match, a certificate that is expired, not yet valid or not a CA) is an
// error naming the Secret and the key, and is left as it is: a new CA would
// change every workload's trust, so only a person replaces it.
//
// Users bring their own CA by creating the Secret beforehand with the keys
// CACertKey and CAKeyKey (type kubernetes.io/tls or Opaque).
func LoadOrCreateCA(ctx context.Context, kube kubernetes.Interface, namespace, name string, clk clock.Clock) (*pki.CA, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("mesh ca: secret namespace %q and name %q are required", namespace, name)
	}
	secrets := kube.CoreV1().Secrets(namespace)
	where := "secret " + namespace + "/" + name
	sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		certPEM, keyPEM, nerr := pki.NewCAPEM(clk)
		if nerr != nil {
			return nil, fmt.Errorf("mesh ca %s: %w", where, nerr)
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
				"app.kubernetes.io/name": "gmesh", "app.kubernetes.io/component": "mesh-ca", "app.kubernetes.io/managed-by": "gmesh-controlplane",
			}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{CACertKey: certPEM, CAKeyKey: keyPEM},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Another replica won the race: use its CA.
			sec, err = secrets.Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("mesh ca %s: %w", where, err)
	}
	return caFromSecret(sec, clk)
}

// caFromSecret parses the CA of a Secret, naming the Secret and the key in
// every refusal.
func caFromSecret(sec *corev1.Secret, clk clock.Clock) (*pki.CA, error) {
	where := "secret " + sec.Namespace + "/" + sec.Name
	const leftAlone = "the Secret is left as it is: fix it, or delete it to have a new CA made (every workload certificate then changes)"
	certPEM, keyPEM := sec.Data[CACertKey], sec.Data[CAKeyKey]
	switch {
	case len(certPEM) == 0 && len(keyPEM) == 0:
		return nil, fmt.Errorf("mesh ca %s: keys %s and %s are missing or empty; %s", where, CACertKey, CAKeyKey, leftAlone)
	case len(certPEM) == 0:
		return nil, fmt.Errorf("mesh ca %s: key %s (the certificate) is missing or empty beside its private key %s; %s", where, CACertKey, CAKeyKey, leftAlone)
	case len(keyPEM) == 0:
		return nil, fmt.Errorf("mesh ca %s: key %s (the private key) is missing or empty beside its certificate %s; %s", where, CAKeyKey, CACertKey, leftAlone)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM, where+" key "+CACertKey, where+" key "+CAKeyKey, clk)
	if err != nil {
		return nil, fmt.Errorf("mesh %w; %s", err, leftAlone)
	}
	return ca, nil
}
