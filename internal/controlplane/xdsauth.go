package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/runtime/local"
	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// xdsIdentity authenticates the control plane's xDS clients in local mode
// (issue 14): while any mesh has TLS on, every xDS stream must come over
// TLS with a workload certificate from the mesh CA, and the node id it
// claims must be a task (TaskID: "<task set>-<n>") of a task set whose
// virtual node the certificate names, in a mesh with TLS on. While no mesh
// has TLS on, plaintext xDS is served as before.
//
// Each client gets its own view of the configuration (view): a task of a
// mesh with TLS on only its mesh's, any other client only the meshes'
// without TLS. Plain text is still refused as soon as one mesh has TLS on,
// even for a mesh without it (docs/security.md).
type xdsIdentity struct {
	ca    pki.Issuer
	store store.Store
	hosts []string

	// tlsOn: some mesh had TLS on at the last publish (read on every
	// request of a plaintext stream, so kept here rather than read from
	// the store).
	tlsOn atomic.Bool
	// last is the state of the last publish: views are looked up in it
	// (once per node id and publish), so that they follow what was
	// published without reading the store.
	last atomic.Pointer[mesh.State]

	mu      sync.Mutex
	sources map[string]*pki.Source // per mesh: the certificate names the mesh
}

// published records whether st has a mesh with TLS on; the control plane
// calls it before each publish.
func (x *xdsIdentity) published(st *mesh.State) {
	if x != nil {
		x.tlsOn.Store(len(tlsMeshes(st)) > 0)
		x.last.Store(st)
	}
}

// newXDSIdentity returns nil without a CA: then xDS is plaintext only.
func newXDSIdentity(ca pki.Issuer, st store.Store, addr string) *xdsIdentity {
	if ca == nil {
		return nil
	}
	return &xdsIdentity{ca: ca, store: st, hosts: certHosts(addr)}
}

// certHosts are the names a client may reach addr by: its host, and the
// loopback names (a bootstrap names 127.0.0.1 for a control plane that
// listens on every address).
func certHosts(addr string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return hosts
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsUnspecified()) && host != "" && !slices.Contains(hosts, host) {
		hosts = append(hosts, host)
	}
	return hosts
}

// auth is the xDS server's Authenticator.
func (x *xdsIdentity) auth() *xdsserver.MeshAuth {
	return &xdsserver.MeshAuth{
		Bundle:   x.ca.BundlePEM,
		Owner:    x.owner,
		Required: x.tlsOn.Load,
	}
}

// view is the xDS server's View: the mesh of a task of a mesh with TLS on
// (owner, in the last published state), the plaintext view for any other
// node and for every node while no mesh has TLS on.
func (x *xdsIdentity) view(nodeID string) string {
	st := x.last.Load()
	if st == nil || !x.tlsOn.Load() {
		return xdsserver.PlaintextView
	}
	if id, ok := ownerIn(st, nodeID); ok {
		return id.Mesh
	}
	return xdsserver.PlaintextView
}

func (x *xdsIdentity) state() *mesh.State {
	st, err := x.store.State(context.Background())
	if err != nil {
		return mesh.NewState()
	}
	return st
}

// tlsMeshes lists the meshes with TLS on, sorted.
func (x *xdsIdentity) tlsMeshes() []string { return tlsMeshes(x.state()) }

func tlsMeshes(st *mesh.State) []string {
	nodes := st.List(mesh.KindVirtualNode, "")
	var out []string
	for _, r := range st.List(mesh.KindMesh, "") {
		if mesh.MeshTLS(nodes, r.Metadata.Name) {
			out = append(out, r.Metadata.Name)
		}
	}
	slices.Sort(out)
	return out
}

// owner is the SPIFFE ID of the virtual node that nodeID belongs to, in a
// mesh with TLS on: a task gmesh runs ("<task set>-<n>", local.TaskID) of
// a task set of that node, or a client that names its node itself,
// "mesh/MESH/virtualNode/NODE" optionally followed by "/anything" (the
// form `gmesh bootstrap` suggests).
func (x *xdsIdentity) owner(nodeID string) (pki.ID, bool) {
	return ownerIn(x.state(), nodeID)
}

// ownerIn is owner in the state st.
func ownerIn(st *mesh.State, nodeID string) (pki.ID, bool) {
	if rest, ok := strings.CutPrefix(nodeID, "mesh/"); ok {
		parts := strings.SplitN(rest, "/", 4)
		if len(parts) < 3 || parts[1] != "virtualNode" {
			return pki.ID{}, false
		}
		id := xds.NodeID(parts[0], parts[2])
		if id.Validate() != nil || !slices.Contains(tlsMeshes(st), id.Mesh) {
			return pki.ID{}, false
		}
		return id, true
	}
	set, _, ok := local.ParseTaskID(nodeID)
	if !ok {
		return pki.ID{}, false
	}
	nodes := st.List(mesh.KindVirtualNode, "")
	var found []pki.ID
	for _, r := range st.List(mesh.KindTaskSet, "") {
		spec := r.TaskSet()
		if r.Metadata.Name != set || spec == nil || spec.VirtualNode == "" || !mesh.MeshTLS(nodes, r.Metadata.Mesh) {
			continue
		}
		found = append(found, xds.NodeID(r.Metadata.Mesh, spec.VirtualNode))
	}
	if len(found) != 1 {
		// None, or task sets of that name in several meshes: the node id
		// does not say which.
		return pki.ID{}, false
	}
	return found[0], true
}

// serverTLS is the xDS server's TLS configuration: a certificate naming
// the first mesh with TLS on (pki.XDSServer) and the hosts, client
// certificates asked for and checked per stream (MeshAuth).
func (x *xdsIdentity) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			meshes := x.tlsMeshes()
			if len(meshes) == 0 {
				return nil, errors.New("xds over tls: no mesh has tls on")
			}
			return x.source(meshes[0]).Certificate()
		},
	}
}

func (x *xdsIdentity) source(meshName string) *pki.Source {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, ok := x.sources[meshName]
	if !ok {
		s = pki.NewServerSource(x.ca, pki.XDSServer(meshName), x.hosts, 0, nil)
		if x.sources == nil {
			x.sources = map[string]*pki.Source{}
		}
		x.sources[meshName] = s
	}
	return s
}
