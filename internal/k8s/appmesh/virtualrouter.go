package appmesh

import (
	"fmt"
	"strings"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func (c *converter) virtualRouter(vr *v1beta2.VirtualRouter) *Result {
	r, e := c.start(Object{Kind: mesh.KindVirtualRouter, Namespace: vr.Namespace, Name: vr.Name}, vr.Finalizers)
	c.checkMeshRefUID(r, e, vr.Spec.MeshRef)
	spec := &mesh.VirtualRouterSpec{}
	for _, l := range vr.Spec.Listeners {
		spec.Listeners = append(spec.Listeners, mesh.RouterListener{PortMapping: portMapping(l.PortMapping)})
	}
	if len(spec.Listeners) == 0 {
		r.fail("spec.listeners", v1beta2.ReasonInvalidValue, "required: at least one listener")
	}
	if len(r.Errors) > 0 {
		return r.Result // the router is refused, and with it every route
	}
	router := newResource(mesh.KindVirtualRouter, r.Mesh, r.Name, spec)
	if !r.validate(router) {
		return r.Result
	}
	r.Resources = append(r.Resources, router)
	r.Routes = map[string]string{}
	seen := map[string]int{}
	for i := range vr.Spec.Routes {
		rt := &vr.Spec.Routes[i]
		f := fmt.Sprintf("spec.routes[%d]", i)
		// Each route is accepted or refused alone.
		rr := newResult(r.Object)
		res := c.route(rr, e, f, r.Name, spec, rt)
		if j, dup := seen[rt.Name]; dup {
			rr.fail(f+".name", v1beta2.ReasonInvalidValue, "duplicate route name %q (spec.routes[%d])", rt.Name, j)
		}
		seen[rt.Name] = i
		if len(rr.Errors) == 0 {
			res.Metadata.Mesh = r.Mesh
			if rr.validate(res) {
				r.Resources = append(r.Resources, res)
				r.Routes[rt.Name] = res.Metadata.Name
			}
		}
		r.Errors = append(r.Errors, rr.Errors...)
		r.Unhonoured = append(r.Unhonoured, rr.Unhonoured...)
	}
	return r.Result
}

// route converts one inline route into a gmesh Route named ROUTE.ROUTER.
func (c *converter) route(r result, from *entry, f, router string, rs *mesh.VirtualRouterSpec, rt *v1beta2.Route) *mesh.Resource {
	name := strings.ReplaceAll(rt.Name, "_", ".") + "." + router
	if why := mesh.ValidName(mesh.KindRoute, name); why != "" {
		r.fail(f+".name", v1beta2.ReasonInvalidValue, "gmesh route name %q (ROUTE.ROUTER) is not valid (%s): use a shorter route name of lower-case letters, digits, '-' and '.'", name, why)
	}
	spec := &mesh.RouteSpec{VirtualRouterName: router}
	if rt.Priority != nil {
		p := int(*rt.Priority)
		spec.Priority = &p
	}
	n := 0
	if g := rt.GRPCRoute; g != nil {
		n++
		g2 := &mesh.GRPCRoute{
			Match:   mesh.GRPCRouteMatch{ServiceName: deref(g.Match.ServiceName, ""), MethodName: deref(g.Match.MethodName, "")},
			Action:  mesh.RouteAction{WeightedTargets: c.weightedTargets(r, from, f+".grpcRoute.action.weightedTargets", g.Action.WeightedTargets)},
			Timeout: grpcTimeout(g.Timeout),
		}
		for j, m := range g.Match.Metadata {
			g2.Match.Metadata = append(g2.Match.Metadata, metadataMatch(r, fmt.Sprintf("%s.grpcRoute.match.metadata[%d]", f, j), m.Name, m.Invert, metadataMethod(m.Match)))
		}
		matchPort(r, f+".grpcRoute.match.port", g.Match.Port, rs.Listeners)
		if p := g.RetryPolicy; p != nil {
			g2.RetryPolicy = &mesh.GRPCRetryPolicy{
				GRPCRetryEvents: strs(p.GRPCRetryEvents), HTTPRetryEvents: strs(p.HTTPRetryEvents), TCPRetryEvents: strs(p.TCPRetryEvents),
				MaxRetries: int(p.MaxRetries), PerRetryTimeout: duration(p.PerRetryTimeout),
			}
		}
		spec.GRPCRoute = g2
	}
	for _, x := range []struct {
		name string
		h    *v1beta2.HTTPRoute
		out  **mesh.HTTPRoute
	}{{"httpRoute", rt.HTTPRoute, &spec.HTTPRoute}, {"http2Route", rt.HTTP2Route, &spec.HTTP2Route}} {
		if x.h == nil {
			continue
		}
		n++
		g := f + "." + x.name
		h := x.h
		h2 := &mesh.HTTPRoute{
			Match:   mesh.HTTPRouteMatch{Prefix: deref(h.Match.Prefix, ""), Method: deref(h.Match.Method, "")},
			Action:  mesh.RouteAction{WeightedTargets: c.weightedTargets(r, from, g+".action.weightedTargets", h.Action.WeightedTargets)},
			Timeout: httpTimeout(h.Timeout),
		}
		if p := h.Match.Path; p != nil {
			h2.Match.Path = &mesh.HeaderMatch{Exact: deref(p.Exact, ""), Regex: deref(p.Regex, "")}
		}
		for j, hd := range h.Match.Headers {
			h2.Match.Headers = append(h2.Match.Headers, metadataMatch(r, fmt.Sprintf("%s.match.headers[%d]", g, j), hd.Name, hd.Invert, headerMethod(hd.Match)))
		}
		if h.Match.Scheme != nil {
			r.fail(g+".match.scheme", v1beta2.ReasonUnsupported, "gmesh's routes do not match on the scheme; remove it (every request of the listener then matches)")
		}
		if len(h.Match.QueryParameters) > 0 {
			r.fail(g+".match.queryParameters", v1beta2.ReasonUnsupported, "gmesh's routes do not match on query parameters; remove them or match on a header")
		}
		matchPort(r, g+".match.port", h.Match.Port, rs.Listeners)
		if p := h.RetryPolicy; p != nil {
			h2.RetryPolicy = &mesh.HTTPRetryPolicy{
				HTTPRetryEvents: strs(p.HTTPRetryEvents), TCPRetryEvents: strs(p.TCPRetryEvents),
				MaxRetries: int(p.MaxRetries), PerRetryTimeout: duration(p.PerRetryTimeout),
			}
		}
		*x.out = h2
	}
	if rt.TCPRoute != nil {
		n++
		r.fail(f+".tcpRoute", v1beta2.ReasonUnsupported, "proxyless gRPC clients have no TCP routes; use a grpcRoute, httpRoute or http2Route")
	}
	if n != 1 {
		r.fail(f, v1beta2.ReasonInvalidValue, "exactly one of grpcRoute, httpRoute, http2Route, tcpRoute is required, got %d", n)
	}
	return newResource(mesh.KindRoute, "", name, spec)
}

// weightedTargets resolves each target's node and checks App Mesh's
// rules: at least one target, at most 10, weights 0..100, one above 0.
func (c *converter) weightedTargets(r result, from *entry, f string, wts []v1beta2.WeightedTarget) []mesh.WeightedTarget {
	if len(wts) == 0 {
		r.fail(f, v1beta2.ReasonInvalidValue, "required: at least one weighted target")
		return nil
	}
	if len(wts) > mesh.MaxWeightedTargets {
		r.fail(f, v1beta2.ReasonInvalidValue, "at most %d weighted targets, got %d", mesh.MaxWeightedTargets, len(wts))
	}
	var out []mesh.WeightedTarget
	positive := false
	seen := map[string]int{}
	for i, wt := range wts {
		g := fmt.Sprintf("%s[%d]", f, i)
		var node string
		switch {
		case wt.VirtualNodeRef != nil && wt.VirtualNodeARN != nil:
			r.fail(g, v1beta2.ReasonInvalidValue, "exactly one of virtualNodeRef, virtualNodeARN is allowed, got both")
		case wt.VirtualNodeRef != nil:
			node = c.resolveRef(r, g+".virtualNodeRef", mesh.KindVirtualNode, from, wt.VirtualNodeRef.Namespace, wt.VirtualNodeRef.Name)
		case wt.VirtualNodeARN != nil:
			node = c.resolveARN(r, g+".virtualNodeARN", mesh.KindVirtualNode, from, *wt.VirtualNodeARN)
		default:
			r.fail(g, v1beta2.ReasonInvalidValue, "one of virtualNodeRef, virtualNodeARN is required")
		}
		if wt.Weight < 0 || wt.Weight > 100 {
			r.fail(g+".weight", v1beta2.ReasonInvalidValue, "must be 0..100, got %d", wt.Weight)
		}
		positive = positive || wt.Weight > 0
		if node != "" {
			if j, dup := seen[node]; dup {
				r.fail(g, v1beta2.ReasonInvalidValue, "duplicate target: virtual node %q is already %s[%d]", node, f, j)
			}
			seen[node] = i
		}
		t := mesh.WeightedTarget{VirtualNode: node, Weight: int(wt.Weight)}
		if wt.Port != nil {
			t.Port = int(*wt.Port)
		}
		out = append(out, t)
	}
	if !positive {
		r.fail(f, v1beta2.ReasonInvalidValue, "weights are all 0: at least one target needs a weight above 0")
	}
	return out
}

// matchPort accepts a match on the router's only listener port (every
// request matches it) and refuses any other: gmesh's routes do not match
// on ports.
func matchPort(r result, field string, port *int64, ls []mesh.RouterListener) {
	if port == nil {
		return
	}
	if len(ls) == 1 && int64(ls[0].PortMapping.Port) == *port {
		return
	}
	r.fail(field, v1beta2.ReasonUnsupported, "gmesh's routes do not match on the listener port; a port match is accepted only when it is the router's single listener port")
}

// matchMethod is a header or metadata match method, whichever type.
type matchMethod struct {
	exact, prefix, regex, suffix *string
	ranged                       bool
}

func headerMethod(m *v1beta2.HeaderMatchMethod) *matchMethod {
	if m == nil {
		return nil
	}
	return &matchMethod{exact: m.Exact, prefix: m.Prefix, regex: m.Regex, suffix: m.Suffix, ranged: m.Range != nil}
}

func metadataMethod(m *v1beta2.GRPCRouteMetadataMatchMethod) *matchMethod {
	if m == nil {
		return nil
	}
	return &matchMethod{exact: m.Exact, prefix: m.Prefix, regex: m.Regex, suffix: m.Suffix, ranged: m.Range != nil}
}

func metadataMatch(r result, f, name string, invert *bool, m *matchMethod) mesh.MetadataMatch {
	mm := mesh.MetadataMatch{Name: name, Invert: invert != nil && *invert}
	if m == nil {
		return mm
	}
	if m.ranged {
		r.fail(f+".match.range", v1beta2.ReasonUnsupported, "gmesh's routes do not match on integer ranges; use exact, prefix, suffix or regex")
	}
	mm.Match = &mesh.HeaderMatch{Exact: deref(m.exact, ""), Prefix: deref(m.prefix, ""), Regex: deref(m.regex, ""), Suffix: deref(m.suffix, "")}
	if *mm.Match == (mesh.HeaderMatch{}) {
		mm.Match = nil
	}
	return mm
}

func strs[S ~string](in []S) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}
