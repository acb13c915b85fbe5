package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// Source is an identity held in memory by a gmesh process (the control
// plane's health checker): its certificate is issued on first use and again
// once half its life has passed.
type Source struct {
	issuer   Issuer
	id       ID
	lifetime time.Duration
	clock    clock.Clock
	hosts    []string // for a server reached by name (NewServerSource)

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

// NewSource returns a Source for id; nothing is issued until asked.
func NewSource(issuer Issuer, id ID, lifetime time.Duration, clk clock.Clock) *Source {
	if clk == nil {
		clk = clock.Real{}
	}
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	return &Source{issuer: issuer, id: id, lifetime: lifetime, clock: clk}
}

// HostIssuer is an Issuer that can also name hosts in a certificate
// (CA.IssueHosts).
type HostIssuer interface {
	Issuer
	IssueHosts(id ID, hosts []string, lifetime time.Duration) (*Identity, error)
}

var _ HostIssuer = (*CA)(nil)

// NewServerSource is NewSource for a server that clients reach by one of
// hosts (DNS names or IP addresses) and check it: its certificates name
// them beside id. issuer must be a HostIssuer.
func NewServerSource(issuer Issuer, id ID, hosts []string, lifetime time.Duration, clk clock.Clock) *Source {
	s := NewSource(issuer, id, lifetime, clk)
	s.hosts = append([]string(nil), hosts...)
	return s
}

// ServerTLS is the TLS configuration of a server presenting s's
// certificate that asks every client for its certificate but does not
// check it during the handshake: the server checks it afterwards with
// VerifyClient, so that a refusal can be a clear error naming what the
// client claimed, instead of a failed handshake the client cannot read.
// Whoever uses it must call VerifyClient before trusting a connection.
func (s *Source) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.Certificate()
		},
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2"},
	}
}

// Certificate returns the current certificate, issuing a new one when there
// is none or half its life has passed. When renewing fails while the
// current one is still valid, the current one is returned.
func (s *Source) Certificate() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.cert != nil && now.Before(s.renewAt) {
		return s.cert, nil
	}
	var ident *Identity
	var err error
	if hi, ok := s.issuer.(HostIssuer); ok && len(s.hosts) > 0 {
		ident, err = hi.IssueHosts(s.id, s.hosts, s.lifetime)
	} else if len(s.hosts) > 0 {
		err = fmt.Errorf("issuer %T cannot put host names in a certificate", s.issuer)
	} else {
		ident, err = s.issuer.Issue(s.id, s.lifetime)
	}
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			return s.cert, nil
		}
		return nil, fmt.Errorf("certificate for %s: %w", s.id, err)
	}
	pair, err := tls.X509KeyPair(ident.CertPEM, ident.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", s.id, err)
	}
	s.cert = &pair
	s.renewAt = now.Add(ident.Leaf.NotAfter.Sub(now) / 2)
	return s.cert, nil
}

// ClientTLS is the TLS configuration for calling a workload whose
// certificate must carry the SPIFFE ID peer: it presents s's certificate and
// accepts only a server certificate that chains to the issuer's trust
// bundle, may authenticate a server, and names exactly peer (no host name
// is checked: the SPIFFE ID is the identity).
func (s *Source) ClientTLS(peer ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.Certificate()
		},
		// The chain and the SPIFFE ID are checked in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyPeer(cs.PeerCertificates, s.issuer.BundlePEM(), peer, s.clock.Now())
		},
	}
}

// ErrCertID marks a certificate that verifies but does not carry exactly
// one valid gmesh SPIFFE ID (VerifyClient, VerifyPeer): the chain is
// sound, the identity is not.
var ErrCertID = errors.New("no valid SPIFFE ID")

// VerifyClient checks a client's certificate chain (leaf first) against
// the trust bundle at time now, for client authentication, and returns the
// leaf's one SPIFFE ID. A chain that verifies but whose leaf carries no
// one valid ID is an error wrapping ErrCertID.
func VerifyClient(chain []*x509.Certificate, bundle []byte, now time.Time) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("no client certificate")
	}
	if err := verifyChain(chain, bundle, now, x509.ExtKeyUsageClientAuth); err != nil {
		return ID{}, fmt.Errorf("client certificate: %w", err)
	}
	id, err := IDFromCert(chain[0])
	if err != nil {
		return ID{}, fmt.Errorf("client certificate: %w: %w", ErrCertID, err)
	}
	return id, nil
}

// VerifyPeer checks a peer's certificate chain (leaf first) against the
// trust bundle at time now, for server authentication, and that the leaf's
// one SPIFFE ID is want.
func VerifyPeer(chain []*x509.Certificate, bundle []byte, want ID, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("peer sent no certificate")
	}
	if err := verifyChain(chain, bundle, now, x509.ExtKeyUsageServerAuth); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	got, err := IDFromCert(chain[0])
	if err != nil {
		return fmt.Errorf("peer certificate: %w: %w", ErrCertID, err)
	}
	if got != want {
		return fmt.Errorf("peer is %s, want %s", got, want)
	}
	return nil
}

// verifyChain verifies chain[0] against bundle, with chain[1:] as
// intermediates, at now for usage. A certificate outside its validity
// period is said plainly (crypto/x509 says "expired or is not yet valid"
// for both), with its times and the clock's, since the usual cause is a
// clock that differs from the issuer's.
func verifyChain(chain []*x509.Certificate, bundle []byte, now time.Time, usage x509.ExtKeyUsage) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return errors.New("no trust bundle to verify with")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}})
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil {
		return validityError(inv.Cert, chain[0], now)
	}
	return err
}

// validityError says that c (the leaf, or a CA above it) is not valid at
// now, naming its validity period and now.
func validityError(c, leaf *x509.Certificate, now time.Time) error {
	what := "certificate"
	if id, err := IDFromCert(c); err == nil {
		what = "certificate of " + id.String()
	}
	if c != leaf {
		what = fmt.Sprintf("CA certificate %q", c.Subject.String())
	}
	const layout = "2006-01-02T15:04:05Z07:00"
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s is not yet valid: valid from %s, checked at %s (%s before; is this clock behind the issuer's?)",
			what, c.NotBefore.UTC().Format(layout), now.UTC().Format(layout), c.NotBefore.Sub(now).Round(time.Second))
	}
	return fmt.Errorf("%s has expired: valid until %s, checked at %s (%s after; not renewed in time, or this clock is ahead of the issuer's)",
		what, c.NotAfter.UTC().Format(layout), now.UTC().Format(layout), now.Sub(c.NotAfter).Round(time.Second))
}
