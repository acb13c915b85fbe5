package echo

import (
	"context"
	"io"
	"net"
	"net/http"
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

// testCA is a mesh CA in a temporary directory.
func testCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// identityFiles writes the identity of a node of mesh echo, as gmesh
// writes a task's.
func identityFiles(t *testing.T, ca *pki.CA, node string) pki.Files {
	t.Helper()
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

// startControlPlane serves gmesh's xDS server on 127.0.0.1 (plaintext)
// until the test ends.
func startControlPlane(t *testing.T) (*xdsserver.Server, string) {
	t.Helper()
	cp := xdsserver.New(testLogger(t), xdsserver.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	cp.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() { cp.Close(); g.Stop() })
	return cp, lis.Addr().String()
}

// publishEchoMesh publishes mesh echo with TLS on: a STRICT echo-server
// node whose one task listens on host:port when withEndpoint (none
// otherwise), its virtual service, and echo-client calling it.
func publishEchoMesh(t *testing.T, cp *xdsserver.Server, rev uint64, host string, port int, withEndpoint bool) {
	t.Helper()
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
	var eps []*mesh.Endpoint
	if withEndpoint {
		eps = append(eps, &mesh.Endpoint{ID: "t1", Mesh: "echo", Service: "echo-server", Address: host, Port: port, State: mesh.TaskRunning, Health: mesh.HealthHealthy})
	}
	res, err := xds.Translate(xds.Input{Revision: rev, Resources: []*mesh.Resource{
		{Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: "echo"}, Spec: &mesh.MeshSpec{}}, node, vs, client}, Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Publish(res, rev); err != nil {
		t.Fatal(err)
	}
}

// startMTLSClient starts echo-client in xDS mode against the control plane,
// with its identity.
func startMTLSClient(t *testing.T, ca *pki.CA, cpAddr string) *Client {
	t.Helper()
	clientBootstrap := tlsBootstrap(t, cpAddr, "client-1", identityFiles(t, ca, "echo-client"))
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
	return startClient(t, cfg)
}

// TestXDSServerMTLS runs the echo server in xDS mode and the echo client
// with the credentials its bootstrap asks for, against the real xDS server:
// the client's HTTP request reaches the server over mTLS; a plaintext call
// straight to the server fails.
func TestXDSServerMTLS(t *testing.T) {
	ctx := testContext(t)
	ca := testCA(t)
	cp, cpAddr := startControlPlane(t)

	srv := startServer(t, ServerConfig{Addr: "127.0.0.1:0", Version: "1.0", XDS: true,
		XDSBootstrap: tlsBootstrap(t, cpAddr, "server-1", identityFiles(t, ca, "echo-server"))})
	port := srv.Addr().(*net.TCPAddr).Port
	publishEchoMesh(t, cp, 1, "127.0.0.1", port, true)
	c := startMTLSClient(t, ca, cpAddr)

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

// TestXDSReadyz: a STRICT echo-server configured as on Kubernetes (HOST
// the pod IP, here 127.0.0.2; METRICS_PORT for the kubelet's probes) asks
// for the listener of HOST:PORT, is not ready (/readyz 503) until the
// control plane has sent it, then ready (200) and answering with Said HOST,
// and not ready again while it drains; /healthz answers 200 throughout.
func TestXDSReadyz(t *testing.T) {
	ctx := testContext(t)
	ca := testCA(t)
	cp, cpAddr := startControlPlane(t)
	const podIP = "127.0.0.2"

	bs := tlsBootstrap(t, cpAddr, "server-1", identityFiles(t, ca, "echo-server"))
	opts, err := ParseServerConfig(nil, envOf(map[string]string{
		EnvHost: podIP, EnvPort: "0", EnvMetricsPort: "0", EnvDrainDelay: "1m",
		EnvXDSBootstrapConfig: string(bs),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.Config.XDS || opts.Config.Addr != podIP+":0" || opts.Config.MetricsAddr != podIP+":0" {
		t.Fatalf("config: XDS %v, Addr %q, MetricsAddr %q; want xDS on %s", opts.Config.XDS, opts.Config.Addr, opts.Config.MetricsAddr, podIP)
	}
	cfg := opts.Config
	cfg.XDSBootstrap = bs // grpc-go read the test process's environment long ago
	cfg.Version = "1.0"
	cfg.Logger = testLogger(t)
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve() }()
	shutdown := make(chan error, 1)
	drainCtx, endDrain := context.WithCancel(context.Background())
	t.Cleanup(func() {
		endDrain()
		srv.Shutdown(context.Background()) // waits for a Shutdown under way
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	port := srv.Addr().(*net.TCPAddr).Port
	metrics := "http://" + srv.MetricsAddr().String()
	get := func(path string) (int, string) {
		code, body, _ := httpDo(t, "GET", metrics+path)
		return code, body
	}

	// What grpc-go's xDS server asks for is what the translation names the
	// endpoint's listener.
	wantName := "grpc/server?xds.resource.listening_address=" + net.JoinHostPort(podIP, strconv.Itoa(port))
	if got := bootstrap.ServerListenerName(srv.Addr().String()); got != wantName {
		t.Fatalf("listener name %q, want %q", got, wantName)
	}

	// The mesh without this server's endpoint: the server has ACKed the
	// listeners and has none of its own.
	publishEchoMesh(t, cp, 1, podIP, port, false)
	_, versions := cp.Published()
	waitFor(t, "server-1 ACKs the listeners", testTimeout, func() bool {
		for _, c := range cp.Clients() {
			if c.NodeID == "server-1" && c.Types[xds.ListenerType].ACKedVersion == versions[xds.ListenerType] {
				return true
			}
		}
		return false
	})
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "xDS server does not serve "+podIP) {
		t.Errorf("/readyz before the listener: %d %q, want 503 saying the xDS server does not serve %s", code, body, podIP)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200", code, body)
	}

	publishEchoMesh(t, cp, 2, podIP, port, true)
	waitFor(t, "/readyz 200 once the listener arrived", testTimeout, func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	})
	if err := srv.Ready(); err != nil {
		t.Errorf("Ready: %v, want nil", err)
	}
	c := startMTLSClient(t, ca, cpAddr)
	var body string
	waitFor(t, "an echo through the mesh over mTLS", testTimeout, func() bool {
		code, b, _ := httpDo(t, "GET", clientURL(c, "/?name=Yusuke"))
		body = b
		return code == 200
	})
	if want := "Hello, Yusuke-san! (Said " + podIP + ", Version 1.0)"; !strings.Contains(body, want) {
		t.Errorf("reply %q, want it to contain %q", body, want)
	}

	// Draining: not ready, alive, and calls still served.
	go func() { shutdown <- srv.Shutdown(drainCtx) }()
	waitFor(t, "/readyz 503 while draining", testTimeout, func() bool {
		code, body := get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d %q, want 200", code, body)
	}
	if code, b, _ := httpDo(t, "GET", clientURL(c, "/?name=Yusuke")); code != http.StatusOK {
		t.Errorf("an echo while draining: %d %q, want 200", code, b)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned during the drain delay: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	default:
	}
}
