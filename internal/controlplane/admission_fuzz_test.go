package controlplane

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/store/memstore"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// admissionFixture: three meshes. echo and other have TLS on (a STRICT
// node each); plain has not. The task set name "shared" is used in both
// TLS meshes, so its tasks' node ids say no one virtual node.
const admissionFixture = `
apiVersion: gmesh.dev/v1
kind: Mesh
metadata: {name: echo}
---
apiVersion: gmesh.dev/v1
kind: Mesh
metadata: {name: other}
---
apiVersion: gmesh.dev/v1
kind: Mesh
metadata: {name: plain}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: echo-server-0-9, mesh: echo}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      tls: {mode: STRICT}
  serviceDiscovery: {registry: {serviceName: echo-server}}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: echo-client-0-1, mesh: echo}
spec:
  listeners:
    - portMapping: {port: 50052, protocol: http}
  serviceDiscovery: {registry: {serviceName: echo-client}}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: other-node, mesh: other}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      tls: {mode: STRICT}
  serviceDiscovery: {registry: {serviceName: other-svc}}
---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: plain-node, mesh: plain}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
  serviceDiscovery: {registry: {serviceName: plain-svc}}
---
apiVersion: gmesh.dev/v1
kind: Service
metadata: {name: echo-server, mesh: echo}
spec: {virtualNode: echo-server-0-9, program: {package: ./cmd/x}, desiredCount: 1, port: 50051}
---
apiVersion: gmesh.dev/v1
kind: Service
metadata: {name: echo-client, mesh: echo}
spec: {virtualNode: echo-client-0-1, program: {package: ./cmd/x}, desiredCount: 1, port: 50052}
---
apiVersion: gmesh.dev/v1
kind: Service
metadata: {name: other-svc, mesh: other}
spec: {virtualNode: other-node, program: {package: ./cmd/x}, desiredCount: 1, port: 50051}
---
apiVersion: gmesh.dev/v1
kind: Service
metadata: {name: plain-svc, mesh: plain}
spec: {virtualNode: plain-node, program: {package: ./cmd/x}, desiredCount: 1, port: 50051}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: echo-server-0-9, mesh: echo}
spec: {service: echo-server, virtualNode: echo-server-0-9, command: [echo-server], port: 50051, desiredCount: 2}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: echo-client-0-1, mesh: echo}
spec: {service: echo-client, virtualNode: echo-client-0-1, command: [echo-client], port: 50052, desiredCount: 2}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: shared, mesh: echo}
spec: {service: echo-client, virtualNode: echo-client-0-1, command: [echo-client], port: 50053, desiredCount: 1}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: shared, mesh: other}
spec: {service: other-svc, virtualNode: other-node, command: [other], port: 50054, desiredCount: 1}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: other-set, mesh: other}
spec: {service: other-svc, virtualNode: other-node, command: [other], port: 50055, desiredCount: 1}
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata: {name: plain-set, mesh: plain}
spec: {service: plain-svc, virtualNode: plain-node, command: [plain], port: 50056, desiredCount: 1}
`

// The rule, read plainly from docs/security.md ("The xDS channel"),
// written here without the code under test: which meshes have TLS on, and
// which task set names belong to which virtual node in them.
var (
	oracleTLSMeshes = map[string]bool{"echo": true, "other": true}
	oracleTaskSets  = map[string][]pki.ID{
		"echo-server-0-9": {{Mesh: "echo", VirtualNode: "echo-server-0-9"}},
		"echo-client-0-1": {{Mesh: "echo", VirtualNode: "echo-client-0-1"}},
		"shared":          {{Mesh: "echo", VirtualNode: "echo-client-0-1"}, {Mesh: "other", VirtualNode: "other-node"}},
		"other-set":       {{Mesh: "other", VirtualNode: "other-node"}},
		// plain-set: its mesh has no TLS, so no certificate may claim it.
	}
	oracleName = `[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?`
	oracleVN   = regexp.MustCompile(`^spiffe://(` + oracleName + `)\.gmesh\.local/(?:ns/(` + oracleName + `)/sa/(` + oracleName + `)/)?vn/(` + oracleName + `)$`)
	oracleCP   = regexp.MustCompile(`^spiffe://(` + oracleName + `)\.gmesh\.local/cp/(` + oracleName + `)$`)
	oracleTask = regexp.MustCompile(`^(.+)-([1-9][0-9]*)$`)
	oracleOK   = regexp.MustCompile(`^` + oracleName + `$`)
)

// oracleParse reads a SPIFFE ID as the docs define it: exactly the
// printed forms, the ID at most 2,048 bytes, the trust domain at most 255.
func oracleParse(s string) (pki.ID, bool) {
	if len(s) > 2048 {
		return pki.ID{}, false
	}
	var id pki.ID
	if m := oracleVN.FindStringSubmatch(s); m != nil {
		id = pki.ID{Mesh: m[1], Namespace: m[2], ServiceAccount: m[3], VirtualNode: m[4]}
	} else if m := oracleCP.FindStringSubmatch(s); m != nil {
		id = pki.ID{Mesh: m[1], Component: m[2]}
	} else {
		return pki.ID{}, false
	}
	if len(id.Mesh)+len(".gmesh.local") > 255 {
		return pki.ID{}, false
	}
	return id, true
}

// oracleOwner is the virtual node a node id belongs to: a client naming
// itself mesh/MESH/virtualNode/NODE[/...] in a mesh with TLS on, or a task
// "<task set>-<n>" of the one task set of that name in a mesh with TLS on.
func oracleOwner(nodeID string) (pki.ID, bool) {
	if strings.HasPrefix(nodeID, "mesh/") {
		segs := strings.Split(nodeID, "/")
		if len(segs) < 4 || segs[2] != "virtualNode" || !oracleTLSMeshes[segs[1]] || !oracleOK.MatchString(segs[3]) {
			return pki.ID{}, false
		}
		id := pki.ID{Mesh: segs[1], VirtualNode: segs[3]}
		if _, ok := oracleParse(id.String()); !ok {
			return pki.ID{}, false
		}
		return id, true
	}
	m := oracleTask.FindStringSubmatch(nodeID)
	if m == nil {
		return pki.ID{}, false
	}
	if _, err := strconv.ParseInt(m[2], 10, 64); err != nil {
		return pki.ID{}, false
	}
	if owners := oracleTaskSets[m[1]]; len(owners) == 1 {
		return owners[0], true
	}
	return pki.ID{}, false
}

// rawURISANs returns the URI SANs of a DER certificate as the bytes say
// them, before any URL parsing.
func rawURISANs(c *x509.Certificate) []string {
	var out []string
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var seq asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &seq); err != nil {
			return nil
		}
		for rest := seq.Bytes; len(rest) > 0; {
			var v asn1.RawValue
			var err error
			if rest, err = asn1.Unmarshal(rest, &v); err != nil {
				return nil
			}
			if v.Class == asn1.ClassContextSpecific && v.Tag == 6 {
				out = append(out, string(v.Bytes))
			}
		}
	}
	return out
}

// sanExtension encodes uris as a subjectAltName extension, byte for byte.
func sanExtension(uris []string) ([]byte, error) {
	var names []asn1.RawValue
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
	}
	return asn1.Marshal(names)
}

type admissionKit struct {
	now       time.Time
	ca        *pki.CA
	caKey     crypto.Signer
	other     *pki.CA
	otherKey  crypto.Signer
	leafKey   *ecdsa.PrivateKey
	auth      *xdsserver.MeshAuth
	serialNum int64
}

func newAdmissionKit(f *testing.F) *admissionKit {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now.Add(-time.Hour))
	load := func(name string) (*pki.CA, crypto.Signer) {
		dir := filepath.Join(f.TempDir(), name)
		ca, err := pki.LoadOrCreate(dir, clk)
		if err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
		if err != nil {
			f.Fatal(err)
		}
		key, err := pki.ParsePrivateKey(b)
		if err != nil {
			f.Fatal(err)
		}
		return ca, key
	}
	k := &admissionKit{now: now}
	k.ca, k.caKey = load("ca")
	k.other, k.otherKey = load("other-ca")
	clk.Advance(time.Hour)
	var err error
	if k.leafKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		f.Fatal(err)
	}
	rs, err := mesh.Decode("admission.yaml", []byte(admissionFixture))
	if err != nil {
		f.Fatal(err)
	}
	st := memstore.New(store.Options{})
	f.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Commit(ctx, rs, nil); err != nil {
		f.Fatalf("commit the fixture: %v", err)
	}
	state, err := st.State(ctx)
	if err != nil {
		f.Fatal(err)
	}
	x := newXDSIdentity(k.ca, st, "127.0.0.1:0")
	x.published(state)
	k.auth = x.auth()
	k.auth.Now = func() time.Time { return now }
	return k
}

// Ways a client may present itself (the fuzzed signer byte, mod 6).
const (
	signMeshCA  = iota // a certificate built here, signed by the mesh CA's key
	signIssue          // pki.CA.Issue of the ID the first URI parses to (else as signMeshCA)
	signOtherCA        // signed by another CA made by pki
	signSelf           // self-signed
	signNoCert         // TLS without a client certificate
	signPlain          // no TLS at all
	signWays
)

// Extended key usages (the fuzzed eku byte, mod 3).
const (
	ekuBoth   = iota // server and client auth, as pki issues
	ekuServer        // server auth only: not for a client
	ekuNone          // no extension: any usage
)

// FuzzXDSAdmission decides, as the control plane's xDS server does for
// each stream, whether a client may have the xDS resources as the node id
// it claims, for arbitrary node ids and arbitrary URI SANs (placed in the
// certificate byte for byte) in certificates signed by the mesh CA (built
// here, or issued by pki), another CA, or themselves, valid or not at the
// time of the check. The oracle is a plain reading of the rule: admitted
// iff the chain verifies to the mesh CA for client authentication, the
// certificate carries exactly one spiffe URI, which is a gmesh ID naming a
// virtual node, and the node id belongs to that virtual node. A refusal is
// an *AuthError naming the node id: PERMISSION_DENIED when the
// certificate verifies and names an identity, UNAUTHENTICATED otherwise.
// Nothing panics.
//
//	go test ./internal/controlplane -run '^$' -fuzz FuzzXDSAdmission -fuzztime 60s
func FuzzXDSAdmission(f *testing.F) {
	// Seeds from TestXDSAuthentication and TestAuthenticatedXDS, and the
	// edges of the URI and node-id forms.
	const client, server = "spiffe://echo.gmesh.local/vn/echo-client-0-1", "spiffe://echo.gmesh.local/vn/echo-server-0-9"
	for _, s := range []struct {
		node, uri1, uri2 string
		signer, eku      uint8
		skew             int16
	}{
		{"echo-client-0-1-1", client, "", signIssue, ekuBoth, 0},
		{"echo-client-0-1-1", client, "", signMeshCA, ekuBoth, 0},
		{"mesh/echo/virtualNode/echo-client-0-1/host-1", client, "", signIssue, ekuBoth, 0},
		{"mesh/echo/virtualNode/echo-client-0-1", client, "", signMeshCA, ekuBoth, 0},
		{"mesh/plain/virtualNode/plain-node", "spiffe://plain.gmesh.local/vn/plain-node", "", signMeshCA, ekuBoth, 0},
		{"echo-server-0-9-1", client, "", signIssue, ekuBoth, 0},
		{"echo-server-0-9-1", server, "", signMeshCA, ekuNone, 0},
		{"echo-server-0-9-1", server, "", signMeshCA, ekuServer, 0},
		{"intruder-1", client, "", signIssue, ekuBoth, 0},
		{"echo-client-0-1-2", client, "", signPlain, ekuBoth, 0},
		{"echo-client-0-1-1", client, "", signNoCert, ekuBoth, 0},
		{"echo-client-0-1-1", client, "", signOtherCA, ekuBoth, 0},
		{"echo-client-0-1-1", client, "", signSelf, ekuBoth, 0},
		{"echo-client-0-1-1", client, "", signMeshCA, ekuBoth, 2},
		{"echo-client-0-1-1", client, "", signMeshCA, ekuBoth, -61},
		{"echo-client-0-1-1", client, "", signMeshCA, ekuBoth, -60},
		{"echo-client-0-1-1", client, server, signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", client, "https://echo.example/vn/x", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", "spiffe://echo.gmesh.local/cp/xds", "", signIssue, ekuBoth, 0},
		{"echo-client-0-1-1", "spiffe://echo.gmesh.local/ns/default/sa/client/vn/echo-client-0-1", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", "SPIFFE://echo.gmesh.local/vn/echo-client-0-1", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", "spiffe://%65cho.gmesh.local/vn/echo-client-0-1", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", client + "#", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", client + "?", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", "spiffe://echo.gmesh.local:443/vn/echo-client-0-1", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-1", "spiffe://echo.gmesh.local/vn/echo-client-0-1/", "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-01", client, "", signMeshCA, ekuBoth, 0},
		{"echo-client-0-1-99999999999999999999", client, "", signMeshCA, ekuBoth, 0},
		{"shared-1", client, "", signMeshCA, ekuBoth, 0},
		{"other-set-1", "spiffe://other.gmesh.local/vn/other-node", "", signMeshCA, ekuBoth, 0},
		{"plain-set-1", "spiffe://plain.gmesh.local/vn/plain-node", "", signMeshCA, ekuBoth, 0},
		{"", client, "", signMeshCA, ekuBoth, 0},
	} {
		f.Add(s.node, s.uri1, s.uri2, s.signer, s.eku, s.skew)
	}
	k := newAdmissionKit(f)
	f.Fuzz(func(t *testing.T, nodeID, uri1, uri2 string, signer, eku uint8, skew int16) {
		signer %= signWays
		eku %= 3
		ctx := context.Background()
		var chain []*x509.Certificate
		verifies := false
		switch signer {
		case signPlain:
		case signNoCert:
			ctx = tlsPeer(ctx, nil)
		default:
			var uris []string
			for _, u := range []string{uri1, uri2} {
				if u != "" {
					uris = append(uris, u)
				}
			}
			leaf, ok := k.leaf(t, uris, signer, eku, skew)
			if !ok {
				return // crypto/x509 cannot put or parse these SANs: no TLS client could present them
			}
			chain = []*x509.Certificate{leaf}
			if signer == signOtherCA && skew%2 == 0 {
				chain = append(chain, k.other.Cert()) // the other CA presented as an intermediate changes nothing
			}
			notBefore, notAfter := leaf.NotBefore, leaf.NotAfter
			clientUse := len(leaf.ExtKeyUsage) == 0 || slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
			verifies = (signer == signMeshCA || signer == signIssue) && clientUse &&
				!k.now.Before(notBefore) && !k.now.After(notAfter)
			ctx = tlsPeer(ctx, chain)
		}

		err := k.auth.Authenticate(ctx, nodeID)

		want, identified := false, false
		if verifies {
			var spiffe []string
			for _, u := range rawURISANs(chain[0]) {
				if scheme, _, ok := strings.Cut(u, ":"); ok && strings.EqualFold(scheme, "spiffe") {
					spiffe = append(spiffe, u)
				}
			}
			if len(spiffe) == 1 {
				if id, ok := oracleParse(spiffe[0]); ok {
					identified = true
					owner, ok := oracleOwner(nodeID)
					want = ok && owner == id && id.VirtualNode != ""
				}
			}
		}
		if want != (err == nil) {
			var sans []string
			if chain != nil {
				sans = rawURISANs(chain[0])
			}
			t.Fatalf("node %q, URI SANs %q, signer %d, eku %d, skew %dm: admitted %v (err %v), want admitted %v", nodeID, sans, signer, eku, skew, err == nil, err, want)
		}
		if err == nil {
			return
		}
		var ae *xdsserver.AuthError
		if !errors.As(err, &ae) {
			t.Fatalf("refusal %v (%T) is not an *AuthError", err, err)
		}
		wantCode := codes.Unauthenticated
		if identified {
			wantCode = codes.PermissionDenied
		}
		if ae.Code != wantCode || ae.Node != nodeID || !strings.Contains(err.Error(), strconv.Quote(nodeID)) {
			t.Fatalf("refusal of node %q: code %v, node %q, %q; want code %v naming the node", nodeID, ae.Code, ae.Node, err, wantCode)
		}
	})
}

// tlsPeer is what grpc-go puts in a stream's context for a TLS client that
// presented chain.
func tlsPeer(ctx context.Context, chain []*x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}}})
}

// leaf returns a client certificate with uris as its URI SANs, byte for
// byte, valid for an hour from Backdate+skew minutes around now; false when
// crypto/x509 cannot make or parse such a certificate.
func (k *admissionKit) leaf(t *testing.T, uris []string, signer, eku uint8, skew int16) (*x509.Certificate, bool) {
	if signer == signIssue {
		if len(uris) == 1 {
			if id, err := pki.ParseID(uris[0]); err == nil {
				ident, err := k.ca.Issue(id, time.Hour)
				if err != nil {
					t.Fatalf("Issue(%s): %v", id, err)
				}
				return ident.Leaf, true
			}
		}
		signer = signMeshCA
	}
	k.serialNum++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(k.serialNum),
		NotBefore:             k.now.Add(time.Duration(skew)*time.Minute - pki.Backdate),
		NotAfter:              k.now.Add(time.Duration(skew)*time.Minute - pki.Backdate + time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	switch eku {
	case ekuBoth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case ekuServer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if len(uris) > 0 {
		san, err := sanExtension(uris)
		if err != nil {
			return nil, false
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}}
	}
	parent, key := k.ca.Cert(), k.caKey
	switch signer {
	case signOtherCA:
		parent, key = k.other.Cert(), k.otherKey
	case signSelf:
		parent, key = tmpl, k.leafKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.leafKey.Public(), key)
	if err != nil {
		return nil, false
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, false
	}
	return c, true
}
