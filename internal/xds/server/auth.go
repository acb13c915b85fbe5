package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gmesh-dev/gmesh/internal/pki"
)

// Authenticator decides, once per stream (and per fetch), whether the
// client on the other end of ctx may have the xDS resources as nodeID, the
// node id its first request claims. A refusal is an *AuthError.
type Authenticator interface {
	Authenticate(ctx context.Context, nodeID string) error
}

// AuthenticatorFunc is a function as an Authenticator.
type AuthenticatorFunc func(ctx context.Context, nodeID string) error

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, nodeID string) error {
	return f(ctx, nodeID)
}

// AuthError is a refused xDS client: what it claimed, what its certificate
// says, and why it was refused. It converts to a gRPC status with Code.
type AuthError struct {
	Code codes.Code // codes.Unauthenticated or codes.PermissionDenied
	// Node is the node id the client claimed ("" if none).
	Node string
	// Certificate is the SPIFFE ID of the client's certificate, "" when it
	// presented none or one that does not verify.
	Certificate string
	Reason      string
}

func (e *AuthError) Error() string {
	cert := e.Certificate
	if cert == "" {
		cert = "none"
	}
	return fmt.Sprintf("xds: node %q (certificate %s) refused: %s", e.Node, cert, e.Reason)
}

// GRPCStatus makes the refusal the stream's status.
func (e *AuthError) GRPCStatus() *status.Status { return status.New(e.Code, e.Error()) }

// MeshAuth authenticates xDS clients by their workload certificates from
// the mesh CA (local mode): the stream must be TLS with a client
// certificate that chains to Bundle, whose one SPIFFE ID is a virtual node
// (not a control-plane component), and the node id the client claims must
// belong to that same virtual node of that same mesh (Owner).
type MeshAuth struct {
	// Bundle returns the mesh CA's trust bundle (PEM).
	Bundle func() []byte
	// Owner returns the SPIFFE ID of the virtual node whose task claims
	// nodeID, false when no task of a mesh with TLS on has that node id.
	Owner func(nodeID string) (pki.ID, bool)
	// Required reports whether a stream without TLS is refused; nil: always
	// refused. The control plane sets it so that plaintext xDS stays for
	// meshes without TLS.
	Required func() bool
	// RequiredFor, when set, replaces Required: whether a stream without
	// TLS that claims nodeID is refused. On Kubernetes, where the webhook
	// gives TLS bootstraps only to the pods of meshes with TLS on, a pod of
	// such a mesh must use TLS while the pods of other meshes keep
	// plaintext xDS.
	RequiredFor func(nodeID string) bool
	// Now is the clock certificates are checked at; nil: time.Now.
	Now func() time.Time
}

var _ Authenticator = (*MeshAuth)(nil)

// Authenticate implements Authenticator.
func (a *MeshAuth) Authenticate(ctx context.Context, nodeID string) error {
	refuse := func(code codes.Code, cert, format string, args ...any) error {
		return &AuthError{Code: code, Node: nodeID, Certificate: cert, Reason: fmt.Sprintf(format, args...)}
	}
	var info credentials.TLSInfo
	isTLS := false
	if p, ok := peer.FromContext(ctx); ok {
		info, isTLS = p.AuthInfo.(credentials.TLSInfo)
	}
	if !isTLS {
		switch {
		case a.RequiredFor != nil:
			if !a.RequiredFor(nodeID) {
				return nil
			}
		case a.Required != nil && !a.Required():
			return nil
		}
		return refuse(codes.Unauthenticated, "", "plaintext xDS stream, and TLS is on: connect with TLS and the workload certificate (bootstrap channel_creds \"tls\")")
	}
	if len(info.State.PeerCertificates) == 0 {
		return refuse(codes.Unauthenticated, "", "no client certificate: present the workload certificate (channel_creds \"tls\" with certificate_file and private_key_file)")
	}
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	id, err := pki.VerifyClient(info.State.PeerCertificates, a.Bundle(), now)
	if errors.Is(err, pki.ErrCertID) {
		return refuse(codes.Unauthenticated, "", "the certificate verifies against the mesh CA at %s but names no one workload: %v", now.UTC().Format(time.RFC3339), err)
	}
	if err != nil {
		// The ID is read without trusting it, only to name it in the log.
		claimed, _ := pki.IDFromURIs(info.State.PeerCertificates[0].URIs)
		cert := ""
		if claimed != (pki.ID{}) {
			cert = claimed.String() + " (unverified)"
		}
		return refuse(codes.Unauthenticated, cert, "certificate does not verify against the mesh CA at %s: %v", now.UTC().Format(time.RFC3339), err)
	}
	if id.VirtualNode == "" {
		return refuse(codes.PermissionDenied, id.String(), "the certificate names no virtual node")
	}
	if nodeID == "" {
		return refuse(codes.PermissionDenied, id.String(), "no node id")
	}
	owner, ok := a.Owner(nodeID)
	if !ok {
		return refuse(codes.PermissionDenied, id.String(), "node id %q is no task of a virtual node in a mesh with TLS on", nodeID)
	}
	if owner != id {
		return refuse(codes.PermissionDenied, id.String(), "node id %q belongs to %s, not to the certificate's %s", nodeID, owner, id)
	}
	return nil
}

// logRefusal writes the one log line of a refused client.
func (s *Server) logRefusal(err error, nodeID string, stream int64) {
	var ae *AuthError
	if errors.As(err, &ae) {
		s.log.Warn("xds client refused", "node", ae.Node, "certificate", orNone(ae.Certificate), "code", ae.Code.String(), "reason", ae.Reason, "stream", stream)
		return
	}
	s.log.Warn("xds client refused", "node", nodeID, "error", err, "stream", stream)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
