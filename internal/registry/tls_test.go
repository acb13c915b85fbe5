package registry

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// TestCredsForStrictEndpoints: a server that demands a client certificate
// from the mesh CA fails plaintext checks; once SetCreds gives its checks
// mTLS (and SetPolicy applies it) it turns HEALTHY; taken away, UNHEALTHY
// again.
func TestCredsForStrictEndpoints(t *testing.T) {
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	serverID := pki.ID{Mesh: "demo", VirtualNode: "echo-server"}
	serverCert, err := pki.NewSource(ca, serverID, time.Hour, nil).Certificate()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.BundlePEM())
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
	})))
	healthpb.RegisterHealthServer(s, health.NewServer())
	port, _ := serveLocal(t, func(lis net.Listener) { _ = s.Serve(lis) }, s.Stop)

	r := New(testLogger(t), nil, Options{})
	policy := fixedPolicy(mesh.HealthCheck{Protocol: mesh.ProtocolGRPC, IntervalMillis: 50, TimeoutMillis: 1000, HealthyThreshold: 1, UnhealthyThreshold: 1})
	r.SetPolicy(policy)
	startRun(t, r)
	ctx := testContext(t)
	if err := r.Register(ctx, newEndpoint("t1", port)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "plaintext checks fail", healthIs(r, "t1", mesh.HealthUnhealthy))

	checker := pki.NewSource(ca, pki.HealthChecker("demo"), time.Hour, nil)
	r.SetCreds(func(ep *mesh.Endpoint) (credentials.TransportCredentials, string) {
		return credentials.NewTLS(checker.ClientTLS(serverID)), serverID.String()
	})
	r.SetPolicy(policy)
	waitFor(t, r, "mTLS checks pass", healthIs(r, "t1", mesh.HealthHealthy))

	r.SetCreds(nil)
	r.SetPolicy(policy)
	waitFor(t, r, "plaintext checks fail again", healthIs(r, "t1", mesh.HealthUnhealthy))
}
