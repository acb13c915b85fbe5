// Package pki is the mesh's certificate authority: it loads or creates the
// CA the control plane signs with, issues each workload a short-lived
// certificate whose only identity is its SPIFFE ID (spiffe.go), writes the
// certificate and key where grpc-go's file_watcher certificate provider
// reads them (files.go), and renews them well before they expire
// (rotate.go).
//
// It imports only the clock of gmesh's packages; the mesh model does not
// know it exists.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// Defaults and bounds.
const (
	// DefaultLifetime is how long an issued workload certificate is valid.
	DefaultLifetime = time.Hour
	// MinLifetime and MaxLifetime bound a configured lifetime.
	MinLifetime = time.Minute
	MaxLifetime = 30 * 24 * time.Hour
	// Backdate is how far before its issue an issued certificate's
	// NotBefore lies, for clocks slightly behind the CA's.
	Backdate = time.Minute
	// caLifetime is the validity of a CA gmesh creates itself.
	caLifetime = 10 * 365 * 24 * time.Hour
)

// The CA's files in the directory LoadOrCreate is given (DIR/ca under the
// state directory).
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA signs workload certificates.
type CA struct {
	cert   *x509.Certificate
	bundle []byte // PEM: the signing certificate and any others in its file
	key    crypto.Signer
	clock  clock.Clock
	// Source says where the CA came from, for messages.
	Source string
}

// Cert is the CA's signing certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// BundlePEM is the trust bundle workloads verify peers with: every
// certificate of the CA's certificate file (the signing one first).
func (ca *CA) BundlePEM() []byte { return bytes.Clone(ca.bundle) }

// LoadOrCreate returns the CA kept in dir (CACertFile, CAKeyFile), creating
// dir (0700) and a new CA (an ECDSA P-256 key, 0600) when there is none. It
// refuses a key file that its group or others may read, an expired CA, and a
// key that does not match the certificate.
func LoadOrCreate(dir string, clk clock.Clock) (*CA, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca directory %s: %w", dir, err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadFiles(certPath, keyPath, clk)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return create(certPath, keyPath, clk)
	case certErr == nil:
		return nil, fmt.Errorf("ca: %s exists but its key %s does not (%v); restore the key, or move both away to make a new CA (every workload certificate then changes)", certPath, keyPath, keyErr)
	default:
		return nil, fmt.Errorf("ca: key %s exists but its certificate %s does not (%v); restore the certificate, or move both away to make a new CA", keyPath, certPath, certErr)
	}
}

func create(certPath, keyPath string, clk clock.Clock) (*CA, error) {
	certPEM, keyPEM, err := NewCAPEM(clk)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key is refused on the next
	// start, which names both; a lone key is refused the same way.
	if err := WriteFileAtomic(keyPath, keyPEM); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := WriteFileAtomic(certPath, certPEM); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return LoadFiles(certPath, keyPath, clk)
}

// NewCAPEM makes a new mesh CA, as LoadOrCreate does when there is none: a
// self-signed CA certificate (valid from Backdate before now for ten
// years, path length 0) and its ECDSA P-256 key (PKCS #8), both PEM.
func NewCAPEM(clk clock.Clock) (certPEM, keyPEM []byte, err error) {
	if clk == nil {
		clk = clock.Real{}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := clk.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"gmesh"}, CommonName: "gmesh mesh CA"},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: self-sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// LoadFiles loads a CA from a PEM certificate file and a PEM private key
// file: gmesh's own, or one the user provides. The certificate file may
// hold the signing certificate's parents after it; all of them go into the
// trust bundle. It refuses, with the file and the reason: a key file its
// group or others may read, and whatever ParseCA refuses.
func LoadFiles(certPath, keyPath string, clk clock.Clock) (*CA, error) {
	if err := checkKeyMode(keyPath); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	return ParseCA(certPEM, keyPEM, certPath, keyPath, clk)
}

// ParseCA builds a CA from PEM bytes: the signing certificate, optionally
// followed by its parents (all of them go into the trust bundle), and its
// private key (PKCS #8, SEC 1 EC or PKCS #1 RSA). certName and keyName say
// where each came from (a file, a Secret's key), in errors and as the CA's
// Source. It refuses, naming certName or keyName and the reason: no
// certificate, a certificate that is not a CA or may not sign
// certificates, one that is expired or not yet valid, no key, and a key
// that does not match the certificate.
func ParseCA(certPEM, keyPEM []byte, certName, keyName string, clk clock.Clock) (*CA, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca certificate %s: %w", certName, err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("ca certificate %s: %q is not a CA certificate (basic constraints CA:TRUE missing)", certName, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("ca certificate %s: %q may not sign certificates (key usage lacks certSign)", certName, cert.Subject)
	}
	now := clk.Now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("ca certificate %s: expired at %s (now %s); give a valid CA", certName, cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("ca certificate %s: not valid before %s (now %s)", certName, cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca key %s: %w", keyName, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("ca key %s does not match the certificate %s (%q)", keyName, certName, cert.Subject)
	}
	var bundle []byte
	for _, c := range certs {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return &CA{cert: cert, bundle: bundle, key: key, clock: clk, Source: certName}, nil
}

// checkKeyMode refuses a key file its group or others may read or write.
func checkKeyMode(keyPath string) error {
	st, err := os.Stat(keyPath)
	if err != nil {
		return fmt.Errorf("ca key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("ca key %s is not a regular file", keyPath)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("ca key %s has mode %04o: its group or others may read it; refusing to use it (run: chmod 600 %s)", keyPath, perm, keyPath)
	}
	return nil
}

// ParseCertificates returns every CERTIFICATE block of b, in order; other
// blocks are skipped.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// ParsePrivateKey returns the first private key of b (PKCS #8, SEC 1 EC or
// PKCS #1 RSA).
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key block (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		var (
			k   any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", blk.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s block: key type %T cannot sign", blk.Type, k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch a.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return a.(equaler).Equal(b)
	}
	return false
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s, nil
}

// Identity is an issued workload certificate and its key.
type Identity struct {
	ID ID
	// Leaf is the parsed certificate.
	Leaf *x509.Certificate
	// CertPEM is the certificate; KeyPEM its PKCS #8 private key.
	CertPEM, KeyPEM []byte
}

// Issue returns a new certificate for id, valid from Backdate before now
// for lifetime (cut at the CA's own expiry), with a fresh ECDSA P-256 key.
// Its one identity is id, as its only URI SAN: no subject, no DNS name, IP
// or e-mail address. It may authenticate a server and a client.
func (ca *CA) Issue(id ID, lifetime time.Duration) (*Identity, error) {
	return ca.IssueHosts(id, nil, lifetime)
}

// IssueHosts is Issue for a server that clients reach by host name or IP
// address and check it (the control plane's xDS server: grpc-go's A65
// "tls" channel credentials verify the server_uri's host): the
// certificate also names hosts, as DNS names or IP addresses.
func (ca *CA) IssueHosts(id ID, hosts []string, lifetime time.Duration) (*Identity, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dnsNames = append(dnsNames, h)
		}
	}
	if lifetime < MinLifetime || lifetime > MaxLifetime {
		return nil, fmt.Errorf("certificate lifetime %s: want %s to %s", lifetime, MinLifetime, MaxLifetime)
	}
	now := ca.clock.Now()
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("ca %s expired at %s: no certificate can be issued; replace the CA", ca.Source, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: generate key: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: sign: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: encode key: %w", id, err)
	}
	return &Identity{
		ID:      id,
		Leaf:    leaf,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
