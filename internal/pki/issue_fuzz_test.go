package pki_test

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// FuzzIssue issues certificates for arbitrary IDs: Issue refuses exactly
// the IDs Validate refuses, and every certificate it issues reads back
// (IDFromURIs of the parsed certificate, IDFromCert of its bytes, and
// VerifyClient and VerifyPeer against the CA) as exactly the ID asked for,
// its only SAN.
//
//	go test ./internal/pki -run '^$' -fuzz FuzzIssue -fuzztime 60s
func FuzzIssue(f *testing.F) {
	// Seeds: the IDs of TestIDString, TestIssue, TestComponentIDRefusesNode
	// and the forms ParseID refuses.
	for _, id := range []pki.ID{
		echoID,
		{Mesh: "echo", Namespace: "shop", ServiceAccount: "billing", VirtualNode: "billing-v2"},
		{Mesh: "a.b", VirtualNode: "n.1"},
		pki.HealthChecker("echo"),
		pki.XDSServer("echo"),
		{Mesh: "echo"},
		{Mesh: "m", Component: "c", VirtualNode: "n"},
		{Mesh: "m", Component: "c", Namespace: "ns", ServiceAccount: "sa"},
		{Mesh: "echo", Namespace: "shop", VirtualNode: "n"},
		{Mesh: "Echo", VirtualNode: "n"},
		{Mesh: "echo", VirtualNode: "a/b"},
		{Mesh: "echo", VirtualNode: "a%2Fb"},
		{Mesh: "echo:1", VirtualNode: "x"},
		{Mesh: "-echo", VirtualNode: "x-"},
		{Mesh: "echo", VirtualNode: "x#"},
		{Mesh: "echo", VirtualNode: "é"},
		{Mesh: "", VirtualNode: "x"},
	} {
		f.Add(id.Mesh, id.Namespace, id.ServiceAccount, id.VirtualNode, id.Component)
	}
	clk := clock.NewFake(t0)
	ca, err := pki.LoadOrCreate(filepath.Join(f.TempDir(), "ca"), clk)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, meshName, ns, sa, vn, component string) {
		id := pki.ID{Mesh: meshName, Namespace: ns, ServiceAccount: sa, VirtualNode: vn, Component: component}
		valid := id.Validate()
		ident, err := ca.Issue(id, time.Hour)
		if valid != nil {
			if err == nil {
				t.Fatalf("Issue(%+v) issued %s, but Validate refuses it: %v", id, ident.Leaf.URIs, valid)
			}
			return
		}
		if err != nil {
			t.Fatalf("Issue(%+v) of a valid ID: %v", id, err)
		}
		leaf, err := x509.ParseCertificate(ident.Leaf.Raw)
		if err != nil {
			t.Fatalf("the certificate for %s does not parse: %v", id, err)
		}
		if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("the certificate for %s has SANs URIs %v, DNS %v, IP %v, email %v; want its ID alone", id, leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
		if got, err := pki.IDFromURIs(leaf.URIs); err != nil || got != id {
			t.Fatalf("IDFromURIs of the certificate for %+v = %+v, %v", id, got, err)
		}
		if got, err := pki.IDFromCert(leaf); err != nil || got != id {
			t.Fatalf("IDFromCert of the certificate for %+v = %+v, %v", id, got, err)
		}
		if got, err := pki.ParseID(id.String()); err != nil || got != id {
			t.Fatalf("ParseID(%q) = %+v, %v; want %+v", id.String(), got, err, id)
		}
		chain := []*x509.Certificate{leaf}
		if got, err := pki.VerifyClient(chain, ca.BundlePEM(), clk.Now()); err != nil || got != id {
			t.Fatalf("VerifyClient of the certificate for %+v = %+v, %v", id, got, err)
		}
		if err := pki.VerifyPeer(chain, ca.BundlePEM(), id, clk.Now()); err != nil {
			t.Fatalf("VerifyPeer of the certificate for %+v: %v", id, err)
		}
	})
}
