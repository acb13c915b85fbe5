package mesh

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file is the mesh's one routing brain: which route a route spec's
// action is, what a gateway route targets, in which order routes match, what
// a request matches, and which weighted virtual nodes serve a virtual
// service. The xDS translation, the gateway, the rollout engine, the CLI and
// the dashboard all ask it, so they cannot disagree.

// Action returns the route's weighted action from whichever of grpcRoute,
// http2Route or httpRoute the route is (validation allows exactly one), or
// nil.
func (s *RouteSpec) Action() *RouteAction {
	switch {
	case s == nil:
		return nil
	case s.GRPCRoute != nil:
		return &s.GRPCRoute.Action
	case s.HTTP2Route != nil:
		return &s.HTTP2Route.Action
	case s.HTTPRoute != nil:
		return &s.HTTPRoute.Action
	}
	return nil
}

// Protocol returns the route's kind: ProtocolGRPC, ProtocolHTTP2 or
// ProtocolHTTP ("" for none).
func (s *RouteSpec) Protocol() string {
	switch {
	case s == nil:
		return ""
	case s.GRPCRoute != nil:
		return ProtocolGRPC
	case s.HTTP2Route != nil:
		return ProtocolHTTP2
	case s.HTTPRoute != nil:
		return ProtocolHTTP
	}
	return ""
}

// Field returns the spec field that holds the route ("spec.grpcRoute").
func (s *RouteSpec) Field() string {
	switch s.Protocol() {
	case ProtocolGRPC:
		return "spec.grpcRoute"
	case ProtocolHTTP2:
		return "spec.http2Route"
	case ProtocolHTTP:
		return "spec.httpRoute"
	}
	return "spec"
}

// Targets returns the route's weighted targets (nil for none).
func (s *RouteSpec) Targets() []WeightedTarget {
	if a := s.Action(); a != nil {
		return a.WeightedTargets
	}
	return nil
}

// HasTarget reports whether node is one of the route's targets, at any
// weight.
func (s *RouteSpec) HasTarget(node string) bool {
	for _, t := range s.Targets() {
		if t.VirtualNode == node {
			return true
		}
	}
	return false
}

// Target returns the name of the virtual service the gateway route sends to.
func (s *GatewayRouteSpec) Target() string {
	switch {
	case s == nil:
		return ""
	case s.GRPCRoute != nil:
		return s.GRPCRoute.Action.Target.VirtualService.VirtualServiceName
	case s.HTTP2Route != nil:
		return s.HTTP2Route.Action.Target.VirtualService.VirtualServiceName
	case s.HTTPRoute != nil:
		return s.HTTPRoute.Action.Target.VirtualService.VirtualServiceName
	}
	return ""
}

// Protocol returns the gateway route's kind: ProtocolGRPC, ProtocolHTTP2 or
// ProtocolHTTP.
func (s *GatewayRouteSpec) Protocol() string {
	switch {
	case s == nil:
		return ""
	case s.GRPCRoute != nil:
		return ProtocolGRPC
	case s.HTTP2Route != nil:
		return ProtocolHTTP2
	case s.HTTPRoute != nil:
		return ProtocolHTTP
	}
	return ""
}

// http returns the HTTP or HTTP/2 part of the gateway route, or nil.
func (s *GatewayRouteSpec) http() *GatewayHTTPRoute {
	if s.HTTP2Route != nil {
		return s.HTTP2Route
	}
	return s.HTTPRoute
}

// MatchSummary is a short human form of the gateway route's match, for
// tables: "http /api", "grpc proto.echo.EchoService".
func (s *GatewayRouteSpec) MatchSummary() string {
	if g := s.GRPCRoute; g != nil {
		return "grpc " + cmp.Or(g.Match.ServiceName, "*")
	}
	h := s.http()
	if h == nil {
		return ""
	}
	m := h.Match
	out := s.Protocol() + " "
	switch {
	case m.Path != nil && m.Path.Exact != "":
		out += "=" + m.Path.Exact
	case m.Path != nil:
		out += "~" + m.Path.Regex
	default:
		out += m.Prefix
	}
	if m.Method != "" {
		out = m.Method + " " + out
	}
	if hn := m.Hostname; hn != nil {
		out += " host " + cmp.Or(hn.Exact, "*"+hn.Suffix)
	}
	return out
}

// noPriority orders routes without a priority after every route with one.
const noPriority = 1 << 30

func priorityOf(p *int) int {
	if p == nil {
		return noPriority
	}
	return *p
}

// CompareRoutes orders a router's routes as they are matched: lower priority
// first, routes without a priority after all others, ties by name.
func CompareRoutes(a, b *Resource) int {
	return cmp.Or(cmp.Compare(priorityOf(a.Route().priority()), priorityOf(b.Route().priority())),
		cmp.Compare(a.Metadata.Name, b.Metadata.Name))
}

func (s *RouteSpec) priority() *int {
	if s == nil {
		return nil
	}
	return s.Priority
}

// CompareGatewayRoutes orders a gateway's routes as they are matched: lower
// priority first; among equal priorities (or none) the more specific match
// first (an exact path, then a regex path, then the longer prefix, then one
// that also matches host name, method, headers or query); ties by name.
func CompareGatewayRoutes(a, b *Resource) int {
	sa, sb := a.GatewayRoute(), b.GatewayRoute()
	var pa, pb *int
	if sa != nil {
		pa = sa.Priority
	}
	if sb != nil {
		pb = sb.Priority
	}
	return cmp.Or(cmp.Compare(priorityOf(pa), priorityOf(pb)),
		-cmp.Compare(specificity(sa), specificity(sb)),
		cmp.Compare(a.Metadata.Name, b.Metadata.Name))
}

// specificity ranks a gateway route's match: higher matches first.
func specificity(s *GatewayRouteSpec) int {
	if s == nil {
		return 0
	}
	n := 0
	if g := s.GRPCRoute; g != nil {
		if g.Match.ServiceName != "" {
			n += 1 << 20
		}
		if g.Match.Hostname != nil {
			n += 2
		}
		return n + len(g.Match.Metadata)
	}
	h := s.http()
	if h == nil {
		return 0
	}
	m := h.Match
	switch {
	case m.Path != nil && m.Path.Exact != "":
		n += 3 << 20
	case m.Path != nil:
		n += 2 << 20
	default:
		n += len(m.Prefix) << 8
	}
	if m.Hostname != nil {
		n += 2
	}
	if m.Method != "" {
		n++
	}
	return n + len(m.Headers) + len(m.QueryParameters)
}

// ---- requests and matches ----

// Request is what a route matches on: an HTTP request or a gRPC call (whose
// path is /<package.Service>/<Method> and whose metadata are its headers).
type Request struct {
	Method   string
	Path     string
	RawQuery string
	// Host is the request's authority, with or without a port.
	Host   string
	Header http.Header
	// Port is the listener port the request arrived on (0: unknown; a match
	// on a port then fails).
	Port int
}

// hostname returns the request's host without port or trailing dot, lower
// case.
func (r *Request) hostname() string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// matcher is a compiled match of a route or gateway route.
type matcher struct {
	prefix, exact string
	re            *regexp.Regexp
	method        string
	host          *HostnameMatch
	headers       []headerMatcher
	query         []QueryParameterMatch
	port          int
}

type headerMatcher struct {
	name   string
	invert bool
	m      *HeaderMatch
	re     *regexp.Regexp
}

// compileAnchored compiles re as grpc-go and Envoy apply it: to the whole
// value.
func compileAnchored(re string) (*regexp.Regexp, error) {
	return regexp.Compile("^(?:" + re + ")$")
}

func compileHeaders(field string, ms []MetadataMatch) ([]headerMatcher, error) {
	out := make([]headerMatcher, 0, len(ms))
	for i, m := range ms {
		hm := headerMatcher{name: m.Name, invert: m.Invert, m: m.Match}
		if m.Match != nil && m.Match.Regex != "" {
			re, err := compileAnchored(m.Match.Regex)
			if err != nil {
				return nil, fmt.Errorf("%s[%d].match.regex: %w", field, i, err)
			}
			hm.re = re
		}
		out = append(out, hm)
	}
	return out, nil
}

func (m *matcher) matches(r *Request) bool {
	switch {
	case m.exact != "":
		if r.Path != m.exact {
			return false
		}
	case m.re != nil:
		if !m.re.MatchString(r.Path) {
			return false
		}
	default:
		if !strings.HasPrefix(r.Path, m.prefix) {
			return false
		}
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	if m.port != 0 && r.Port != m.port {
		return false
	}
	if h := m.host; h != nil {
		got := r.hostname()
		if h.Exact != "" && got != strings.ToLower(h.Exact) {
			return false
		}
		if h.Suffix != "" && !strings.HasSuffix(got, strings.ToLower(h.Suffix)) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matches(r.Header) {
			return false
		}
	}
	if len(m.query) > 0 {
		q, err := url.ParseQuery(r.RawQuery)
		if err != nil {
			return false
		}
		for _, qm := range m.query {
			vs, ok := q[qm.Name]
			if !ok {
				return false
			}
			if qm.Match != nil && !slices.Contains(vs, qm.Match.Exact) {
				return false
			}
		}
	}
	return true
}

// matches applies one header match as Envoy does: a header that is absent
// never matches (inverted or not, for a value match); several values are
// joined with ",".
func (h *headerMatcher) matches(hdr http.Header) bool {
	vs := hdr.Values(h.name)
	if h.m == nil { // presence
		return (len(vs) > 0) != h.invert
	}
	if len(vs) == 0 {
		return false
	}
	v := strings.Join(vs, ",")
	var ok bool
	switch {
	case h.re != nil:
		ok = h.re.MatchString(v)
	case h.m.Exact != "":
		ok = v == h.m.Exact
	case h.m.Prefix != "":
		ok = strings.HasPrefix(v, h.m.Prefix)
	case h.m.Suffix != "":
		ok = strings.HasSuffix(v, h.m.Suffix)
	}
	return ok != h.invert
}

// grpcMatcher compiles a gRPC match of a service, a method and metadata.
func grpcMatcher(field, service, method string, md []MetadataMatch) (*matcher, error) {
	m := &matcher{prefix: "/"}
	switch {
	case service != "" && method != "":
		m.exact = "/" + service + "/" + method
	case service != "":
		m.prefix = "/" + service + "/"
	}
	hs, err := compileHeaders(field+".metadata", md)
	if err != nil {
		return nil, err
	}
	m.headers = hs
	return m, nil
}

// pathMatcher compiles a prefix or a path (exact or regex) match.
func pathMatcher(field, prefix string, path *HeaderMatch) (*matcher, error) {
	m := &matcher{prefix: prefix}
	if path != nil {
		switch {
		case path.Exact != "":
			m.exact = path.Exact
		case path.Regex != "":
			re, err := compileAnchored(path.Regex)
			if err != nil {
				return nil, fmt.Errorf("%s.path.regex: %w", field, err)
			}
			m.re = re
		}
	}
	if m.exact == "" && m.re == nil && m.prefix == "" {
		m.prefix = "/"
	}
	return m, nil
}

// ---- a virtual service's routes ----

// ServiceRoutes is how one virtual service routes its requests: its rules in
// match order. A service provided by a virtual node has one rule that
// matches everything and sends it all to that node.
type ServiceRoutes struct {
	Service *Resource
	// Router is the providing router, nil when a node provides the service.
	Router *Resource
	Rules  []*RouteRule
}

// RouteRule is one route of a virtual service, compiled.
type RouteRule struct {
	// Route is the Route resource; nil for a node-provided service.
	Route *Resource
	// Targets are the route's weighted targets as written, weight 0
	// included.
	Targets []WeightedTarget
	match   *matcher
}

// Name is the route's name (the providing node's for a node-provided
// service).
func (r *RouteRule) Name() string {
	if r.Route != nil {
		return r.Route.Metadata.Name
	}
	if len(r.Targets) > 0 {
		return r.Targets[0].VirtualNode
	}
	return ""
}

// Matches reports whether the rule takes req.
func (r *RouteRule) Matches(req *Request) bool { return r.match.matches(req) }

// Match returns the first rule that takes req, or nil.
func (s *ServiceRoutes) Match(req *Request) *RouteRule {
	for _, r := range s.Rules {
		if r.Matches(req) {
			return r
		}
	}
	return nil
}

// Nodes returns every virtual node the service's rules target, at any
// weight, sorted and without duplicates.
func (s *ServiceRoutes) Nodes() []string {
	var out []string
	for _, r := range s.Rules {
		for _, t := range r.Targets {
			out = append(out, t.VirtualNode)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func compileRoute(r *Resource) (*RouteRule, error) {
	s := r.Route()
	if s == nil {
		return nil, fmt.Errorf("%s: spec is %T, want a route spec", r.Ref(), r.Spec)
	}
	rule := &RouteRule{Route: r, Targets: s.Targets()}
	var err error
	f := s.Field() + ".match"
	switch {
	case s.GRPCRoute != nil:
		m := s.GRPCRoute.Match
		rule.match, err = grpcMatcher(f, m.ServiceName, m.MethodName, m.Metadata)
	case s.HTTP2Route != nil || s.HTTPRoute != nil:
		h := cmp.Or(s.HTTP2Route, s.HTTPRoute)
		rule.match, err = pathMatcher(f, h.Match.Prefix, h.Match.Path)
		if err == nil {
			rule.match.method = h.Match.Method
			rule.match.headers, err = compileHeaders(f+".headers", h.Match.Headers)
		}
	default:
		return nil, fmt.Errorf("%s: spec: needs one of grpcRoute, httpRoute, http2Route", r.Ref())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s", r.Ref(), err)
	}
	if len(rule.Targets) == 0 {
		return nil, fmt.Errorf("%s: %s.action.weightedTargets: required", r.Ref(), s.Field())
	}
	return rule, nil
}

// ---- gateway routes ----

// GatewayRule is one gateway route, compiled.
type GatewayRule struct {
	Route *Resource
	// Service is the target virtual service's name.
	Service string
	match   *matcher
	// rewrite
	prefixFrom, prefixTo string // replace a matched prefix
	path                 string // replace the whole path
	keepHost             bool
}

// Matches reports whether the gateway route takes req.
func (g *GatewayRule) Matches(req *Request) bool { return g.match.matches(req) }

// Rewrite returns the path and host req goes on with, as App Mesh rewrites
// them: the matched prefix replaced by the rewrite's value or, by default,
// by "/" (a prefix of "/" so changes nothing); the whole path replaced when
// the rewrite names one; the host replaced by the target virtual service's
// name unless defaultTargetHostname is DISABLED.
func (g *GatewayRule) Rewrite(req *Request) (path, host string) {
	path, host = req.Path, req.Host
	switch {
	case g.path != "":
		path = g.path
	case g.prefixFrom != "" && g.prefixFrom != g.prefixTo && strings.HasPrefix(path, g.prefixFrom):
		rest := path[len(g.prefixFrom):]
		if strings.HasSuffix(g.prefixTo, "/") && strings.HasPrefix(rest, "/") {
			rest = rest[1:]
		}
		path = g.prefixTo + rest
	}
	if !g.keepHost {
		host = g.Service
	}
	return path, host
}

func compileGatewayRoute(r *Resource) (*GatewayRule, error) {
	s := r.GatewayRoute()
	if s == nil {
		return nil, fmt.Errorf("%s: spec is %T, want a gateway route spec", r.Ref(), r.Spec)
	}
	g := &GatewayRule{Route: r, Service: s.Target()}
	var err error
	switch {
	case s.GRPCRoute != nil:
		m := s.GRPCRoute.Match
		g.match, err = grpcMatcher("spec.grpcRoute.match", m.ServiceName, "", m.Metadata)
		if err == nil {
			g.match.host, g.match.port = m.Hostname, m.Port
		}
		if rw := s.GRPCRoute.Action.Rewrite; rw != nil && rw.Hostname != nil {
			g.keepHost = rw.Hostname.DefaultTargetHostname == Disabled
		}
	case s.http() != nil:
		h := s.http()
		f := "spec." + s.Protocol() + "Route.match"
		if s.HTTPRoute != nil {
			f = "spec.httpRoute.match"
		}
		m := h.Match
		g.match, err = pathMatcher(f, m.Prefix, m.Path)
		if err == nil {
			g.match.method, g.match.host, g.match.port, g.match.query = m.Method, m.Hostname, m.Port, m.QueryParameters
			g.match.headers, err = compileHeaders(f+".headers", m.Headers)
		}
		if m.Path == nil && m.Prefix != "" {
			g.prefixFrom, g.prefixTo = m.Prefix, "/"
		}
		if rw := h.Action.Rewrite; rw != nil {
			if p := rw.Prefix; p != nil {
				switch {
				case p.Value != "":
					g.prefixTo = p.Value
				case p.DefaultPrefix == Disabled:
					g.prefixFrom, g.prefixTo = "", ""
				}
			}
			if p := rw.Path; p != nil {
				g.path = p.Exact
			}
			if rw.Hostname != nil {
				g.keepHost = rw.Hostname.DefaultTargetHostname == Disabled
			}
		}
	default:
		return nil, fmt.Errorf("%s: spec: needs one of httpRoute, http2Route, grpcRoute", r.Ref())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s", r.Ref(), err)
	}
	return g, nil
}

// ---- the index ----

// Routing answers routing questions over one mesh State: a virtual
// service's routes and a gateway's routes, each in match order. Build it
// once per state; it does not change with the state.
type Routing struct {
	state    *State
	routes   map[Ref][]*Resource // by router
	gwRoutes map[Ref][]*Resource // by gateway
}

// NewRouting indexes s's routes by router and gateway routes by gateway.
func NewRouting(s *State) *Routing {
	rt := &Routing{state: s, routes: map[Ref][]*Resource{}, gwRoutes: map[Ref][]*Resource{}}
	for _, r := range s.Resources {
		switch r.Kind {
		case KindRoute:
			if spec := r.Route(); spec != nil {
				ref := Ref{Kind: KindVirtualRouter, Mesh: r.Metadata.Mesh, Name: spec.VirtualRouterName}
				rt.routes[ref] = append(rt.routes[ref], r)
			}
		case KindGatewayRoute:
			if spec := r.GatewayRoute(); spec != nil {
				ref := Ref{Kind: KindVirtualGateway, Mesh: r.Metadata.Mesh, Name: spec.VirtualGatewayName}
				rt.gwRoutes[ref] = append(rt.gwRoutes[ref], r)
			}
		}
	}
	for _, rs := range rt.routes {
		slices.SortFunc(rs, CompareRoutes)
	}
	for _, rs := range rt.gwRoutes {
		slices.SortFunc(rs, CompareGatewayRoutes)
	}
	return rt
}

// State returns the state the index was built from.
func (rt *Routing) State() *State { return rt.state }

// RouterRoutes returns the routes of a virtual router in match order.
func (rt *Routing) RouterRoutes(meshName, router string) []*Resource {
	return rt.routes[Ref{Kind: KindVirtualRouter, Mesh: meshName, Name: router}]
}

// Service resolves a virtual service to its routes. An error names the
// resource and field that stop it from routing (a missing provider, a route
// that cannot compile).
func (rt *Routing) Service(meshName, name string) (*ServiceRoutes, error) {
	ref := Ref{Kind: KindVirtualService, Mesh: meshName, Name: name}
	vs := rt.state.Get(ref)
	if vs == nil {
		return nil, Errorf(ENotFound, "virtual service %s not found in mesh %s", name, meshName)
	}
	spec := vs.VirtualService()
	if spec == nil {
		return nil, fmt.Errorf("%s: spec is %T, want a virtual service spec", ref, vs.Spec)
	}
	out := &ServiceRoutes{Service: vs}
	p := spec.Provider
	switch {
	case p != nil && p.VirtualRouter != nil:
		routerRef := Ref{Kind: KindVirtualRouter, Mesh: meshName, Name: p.VirtualRouter.VirtualRouterName}
		out.Router = rt.state.Get(routerRef)
		if out.Router == nil {
			return nil, fmt.Errorf("%s: spec.provider.virtualRouter: %s does not exist", ref, routerRef)
		}
		for _, r := range rt.routes[routerRef] {
			rule, err := compileRoute(r)
			if err != nil {
				return nil, err
			}
			out.Rules = append(out.Rules, rule)
		}
	case p != nil && p.VirtualNode != nil:
		nodeRef := Ref{Kind: KindVirtualNode, Mesh: meshName, Name: p.VirtualNode.VirtualNodeName}
		if rt.state.Get(nodeRef) == nil {
			return nil, fmt.Errorf("%s: spec.provider.virtualNode: %s does not exist", ref, nodeRef)
		}
		out.Rules = []*RouteRule{{Targets: []WeightedTarget{{VirtualNode: nodeRef.Name, Weight: 100}}, match: &matcher{prefix: "/"}}}
	default:
		return nil, fmt.Errorf("%s: spec.provider: names neither a virtual router nor a virtual node", ref)
	}
	return out, nil
}

// Gateway returns a gateway's routes in match order. A gateway route that
// cannot compile is left out and reported in errs; the others still route.
func (rt *Routing) Gateway(meshName, gateway string) (rules []*GatewayRule, errs []error) {
	for _, r := range rt.gwRoutes[Ref{Kind: KindVirtualGateway, Mesh: meshName, Name: gateway}] {
		g, err := compileGatewayRoute(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rules = append(rules, g)
	}
	return rules, errs
}

// MatchGateway returns the first of rules that takes req, or nil.
func MatchGateway(rules []*GatewayRule, req *Request) *GatewayRule {
	for _, g := range rules {
		if g.Matches(req) {
			return g
		}
	}
	return nil
}

// ---- weights ----

// EffectiveTargets returns the targets that take a share of a route's
// requests, with their weights: those above weight 0 whose node is serving
// (has an endpoint that can take a request). When no weighted target is
// serving, it returns every weighted target as written: there is nothing
// better to send to, and the request fails where the route says it should.
// serving may be nil (every node serves).
func EffectiveTargets(ts []WeightedTarget, serving func(node string) bool) []WeightedTarget {
	out := make([]WeightedTarget, 0, len(ts))
	for _, t := range ts {
		if t.Weight > 0 && (serving == nil || serving(t.VirtualNode)) {
			out = append(out, t)
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, t := range ts {
		if t.Weight > 0 {
			out = append(out, t)
		}
	}
	return out
}

// PickTarget picks one of ts by weight, as EffectiveTargets weighs them:
// only targets whose index ok accepts count (nil: all), unless none does.
// x is a uniformly random number; the result is an index into ts, or -1 when
// no target has a weight.
func PickTarget(ts []WeightedTarget, ok func(i int) bool, x uint64) int {
	total := 0
	for i, t := range ts {
		if t.Weight > 0 && (ok == nil || ok(i)) {
			total += t.Weight
		}
	}
	if total == 0 {
		if ok == nil {
			return -1
		}
		return PickTarget(ts, nil, x)
	}
	n := int(x % uint64(total))
	for i, t := range ts {
		if t.Weight <= 0 || (ok != nil && !ok(i)) {
			continue
		}
		if n < t.Weight {
			return i
		}
		n -= t.Weight
	}
	return -1
}

// ---- names ----

// VersionName names what belongs to one version of a service, its task set
// and, for a deployed version, its virtual node: "<service>-<version>" with
// the version's non-alphanumerics as dashes ("echo-server", "1.0" ->
// "echo-server-1-0").
func VersionName(service, version string) string {
	return service + "-" + VersionSlug(version)
}

// VersionSlug turns a version into a name part: "1.0" -> "1-0"; "" when it
// has no letters or digits.
func VersionSlug(v string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(v) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// RevisionName is the name VersionName falls back to when that name is
// taken: "<service>-<version>-r<revision>".
func RevisionName(service, version string, revision int) string {
	return VersionName(service, version) + "-r" + strconv.Itoa(revision)
}

// ---- endpoints ----

// ServingEndpoints returns the endpoints that serve virtual node vn: in its
// mesh, selected by its service discovery, running, healthy and not
// draining, with an address and a port. A node discovered by DNS has none
// here (its one endpoint is its host name).
func ServingEndpoints(vn *Resource, eps []*Endpoint) []*Endpoint {
	spec := vn.VirtualNode()
	if spec == nil {
		return nil
	}
	sel := spec.ServiceDiscovery.Selector()
	if sel == nil {
		return nil
	}
	var out []*Endpoint
	for _, e := range eps {
		if e != nil && e.Mesh == vn.Metadata.Mesh && e.Matches(sel) && e.Serving() && e.Port > 0 && e.Address != "" {
			out = append(out, e)
		}
	}
	return out
}

// DNSDiscovered reports whether vn's endpoint is a host name rather than
// registered endpoints.
func DNSDiscovered(vn *Resource) bool {
	spec := vn.VirtualNode()
	return spec != nil && spec.ServiceDiscovery != nil && spec.ServiceDiscovery.DNS != nil && spec.ServiceDiscovery.Selector() == nil
}
