package gateway

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Routes is what the gateway routes by, straight from the mesh: its gateway
// routes in match order (mesh.Routing.Gateway), the routes of every virtual
// service they target (mesh.Routing.Service), and the serving endpoints of
// every virtual node those routes name. A request takes the first gateway
// route that matches it, is rewritten as that route says, takes the first
// route of the target service that matches the rewritten request, and is
// sent to a virtual node picked by weight (mesh.PickTarget, over the nodes
// with an available backend) and then to that node's backend with the fewest
// requests in flight.
type Routes struct {
	Gateway  []*mesh.GatewayRule
	Services map[string]*mesh.ServiceRoutes
	Nodes    map[string][]Backend
}

// table is the compiled form of Routes the request path reads.
type table struct {
	rules    []*mesh.GatewayRule
	services map[string]*mesh.ServiceRoutes
	nodes    map[string][]*backend
	// routes holds each service route's targets and backends, built once.
	routes map[*mesh.RouteRule]*route
	// pool, when rules is nil, takes every request (SetBackends).
	pool      []*backend
	poolRoute *route
}

// route is where one request may go: its weighted targets and each one's
// backends (pools[i] for targets[i]).
type route struct {
	targets []mesh.WeightedTarget
	pools   [][]*backend
}

// routeError is a request the gateway cannot route, with its status.
type routeError struct {
	code int
	msg  string
}

func (e *routeError) Error() string { return e.msg }

// SetRoutes replaces the routing table. Backends that stay (same ID and
// address) keep their connections, counters and health. Safe to call while
// serving.
func (g *Gateway) SetRoutes(rt *Routes) {
	if rt == nil {
		rt = &Routes{}
	}
	var all []Backend
	for _, node := range sortedKeys(rt.Nodes) {
		all = append(all, rt.Nodes[node]...)
	}
	g.replace(all, func(byID map[string]*backend) *table {
		t := &table{rules: rt.Gateway, services: rt.Services, nodes: map[string][]*backend{}}
		if t.rules == nil {
			t.rules = []*mesh.GatewayRule{}
		}
		for node, bs := range rt.Nodes {
			for _, b := range bs {
				if nb := byID[b.ID]; nb != nil && !slices.Contains(t.nodes[node], nb) {
					t.nodes[node] = append(t.nodes[node], nb)
				}
			}
		}
		t.routes = map[*mesh.RouteRule]*route{}
		for _, svc := range rt.Services {
			for _, rule := range svc.Rules {
				r := &route{targets: rule.Targets, pools: make([][]*backend, len(rule.Targets))}
				for i, tg := range rule.Targets {
					r.pools[i] = t.nodes[tg.VirtualNode]
				}
				t.routes[rule] = r
			}
		}
		return t
	})
}

// SetBackends routes every request to bs (no gateway routes): for a gateway
// in front of one pool of equal backends.
func (g *Gateway) SetBackends(bs []Backend) {
	g.replace(bs, func(byID map[string]*backend) *table {
		t := &table{}
		for _, b := range bs {
			if nb := byID[b.ID]; nb != nil && !slices.Contains(t.pool, nb) {
				t.pool = append(t.pool, nb)
			}
		}
		t.poolRoute = &route{targets: poolTarget, pools: [][]*backend{t.pool}}
		return t
	})
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// replace swaps in a new set of backends, reusing the ones that stay, and the
// table build makes over them.
func (g *Gateway) replace(bs []Backend, build func(byID map[string]*backend) *table) {
	g.mu.Lock()
	old := make(map[string]*backend, len(g.backends))
	for _, b := range g.backends {
		old[b.id] = b
	}
	next := make([]*backend, 0, len(bs))
	byID := make(map[string]*backend, len(bs))
	for _, b := range bs {
		if b.ID == "" || b.Addr == "" || byID[b.ID] != nil {
			continue
		}
		nb := old[b.ID]
		if nb != nil && nb.addr == b.Addr {
			delete(old, b.ID)
		} else {
			nb = newBackend(b)
		}
		byID[b.ID] = nb
		next = append(next, nb)
	}
	g.backends = next
	g.table = build(byID)
	g.mu.Unlock()
	for _, b := range old {
		b.tr.CloseIdleConnections() // in-flight requests finish on their connections
	}
	g.log.Info("gateway backends", "count", len(next), "removed", len(old))
}

// resolve finds where r goes: the matching gateway route, which says how
// r's path and host are rewritten (returned; r is left as the client sent
// it), then the target service's route that matches the rewritten request.
func (t *table) resolve(r *http.Request) (rt *route, path, host string, err error) {
	path, host = r.URL.Path, r.Host
	if t == nil {
		return nil, path, host, errNoBackend
	}
	if t.rules == nil {
		return t.poolRoute, path, host, nil
	}
	req := mesh.Request{Method: r.Method, Path: path, RawQuery: r.URL.RawQuery, Host: host, Header: r.Header}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		req.Port = a.Port
	}
	gr := mesh.MatchGateway(t.rules, &req)
	if gr == nil {
		return nil, path, host, &routeError{http.StatusNotFound, fmt.Sprintf("no gateway route matches %s %s", r.Method, r.URL.Path)}
	}
	req.Path, req.Host = gr.Rewrite(&req)
	svc := t.services[gr.Service]
	if svc == nil {
		return nil, path, host, &routeError{http.StatusServiceUnavailable, fmt.Sprintf("virtual service %s has no routes", gr.Service)}
	}
	rule := svc.Match(&req)
	if rule == nil {
		return nil, path, host, &routeError{http.StatusNotFound, fmt.Sprintf("no route of virtual service %s matches %s %s", gr.Service, r.Method, req.Path)}
	}
	return t.routes[rule], req.Path, req.Host, nil
}

// poolTarget is the one target of a SetBackends table.
var poolTarget = []mesh.WeightedTarget{{Weight: 1}}

// pickRoute returns the backend for the next attempt of a request on rt,
// never exclude: a virtual node picked by weight among those with an
// available backend, then that node's backend with the fewest requests in
// flight (pick). When no node has an available backend, it picks by weight
// over all of them (panic mode, as pick).
func (g *Gateway) pickRoute(rt *route, exclude *backend) *backend {
	now := g.clock.Now()
	ok := func(i int) bool {
		for _, b := range rt.pools[i] {
			if b != exclude && b.available(now) {
				return true
			}
		}
		return false
	}
	hasOther := func(i int) bool {
		for _, b := range rt.pools[i] {
			if b != exclude {
				return true
			}
		}
		return false
	}
	x := rand.Uint64()
	i := mesh.PickTarget(rt.targets, ok, x)
	if i >= 0 && !ok(i) {
		// No node has an available backend: any node with a backend.
		i = mesh.PickTarget(rt.targets, hasOther, x)
	}
	if i < 0 {
		return nil
	}
	return g.pick(rt.pools[i], exclude)
}

// RoutesFromMesh builds gateway's routing table from a mesh state: its
// gateway routes, their target services' routes (mesh.Routing, the resolver
// the xDS translation uses too) and the serving endpoints
// (mesh.ServingEndpoints) of every node those routes name. It also returns
// a key that changes whenever the table would, and the gateway routes and
// services that cannot route, which are left out while the rest routes.
func RoutesFromMesh(st *mesh.State, meshName, gateway string, eps []*mesh.Endpoint) (*Routes, string, []error) {
	rt := mesh.NewRouting(st)
	rules, errs := rt.Gateway(meshName, gateway)
	out := &Routes{Gateway: rules, Services: map[string]*mesh.ServiceRoutes{}, Nodes: map[string][]Backend{}}
	var key []any // every resource the table is built from, and the backends
	for _, g := range rules {
		key = append(key, g.Route)
		if _, done := out.Services[g.Service]; done {
			continue
		}
		sr, err := rt.Service(meshName, g.Service)
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway route %s: %w", g.Route.Metadata.Name, err))
			out.Services[g.Service] = nil
			continue
		}
		out.Services[g.Service] = sr
		key = append(key, sr.Service)
		for _, rule := range sr.Rules {
			if rule.Route != nil {
				key = append(key, rule.Route)
			}
		}
		for _, node := range sr.Nodes() {
			if _, done := out.Nodes[node]; done {
				continue
			}
			vn := st.Get(mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: node})
			if vn == nil {
				continue
			}
			out.Nodes[node] = BackendsFromEndpoints(mesh.ServingEndpoints(vn, eps))
			key = append(key, node, out.Nodes[node])
		}
	}
	for name, sr := range out.Services {
		if sr == nil {
			delete(out.Services, name)
		}
	}
	b, err := json.Marshal(key)
	if err != nil {
		errs = append(errs, fmt.Errorf("routing key: %w", err))
	}
	return out, string(b), errs
}
