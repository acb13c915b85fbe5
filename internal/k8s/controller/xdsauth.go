package controller

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/pki"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// XDSAuthConfig turns on the authenticated xDS channel on Kubernetes
// (issue 14): the control plane serves xDS over TLS as well as plain text
// on its one port, with a certificate from the mesh CA, and a stream that
// claims the node id of a pod in a mesh with TLS on ("NAMESPACE/POD", the
// webhook's) must come over TLS with that pod's workload certificate: its
// namespace, its service account and the virtual node that selects it.
// Pods of meshes without TLS keep plaintext xDS.
type XDSAuthConfig struct {
	// CA is the mesh CA (identity.LoadOrCreateCA): it issues the control
	// plane's xDS certificate, and client certificates must chain to it.
	CA *pki.CA
	// Hosts are the names and addresses pods reach xDS by (the Service's
	// ClusterIP and DNS names): grpc-go's TLS channel credentials check the
	// bootstrap's server_uri host against the certificate. The loopback
	// names are always added.
	Hosts []string
	// Clock times the certificate's renewal; default the real clock.
	Clock clock.Clock
}

// podIdentities is what the authentication asks the Source: which node of
// a mesh with TLS on selects a pod.
type podIdentities interface {
	PodIdentity(namespace string, podLabels map[string]string) (identity.Want, bool, error)
}

// podAuth authenticates the xDS clients of pods.
type podAuth struct {
	ca  *pki.CA
	ids podIdentities
	// pods is the informer's cache: a pod is in it from its creation,
	// long before its containers start and connect.
	pods  listerscorev1.PodLister
	cert  *pki.Source
	clock clock.Clock
}

func newPodAuth(cfg XDSAuthConfig, ids podIdentities, pods listerscorev1.PodLister) (*podAuth, error) {
	if cfg.CA == nil {
		return nil, errors.New("xds authentication: no CA")
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, h := range cfg.Hosts {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	a := &podAuth{ca: cfg.CA, ids: ids, pods: pods, clock: clk}
	a.cert = pki.NewServerSource(cfg.CA, pki.XDSServer(xdsServerMesh), hosts, 0, clk)
	if _, err := a.cert.Certificate(); err != nil {
		return nil, fmt.Errorf("xds authentication: the control plane's certificate: %w", err)
	}
	return a, nil
}

// xdsServerMesh is the trust domain's mesh in the control plane's own xDS
// certificate (spiffe://gmesh.gmesh.local/cp/xds): one control plane serves
// every mesh of the cluster, and grpc-go's TLS channel credentials check
// only the host.
const xdsServerMesh = "gmesh"

// meshAuth is the xDS server's Authenticator.
func (a *podAuth) meshAuth() *xdsserver.MeshAuth {
	return &xdsserver.MeshAuth{
		Bundle: a.ca.BundlePEM,
		Owner:  a.owner,
		RequiredFor: func(nodeID string) bool {
			_, ok := a.owner(nodeID)
			return ok
		},
		Now: a.clock.Now,
	}
}

// view is the xDS server's View: a pod of a mesh with TLS on (owner) gets
// its mesh's configuration only, any other client the meshes' without TLS.
func (a *podAuth) view(nodeID string) string {
	if id, ok := a.owner(nodeID); ok {
		return id.Mesh
	}
	return xdsserver.PlaintextView
}

// owner is the SPIFFE ID the pod that nodeID ("NAMESPACE/POD") names must
// present: its namespace, its service account, and the virtual node of a
// mesh with TLS on that selects it; false for any other node id.
func (a *podAuth) owner(nodeID string) (pki.ID, bool) {
	ns, name, ok := strings.Cut(nodeID, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return pki.ID{}, false
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if err != nil || pod == nil {
		return pki.ID{}, false
	}
	want, ok, err := a.ids.PodIdentity(ns, pod.Labels)
	if err != nil || !ok {
		return pki.ID{}, false
	}
	return want.ID(serviceAccount(pod)), true
}

// serviceAccount is the pod's service account, "default" when it names
// none.
func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// XDSHosts are the hosts the control plane's xDS certificate names for the
// address pods are given (host:port, the webhook's --xds-address or the
// Service's ClusterIP) and the Service's DNS names.
func XDSHosts(xdsAddress, namespace, service string) []string {
	var hosts []string
	if h, _, err := net.SplitHostPort(xdsAddress); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if service != "" && namespace != "" {
		hosts = append(hosts, service+"."+namespace+".svc", service+"."+namespace+".svc.cluster.local")
	}
	return hosts
}
