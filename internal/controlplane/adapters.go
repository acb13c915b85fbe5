package controlplane

import (
	"context"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/rollout"
	"github.com/gmesh-dev/gmesh/internal/store"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// storeAdapter gives the rollout engine the store in the shape it declares.
type storeAdapter struct{ s store.Store }

var _ rollout.Store = storeAdapter{}

func (a storeAdapter) Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	return a.s.Get(ctx, ref)
}

func (a storeAdapter) List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	return a.s.List(ctx, kind, meshName)
}

func (a storeAdapter) Commit(ctx context.Context, puts []*mesh.Resource, deletes []mesh.Ref) (uint64, error) {
	res, err := a.s.Commit(ctx, puts, deletes)
	if err != nil {
		return 0, err
	}
	return res.Revision, nil
}

func (a storeAdapter) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	return a.s.UpdateStatus(ctx, ref, status, rv)
}

// endpointLister gives the rollout engine and the metric scraper the
// registry's endpoints of one service.
type endpointLister struct{ r *registry.Registry }

var (
	_ rollout.Endpoints       = endpointLister{}
	_ analysis.EndpointLister = endpointLister{}
)

func (l endpointLister) List(meshName, service string) []*mesh.Endpoint {
	return l.r.List(registry.Filter{Mesh: meshName, Service: service})
}

// convergence answers the rollout engine's "has every client ACKed the
// routes of revision rev?".
type convergence struct{ s *xdsserver.Server }

var _ rollout.Convergence = convergence{}

func (c convergence) Converged(rev uint64) (bool, []string) {
	return c.s.Converged(routeTypeURL, rev)
}
