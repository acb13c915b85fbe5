package rolloutctl

import (
	"fmt"
	"sync"

	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/rollout"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// RouterConvergence tells whether a VirtualRouter's change reached the
// data plane: done when every xDS client (on every control-plane replica)
// that uses the router's routes has ACKed configuration built from the
// router at metadata.generation generation or later; pending names the
// others. Generations are the API server's, so the answer means the same
// on every replica and after a change of leader.
type RouterConvergence interface {
	ConvergedRouter(namespace, router string, generation int64) (done bool, pending []string)
}

// convergence adapts a RouterConvergence to the engine's Convergence: the
// engine's revision of a route is its router's generation (Store.Put), and
// its route is named ROUTER/ROUTE.
type convergence struct{ rc RouterConvergence }

var _ rollout.Convergence = convergence{}

func (c convergence) Converged(rev uint64, meshName, route string) (bool, []string) {
	router, _, ok := SplitRoute(route)
	if !ok {
		return false, []string{fmt.Sprintf("(route %q is not ROUTER/ROUTE)", route)}
	}
	return c.rc.ConvergedRouter(meshName, router, int64(rev))
}

// LocalConvergence is a RouterConvergence that counts only the xDS clients
// of this replica: the first snapshot its Source published with the
// router at the generation or later, and the ACKs of that publish by the
// clients of the router's route configurations (those of the
// VirtualServices it provides). On a control plane of several replicas it
// is the leader's view only; the cluster-wide one replaces it.
type LocalConvergence struct {
	Source *controller.Source
	XDS    *xdsserver.Server

	mu    sync.Mutex
	first map[localKey]uint64 // the first publish generation that held the router's generation
}

type localKey struct {
	ns, router string
	gen        int64
}

// ConvergedRouter implements RouterConvergence.
func (l *LocalConvergence) ConvergedRouter(ns, router string, gen int64) (bool, []string) {
	snap := l.Source.Last()
	obj := appmesh.Object{Kind: mesh.KindVirtualRouter, Namespace: ns, Name: router}
	waiting := []string{fmt.Sprintf("(control plane: virtual router %s/%s at generation %d not published yet)", ns, router, gen)}
	key := localKey{ns, router, gen}
	l.mu.Lock()
	if l.first == nil {
		l.first = map[localKey]uint64{}
	}
	pub, ok := l.first[key]
	if !ok {
		if snap == nil || snap.Err != nil || snap.Objects[obj].Generation < gen {
			l.mu.Unlock()
			return false, waiting
		}
		pub = snap.Generation
		l.first[key] = pub
	}
	l.mu.Unlock()
	return l.XDS.ConvergedFor(xds.RouteType, pub, routeConfigs(snap, obj))
}

// routeConfigs are the route configurations of the virtual services the
// router provides.
func routeConfigs(snap *controller.Snapshot, obj appmesh.Object) []string {
	if snap == nil {
		return nil
	}
	var meshName, name string
	for _, r := range snap.Results {
		if r.Object == obj {
			meshName, name = r.Mesh, r.Name
		}
	}
	var names []string
	for _, vs := range snap.Results.Resources() {
		spec := vs.VirtualService()
		if vs.Kind != mesh.KindVirtualService || vs.Metadata.Mesh != meshName || spec == nil ||
			spec.Provider == nil || spec.Provider.VirtualRouter == nil || spec.Provider.VirtualRouter.VirtualRouterName != name {
			continue
		}
		names = append(names, xds.RouteConfigName(vs.Metadata.Mesh, vs.Metadata.Name))
	}
	return names
}
