package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/anypb"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// Path is one way to reach the echo service in a TLSMesh: a virtual
// service of its own with two versions behind a 50/50 route, served by
// grpc-go xDS servers.
type Path struct {
	// Key names the path in benchmark names: "plain", "mtls", "mtls-norbac".
	Key string
	// Name is how reports print it.
	Name string
	// Suffix is added to "echo-server" to name the path's service, router,
	// route and nodes ("" is the echo stack's own echo-server).
	Suffix string
	// Strict gives its nodes' listener tls.mode STRICT; otherwise they have
	// none (plain text).
	Strict bool
	// NoRBAC strips the RBAC filter from its servers' listeners after the
	// control plane published them (an experiment, not a gmesh feature).
	NoRBAC bool
}

// Target is the path's xds:/// target.
func (p Path) Target() string { return "xds:///" + p.Service() + ".echo.local" }

// Service is the path's registry service name (echo-server + suffix).
func (p Path) Service() string { return "echo-server" + p.Suffix }

// Node is the path's virtual node of version v ("0.9" or "1.0").
func (p Path) Node(v string) string {
	return p.Service() + "-" + strings.ReplaceAll(v, ".", "-")
}

// Paths are the TLSMesh's three paths: the same xDS server and xDS client
// credentials in each, so that plain and mtls differ only by the STRICT
// listener (TLS 1.3 and gmesh's RBAC filter), and mtls-norbac only by TLS.
var Paths = []Path{
	{Key: "plain", Name: "xDS server, plaintext listener"},
	{Key: "mtls", Name: "xDS server, STRICT: mTLS + RBAC (as gmesh serves it)", Suffix: "-tls", Strict: true},
	{Key: "mtls-norbac", Name: "xDS server, STRICT with the RBAC filter stripped (experiment)", Suffix: "-norbac", Strict: true, NoRBAC: true},
}

// ClientNode is the virtual node the TLSMesh's clients are: echo-client-0-1,
// whose backends list every path's service.
const ClientNode = "echo-client-0-1"

// TLSMesh is gmesh's real control plane with a mesh CA (as `gmesh up` runs
// it), the echo stack with TLS on, and for each of Paths two echo servers
// (0.9 and 1.0) served through grpc-go's xDS server, each with its
// workload certificate from internal/pki as local mode issues it (files
// read by grpc-go's file_watcher provider) and an authenticated xDS
// channel. Clients are echo-client-0-1 with its own certificate files.
type TLSMesh struct {
	*Mesh
	CA *pki.CA
	// Servers holds each path's servers, by Path.Key.
	Servers map[string][]*echo.Server
	// Conns holds a ready ClientConn of echo-client-0-1 per path, by
	// Path.Key (Dial), answered by both versions before the experiment's
	// publish.
	Conns map[string]*grpc.ClientConn
	// Security is what each path's calls go over (CheckSecurity).
	Security map[string]string
	dir      string
	files    map[string]pki.Files // by virtual node
	// noRBACListeners is the listener version published without RBAC.
	noRBACListeners string
	stripped        *xds.Resources
	// Republished counts the times the control plane published again over
	// the stripped listeners and they were stripped anew.
	Republished int
}

// TLSStackResources is StackResources(50, 50) plus, for every path, its
// nodes (clones of echo-server-0-9 and -1-0 selecting the path's service),
// router, route and virtual service, and echo-client-0-1 listing them all.
func TLSStackResources() ([]*mesh.Resource, error) {
	base, err := StackResources(50, 50)
	if err != nil {
		return nil, err
	}
	var out []*mesh.Resource
	for _, r := range base {
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == ClientNode {
			c := r.Clone()
			spec := c.VirtualNode()
			for _, p := range Paths[1:] {
				spec.Backends = append(spec.Backends, mesh.Backend{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: p.Service() + ".echo.local"}})
			}
			out = append(out, c)
			continue
		}
		out = append(out, r)
	}
	for _, p := range Paths {
		var add []*mesh.Resource
		for _, r := range base {
			switch {
			case r.Kind == mesh.KindVirtualNode && strings.HasPrefix(r.Metadata.Name, "echo-server-"):
				c := r.Clone()
				c.Metadata.Name = strings.Replace(c.Metadata.Name, "echo-server", p.Service(), 1)
				spec := c.VirtualNode()
				spec.ServiceDiscovery.Registry.ServiceName = p.Service()
				if p.Strict {
					spec.Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
				}
				add = append(add, c)
			case p.Suffix == "":
				// The echo stack's own path: only its nodes change.
			case r.Kind == mesh.KindVirtualRouter && r.Metadata.Name == "echo-server":
				c := r.Clone()
				c.Metadata.Name = p.Service()
				add = append(add, c)
			case r.Kind == mesh.KindRoute && r.Metadata.Name == "echo-server-route":
				c := r.Clone()
				c.Metadata.Name = p.Service() + "-route"
				spec := c.Route()
				spec.VirtualRouterName = p.Service()
				spec.GRPCRoute.Action.WeightedTargets = []mesh.WeightedTarget{
					{VirtualNode: p.Node("0.9"), Weight: 50},
					{VirtualNode: p.Node("1.0"), Weight: 50},
				}
				add = append(add, c)
			case r.Kind == mesh.KindVirtualService && r.Metadata.Name == "echo-server.echo.local":
				c := r.Clone()
				c.Metadata.Name = p.Service() + ".echo.local"
				c.VirtualService().Provider.VirtualRouter.VirtualRouterName = p.Service()
				add = append(add, c)
			}
		}
		if p.Suffix == "" {
			// Replace the stack's echo-server nodes in place.
			for _, a := range add {
				for i, r := range out {
					if r.Kind == a.Kind && r.Metadata.Name == a.Metadata.Name {
						out[i] = a
					}
				}
			}
			continue
		}
		out = append(out, add...)
	}
	return out, nil
}

// StartTLSMesh starts the control plane with a new CA in a temporary
// directory, applies TLSStackResources, starts and registers every path's
// servers, waits until they are healthy (STRICT ones are checked over mTLS
// by the control plane's health checker), and strips the RBAC filter from
// the NoRBAC path's listeners.
func StartTLSMesh(ctx context.Context) (*TLSMesh, error) {
	dir, err := os.MkdirTemp("", "gmesh-bench-tls-")
	if err != nil {
		return nil, err
	}
	ca, err := pki.LoadOrCreate(filepath.Join(dir, "ca"), nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m, err := startControlPlane(controlplane.Config{Addr: "127.0.0.1:0", CA: ca})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t := &TLSMesh{Mesh: m, CA: ca, Servers: map[string][]*echo.Server{}, Conns: map[string]*grpc.ClientConn{}, Security: map[string]string{}, dir: dir, files: map[string]pki.Files{}}
	fail := func(err error) (*TLSMesh, error) { t.Close(); return nil, err }
	rs, err := TLSStackResources()
	if err != nil {
		return fail(err)
	}
	if err := t.apply(ctx, rs); err != nil {
		return fail(err)
	}
	var eps []*mesh.Endpoint
	for _, p := range Paths {
		for _, v := range []string{"0.9", "1.0"} {
			bs, err := t.Bootstrap(p.Node(v), "bench-server-"+p.Key+"-"+v)
			if err != nil {
				return fail(err)
			}
			s, err := echo.NewServer(echo.ServerConfig{Addr: "127.0.0.1:0", Version: v, ShutdownTimeout: time.Second, XDS: true, XDSBootstrap: bs})
			if err != nil {
				return fail(err)
			}
			go s.Serve()
			t.Servers[p.Key] = append(t.Servers[p.Key], s)
			ep := endpointOf(s.Addr().String(), p.Service(), v, fmt.Sprintf("bench-%s-%s", p.Key, v))
			if err := t.Admin.Register(ctx, ep); err != nil {
				return fail(fmt.Errorf("register %s: %w", ep.ID, err))
			}
			eps = append(eps, ep)
		}
	}
	if err := waitHealthy(ctx, m.CP, eps); err != nil {
		return fail(err)
	}
	// Each path's client answered by both versions: the control plane
	// has published every server as healthy, so no publish is pending
	// that would undo the experiment's below.
	for _, p := range Paths {
		cc, err := t.Dial(p)
		if err != nil {
			return fail(err)
		}
		t.Conns[p.Key] = cc
		if err := Ready(ctx, echov1.NewEchoServiceClient(cc)); err != nil {
			return fail(fmt.Errorf("%s: %w", p.Key, err))
		}
		if err := WaitRouting(ctx, echov1.NewEchoServiceClient(cc), false); err != nil {
			return fail(fmt.Errorf("%s: %w", p.Key, err))
		}
	}
	if err := t.EnsureNoRBAC(ctx); err != nil {
		return fail(err)
	}
	for _, p := range Paths {
		if t.Security[p.Key], err = CheckSecurity(ctx, t.Conns[p.Key], p); err != nil {
			return fail(err)
		}
	}
	return t, nil
}

// Files returns the certificate files of a virtual node, issuing them on
// first use (ECDSA P-256, 1 h, as `gmesh up` issues a task's).
func (t *TLSMesh) Files(node string) (pki.Files, error) {
	if f, ok := t.files[node]; ok {
		return f, nil
	}
	f := pki.Files{Dir: filepath.Join(t.dir, "tls", node)}
	id, err := t.CA.Issue(xds.NodeID("echo", node), pki.DefaultLifetime)
	if err != nil {
		return pki.Files{}, err
	}
	if err := f.Write(id, t.CA.BundlePEM()); err != nil {
		return pki.Files{}, err
	}
	t.files[node] = f
	return f, nil
}

// Bootstrap is the xDS bootstrap of a workload of node, as `gmesh up`
// writes a task's in a mesh with TLS on: the file_watcher provider on the
// node's certificate files and an authenticated xDS channel (gRFC A65). The
// node id names the virtual node itself (mesh/echo/virtualNode/NODE/name),
// which the control plane admits for a certificate of that node.
func (t *TLSMesh) Bootstrap(node, name string) ([]byte, error) {
	f, err := t.Files(node)
	if err != nil {
		return nil, err
	}
	return bootstrap.Config{ServerURI: t.CP.Addr(), NodeID: "mesh/echo/virtualNode/" + node + "/" + name, TLS: &bootstrap.TLS{
		CertificateFile: f.Identity(), PrivateKeyFile: f.Identity(), CACertificateFile: f.Bundle(),
		RefreshInterval: pki.RefreshInterval(pki.DefaultLifetime), Channel: true,
	}}.JSON()
}

// Dial returns a ClientConn of echo-client-0-1 to a path, with its own
// xDS client (a fresh node id) and the credentials echo-client uses in a
// mesh with TLS on: xDS credentials, mTLS where the cluster says so, plain
// text otherwise.
func (t *TLSMesh) Dial(p Path) (*grpc.ClientConn, error) {
	bs, err := t.Bootstrap(ClientNode, t.NodeID())
	if err != nil {
		return nil, err
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		return nil, err
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(p.Target(), grpc.WithTransportCredentials(creds), grpc.WithResolvers(rb))
}

// CheckSecurity makes one call on cc and checks that it went over TLS 1.3
// when p is strict and in plain text otherwise, so a misconfigured path
// cannot pass for another. It returns what the call went over, e.g.
// "TLS 1.3, TLS_AES_128_GCM_SHA256, X25519MLKEM768".
func CheckSecurity(ctx context.Context, cc *grpc.ClientConn, p Path) (string, error) {
	var pr peer.Peer
	if _, err := echov1.NewEchoServiceClient(cc).Echo(ctx, &echov1.EchoRequest{Name: PayloadName}, grpc.Peer(&pr)); err != nil {
		return "", fmt.Errorf("%s: %w", p.Key, err)
	}
	info, isTLS := pr.AuthInfo.(credentials.TLSInfo)
	switch {
	case p.Strict && !isTLS:
		return "", fmt.Errorf("%s: call went over %v, want TLS", p.Key, pr.AuthInfo)
	case p.Strict && info.State.Version != tls.VersionTLS13:
		return "", fmt.Errorf("%s: TLS version %x, want TLS 1.3", p.Key, info.State.Version)
	case !p.Strict && isTLS:
		return "", fmt.Errorf("%s: call went over TLS, want plain text", p.Key)
	case !p.Strict:
		return "plain text", nil
	}
	return fmt.Sprintf("TLS 1.3, %s, %s", tls.CipherSuiteName(info.State.CipherSuite), info.State.CurveID), nil
}

// HasRBAC reports whether the server listener of addr in res carries the
// RBAC filter.
func HasRBAC(res *xds.Resources, addr string) (bool, error) {
	name := bootstrap.ServerListenerName(addr)
	for _, l := range res.Listeners {
		if l.GetName() != name {
			continue
		}
		found := false
		err := editHCMs(l, func(hcm *hcmpb.HttpConnectionManager) bool {
			for _, hf := range hcm.GetHttpFilters() {
				found = found || hf.GetName() == wellknown.HTTPRoleBasedAccessControl
			}
			return false
		})
		return found, err
	}
	return false, fmt.Errorf("no listener %s", name)
}

// editHCMs calls edit on each HttpConnectionManager of l's filter chains
// and writes back the ones it reports changed.
func editHCMs(l *listenerpb.Listener, edit func(*hcmpb.HttpConnectionManager) bool) error {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var hcm hcmpb.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				return fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
			if !edit(&hcm) {
				continue
			}
			a, err := anypb.New(&hcm)
			if err != nil {
				return err
			}
			f.ConfigType = &listenerpb.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return nil
}

// Translated is the control plane's translation of the current store and
// registry (what it publishes, before any experiment's edit).
func (t *TLSMesh) Translated(ctx context.Context) (*xds.Resources, error) {
	return t.translateCurrent(ctx)
}

// Stripped is what EnsureNoRBAC last published.
func (t *TLSMesh) Stripped() *xds.Resources { return t.stripped }

// EnsureNoRBAC publishes, when the control plane's last publish is not
// the stripped one, its translation with the RBAC filter removed from the
// NoRBAC path's server listeners (the listeners keep TLS; the other paths'
// listeners are unchanged, so their servers keep their connections), and
// waits until every client ACKed it. Counted in Republished after the
// first time. An experiment: gmesh always puts the filter on a STRICT
// node's listeners.
func (t *TLSMesh) EnsureNoRBAC(ctx context.Context) error {
	if _, v := t.CP.XDS().Published(); t.noRBACListeners != "" && v[xds.ListenerType] == t.noRBACListeners {
		return nil
	}
	strip := map[string]bool{}
	for _, p := range Paths {
		if p.NoRBAC {
			for _, s := range t.Servers[p.Key] {
				strip[bootstrap.ServerListenerName(s.Addr().String())] = true
			}
		}
	}
	res, err := t.publishEdited(ctx, func(res *xds.Resources) error {
		n := 0
		for _, l := range res.Listeners {
			if !strip[l.GetName()] {
				continue
			}
			n++
			if err := editHCMs(l, func(hcm *hcmpb.HttpConnectionManager) bool {
				hcm.HttpFilters = slices.DeleteFunc(hcm.HttpFilters, func(hf *hcmpb.HttpFilter) bool {
					return hf.GetName() == wellknown.HTTPRoleBasedAccessControl
				})
				return true
			}); err != nil {
				return err
			}
		}
		if n != len(strip) {
			return fmt.Errorf("stripping RBAC: found %d of the %d listeners", n, len(strip))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if t.noRBACListeners != "" {
		t.Republished++
	}
	t.stripped = res
	_, v := t.CP.XDS().Published()
	t.noRBACListeners = v[xds.ListenerType]
	return nil
}

// Close stops the servers and the control plane and removes the CA and the
// certificate files.
func (t *TLSMesh) Close() {
	for _, cc := range t.Conns {
		cc.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, ss := range t.Servers {
		for _, s := range ss {
			s.Shutdown(ctx)
		}
	}
	t.Mesh.Close()
	os.RemoveAll(t.dir)
}

// ColdStartOnce measures one cold start: dial (a new ClientConn, with its
// own xDS client for an xDS target) to the first reply, and the whole
// process's CPU meanwhile (client, control plane, server).
func ColdStartOnce(ctx context.Context, dial func() (*grpc.ClientConn, error)) (lat, cpu time.Duration, err error) {
	u0 := ReadUsage()
	cc, err := dial()
	if err != nil {
		return 0, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = Ready(cctx, echov1.NewEchoServiceClient(cc))
	cancel()
	d := ReadUsage().Sub(u0)
	cc.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("cold start: %w", err)
	}
	return d.At.Sub(u0.At), d.CPU, nil
}

// Handshake kinds for a Handshaker.
const (
	// HandshakeTCP is a loopback TCP connect and accept alone: the floor.
	HandshakeTCP = "tcp"
	// HandshakeMTLS is TCP plus a full TLS 1.3 handshake with client
	// authentication, both sides with ECDSA P-256 workload certificates
	// from the mesh CA, each side verifying the other's chain and SPIFFE ID
	// (pki's checks; grpc-go's xDS credentials do the same work), no
	// session resumption (grpc-go's xDS credentials keep no session cache).
	HandshakeMTLS = "tls13-mtls"
	// HandshakeTLS is the same without a client certificate: what the
	// client's authentication adds is HandshakeMTLS minus this.
	HandshakeTLS = "tls13-server-only"
)

// Handshaker runs handshakes of one kind against a loopback server, both
// sides in this process.
type Handshaker struct {
	kind     string
	ln       net.Listener
	client   *tls.Config
	server   *tls.Config
	bundle   []byte
	accepted chan error
	wg       sync.WaitGroup
}

// NewHandshaker starts a loopback server for kind with certificates from
// ca (server echo-server-0-9, client echo-client-0-1).
func NewHandshaker(ca *pki.CA, kind string) (*Handshaker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &Handshaker{kind: kind, ln: ln, bundle: ca.BundlePEM(), accepted: make(chan error, 1)}
	serverID := xds.NodeID("echo", "echo-server-0-9")
	srcServer := pki.NewSource(ca, serverID, 0, nil)
	srcClient := pki.NewSource(ca, xds.NodeID("echo", ClientNode), 0, nil)
	h.server = srcServer.ServerTLS()
	h.server.MinVersion = tls.VersionTLS13
	h.client = srcClient.ClientTLS(serverID)
	h.client.MinVersion = tls.VersionTLS13
	h.client.NextProtos = []string{"h2"}
	if kind == HandshakeTLS {
		h.server.ClientAuth = tls.NoClientCert
		h.client.GetClientCertificate = nil
	}
	// Issue both certificates now, outside the measurement.
	if _, err := srcServer.Certificate(); err != nil {
		ln.Close()
		return nil, err
	}
	if _, err := srcClient.Certificate(); err != nil {
		ln.Close()
		return nil, err
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted <- h.serve(c)
		}
	}()
	return h, nil
}

func (h *Handshaker) serve(c net.Conn) error {
	defer c.Close()
	if h.kind == HandshakeTCP {
		return nil
	}
	tc := tls.Server(c, h.server)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("server handshake: %w", err)
	}
	if h.kind == HandshakeMTLS {
		if _, err := pki.VerifyClient(tc.ConnectionState().PeerCertificates, h.bundle, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// One makes one connection and handshake (both sides done on return).
func (h *Handshaker) One() error {
	c, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	if h.kind != HandshakeTCP {
		tc := tls.Client(c, h.client)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("client handshake: %w", err)
		}
	}
	return <-h.accepted
}

// Run makes n handshakes back to back and returns each one's time
// (sorted) and the process's CPU per handshake.
func (h *Handshaker) Run(n int) (lat []time.Duration, cpuPer time.Duration, err error) {
	lat = make([]time.Duration, 0, n)
	u0 := ReadUsage()
	for range n {
		t0 := time.Now()
		if err := h.One(); err != nil {
			return nil, 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	d := ReadUsage().Sub(u0)
	slices.Sort(lat)
	return lat, d.CPU / time.Duration(n), nil
}

// Close stops the server.
func (h *Handshaker) Close() { h.ln.Close(); h.wg.Wait() }
