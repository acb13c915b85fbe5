package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

var echoID = pki.ID{Mesh: "echo", VirtualNode: "echo-server-v1"}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	clk := clock.NewFake(t0)
	ca, err := pki.LoadOrCreate(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("ca directory mode %04o, want 0700", got)
	}
	if got := mode(t, filepath.Join(dir, pki.CAKeyFile)); got != 0o600 {
		t.Errorf("ca key mode %04o, want 0600", got)
	}
	c := ca.Cert()
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("created CA: IsCA %v, key usage %v; want a CA that signs certificates", c.IsCA, c.KeyUsage)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("created CA key %T, want ECDSA", c.PublicKey)
	}

	again, err := pki.LoadOrCreate(dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert().Equal(c) {
		t.Error("second LoadOrCreate made a new CA; want the first one reused")
	}
}

func TestLoadOrCreateRefusesReadableKey(t *testing.T) {
	for _, perm := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		dir := filepath.Join(t.TempDir(), "ca")
		if _, err := pki.LoadOrCreate(dir, clock.NewFake(t0)); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, pki.CAKeyFile)
		if err := os.Chmod(key, perm); err != nil {
			t.Fatal(err)
		}
		_, err := pki.LoadOrCreate(dir, clock.NewFake(t0))
		if err == nil {
			t.Fatalf("key mode %04o: got no error, want a refusal", perm)
		}
		for _, want := range []string{key, "group or others may read it", "chmod 600 " + key} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("key mode %04o: error %q, want it to contain %q", perm, err, want)
			}
		}
	}
}

func TestLoadOrCreateHalfACA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.LoadOrCreate(dir, clock.NewFake(t0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err := pki.LoadOrCreate(dir, clock.NewFake(t0))
	if err == nil || !strings.Contains(err.Error(), "its key") {
		t.Errorf("certificate without key: got %v, want an error naming the missing key", err)
	}
}

// userCA writes a CA certificate and key as a user would bring them.
type userCAOpts struct {
	notBefore, notAfter time.Time
	isCA                bool
	otherKey            bool // write a key that is not the certificate's
	keyType             string
}

func writeUserCA(t *testing.T, o userCAOpts) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "user CA"},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		IsCA:                  o.isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	written := key
	if o.otherKey {
		if written, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	var keyBlock *pem.Block
	if o.keyType == "EC PRIVATE KEY" {
		b, err := x509.MarshalECPrivateKey(written)
		if err != nil {
			t.Fatal(err)
		}
		keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	} else {
		b, err := x509.MarshalPKCS8PrivateKey(written)
		if err != nil {
			t.Fatal(err)
		}
		keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "user-ca.crt"), filepath.Join(dir, "user-ca.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(keyBlock), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestUserCA(t *testing.T) {
	for _, kt := range []string{"PRIVATE KEY", "EC PRIVATE KEY"} {
		t.Run(kt, func(t *testing.T) {
			certPath, keyPath := writeUserCA(t, userCAOpts{notBefore: t0.Add(-time.Hour), notAfter: t0.Add(24 * time.Hour), isCA: true, keyType: kt})
			ca, err := pki.LoadFiles(certPath, keyPath, clock.NewFake(t0))
			if err != nil {
				t.Fatal(err)
			}
			if ca.Cert().Subject.CommonName != "user CA" {
				t.Errorf("CA subject %q, want the user's", ca.Cert().Subject)
			}
			id, err := ca.Issue(echoID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			verify(t, ca, id, t0)
		})
	}
}

func TestLoadFilesRefuses(t *testing.T) {
	valid := userCAOpts{notBefore: t0.Add(-time.Hour), notAfter: t0.Add(24 * time.Hour), isCA: true}
	tests := []struct {
		name string
		opts userCAOpts
		edit func(t *testing.T, certPath, keyPath string)
		want []string
	}{
		{name: "expired", opts: userCAOpts{notBefore: t0.Add(-48 * time.Hour), notAfter: t0.Add(-time.Hour), isCA: true},
			want: []string{"user-ca.crt", "expired at 2026-12-01T11:00:00Z"}},
		{name: "not yet valid", opts: userCAOpts{notBefore: t0.Add(time.Hour), notAfter: t0.Add(48 * time.Hour), isCA: true},
			want: []string{"user-ca.crt", "not valid before"}},
		{name: "key not matching", opts: userCAOpts{notBefore: t0.Add(-time.Hour), notAfter: t0.Add(time.Hour), isCA: true, otherKey: true},
			want: []string{"user-ca.key does not match the certificate", "user-ca.crt"}},
		{name: "not a CA", opts: userCAOpts{notBefore: t0.Add(-time.Hour), notAfter: t0.Add(time.Hour)},
			want: []string{"user-ca.crt", "is not a CA certificate"}},
		{name: "group-readable key", opts: valid,
			edit: func(t *testing.T, _, keyPath string) { chmod(t, keyPath, 0o640) },
			want: []string{"user-ca.key has mode 0640", "chmod 600"}},
		{name: "no certificate", opts: valid,
			edit: func(t *testing.T, certPath, _ string) { writeFile(t, certPath, "not pem\n") },
			want: []string{"user-ca.crt", "no PEM CERTIFICATE block"}},
		{name: "no key", opts: valid,
			edit: func(t *testing.T, _, keyPath string) {
				writeFile(t, keyPath, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
			},
			want: []string{"user-ca.key", "no PEM private key block"}},
		{name: "key file missing", opts: valid,
			edit: func(t *testing.T, _, keyPath string) { os.Remove(keyPath) },
			want: []string{"user-ca.key", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, keyPath := writeUserCA(t, tt.opts)
			if tt.edit != nil {
				tt.edit(t, certPath, keyPath)
			}
			_, err := pki.LoadFiles(certPath, keyPath, clock.NewFake(t0))
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// verify checks an issued identity: it chains to the CA, its one identity
// is the SPIFFE ID, and its key is a P-256 key matching the certificate.
func verify(t *testing.T, ca *pki.CA, id *pki.Identity, at time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.BundlePEM()) {
		t.Fatal("bundle holds no certificate")
	}
	leaf := id.Leaf
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("issued certificate does not verify against the CA for %v: %v", usage, err)
		}
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.ID.String() {
		t.Errorf("URI SANs %v, want exactly [%s]", leaf.URIs, id.ID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.String() != "" {
		t.Errorf("identity besides the SPIFFE ID: subject %q, DNS %v, IP %v, email %v; want none",
			leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("issued certificate is a CA")
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	got, err := pki.IDFromURIs(leaf.URIs)
	if err != nil || got != id.ID {
		t.Errorf("IDFromURIs = %+v, %v; want %+v", got, err, id.ID)
	}
}

func TestIssue(t *testing.T) {
	clk := clock.NewFake(t0)
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), clk)
	if err != nil {
		t.Fatal(err)
	}
	for _, lifetime := range []time.Duration{time.Hour, 10 * time.Minute, 24 * time.Hour} {
		id, err := ca.Issue(echoID, lifetime)
		if err != nil {
			t.Fatal(err)
		}
		verify(t, ca, id, t0)
		if got, want := id.Leaf.NotAfter, t0.Add(lifetime); !got.Equal(want) {
			t.Errorf("lifetime %s: NotAfter %s, want %s", lifetime, got, want)
		}
		if got, want := id.Leaf.NotBefore, t0.Add(-pki.Backdate); !got.Equal(want) {
			t.Errorf("lifetime %s: NotBefore %s, want %s", lifetime, got, want)
		}
		if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: pool(t, ca), CurrentTime: t0.Add(lifetime + time.Second)}); err == nil {
			t.Errorf("lifetime %s: verifies after its lifetime", lifetime)
		}
	}
	k8s := pki.ID{Mesh: "echo", Namespace: "shop", ServiceAccount: "billing", VirtualNode: "billing-v2"}
	id, err := ca.Issue(k8s, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, ca, id, t0)

	for _, bad := range []time.Duration{0, time.Second, 31 * 24 * time.Hour} {
		if _, err := ca.Issue(echoID, bad); err == nil || !strings.Contains(err.Error(), "lifetime") {
			t.Errorf("lifetime %s: got %v, want an error about the lifetime", bad, err)
		}
	}
	if _, err := ca.Issue(pki.ID{Mesh: "echo"}, time.Hour); err == nil || !strings.Contains(err.Error(), "empty virtual node") {
		t.Errorf("no node: got %v, want an error naming the virtual node", err)
	}
}

func pool(t *testing.T, ca *pki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(ca.BundlePEM()) {
		t.Fatal("empty bundle")
	}
	return p
}

// A certificate never outlives its CA; once the CA has expired, issuing
// fails and says so.
func TestIssueNearCAExpiry(t *testing.T) {
	certPath, keyPath := writeUserCA(t, userCAOpts{notBefore: t0.Add(-time.Hour), notAfter: t0.Add(30 * time.Minute), isCA: true})
	clk := clock.NewFake(t0)
	ca, err := pki.LoadFiles(certPath, keyPath, clk)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.Issue(echoID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Leaf.NotAfter.Equal(ca.Cert().NotAfter) {
		t.Errorf("NotAfter %s, want the CA's %s", id.Leaf.NotAfter, ca.Cert().NotAfter)
	}
	clk.Advance(time.Hour)
	if _, err := ca.Issue(echoID, time.Hour); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after the CA expired: got %v, want an error saying it expired", err)
	}
}

// ParseCA takes a CA from PEM bytes (a Secret's keys) with the checks
// LoadFiles makes, naming where each part came from.
func TestParseCA(t *testing.T) {
	clk := clock.NewFake(t0)
	certPEM, keyPEM, err := pki.NewCAPEM(clk)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(certPEM, keyPEM, "secret ns/ca key tls.crt", "secret ns/ca key tls.key", clk)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert().IsCA || ca.Source != "secret ns/ca key tls.crt" {
		t.Errorf("CA %q from %q; want a CA from the certificate's name", ca.Cert().Subject, ca.Source)
	}
	id, err := ca.Issue(echoID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, ca, id, t0)

	_, otherKey, err := pki.NewCAPEM(clk)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		cert, key []byte
		at        time.Time
		want      []string
	}{
		{"key of another CA", certPEM, otherKey, t0, []string{"ca key K does not match the certificate C"}},
		{"no key", certPEM, nil, t0, []string{"ca key K", "no PEM private key block"}},
		{"no certificate", nil, keyPEM, t0, []string{"ca certificate C", "no PEM CERTIFICATE block"}},
		{"expired", certPEM, keyPEM, t0.Add(11 * 365 * 24 * time.Hour), []string{"ca certificate C", "expired at"}},
		{"leaf, not a CA", id.CertPEM, id.KeyPEM, t0, []string{"ca certificate C", "is not a CA certificate"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.ParseCA(tt.cert, tt.key, "C", "K", clock.NewFake(tt.at))
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}
