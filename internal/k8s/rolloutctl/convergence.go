package rolloutctl

import (
	"fmt"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/rollout"
)

// RouterConvergence tells whether a VirtualRouter's change reached the
// data plane: done when every xDS client (on every control-plane replica)
// that uses the router's routes has ACKed configuration built from the
// router at metadata.generation generation or later; pending names the
// others. Generations are the API server's, so the answer means the same
// on every replica and after a change of leader.
// controller.ClusterConvergence answers for every replica, a
// controller.ControlPlane for its own clients.
type RouterConvergence = controller.RouterConvergence

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
