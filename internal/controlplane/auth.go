package controlplane

import (
	"context"
	"crypto/subtle"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// adminPrefix is the full-method prefix of the admin API; xDS is not
// authenticated by token (its clients are the mesh's own tasks).
const adminPrefix = "/gmesh.mesh.v1.MeshAdmin/"

// IsLoopback reports whether addr (host:port) listens only on loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authenticator checks the bearer token of admin API calls, reads
// (Get, List, Status, Watch, ...) and writes alike: on every call when
// required (the control plane listens off loopback), and otherwise on every
// call whose peer is not on loopback (or unknown). Tokens are compared in
// constant time and never logged.
type authenticator struct {
	required bool
	token    []byte
}

func (a *authenticator) check(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, adminPrefix) {
		return nil
	}
	if !a.required && peerOnLoopback(ctx) {
		return nil
	}
	if len(a.token) == 0 {
		return status.Error(codes.Unauthenticated, "the admin API has no token, so it answers only calls from loopback")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(tok), a.token) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "the admin API off loopback needs the bearer token from the state directory's token file")
}

// peerOnLoopback reports whether the call's peer is a loopback address.
func peerOnLoopback(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// bearer is per-RPC credentials carrying the token. It does not require
// transport security: on loopback the control plane does not ask for it, and
// a remote control plane should sit behind TLS (not yet built in).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
