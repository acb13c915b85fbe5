package controlplane

import (
	"context"
	"time"

	"github.com/gmesh-dev/gmesh/internal/pki"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/registry"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// Status is the control plane's status document: what `gmesh status`
// shows and the dashboard reads.
type Status struct {
	// Revision is the store's revision.
	Revision uint64 `json:"revision"`
	// Published is the store revision and per-type xDS versions last
	// published.
	PublishedRevision uint64            `json:"publishedRevision"`
	PublishedVersions map[string]string `json:"publishedVersions"`
	// TranslateError is set while some of the stored mesh cannot be
	// translated: it names each resource left out (and what needed it) and
	// why; the rest is served.
	TranslateError string `json:"translateError,omitempty"`
	// Clients are the connected xDS clients with their ACKs and NACKs.
	Clients   []xdsserver.ClientStatus `json:"clients"`
	Endpoints []*mesh.Endpoint         `json:"endpoints"`
	Services  []*mesh.Resource         `json:"services"`
	TaskSets  []*mesh.Resource         `json:"taskSets"`
	Nodes     []*mesh.Resource         `json:"virtualNodes"`
	Routes    []*mesh.Resource         `json:"routes"`
	Rollouts  []*mesh.Resource         `json:"rollouts"`
	// CA is the mesh CA, while some mesh has TLS on (each task's own
	// certificate is in its endpoint's process status).
	CA *CAStatus `json:"ca,omitempty"`
}

// CAStatus is the mesh CA's certificate.
type CAStatus struct {
	// Subject is the CA certificate's subject.
	Subject string `json:"subject"`
	// NotAfter is when it expires: no workload certificate outlives it,
	// and none can be issued after it.
	NotAfter time.Time `json:"notAfter"`
}

// Status reports the control plane's state.
func (cp *ControlPlane) Status(ctx context.Context) (*Status, error) {
	st, err := cp.store.State(ctx)
	if err != nil {
		return nil, err
	}
	rev, versions := cp.xds.Published()
	cp.mu.Lock()
	terr := cp.translateError
	cp.mu.Unlock()
	eps := cp.registry.List(registry.Filter{})
	if eps == nil {
		eps = []*mesh.Endpoint{}
	}
	clients := cp.xds.Clients()
	if clients == nil {
		clients = []xdsserver.ClientStatus{}
	}
	return &Status{
		CA:                cp.xdsID.caStatus(),
		Revision:          st.Revision,
		PublishedRevision: rev,
		PublishedVersions: versions,
		TranslateError:    terr,
		Clients:           clients,
		Endpoints:         eps,
		Services:          st.List(mesh.KindService, ""),
		TaskSets:          st.List(mesh.KindTaskSet, ""),
		Nodes:             st.List(mesh.KindVirtualNode, ""),
		Routes:            st.List(mesh.KindRoute, ""),
		Rollouts:          st.List(mesh.KindRollout, ""),
	}, nil
}

// caStatus is the CA's certificate while some mesh has TLS on (the CA
// exists then); nil otherwise.
func (x *xdsIdentity) caStatus() *CAStatus {
	if x == nil || !x.tlsOn.Load() {
		return nil
	}
	certs, err := pki.ParseCertificates(x.ca.BundlePEM())
	if err != nil {
		return nil
	}
	return &CAStatus{Subject: certs[0].Subject.String(), NotAfter: certs[0].NotAfter.UTC()}
}

// Redacted returns the status as it may be shown to a person: its task
// sets and rollouts with their environment values redacted
// (mesh.Resource.Redacted). st is not changed.
func (st *Status) Redacted() *Status {
	if st == nil {
		return nil
	}
	c := *st
	c.TaskSets = mesh.RedactedAll(st.TaskSets)
	c.Rollouts = mesh.RedactedAll(st.Rollouts)
	return &c
}
