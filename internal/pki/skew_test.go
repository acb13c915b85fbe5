package pki_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// skewHandshake makes one real TLS handshake on loopback between a server
// presenting server's certificate (asking for a client certificate, as the
// control plane's xDS server does) and a client presenting client's and
// checking the server's SPIFFE ID with client's clock (as the health
// checker does). It returns the client's handshake error and the server's
// view of the client: pki.VerifyClient of the presented chain at
// serverNow, as the xDS server checks every stream.
func skewHandshake(t *testing.T, ca *pki.CA, server, client *pki.Source, serverID pki.ID, serverNow time.Time) (clientErr, serverErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	verdict := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			verdict <- err
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.HandshakeContext(ctx); err != nil {
			verdict <- fmt.Errorf("server handshake: %w", err)
			return
		}
		_, err = pki.VerifyClient(tc.ConnectionState().PeerCertificates, ca.BundlePEM(), serverNow)
		verdict <- err
	}()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cfg := client.ClientTLS(serverID)
	cfg.NextProtos = []string{"h2"}
	conn := tls.Client(raw, cfg)
	clientErr = conn.HandshakeContext(ctx)
	if clientErr != nil {
		return clientErr, nil
	}
	select {
	case serverErr = <-verdict:
	case <-ctx.Done():
		t.Fatal("server gave no verdict")
	}
	return nil, serverErr
}

// TestClockSkew: certificates are backdated by pki.Backdate (1 min) for a
// verifying clock behind the issuer's. Real TLS handshakes on loopback,
// each side checking the other's certificate with its own clock, as the
// xDS server (VerifyClient) and the health checker (VerifyPeer) do: a
// clock behind the issuer by less than the backdate accepts a fresh
// certificate, by more refuses it saying it is not yet valid, with the
// times; a clock ahead accepts it until its end and then says it has
// expired. The renewal at half-life leaves a clock ahead half the lifetime
// of margin, and a clock behind only the backdate, each time a certificate
// is renewed.
func TestClockSkew(t *testing.T) {
	const lifetime = time.Hour
	issuer := clock.NewFake(t0) // the CA's clock: gmesh up's
	ca := newCA(t, issuer)
	serverID := pki.ID{Mesh: "echo", VirtualNode: "echo-server"}
	// Both certificates issued now, at t0 by the issuer's clock.
	server := pki.NewSource(ca, serverID, lifetime, issuer)
	clientOn := func(clk clock.Clock) *pki.Source { return pki.NewSource(ca, pki.HealthChecker("echo"), lifetime, clk) }
	if _, err := server.Certificate(); err != nil {
		t.Fatal(err)
	}
	client := clientOn(issuer)
	if _, err := client.Certificate(); err != nil {
		t.Fatal(err)
	}
	notBefore, notAfter := t0.Add(-pki.Backdate), t0.Add(lifetime)
	rfc := func(tm time.Time) string { return tm.UTC().Format(time.RFC3339) }

	for _, tc := range []struct {
		name string
		skew time.Duration // the verifying clock minus the issuer's, at the issue
		// want: "" accepted, else what the refusal says.
		want []string
	}{
		{"same clock", 0, nil},
		{"behind by 30s", -30 * time.Second, nil},
		{"behind by exactly the backdate", -pki.Backdate, nil},
		{"behind by 61s", -61 * time.Second, []string{"is not yet valid", "valid from " + rfc(notBefore), "checked at " + rfc(t0.Add(-61*time.Second)), "(1s before", "behind"}},
		{"behind by 5m", -5 * time.Minute, []string{"is not yet valid", "valid from " + rfc(notBefore), "checked at " + rfc(t0.Add(-5*time.Minute)), "(4m0s before"}},
		{"ahead, 30s before expiry", lifetime - 30*time.Second, nil},
		{"ahead, at expiry", lifetime, nil},
		{"ahead, 30s after expiry", lifetime + 30*time.Second, []string{"has expired", "valid until " + rfc(notAfter), "checked at " + rfc(notAfter.Add(30*time.Second)), "(30s after", "ahead"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verifier := t0.Add(tc.skew)
			// The server (the xDS server's check) verifies the client's certificate at its skewed clock.
			_, serverErr := skewHandshake(t, ca, server, client, serverID, verifier)
			// The client (the health checker's check) verifies the server's at its skewed clock.
			clientErr, _ := skewHandshake(t, ca, server, clientOn(clock.NewFake(verifier)), serverID, t0)
			for side, err := range map[string]error{"server verifying the client": serverErr, "client verifying the server": clientErr} {
				if tc.want == nil {
					if err != nil {
						t.Errorf("%s, clock %s off: refused: %v", side, tc.skew, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s, clock %s off: accepted, want refused", side, tc.skew)
					continue
				}
				t.Logf("%s: %v", side, err)
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s, clock %s off: error %q does not say %q", side, tc.skew, err, w)
					}
				}
			}
		})
	}

	// Renewal at half-life (the Rotator's and Source's rule): just before
	// it, the first certificate has lifetime/2 left, so a verifier ahead by
	// less than that still accepts it; just after it, the new certificate
	// is valid from Backdate before the renewal, so a verifier behind by
	// more than Backdate refuses it until its clock catches up.
	t.Run("renewal margin", func(t *testing.T) {
		issuer.Set(t0.Add(lifetime/2 - time.Second)) // just before the renewal
		for _, tc := range []struct {
			ahead time.Duration
			ok    bool
		}{{lifetime/2 - time.Minute, true}, {lifetime/2 + time.Minute, false}} {
			_, err := skewHandshake(t, ca, server, client, serverID, issuer.Now().Add(tc.ahead))
			if (err == nil) != tc.ok {
				t.Errorf("before renewal, verifier %s ahead: err %v, want accepted %v", tc.ahead, err, tc.ok)
			}
		}
		issuer.Set(t0.Add(lifetime / 2)) // the renewal: both sources issue anew on their next use
		renewed := clientOn(issuer)
		for _, tc := range []struct {
			behind time.Duration
			ok     bool
		}{{pki.Backdate, true}, {pki.Backdate + time.Second, false}, {lifetime/2 - time.Minute, false}} {
			_, err := skewHandshake(t, ca, server, renewed, serverID, issuer.Now().Add(-tc.behind))
			if (err == nil) != tc.ok {
				t.Errorf("after renewal, verifier %s behind: err %v, want accepted %v", tc.behind, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "is not yet valid") {
				t.Errorf("after renewal, verifier %s behind: %v, want it to say not yet valid", tc.behind, err)
			}
		}
	})
}
