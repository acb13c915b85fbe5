package pki_test

import (
	"net/url"
	"strings"
	"testing"

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
