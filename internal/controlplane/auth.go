package controlplane

import (
	"context"
	"crypto/subtle"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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

// authenticator checks the bearer token of admin API calls when required.
// Tokens are compared in constant time and never logged.
type authenticator struct {
	required bool
	token    []byte
}

func (a *authenticator) check(ctx context.Context, method string) error {
	if !a.required || !strings.HasPrefix(method, adminPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(tok), a.token) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "the admin API on a non-loopback address needs the bearer token from the state directory's token file")
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
