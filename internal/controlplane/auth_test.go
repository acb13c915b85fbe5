package controlplane

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
)

func TestAuthenticator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const (
		token   = "s3cret-token"
		apply   = adminPrefix + "Apply"
		watch   = adminPrefix + "Watch"
		ads     = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
		healthM = "/grpc.health.v1.Health/Check"
	)
	local := withPeer(ctx, "127.0.0.1:50000")
	withAuth := func(v ...string) context.Context {
		md := metadata.MD{}
		for _, s := range v {
			md.Append("authorization", s)
		}
		return metadata.NewIncomingContext(local, md)
	}
	tests := []struct {
		name     string
		required bool
		ctx      context.Context
		method   string
		want     codes.Code
	}{
		{"required, no metadata", true, local, apply, codes.Unauthenticated},
		{"required, no token", true, withAuth(), apply, codes.Unauthenticated},
		{"required, wrong token", true, withAuth("Bearer nope"), apply, codes.Unauthenticated},
		{"required, token prefix only", true, withAuth("Bearer s3cret"), apply, codes.Unauthenticated},
		{"required, token without Bearer", true, withAuth(token), apply, codes.Unauthenticated},
		{"required, lower-case scheme", true, withAuth("bearer " + token), apply, codes.Unauthenticated},
		{"required, right token", true, withAuth("Bearer " + token), apply, codes.OK},
		{"required, right token among others", true, withAuth("Bearer nope", "Bearer "+token), apply, codes.OK},
		{"required, right token on a stream", true, withAuth("Bearer " + token), watch, codes.OK},
		{"required, xDS needs no token", true, local, ads, codes.OK},
		{"required, other services need no token", true, local, healthM, codes.OK},
		{"not required, no token", false, local, apply, codes.OK},
		{"not required, wrong token", false, withAuth("Bearer nope"), apply, codes.OK},
		{"not required, peer unknown", false, ctx, apply, codes.Unauthenticated},
		{"not required, peer off loopback", false, withPeer(ctx, "203.0.113.7:50000"), watch, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &authenticator{required: tt.required, token: []byte(token)}
			err := a.check(tt.ctx, tt.method)
			if got := status.Code(err); got != tt.want {
				t.Errorf("check(%s): got code %v (%v), want %v", tt.method, got, err, tt.want)
			}

			// The interceptors agree with check and call the handler only
			// when it passes.
			called := false
			_, err = a.unary(tt.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) {
				called = true
				return nil, nil
			})
			if got := status.Code(err); got != tt.want || called != (tt.want == codes.OK) {
				t.Errorf("unary(%s): got code %v, handler called %v; want %v, %v", tt.method, got, called, tt.want, tt.want == codes.OK)
			}
			called = false
			err = a.stream(nil, fakeStream{ctx: tt.ctx}, &grpc.StreamServerInfo{FullMethod: tt.method}, func(any, grpc.ServerStream) error {
				called = true
				return nil
			})
			if got := status.Code(err); got != tt.want || called != (tt.want == codes.OK) {
				t.Errorf("stream(%s): got code %v, handler called %v; want %v, %v", tt.method, got, called, tt.want, tt.want == codes.OK)
			}
		})
	}
}

// TestAdminReadsNeedToken checks every method of the admin API, reads
// (Get, List, Status, Watch, WaitACK, ListEndpoints, WatchEndpoints)
// included, refuses a call from off loopback without the token, whether
// the control plane listens off loopback or not, and lets it in with the
// token; an empty token never matches.
func TestAdminReadsNeedToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const token = "0123456789abcdef0123456789abcdef"
	var methods []string
	for _, m := range meshv1.MeshAdmin_ServiceDesc.Methods {
		methods = append(methods, m.MethodName)
	}
	for _, s := range meshv1.MeshAdmin_ServiceDesc.Streams {
		methods = append(methods, s.StreamName)
	}
	for _, want := range []string{"Get", "List", "Status", "Watch", "ListEndpoints", "WatchEndpoints", "Apply"} {
		if !slices.Contains(methods, want) {
			t.Fatalf("the admin API has no method %s; methods %v", want, methods)
		}
	}
	remote := withPeer(ctx, "203.0.113.7:50000")
	remote6 := withPeer(ctx, "[2001:db8::7]:50000")
	auth := func(c context.Context, v string) context.Context {
		return metadata.NewIncomingContext(c, metadata.Pairs("authorization", v))
	}
	for _, m := range methods {
		full := adminPrefix + m
		for _, tt := range []struct {
			name     string
			a        *authenticator
			ctx      context.Context
			wantCode codes.Code
		}{
			{"listening off loopback, no token", &authenticator{required: true, token: []byte(token)}, remote, codes.Unauthenticated},
			{"listening on loopback, peer off loopback, no token", &authenticator{token: []byte(token)}, remote, codes.Unauthenticated},
			{"IPv6 peer off loopback, no token", &authenticator{token: []byte(token)}, remote6, codes.Unauthenticated},
			{"peer off loopback, wrong token", &authenticator{token: []byte(token)}, auth(remote, "Bearer "+token[1:]), codes.Unauthenticated},
			{"peer off loopback, empty token configured", &authenticator{}, auth(remote, "Bearer "), codes.Unauthenticated},
			{"peer off loopback, token", &authenticator{token: []byte(token)}, auth(remote, "Bearer "+token), codes.OK},
			{"listening off loopback, token", &authenticator{required: true, token: []byte(token)}, auth(remote, "Bearer "+token), codes.OK},
			{"peer on loopback, listening on loopback", &authenticator{}, withPeer(ctx, "[::1]:50000"), codes.OK},
		} {
			if got := status.Code(tt.a.check(tt.ctx, full)); got != tt.wantCode {
				t.Errorf("%s, %s: got %v, want %v", m, tt.name, got, tt.wantCode)
			}
		}
	}
}

func withPeer(ctx context.Context, addr string) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))})
}

// TestAuthErrorDoesNotLeakToken checks the refusal never echoes a token.
func TestAuthErrorDoesNotLeakToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := &authenticator{required: true, token: []byte("the-real-token")}
	err := a.check(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer the-wrong-token")), adminPrefix+"Get")
	if err == nil {
		t.Fatal("check with a wrong token: got nil, want Unauthenticated")
	}
	for _, s := range []string{"the-real-token", "the-wrong-token"} {
		if msg := err.Error(); strings.Contains(msg, s) {
			t.Errorf("refusal %q contains %q", msg, s)
		}
	}
}

func TestBearer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tt := range []struct {
		token string
		want  map[string]string
	}{
		{"", nil},
		{"abc", map[string]string{"authorization": "Bearer abc"}},
	} {
		got, err := bearer(tt.token).GetRequestMetadata(ctx)
		if err != nil {
			t.Fatalf("GetRequestMetadata: %v", err)
		}
		if len(got) != len(tt.want) || got["authorization"] != tt.want["authorization"] {
			t.Errorf("bearer(%q) metadata = %v, want %v", tt.token, got, tt.want)
		}
		// A token from the bearer passes the authenticator.
		if tt.token != "" {
			a := &authenticator{required: true, token: []byte(tt.token)}
			if err := a.check(metadata.NewIncomingContext(ctx, metadata.New(got)), adminPrefix+"List"); err != nil {
				t.Errorf("check with bearer(%q)'s metadata: %v, want nil", tt.token, err)
			}
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:0", true},
		{"127.0.0.5:9000", true},
		{"[::1]:80", true},
		{"localhost:1", true},
		{"0.0.0.0:9000", false},
		{":9000", false},
		{"[::]:9000", false},
		{"10.0.0.1:9000", false},
		{"example.com:9000", false},
	} {
		if got := IsLoopback(tt.addr); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestNonLoopbackNeedsToken checks New refuses a non-loopback address
// without a token before it listens.
func TestNonLoopbackNeedsToken(t *testing.T) {
	_, err := New(Config{Addr: "0.0.0.0:0"})
	if err == nil {
		t.Fatal("New on 0.0.0.0 without a token: got nil error, want a refusal")
	}
	if !strings.Contains(err.Error(), "token") {
		t.Errorf("New error %q does not mention the token", err)
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }
