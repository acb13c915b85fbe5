package echo

import (
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

func tlsBootstrap(t *testing.T, serverURI, nodeID string, files pki.Files) []byte {
	t.Helper()
	cfg := bootstrap.Config{ServerURI: serverURI, NodeID: nodeID}
	if files.Dir != "" {
		cfg.TLS = &bootstrap.TLS{CertificateFile: files.Identity(), PrivateKeyFile: files.Identity(), CACertificateFile: files.Bundle(), RefreshInterval: time.Second}
	}
	b, err := cfg.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestXDSFromBootstrap: the binaries turn xDS serving and xDS credentials
// on only when the bootstrap carries gmesh's TLS parts.
func TestXDSFromBootstrap(t *testing.T) {
	plain := string(tlsBootstrap(t, "127.0.0.1:1", "n", pki.Files{}))
	withTLS := string(tlsBootstrap(t, "127.0.0.1:1", "n", pki.Files{Dir: t.TempDir()}))

	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantXDS bool
	}{
		{"no bootstrap", nil, false},
		{"plain bootstrap", map[string]string{EnvXDSBootstrapConfig: plain}, false},
		{"tls bootstrap", map[string]string{EnvXDSBootstrapConfig: withTLS}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := ParseServerConfig(nil, envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if opts.Config.XDS != tc.wantXDS {
				t.Errorf("server XDS = %v, want %v", opts.Config.XDS, tc.wantXDS)
			}
			env := map[string]string{EnvEchoHost: "xds:///echo-server.echo.local", EnvXDSBootstrapConfig: plain}
			for k, v := range tc.env {
				env[k] = v
			}
			cfg, err := ParseClientConfig(nil, envOf(env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Creds != nil && cfg.Creds.Info().SecurityProtocol != "insecure"; got != tc.wantXDS {
				t.Errorf("client has xDS credentials: %v, want %v (creds %v)", got, tc.wantXDS, cfg.Creds)
			}
		})
	}

	file := filepath.Join(t.TempDir(), "bootstrap.json")
	writeFileT(t, file, withTLS)
	opts, err := ParseServerConfig(nil, envOf(map[string]string{EnvXDSBootstrapFile: file, EnvXDSBootstrapConfig: plain}), io.Discard)
	if err != nil || !opts.Config.XDS {
		t.Errorf("bootstrap file: XDS %v, %v; want the file (preferred, as grpc-go does) to turn it on", opts.Config.XDS, err)
	}
	if _, err := ParseServerConfig(nil, envOf(map[string]string{EnvXDSBootstrapConfig: withTLS, EnvTLSCert: "c", EnvTLSKey: "k"}), io.Discard); err == nil {
		t.Error("xDS serving and ECHO_TLS_CERT together: got no error")
	}
	for _, env := range []map[string]string{{EnvXDSBootstrapConfig: "{"}, {EnvXDSBootstrapFile: "/nonexistent/b.json"}} {
		if opts, err := ParseServerConfig(nil, envOf(env), io.Discard); err != nil || opts.Config.XDS {
			t.Errorf("bad bootstrap %v: XDS %v, %v; want a plain server, as before TLS existed", env, opts.Config.XDS, err)
		}
	}
}

func writeFileT(t *testing.T, path, s string) {
	t.Helper()
	if err := pki.WriteFileAtomic(path, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// TestXDSServerMTLS runs the echo server in xDS mode and the echo client
// with the credentials its bootstrap asks for, against the real xDS server:
// the client's HTTP request reaches the server over mTLS; a plaintext call
// straight to the server fails.
func TestXDSServerMTLS(t *testing.T) {
	ctx := testContext(t)
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	files := func(node string) pki.Files {
		f := pki.Files{Dir: filepath.Join(t.TempDir(), "tls")}
		id, err := ca.Issue(xds.NodeID("echo", node), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Write(id, ca.BundlePEM()); err != nil {
			t.Fatal(err)
		}
		return f
	}

	cp := xdsserver.New(testLogger(t), xdsserver.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	cp.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() { cp.Close(); g.Stop() })
	cpAddr := lis.Addr().String()

	srv := startServer(t, ServerConfig{Addr: "127.0.0.1:0", Version: "1.0", XDS: true,
		XDSBootstrap: tlsBootstrap(t, cpAddr, "server-1", files("echo-server"))})
	port := srv.Addr().(*net.TCPAddr).Port
	node := &mesh.Resource{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: "echo-server", Mesh: "echo"}, Spec: &mesh.VirtualNodeSpec{
		Listeners:        []mesh.Listener{{PortMapping: mesh.PortMapping{Port: port, Protocol: mesh.ProtocolGRPC}, TLS: &mesh.ListenerTLS{Mode: mesh.TLSStrict}}},
		ServiceDiscovery: &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: "echo-server"}},
	}}
	vs := &mesh.Resource{Kind: mesh.KindVirtualService, Metadata: mesh.Metadata{Name: "echo-server.echo.local", Mesh: "echo"}, Spec: &mesh.VirtualServiceSpec{
		Provider: &mesh.VirtualServiceProvider{VirtualNode: &mesh.ProviderRef{VirtualNodeName: "echo-server"}}}}
	// echo-client lists echo-server.echo.local: the server's RBAC admits
	// it (docs/security.md, Authorization).
	client := &mesh.Resource{Kind: mesh.KindVirtualNode, Metadata: mesh.Metadata{Name: "echo-client", Mesh: "echo"}, Spec: &mesh.VirtualNodeSpec{
		Backends: []mesh.Backend{{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: "echo-server.echo.local"}}},
	}}
	ep := &mesh.Endpoint{ID: "t1", Mesh: "echo", Service: "echo-server", Address: "127.0.0.1", Port: port, State: mesh.TaskRunning, Health: mesh.HealthHealthy}
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: []*mesh.Resource{
		{Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: "echo"}, Spec: &mesh.MeshSpec{}}, node, vs, client}, Endpoints: []*mesh.Endpoint{ep}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Publish(res, 1); err != nil {
		t.Fatal(err)
	}

	clientBootstrap := tlsBootstrap(t, cpAddr, "client-1", files("echo-client"))
	cfg, err := ParseClientConfig(nil, envOf(map[string]string{
		EnvEchoHost: "xds:///echo-server.echo.local", EnvXDSBootstrapConfig: string(clientBootstrap),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(clientBootstrap)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = "127.0.0.1:0" // not the default :8080
	cfg.DialOptions = []grpc.DialOption{grpc.WithResolvers(rb)}
	c := startClient(t, cfg)

	var body string
	waitFor(t, "an echo through the mesh over mTLS", testTimeout, func() bool {
		code, b, _ := httpDo(t, "GET", clientURL(c, "/?name=Yusuke"))
		body = b
		return code == 200
	})
	if want := "Hello, Yusuke-san! (Said 127.0.0.1, Version 1.0)"; !strings.Contains(body, want) {
		t.Errorf("reply %q, want it to contain %q", body, want)
	}

	conn := dial(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil)
	if _, err := echoCall(ctx, conn, "plain"); err == nil {
		t.Error("a plaintext call to the STRICT server succeeded")
	}
}
