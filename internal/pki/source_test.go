package pki_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

func TestSourceRenewsAtHalfLife(t *testing.T) {
	clk := clock.NewFake(t0)
	iss := &flaky{Issuer: newCA(t, clk)}
	s := pki.NewSource(iss, pki.HealthChecker("echo"), time.Hour, clk)
	first, err := s.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Leaf.URIs[0].String(); got != "spiffe://echo.gmesh.local/cp/health-checker" {
		t.Errorf("id %s, want the health checker's", got)
	}
	clk.Advance(29 * time.Minute)
	if c, _ := s.Certificate(); c != first {
		t.Error("renewed before half-life")
	}
	clk.Advance(time.Minute)
	iss.fail.Store(true)
	if c, err := s.Certificate(); err != nil || c != first {
		t.Errorf("renewal failing, still valid: got %v, %v; want the current certificate", c, err)
	}
	iss.fail.Store(false)
	second, err := s.Certificate()
	if err != nil || second == first {
		t.Errorf("at half-life: got %v, %v; want a new certificate", second, err)
	}
	clk.Advance(2 * time.Hour)
	iss.fail.Store(true)
	if _, err := s.Certificate(); err == nil {
		t.Error("expired and renewal failing: got no error")
	}
}

// TestClientTLS makes real TLS handshakes on loopback: the client accepts a
// server with the expected SPIFFE ID from the mesh CA, and refuses another
// ID and another CA's certificate; the server sees the client's
// certificate.
func TestClientTLS(t *testing.T) {
	clk := clock.Real{}
	ca := newCA(t, clk)
	other := newCA(t, clk)
	want := pki.ID{Mesh: "echo", VirtualNode: "echo-server"}
	client := pki.NewSource(ca, pki.HealthChecker("echo"), time.Hour, clk)

	for _, tc := range []struct {
		name    string
		server  *pki.Source
		wantErr string
	}{
		{"right id", pki.NewSource(ca, want, time.Hour, clk), ""},
		{"other id", pki.NewSource(ca, pki.ID{Mesh: "echo", VirtualNode: "impostor"}, time.Hour, clk), "peer is spiffe://echo.gmesh.local/vn/impostor"},
		{"other ca", pki.NewSource(other, want, time.Hour, clk), "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := tc.server.Certificate()
			if err != nil {
				t.Fatal(err)
			}
			lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequireAnyClientCert})
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			peerID := make(chan string, 1)
			go func() {
				c, err := lis.Accept()
				if err != nil {
					peerID <- err.Error()
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					peerID <- err.Error()
					return
				}
				peerID <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
			}()
			d := &net.Dialer{Timeout: 5 * time.Second}
			conn, err := tls.DialWithDialer(d, "tcp", lis.Addr().String(), client.ClientTLS(want))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("handshake: got %v, want an error containing %q", err, tc.wantErr)
				}
				if conn != nil {
					conn.Close()
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			if got := <-peerID; got != "spiffe://echo.gmesh.local/cp/health-checker" {
				t.Errorf("server saw %q, want the health checker's id", got)
			}
		})
	}
}
