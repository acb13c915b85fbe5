package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/pki"
)

func TestIDString(t *testing.T) {
	tests := []struct {
		id   pki.ID
		want string
	}{
		{pki.ID{Mesh: "echo", VirtualNode: "echo-server-v1"}, "spiffe://echo.gmesh.local/vn/echo-server-v1"},
		{pki.ID{Mesh: "echo", Namespace: "shop", ServiceAccount: "billing", VirtualNode: "billing-v2"}, "spiffe://echo.gmesh.local/ns/shop/sa/billing/vn/billing-v2"},
		{pki.ID{Mesh: "a.b", VirtualNode: "n.1"}, "spiffe://a.b.gmesh.local/vn/n.1"},
		{pki.HealthChecker("echo"), "spiffe://echo.gmesh.local/cp/health-checker"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if err := tt.id.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := tt.id.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := tt.id.URL().String(); got != tt.want {
				t.Errorf("URL() = %q, want %q", got, tt.want)
			}
			back, err := pki.ParseID(tt.want)
			if err != nil {
				t.Fatalf("ParseID: %v", err)
			}
			if back != tt.id {
				t.Errorf("ParseID = %+v, want %+v", back, tt.id)
			}
		})
	}
}

func TestParseIDRefuses(t *testing.T) {
	tests := []struct {
		in, want string // want: a part of the error
	}{
		{"", "want the scheme spiffe://"},
		{"https://echo.gmesh.local/vn/x", "want the scheme spiffe://"},
		{"SPIFFE://echo.gmesh.local/vn/x", "want the scheme spiffe://"},
		{"spiffe://echo.gmesh.local", "no path"},
		{"spiffe://echo.example.org/vn/x", "not a gmesh mesh's"},
		{"spiffe://.gmesh.local/vn/x", "empty mesh"},
		{"spiffe://Echo.gmesh.local/vn/x", `mesh "Echo"`},
		{"spiffe://echo.gmesh.local:443/vn/x", "not a gmesh mesh's"},
		{"spiffe://user@echo.gmesh.local/vn/x", `mesh "user@echo"`},
		{"spiffe://echo.gmesh.local/vn/", "empty virtual node"},
		{"spiffe://echo.gmesh.local/vn/x/", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local//vn/x", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local/vn/..", `virtual node ".."`},
		{"spiffe://echo.gmesh.local/vn/a%2Fb", `virtual node "a%2Fb"`},
		{"spiffe://echo.gmesh.local/vn/x?q=1", `virtual node "x?q=1"`},
		{"spiffe://echo.gmesh.local/vn/x#f", `virtual node "x#f"`},
		{"spiffe://echo.gmesh.local/node/x", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local/sa/s/ns/n/vn/x", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local/ns/n/vn/x", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local/ns//sa/s/vn/x", "given together"},
		{"spiffe://echo.gmesh.local/cp/", "empty component"},
		{"spiffe://echo.gmesh.local/cp/Health", `component "Health"`},
		{"spiffe://echo.gmesh.local/cp/a/vn/x", "want /vn/NODE"},
		{"spiffe://echo.gmesh.local/vn/" + strings.Repeat("a", 2100), "over the limit"},
		{"spiffe://" + strings.Repeat("m", 250) + ".gmesh.local/vn/x", "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := pki.ParseID(tt.in)
			if err == nil {
				t.Fatalf("ParseID(%q) = %+v, want an error", tt.in, id)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseID(%q) error %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestIDFromURIs(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	id, err := pki.IDFromURIs([]*url.URL{mustURL("https://x.example"), mustURL("spiffe://echo.gmesh.local/vn/a")})
	if err != nil || id.VirtualNode != "a" {
		t.Errorf("got %+v, %v; want node a", id, err)
	}
	if _, err := pki.IDFromURIs(nil); err == nil {
		t.Error("no URI: got no error")
	}
	_, err = pki.IDFromURIs([]*url.URL{mustURL("spiffe://echo.gmesh.local/vn/a"), mustURL("spiffe://echo.gmesh.local/vn/b")})
	if err == nil || !strings.Contains(err.Error(), "want exactly one") {
		t.Errorf("two IDs: got %v, want an error saying exactly one", err)
	}
}

// FuzzParseID: whatever ParseID accepts is a valid ID that prints back to
// the same string, and url.Parse reads it with the same parts.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://echo.gmesh.local/vn/echo-server",
		"spiffe://echo.gmesh.local/ns/shop/sa/billing/vn/billing-v2",
		"spiffe://a.b.gmesh.local/vn/n.1",
		"spiffe://echo.gmesh.local/vn/a%2Fb",
		"spiffe://echo.gmesh.local:1/vn/x",
		"spiffe://.gmesh.local/vn/x",
		"spiffe://echo.gmesh.local/ns/n/sa/s/vn/",
		"spiffe://echo.gmesh.local/cp/health-checker",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := pki.ParseID(s)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseID(%q) accepted an invalid id %+v: %v", s, id, err)
		}
		if got := id.String(); got != s {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		if u.Scheme != "spiffe" || u.Host != id.TrustDomain() || u.Path != id.Path() || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			t.Fatalf("url.Parse(%q) = %#v, disagrees with %+v", s, u, id)
		}
	})
}

func TestComponentIDRefusesNode(t *testing.T) {
	for _, id := range []pki.ID{
		{Mesh: "m", Component: "c", VirtualNode: "n"},
		{Mesh: "m", Component: "c", Namespace: "ns", ServiceAccount: "sa"},
	} {
		if err := id.Validate(); err == nil {
			t.Errorf("%+v: got no error", id)
		}
	}
}

// A URI SAN that net/url prints back as a valid ID, but that is not one
// ID.String prints, is no ID: IDFromCert reads the certificate's bytes.
// (FuzzXDSAdmission found these: the xDS server admitted them.)
func TestIDFromCertReadsBytes(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(uris ...string) *x509.Certificate {
		t.Helper()
		var names []asn1.RawValue
		for _, u := range uris {
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
		}
		san, err := asn1.Marshal(names)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(time.Hour),
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const good = "spiffe://echo.gmesh.local/vn/a"
	if id, err := pki.IDFromCert(cert("https://x.example", good)); err != nil || id.String() != good {
		t.Errorf("IDFromCert(%s) = %v, %v", good, id, err)
	}
	for _, raw := range []string{"SPIFFE://echo.gmesh.local/vn/a", good + "#"} {
		c := cert(raw)
		if _, err := pki.IDFromURIs(c.URIs); err != nil {
			t.Logf("IDFromURIs(%q): %v (net/url no longer normalises it)", raw, err)
		}
		if id, err := pki.IDFromCert(c); err == nil {
			t.Errorf("IDFromCert(%q) = %s, want an error", raw, id)
		}
	}
	if _, err := pki.IDFromCert(cert(good, "Spiffe://echo.gmesh.local/vn/b")); err == nil || !strings.Contains(err.Error(), "want exactly one") {
		t.Errorf("two IDs, one in upper case: got %v, want an error saying exactly one", err)
	}
}

// TestNodePattern: a node's pattern admits its local and Kubernetes IDs,
// whatever the namespace and service account, and nothing else.
func TestNodePattern(t *testing.T) {
	re := regexp.MustCompile(pki.NodePattern("echo", "echo-server-1-0"))
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"spiffe://echo.gmesh.local/vn/echo-server-1-0", true},
		{"spiffe://echo.gmesh.local/ns/shop/sa/default/vn/echo-server-1-0", true},
		{"spiffe://echo.gmesh.local/ns/a/sa/b.c-d/vn/echo-server-1-0", true},
		{"spiffe://echo.gmesh.local/vn/echo-server-1-0x", false},
		{"spiffe://echo.gmesh.local/vn/echo-server-1x0", false}, // '.' and '-' are quoted
		{"spiffe://echo.gmesh.local/vn/echo-server-1-0/x", false},
		{"spiffe://echo.gmesh.local/ns/a/sa/b/vn/echo-server-1-0/x", false},
		{"spiffe://echo.gmesh.local/ns/a/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/sa/b/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/ns/a/sa/b/c/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/ns//sa/b/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/ns/A/sa/b/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/ns/-a/sa/b/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/ns/a%2Fb/sa/b/vn/echo-server-1-0", false},
		{"spiffe://other.gmesh.local/vn/echo-server-1-0", false},
		{"spiffe://other.gmesh.local/ns/a/sa/b/vn/echo-server-1-0", false},
		{"spiffe://echoxgmesh.local/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/cp/health-checker", false},
		{"spiffe://echo.gmesh.local/vn/echo-client", false},
		{"xspiffe://echo.gmesh.local/vn/echo-server-1-0", false},
		{"spiffe://echo.gmesh.local/vn/echo-server-1-0\n", false},
	} {
		if got := re.MatchString(tt.id); got != tt.want {
			t.Errorf("NodePattern(echo, echo-server-1-0) matches %q: got %v, want %v", tt.id, got, tt.want)
		}
	}
}

// FuzzNodePattern: the pattern of a node matches exactly the IDs ParseID
// reads as a workload of that node of that mesh.
func FuzzNodePattern(f *testing.F) {
	f.Add("echo", "echo-server", "spiffe://echo.gmesh.local/ns/shop/sa/billing/vn/echo-server")
	f.Add("echo", "echo-server", "spiffe://echo.gmesh.local/vn/echo-server")
	f.Add("a.b", "n.1", "spiffe://a.b.gmesh.local/ns/x/sa/y/vn/n.1")
	f.Add("echo", "n", "spiffe://echo.gmesh.local/ns/x/vn/n")
	f.Fuzz(func(t *testing.T, meshName, node, s string) {
		if (pki.ID{Mesh: meshName, VirtualNode: node}).Validate() != nil {
			return
		}
		re, err := regexp.Compile(pki.NodePattern(meshName, node))
		if err != nil {
			t.Fatalf("NodePattern(%q, %q): %v", meshName, node, err)
		}
		id, err := pki.ParseID(s)
		want := err == nil && id.Mesh == meshName && id.VirtualNode == node && id.Component == ""
		if got := re.MatchString(s); got != want && len(s) <= 2048 {
			t.Fatalf("NodePattern(%q, %q) matches %q: %v, ParseID says %v (%+v, %v)", meshName, node, s, got, want, id, err)
		}
	})
}
