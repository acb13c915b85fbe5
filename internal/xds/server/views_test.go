package server_test

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
	"github.com/gmesh-dev/gmesh/internal/xds/server"
)

// meshTopology is topology's echo service in meshName, named
// echo-server.MESH.local; with tls, echo-server-0-9 is PERMISSIVE, which
// turns the mesh's TLS on (certificates, server listeners) while its
// clusters stay plain text.
func meshTopology(meshName string, tls bool, w09, w10 int) []*mesh.Resource {
	rs := topology(w09, w10)
	for _, r := range rs {
		if r.Kind == mesh.KindMesh {
			r.Metadata.Name = meshName
			continue
		}
		r.Metadata.Mesh = meshName
		if r.Kind == mesh.KindVirtualService {
			r.Metadata.Name = "echo-server." + meshName + ".local"
		}
		if vn := r.VirtualNode(); tls && vn != nil && r.Metadata.Name == "echo-server-0-9" {
			vn.Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSPermissive}
		}
	}
	return rs
}

// seen opens an ADS stream as node and returns the names of every
// listener and cluster its view holds (wildcard requests), then closes it.
func seen(ctx context.Context, t *testing.T, addr string, creds credentials.TransportCredentials, node string) (listeners, clusters []string) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatalf("%s: open stream: %v", node, err)
	}
	get := func(typeURL string) []string {
		if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: typeURL}); err != nil {
			t.Fatalf("%s: send: %v", node, err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("%s: %s: %v", node, typeURL, err)
		}
		var names []string
		for _, a := range resp.GetResources() {
			switch typeURL {
			case xds.ListenerType:
				l := &listenerpb.Listener{}
				if err := a.UnmarshalTo(l); err != nil {
					t.Fatal(err)
				}
				names = append(names, l.GetName())
			case xds.ClusterType:
				c := &clusterpb.Cluster{}
				if err := a.UnmarshalTo(c); err != nil {
					t.Fatal(err)
				}
				names = append(names, c.GetName())
			}
		}
		slices.Sort(names)
		return names
	}
	return get(xds.ListenerType), get(xds.ClusterType)
}

// dialService dials xds:///service through a real grpc-go xDS client built
// from bs.
func dialService(t *testing.T, bs []byte, service string) echov1.EchoServiceClient {
	t.Helper()
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+service, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoServiceClient(cc)
}

// TestMeshViews: with Options.View, a client of a mesh with TLS on gets
// only its mesh's configuration, a plaintext client only the meshes'
// without TLS; versions stay global, so a publish that changes one mesh
// is ACKed by every client and the ACK gate converges.
func TestMeshViews(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clk := clock.NewFake(time.Now().Add(-10 * time.Minute))
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), clk)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]pki.ID{
		"alpha-client-1": xds.NodeID("alpha", "client"),
		"beta-client-1":  xds.NodeID("beta", "client"),
		"gamma-client-1": xds.NodeID("gamma", "client"), // a mesh with nothing published
	}
	auth := &server.MeshAuth{
		Bundle: ca.BundlePEM,
		Owner: func(nodeID string) (pki.ID, bool) {
			id, ok := owners[nodeID]
			return id, ok
		},
		RequiredFor: func(nodeID string) bool { _, ok := owners[nodeID]; return ok },
		Now:         clk.Now,
	}
	cp := startAuthControlPlaneOpts(t, ca, server.Options{Auth: auth, View: func(nodeID string) string {
		if id, ok := auth.Owner(nodeID); ok {
			return id.Mesh
		}
		return server.PlaintextView
	}})
	clk.Advance(time.Minute)

	echoes := map[string]*echoServer{}
	var eps []*mesh.Endpoint
	for _, m := range []string{"alpha", "beta", "plain"} {
		e := startEcho(t, "127.0.0.1", "0.9")
		echoes[m] = e
		ep := e.endpoint(m + "-1")
		ep.Mesh = m
		eps = append(eps, ep)
	}
	resources := func() []*mesh.Resource {
		return slices.Concat(meshTopology("alpha", true, 100, 0), meshTopology("beta", true, 100, 0), meshTopology("plain", false, 100, 0))
	}
	publishAll := func(rev uint64, eps []*mesh.Endpoint) {
		t.Helper()
		res, err := xds.Translate(xds.Input{Revision: rev, Resources: resources(), Endpoints: eps})
		if err != nil {
			t.Fatalf("Translate: %v", err)
		}
		if err := cp.Publish(res, rev); err != nil {
			t.Fatalf("Publish(%d): %v", rev, err)
		}
	}
	publishAll(1, eps)

	files := map[string]pki.Files{}
	for node, id := range owners {
		files[node] = writeIdentity(t, ca, id)
	}
	tlsCreds := func(node string) credentials.TransportCredentials {
		return credentials.NewTLS(clientTLS(t, ca, files[node]))
	}
	serverListener := func(m string) string { return bootstrap.ServerListenerName(echoes[m].addr) }
	for _, tc := range []struct {
		name, node          string
		creds               credentials.TransportCredentials
		listeners, clusters []string
	}{
		{"alpha over TLS", "alpha-client-1", tlsCreds("alpha-client-1"),
			[]string{"echo-server.alpha.local", serverListener("alpha")}, []string{"alpha/echo-server-0-9", "alpha/echo-server-1-0"}},
		{"beta over TLS", "beta-client-1", tlsCreds("beta-client-1"),
			[]string{"echo-server.beta.local", serverListener("beta")}, []string{"beta/echo-server-0-9", "beta/echo-server-1-0"}},
		{"plain mesh in plain text", "plain-client-1", insecure.NewCredentials(),
			[]string{"echo-server.plain.local"}, []string{"plain/echo-server-0-9", "plain/echo-server-1-0"}},
		{"a mesh with nothing published", "gamma-client-1", tlsCreds("gamma-client-1"), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls, cs := seen(ctx, t, cp.addr, tc.creds, tc.node)
			want := slices.Clone(tc.listeners)
			slices.Sort(want)
			if !slices.Equal(ls, want) {
				t.Errorf("%s sees listeners %v, want %v", tc.node, ls, want)
			}
			if !slices.Equal(cs, tc.clusters) {
				t.Errorf("%s sees clusters %v, want %v", tc.node, cs, tc.clusters)
			}
		})
	}

	// Real grpc-go clients, each calling its own mesh's service.
	clients := map[string]echov1.EchoServiceClient{
		"alpha": dialService(t, tlsBootstrap(t, cp.addr, files["alpha-client-1"], "alpha-client-1"), "echo-server.alpha.local"),
		"beta":  dialService(t, tlsBootstrap(t, cp.addr, files["beta-client-1"], "beta-client-1"), "echo-server.beta.local"),
		"plain": dialService(t, mustJSON(t, cp.addr, "plain-client-1"), "echo-server.plain.local"),
	}
	for m, c := range clients {
		if addr, err := callAddr(ctx, c); err != nil || addr != echoes[m].addr {
			t.Fatalf("%s's client: got %q, %v; want %s's server %s", m, addr, err, m, echoes[m].addr)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := cp.WaitConverged(wctx, xds.EndpointType, 1); err != nil {
		t.Fatalf("WaitConverged(EDS, 1): %v", err)
	}
	_, before := cp.Published()

	// A second alpha server: only alpha's endpoints (and its server
	// listeners) change, yet the versions are global: beta's and the
	// plain mesh's clients ACK the new versions too.
	alpha2 := startEcho(t, "127.0.0.1", "0.9")
	ep := alpha2.endpoint("alpha-2")
	ep.Mesh = "alpha"
	publishAll(2, append(slices.Clone(eps), ep))
	_, after := cp.Published()
	for typeURL, moved := range map[string]bool{xds.EndpointType: true, xds.ListenerType: true, xds.RouteType: false, xds.ClusterType: false} {
		if got := before[typeURL] != after[typeURL]; got != moved {
			t.Errorf("%s version %s -> %s: moved %v, want %v", typeURL, before[typeURL], after[typeURL], got, moved)
		}
	}
	for _, typeURL := range []string{xds.EndpointType, xds.ListenerType} {
		if err := cp.WaitConverged(wctx, typeURL, 2); err != nil {
			t.Fatalf("WaitConverged(%s, 2): %v", typeURL, err)
		}
	}
	acked := map[string]string{}
	for _, c := range cp.Clients() {
		acked[c.NodeID] = c.Types[xds.EndpointType].ACKedVersion
	}
	want := map[string]string{"alpha-client-1": after[xds.EndpointType], "beta-client-1": after[xds.EndpointType], "plain-client-1": after[xds.EndpointType]}
	if !maps.Equal(acked, want) {
		t.Errorf("EDS versions ACKed %v, want %v", acked, want)
	}
	// Alpha's client now reaches both alpha servers; beta's still only its own.
	pollUntil(ctx, t, "alpha's client reaches the second alpha server", func() (bool, error) {
		addr, err := callAddr(ctx, clients["alpha"])
		return addr == alpha2.addr, err
	})
	for i := 0; i < 20; i++ {
		if addr, err := callAddr(ctx, clients["beta"]); err != nil || addr != echoes["beta"].addr {
			t.Fatalf("beta's client: got %q, %v; want %s", addr, err, echoes["beta"].addr)
		}
	}
	if ls, _ := seen(ctx, t, cp.addr, tlsCreds("beta-client-1"), "beta-client-1"); slices.Contains(ls, bootstrap.ServerListenerName(alpha2.addr)) {
		t.Errorf("beta's client sees alpha's new server listener: %v", ls)
	}
}

// Without the View option, Publish takes resources with no recorded mesh
// as before; with it, they are refused.
func TestViewsNeedMeshes(t *testing.T) {
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: topology(100, 0)})
	if err != nil {
		t.Fatal(err)
	}
	bare := &xds.Resources{Revision: 1, Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints}
	if err := server.New(nil, server.Options{}).Publish(bare, 1); err != nil {
		t.Errorf("without views: Publish: %v", err)
	}
	withViews := server.New(nil, server.Options{View: func(string) string { return server.PlaintextView }})
	if err := withViews.Publish(bare, 1); err == nil {
		t.Error("with views: Publish of resources with no recorded mesh: got nil error")
	}
	if err := withViews.Publish(res, 1); err != nil {
		t.Errorf("with views: Publish: %v", err)
	}
}
