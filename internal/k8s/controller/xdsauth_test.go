package controller_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// tlsMeshYAML is a mesh with TLS on (server is STRICT, client calls it
// with mTLS) and a mesh without.
const tlsMeshYAML = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: secure}
spec:
  namespaceSelector: {matchLabels: {mesh: secure}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: server, namespace: sec}
spec:
  podSelector: {matchLabels: {app: server}}
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      tls:
        mode: STRICT
        certificate: {sds: {secretName: gmesh}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: server, namespace: sec}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: server}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: client, namespace: sec}
spec:
  podSelector: {matchLabels: {app: client}}
  listeners:
    - portMapping: {port: 8080, protocol: http}
  backends:
    - virtualService: {virtualServiceRef: {name: server}}
  backendDefaults:
    clientPolicy:
      tls:
        validation: {trust: {sds: {secretName: gmesh}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: open}
spec:
  namespaceSelector: {matchLabels: {mesh: open}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: plain, namespace: opn}
spec:
  podSelector: {matchLabels: {app: plain}}
  listeners:
    - portMapping: {port: 8080, protocol: http}
`

// adsStream opens an ADS stream over creds as node and sends its first
// request (LDS of name); first returns the first response or the
// stream's error. The connection stays open until keep's test ends.
func adsStream(ctx context.Context, t, keep *testing.T, addr string, creds credentials.TransportCredentials, node string) (first func() (*discoverypb.DiscoveryResponse, error)) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	keep.Cleanup(func() { conn.Close() })
	st, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.ListenerType, ResourceNames: []string{"server.sec.svc.cluster.local"}}); err != nil {
		t.Fatal(err)
	}
	return st.Recv
}

// mtlsCreds presents a certificate for id from ca, trusting ca.
func mtlsCreds(t *testing.T, ca *pki.CA, id pki.ID) credentials.TransportCredentials {
	t.Helper()
	ident, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatalf("issue %s: %v", id, err)
	}
	cert, err := tls.X509KeyPair(ident.CertPEM, ident.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.BundlePEM())
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1"})
}

// TestXDSAuthOnKubernetes: with XDSAuth on, a pod of a mesh with TLS on
// is served only over TLS with its own workload certificate (namespace,
// service account, node); the same pod's node id over plain text, with
// another service account's or node's certificate, or a node id that is
// no pod is refused with the reason; a pod of a mesh without TLS keeps
// plaintext xDS; only the served streams are clients.
func TestXDSAuthOnKubernetes(t *testing.T) {
	ctx := testContext(t, time.Minute)
	ca, err := pki.LoadOrCreate(t.TempDir(), clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	client := pod("sec", "client-1", "127.0.0.21", true, map[string]string{"app": "client"})
	client.Spec.ServiceAccountName = "client-sa"
	c := newFakeCluster(t, tlsMeshYAML,
		namespace("sec", map[string]string{"mesh": "secure"}),
		namespace("opn", map[string]string{"mesh": "open"}),
		client,
		pod("sec", "server-1", "127.0.0.22", true, map[string]string{"app": "server"}),
		pod("opn", "plain-1", "127.0.0.23", true, map[string]string{"app": "plain"}),
	)
	cp := startCP(t, c, controller.Config{XDSAuth: &controller.XDSAuthConfig{CA: ca}})
	pollUntil(ctx, t, "the control plane ready", func() (bool, error) { return cp.Ready(), nil })
	addr := cp.XDSAddr()

	clientID := pki.ID{Mesh: "secure", Namespace: "sec", ServiceAccount: "client-sa", VirtualNode: "client.sec"}
	served := []string{}
	outer := t
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		node  string
		code  codes.Code
		why   string
	}{
		{"the pod over TLS with its certificate", mtlsCreds(t, ca, clientID), "sec/client-1", codes.OK, ""},
		{"a pod of a mesh without TLS over plain text", insecure.NewCredentials(), "opn/plain-1", codes.OK, ""},
		{"the pod over plain text", insecure.NewCredentials(), "sec/client-1", codes.Unauthenticated, "plaintext xDS stream"},
		{"another service account's certificate", mtlsCreds(t, ca, pki.ID{Mesh: "secure", Namespace: "sec", ServiceAccount: "default", VirtualNode: "client.sec"}), "sec/client-1", codes.PermissionDenied, "belongs to spiffe://secure.gmesh.local/ns/sec/sa/client-sa/vn/client.sec"},
		{"another node's certificate", mtlsCreds(t, ca, pki.ID{Mesh: "secure", Namespace: "sec", ServiceAccount: "default", VirtualNode: "server.sec"}), "sec/client-1", codes.PermissionDenied, "belongs to"},
		{"a node id that is no pod", mtlsCreds(t, ca, clientID), "sec/ghost", codes.PermissionDenied, "no task of a virtual node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := adsStream(ctx, t, outer, addr, tc.creds, tc.node)()
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("%s: %v, want served", tc.node, err)
				}
				if resp.GetTypeUrl() != xds.ListenerType {
					t.Errorf("first response %s, want a listener response", resp.GetTypeUrl())
				}
				served = append(served, tc.node)
				return
			}
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.why) {
				t.Errorf("%s: %v, want %s saying %q", tc.node, err, tc.code, tc.why)
			}
		})
	}
	slices.Sort(served)
	pollUntil(ctx, t, "exactly the served streams listed as clients", func() (bool, error) {
		var ids []string
		for _, cl := range cp.XDS().Clients() {
			ids = append(ids, cl.NodeID)
		}
		return strings.Join(ids, ",") == strings.Join(served, ","), nil
	})

	// Per-mesh views: the TLS mesh's pod gets its mesh's clusters only,
	// the plaintext pod only the mesh's without TLS.
	for _, tc := range []struct {
		creds credentials.TransportCredentials
		node  string
		mesh  string
	}{
		{mtlsCreds(t, ca, clientID), "sec/client-1", "secure"},
		{insecure.NewCredentials(), "opn/plain-1", "open"},
	} {
		names := wildcardClusters(ctx, t, addr, tc.creds, tc.node)
		if len(names) == 0 || slices.ContainsFunc(names, func(n string) bool { return !strings.HasPrefix(n, tc.mesh+"/") }) {
			t.Errorf("%s sees clusters %v, want mesh %s's only", tc.node, names, tc.mesh)
		}
	}
}

// wildcardClusters opens an ADS stream over creds as node and returns the
// names of every cluster its view holds.
func wildcardClusters(ctx context.Context, t *testing.T, addr string, creds credentials.TransportCredentials, node string) []string {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	var names []string
	for _, a := range resp.GetResources() {
		c := &clusterpb.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c.GetName())
	}
	slices.Sort(names)
	return names
}
