package webhook

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/gmesh-dev/gmesh/internal/pki"
)

// The keys of the webhook's Secret. tls.crt and tls.key make it a
// kubernetes.io/tls Secret; ca.crt is the bundle the API server trusts
// (the signing CA first, then a previous CA that has not expired yet while
// a rotation is under way) and ca.key the signing CA's key, which the
// leader needs to renew the serving certificate.
const (
	KeyCACert  = "ca.crt"
	KeyCAKey   = "ca.key"
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
)

// Default lifetimes. A certificate is renewed once less than a third of
// its lifetime is left: the serving certificate about four months before
// it expires, the CA after six and a half years.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// clockSkew backdates NotBefore so that an API server whose clock is a
// little behind still accepts a fresh certificate.
const clockSkew = time.Hour

// material is the parsed content of the webhook's Secret.
type material struct {
	ca      *x509.Certificate   // the signing CA
	caKey   crypto.Signer       // its key
	bundle  []*x509.Certificate // ca.crt: the signing CA first
	leaf    *x509.Certificate   // the serving certificate
	keyPair tls.Certificate
	data    map[string][]byte
}

// parseSecret reads the Secret's data; any key missing or unreadable is an
// error naming it.
func parseSecret(data map[string][]byte) (*material, error) {
	m := &material{data: data}
	for _, k := range []string{KeyCACert, KeyCAKey, KeyTLSCert, KeyTLSKey} {
		if len(data[k]) == 0 {
			return nil, fmt.Errorf("data.%s: missing", k)
		}
	}
	bundle, err := pki.ParseCertificates(data[KeyCACert])
	if err != nil {
		return nil, fmt.Errorf("data.%s: %w", KeyCACert, err)
	}
	m.bundle, m.ca = bundle, bundle[0]
	if !m.ca.IsCA {
		return nil, fmt.Errorf("data.%s: the first certificate is not a CA", KeyCACert)
	}
	if m.caKey, err = pki.ParsePrivateKey(data[KeyCAKey]); err != nil {
		return nil, fmt.Errorf("data.%s: %w", KeyCAKey, err)
	}
	if !publicKeysEqual(m.ca.PublicKey, m.caKey.Public()) {
		return nil, fmt.Errorf("data.%s: not the key of the first certificate of data.%s", KeyCAKey, KeyCACert)
	}
	if m.keyPair, err = tls.X509KeyPair(data[KeyTLSCert], data[KeyTLSKey]); err != nil {
		return nil, fmt.Errorf("data.%s, data.%s: %w", KeyTLSCert, KeyTLSKey, err)
	}
	if m.leaf, err = x509.ParseCertificate(m.keyPair.Certificate[0]); err != nil {
		return nil, fmt.Errorf("data.%s: %w", KeyTLSCert, err)
	}
	m.keyPair.Leaf = m.leaf
	return m, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// renewalDue reports whether a certificate valid from notBefore to notAfter
// should be replaced at now: less than a third of its lifetime is left.
func renewalDue(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotAfter.Add(-life / 3))
}

// problem says why the material must change at now for the given DNS
// names, "" when it need not.
func (m *material) problem(dnsNames []string, now time.Time) (caProblem, certProblem string) {
	if renewalDue(m.ca, now) {
		caProblem = fmt.Sprintf("the CA expires at %s", m.ca.NotAfter.UTC().Format(time.RFC3339))
	}
	switch {
	case renewalDue(m.leaf, now):
		certProblem = fmt.Sprintf("the serving certificate expires at %s", m.leaf.NotAfter.UTC().Format(time.RFC3339))
	case m.leaf.CheckSignatureFrom(m.ca) != nil:
		certProblem = "the serving certificate is not signed by the CA"
	case !slices.Equal(sorted(m.leaf.DNSNames), sorted(dnsNames)):
		certProblem = fmt.Sprintf("the serving certificate names %v, not %v", m.leaf.DNSNames, dnsNames)
	}
	return caProblem, certProblem
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// issue makes the Secret data: a new CA when newCA (or when prev is nil),
// else prev's; and a serving certificate for dnsNames signed by it. The
// bundle keeps previous CAs until they expire, so that the API server,
// once given the new bundle, still trusts replicas that serve the old
// certificate until they reload.
func issue(prev *material, newCA bool, dnsNames []string, now time.Time, caValidity, certValidity time.Duration) (map[string][]byte, error) {
	var ca *x509.Certificate
	var caKey crypto.Signer
	var bundle []*x509.Certificate
	var caKeyPEM []byte
	if prev == nil || newCA {
		var err error
		if ca, caKey, err = newCACert(now, caValidity); err != nil {
			return nil, err
		}
		if caKeyPEM, err = keyPEM(caKey); err != nil {
			return nil, err
		}
		bundle = []*x509.Certificate{ca}
		if prev != nil {
			bundle = append(bundle, prev.bundle...)
		}
	} else {
		ca, caKey, bundle, caKeyPEM = prev.ca, prev.caKey, prev.bundle, prev.data[KeyCAKey]
	}
	// Drop expired CAs from the bundle (never the signing one).
	kept := bundle[:1:1]
	for _, c := range bundle[1:] {
		if now.Before(c.NotAfter) && !c.Equal(ca) {
			kept = append(kept, c)
		}
	}
	leafDER, leafKey, err := newServingCert(ca, caKey, dnsNames, now, min(certValidity, ca.NotAfter.Sub(now)))
	if err != nil {
		return nil, err
	}
	leafKeyPEM, err := keyPEM(leafKey)
	if err != nil {
		return nil, err
	}
	var caPEM bytes.Buffer
	for _, c := range kept {
		pem.Encode(&caPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) //nolint:errcheck // a bytes.Buffer does not fail
	}
	return map[string][]byte{
		KeyCACert:  caPEM.Bytes(),
		KeyCAKey:   caKeyPEM,
		KeyTLSCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		KeyTLSKey:  leafKeyPEM,
	}, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return n, nil
}

func newCACert(now time.Time, validity time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "gmesh webhook CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	return c, key, nil
}

func newServingCert(ca *x509.Certificate, caKey crypto.Signer, dnsNames []string, now time.Time, validity time.Duration) ([]byte, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("serving key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("serving certificate: %w", err)
	}
	return der, key, nil
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ServiceDNSNames are the names the API server may use for a Service:
// SERVICE.NAMESPACE.svc (what it dials for a service reference) and the
// longer forms.
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
}
