package controlplane

import (
	"context"
	"time"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/rollout"
	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/xds"
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

// Put commits one resource; the revision is the store's after the commit
// (the current one when nothing changed), which the xDS snapshots are
// built from.
func (a storeAdapter) Put(ctx context.Context, r *mesh.Resource) (uint64, error) {
	res, err := a.s.Commit(ctx, []*mesh.Resource{r}, nil)
	if err != nil {
		return 0, err
	}
	return res.Revision, nil
}

func (a storeAdapter) Delete(ctx context.Context, ref mesh.Ref) (uint64, error) {
	res, err := a.s.Commit(ctx, nil, []mesh.Ref{ref})
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

// convergence answers the rollout engine's "has every client that
// subscribes to the shifted route ACKed its revision rev?": the clients
// subscribed to the route configuration of a virtual service that route's
// router provides. A client that never asked for those routes (another
// service's client, or a stray stream) does not hold the rollout.
type convergence struct {
	s     *xdsserver.Server
	store store.Store
}

var _ rollout.Convergence = convergence{}

func (c convergence) Converged(rev uint64, meshName, route string) (bool, []string) {
	return c.s.ConvergedFor(routeTypeURL, rev, c.routeConfigs(meshName, route))
}

// routeConfigs names the route configurations that carry route; nil (every
// client counts) when they cannot be found.
func (c convergence) routeConfigs(meshName, route string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.store.Get(ctx, mesh.Ref{Kind: mesh.KindRoute, Mesh: meshName, Name: route})
	if err != nil || r.Route() == nil {
		return nil
	}
	vss, err := c.store.List(ctx, mesh.KindVirtualService, meshName)
	if err != nil {
		return nil
	}
	var names []string
	for _, vs := range vss {
		if p := vs.VirtualService().Provider; p != nil && p.VirtualRouter != nil && p.VirtualRouter.VirtualRouterName == r.Route().VirtualRouterName {
			names = append(names, xds.RouteConfigName(meshName, vs.Metadata.Name))
		}
	}
	return names
}
