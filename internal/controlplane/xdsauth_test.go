package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

type syncBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t.Log(strings.TrimSpace(string(p)))
	return s.b.Write(p)
}

func (s *syncBuffer) has(parts ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, ln := range strings.Split(s.b.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(ln, p) {
				continue next
			}
		}
		return true
	}
	return false
}

// TestXDSAuthentication runs the control plane with a CA: plaintext xDS
// while no mesh has TLS on; once one has, only a task's xDS client with
// its own workload certificate (or a client naming its virtual node
// itself) is served, and a plaintext one is refused and logged.
func TestXDSAuthentication(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{t: t}
	cp, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", CA: ca,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	commit := func(rs []*mesh.Resource) {
		t.Helper()
		res, err := cp.Store().Commit(ctx, rs, nil)
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		pollUntil(ctx, t, "published", func() (bool, error) {
			rev, _ := cp.XDS().Published()
			return rev >= res.Revision, nil
		})
	}
	listed := func(node string) bool {
		for _, c := range cp.XDS().Clients() {
			if c.NodeID == node {
				_, acked := c.Types[xds.ListenerType]
				return acked && c.Types[xds.ListenerType].ACKedVersion != ""
			}
		}
		return false
	}
	connect := func(bs []byte) *grpc.ClientConn {
		t.Helper()
		rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient("xds:///echo-server.echo.local", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
		if err != nil {
			t.Fatal(err)
		}
		cc.Connect()
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	plain := func(node string) []byte {
		b, err := bootstrap.JSON(cp.Addr(), node, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	stack := echoStack(t, true)
	taskSet := &mesh.Resource{Kind: mesh.KindTaskSet, Metadata: mesh.Metadata{Name: "echo-client-0-1", Mesh: "echo"},
		Spec: &mesh.TaskSetSpec{Service: "echo-client", VirtualNode: "echo-client-0-1", Command: []string{"echo-client"}, Port: 50052, DesiredCount: 1}}
	commit(append(stack, taskSet))

	admin, err := controlplane.Dial(cp.Addr(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	caStatus := func() *controlplane.CAStatus { // through the admin API, as gmesh status reads it
		t.Helper()
		st, err := admin.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.CA
	}
	// No mesh has TLS on: plaintext xDS as ever, and no CA in the status.
	if got := caStatus(); got != nil {
		t.Errorf("status CA %+v with no mesh TLS on, want none", got)
	}
	connect(plain("echo-client-0-1-3"))
	pollUntil(ctx, t, "plaintext client served while no mesh has TLS on", func() (bool, error) { return listed("echo-client-0-1-3"), nil })

	// echo-server turns STRICT: the mesh has TLS on.
	for _, r := range stack {
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-0-9" {
			r.VirtualNode().Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
			commit([]*mesh.Resource{r})
		}
	}

	// The status (gmesh status, the dashboard) shows the CA's expiry.
	if got := caStatus(); got == nil || !got.NotAfter.Equal(ca.Cert().NotAfter) || got.Subject != ca.Cert().Subject.String() {
		t.Errorf("status CA %+v, want %s expiring %s", got, ca.Cert().Subject, ca.Cert().NotAfter)
	}

	files := pki.Files{Dir: filepath.Join(t.TempDir(), "tls")}
	ident, err := ca.Issue(xds.NodeID("echo", "echo-client-0-1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := files.Write(ident, ca.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	withCert := func(node string) []byte {
		b, err := bootstrap.Config{ServerURI: cp.Addr(), NodeID: node, TLS: &bootstrap.TLS{
			CertificateFile: files.Identity(), PrivateKeyFile: files.Identity(), CACertificateFile: files.Bundle(), Channel: true,
		}}.JSON()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	connect(plain("echo-client-0-1-2"))
	connect(withCert("echo-server-0-9-1"))
	connect(withCert("echo-client-0-1-1"))
	connect(withCert("mesh/echo/virtualNode/echo-client-0-1/host-1"))
	pollUntil(ctx, t, "the task's client served", func() (bool, error) { return listed("echo-client-0-1-1"), nil })
	pollUntil(ctx, t, "the self-named client served", func() (bool, error) {
		return listed("mesh/echo/virtualNode/echo-client-0-1/host-1"), nil
	})
	pollUntil(ctx, t, "plaintext client refused", func() (bool, error) {
		return logs.has("xds client refused", "node=echo-client-0-1-2", "certificate=none", "code=Unauthenticated"), nil
	})
	pollUntil(ctx, t, "another node's id refused", func() (bool, error) {
		return logs.has("xds client refused", "node=echo-server-0-9-1", "certificate=spiffe://echo.gmesh.local/vn/echo-client-0-1", "code=PermissionDenied"), nil
	})
	// The plaintext stream opened before is ended at its next request
	// (its ACK of the publish that turned TLS on).
	pollUntil(ctx, t, "earlier plaintext stream ended", func() (bool, error) {
		return logs.has("xds client refused", "node=echo-client-0-1-3", "certificate=none", "code=Unauthenticated"), nil
	})
	for _, n := range []string{"echo-client-0-1-2", "echo-server-0-9-1", "echo-client-0-1-3"} {
		if listed(n) {
			t.Errorf("refused client %s is listed: %+v", n, cp.XDS().Clients())
		}
	}

	// A second mesh with TLS on: each client gets its own mesh's
	// configuration only (per-mesh views).
	commit([]*mesh.Resource{
		{Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: "other"}, Spec: &mesh.MeshSpec{}},
		{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: "svc", Mesh: "other"}, Spec: &mesh.VirtualNodeSpec{
			Listeners:        []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: mesh.ProtocolGRPC}, TLS: &mesh.ListenerTLS{Mode: mesh.TLSStrict}}},
			ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: "svc"}},
		}},
		{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: "svc.other.local", Mesh: "other"}, Spec: &mesh.VirtualServiceSpec{
			Provider: &mesh.VirtualServiceProvider{VirtualNode: &mesh.ProviderRef{VirtualNodeName: "svc"}},
		}},
	})
	otherFiles := pki.Files{Dir: filepath.Join(t.TempDir(), "other-tls")}
	otherIdent, err := ca.Issue(xds.NodeID("other", "svc"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := otherFiles.Write(otherIdent, ca.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		node  string
		files pki.Files
		want  string // the one virtual service listener
	}{
		{"echo-client-0-1-1", files, ""},
		{"mesh/other/virtualNode/svc/host-1", otherFiles, "svc.other.local"},
	} {
		ls := wildcardListeners(ctx, t, cp.Addr(), ca, tc.files, tc.node)
		var services []string
		for _, l := range ls {
			if !strings.HasPrefix(l, "grpc/server?") {
				services = append(services, l)
			}
		}
		if tc.want == "" {
			// echo's own services, and nothing of the other mesh.
			if len(services) == 0 || slices.ContainsFunc(services, func(s string) bool { return strings.HasSuffix(s, ".other.local") }) {
				t.Errorf("%s sees listeners %v, want echo's only", tc.node, ls)
			}
			continue
		}
		if !slices.Equal(services, []string{tc.want}) {
			t.Errorf("%s sees listeners %v, want %s only", tc.node, ls, tc.want)
		}
	}
}

// wildcardListeners opens an ADS stream as node over TLS with the
// workload's files and returns the names of every listener its view holds.
func wildcardListeners(ctx context.Context, t *testing.T, addr string, ca *pki.CA, files pki.Files, node string) []string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(files.Identity(), files.Identity())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.BundlePEM())
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: "127.0.0.1",
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	var names []string
	for _, a := range resp.GetResources() {
		l := &listenerpb.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		names = append(names, l.GetName())
	}
	slices.Sort(names)
	return names
}
