package gateway

import (
	"net"
	"sort"
	"strconv"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// BackendsFromEndpoints turns the registry's endpoints of the gateway
// route's target into backends: only serving ones (running, healthy, not
// draining), ordered by ID.
func BackendsFromEndpoints(eps []*mesh.Endpoint) []Backend {
	out := make([]Backend, 0, len(eps))
	for _, ep := range eps {
		if ep == nil || !ep.Serving() || ep.Address == "" || ep.Port == 0 {
			continue
		}
		out = append(out, Backend{ID: ep.ID, Addr: net.JoinHostPort(ep.Address, strconv.Itoa(ep.Port))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
