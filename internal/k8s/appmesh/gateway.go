package appmesh

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func (c *converter) virtualService(vs *v1beta2.VirtualService) *Result {
	r, e := c.start(Object{Kind: mesh.KindVirtualService, Namespace: vs.Namespace, Name: vs.Name}, vs.Finalizers)
	c.checkMeshRefUID(r, e, vs.Spec.MeshRef)
	spec := &mesh.VirtualServiceSpec{}
	p := vs.Spec.Provider
	switch {
	case p == nil || (p.VirtualNode == nil && p.VirtualRouter == nil):
		r.fail("spec.provider", v1beta2.ReasonInvalidValue, "required by gmesh: a virtualRouter or a virtualNode that serves the service")
	case p.VirtualNode != nil && p.VirtualRouter != nil:
		r.fail("spec.provider", v1beta2.ReasonInvalidValue, "exactly one of virtualNode, virtualRouter is allowed, got both")
	case p.VirtualRouter != nil:
		var name string
		switch pr := p.VirtualRouter; {
		case pr.VirtualRouterRef != nil && pr.VirtualRouterARN != nil:
			r.fail("spec.provider.virtualRouter", v1beta2.ReasonInvalidValue, "exactly one of virtualRouterRef, virtualRouterARN is allowed, got both")
		case pr.VirtualRouterRef != nil:
			name = c.resolveRef(r, "spec.provider.virtualRouter.virtualRouterRef", mesh.KindVirtualRouter, e, pr.VirtualRouterRef.Namespace, pr.VirtualRouterRef.Name)
		case pr.VirtualRouterARN != nil:
			name = c.resolveARN(r, "spec.provider.virtualRouter.virtualRouterARN", mesh.KindVirtualRouter, e, *pr.VirtualRouterARN)
		default:
			r.fail("spec.provider.virtualRouter", v1beta2.ReasonInvalidValue, "one of virtualRouterRef, virtualRouterARN is required")
		}
		spec.Provider = &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: name}}
	default:
		var name string
		switch pn := p.VirtualNode; {
		case pn.VirtualNodeRef != nil && pn.VirtualNodeARN != nil:
			r.fail("spec.provider.virtualNode", v1beta2.ReasonInvalidValue, "exactly one of virtualNodeRef, virtualNodeARN is allowed, got both")
		case pn.VirtualNodeRef != nil:
			name = c.resolveRef(r, "spec.provider.virtualNode.virtualNodeRef", mesh.KindVirtualNode, e, pn.VirtualNodeRef.Namespace, pn.VirtualNodeRef.Name)
		case pn.VirtualNodeARN != nil:
			name = c.resolveARN(r, "spec.provider.virtualNode.virtualNodeARN", mesh.KindVirtualNode, e, *pn.VirtualNodeARN)
		default:
			r.fail("spec.provider.virtualNode", v1beta2.ReasonInvalidValue, "one of virtualNodeRef, virtualNodeARN is required")
		}
		spec.Provider = &mesh.VirtualServiceProvider{VirtualNode: &mesh.ProviderRef{VirtualNodeName: name}}
	}
	if len(r.Errors) == 0 {
		res := newResource(mesh.KindVirtualService, r.Mesh, r.Name, spec)
		if r.validate(res) {
			r.Resources = append(r.Resources, res)
		}
	}
	return r.Result
}

func (c *converter) virtualGateway(vg *v1beta2.VirtualGateway) *Result {
	r, e := c.start(Object{Kind: mesh.KindVirtualGateway, Namespace: vg.Namespace, Name: vg.Name}, vg.Finalizers)
	c.checkMeshRefUID(r, e, vg.Spec.MeshRef)
	// The gateway runs in pods: it listens on the pod's addresses, not on
	// gmesh's local default 127.0.0.1.
	spec := &mesh.VirtualGatewaySpec{Address: "0.0.0.0"}
	for i, l := range vg.Spec.Listeners {
		f := fmt.Sprintf("spec.listeners[%d]", i)
		gl := mesh.GatewayListener{PortMapping: mesh.PortMapping{Port: int(l.PortMapping.Port), Protocol: string(l.PortMapping.Protocol)}}
		if hc := l.HealthCheck; hc != nil {
			gl.HealthCheck = healthCheck(hc.Protocol, hc.Path, hc.Port, hc.IntervalMillis, hc.TimeoutMillis, hc.HealthyThreshold, hc.UnhealthyThreshold)
			r.report(f+".healthCheck", "%s", whyHealthCheck)
		}
		if l.ConnectionPool != nil {
			r.report(f+".connectionPool", "an Envoy setting: gmesh's gateway does not cap its upstream connections or requests")
		}
		if tls := l.TLS; tls != nil {
			gatewayListenerTLS(r, f+".tls", string(tls.Mode))
		}
		spec.Listeners = append(spec.Listeners, gl)
	}
	if len(spec.Listeners) == 0 {
		r.fail("spec.listeners", v1beta2.ReasonInvalidValue, "required by gmesh: at least one listener")
	}
	for _, s := range []struct {
		field string
		sel   *metav1.LabelSelector
	}{{"spec.namespaceSelector", vg.Spec.NamespaceSelector}, {"spec.podSelector", vg.Spec.PodSelector}, {"spec.gatewayRouteSelector", vg.Spec.GatewayRouteSelector}} {
		if s.sel == nil {
			continue
		}
		if _, err := metav1.LabelSelectorAsSelector(s.sel); err != nil {
			r.fail(s.field, v1beta2.ReasonInvalidValue, "%v", err)
		}
	}
	if vg.Spec.Logging != nil {
		r.report("spec.logging", "%s", whyLogging)
	}
	if bd := vg.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil && bd.ClientPolicy.TLS != nil {
		gatewayClientTLS(r, "spec.backendDefaults.clientPolicy.tls", bd.ClientPolicy.TLS.Enforce)
	}
	if len(r.Errors) == 0 {
		res := newResource(mesh.KindVirtualGateway, r.Mesh, r.Name, spec)
		if r.validate(res) {
			r.Resources = append(r.Resources, res)
		}
	}
	return r.Result
}

// gatewayOf finds a gateway route's VirtualGateway: the one its
// virtualGatewayRef names, else the one whose namespaceSelector selects the
// route's namespace and whose gatewayRouteSelector (absent: all) selects
// its labels.
func (c *converter) gatewayOf(r result, gr *v1beta2.GatewayRoute) *entry {
	if ref := gr.Spec.VirtualGatewayRef; ref != nil {
		o := Object{Kind: mesh.KindVirtualGateway, Namespace: deref(ref.Namespace, gr.Namespace), Name: ref.Name}
		e, ok := c.entries[o]
		if !ok {
			r.fail("spec.virtualGatewayRef", v1beta2.ReasonDanglingRef, "%s not found", o)
			return nil
		}
		return e
	}
	nsLabels := c.in.NamespaceLabels[gr.Namespace]
	var found []*v1beta2.VirtualGateway
	for _, vg := range c.gateways {
		inNS, err1 := selects(vg.Spec.NamespaceSelector, nsLabels, false)
		ours, err2 := selects(vg.Spec.GatewayRouteSelector, gr.Labels, true)
		if err1 == nil && err2 == nil && inNS && ours {
			found = append(found, vg)
		}
	}
	switch len(found) {
	case 0:
		r.fail("metadata.labels", v1beta2.ReasonDanglingRef, "no virtual gateway selects this route: a VirtualGateway's spec.namespaceSelector must select namespace %q and its spec.gatewayRouteSelector (absent: every route) the route's labels; or set spec.virtualGatewayRef", gr.Namespace)
		return nil
	case 1:
		return c.entries[Object{Kind: mesh.KindVirtualGateway, Namespace: found[0].Namespace, Name: found[0].Name}]
	}
	names := make([]string, len(found))
	for i, vg := range found {
		names[i] = vg.Namespace + "/" + vg.Name
	}
	r.fail("metadata.labels", v1beta2.ReasonDanglingRef, "several virtual gateways select this route (%s): narrow their selectors, or set spec.virtualGatewayRef", strings.Join(names, ", "))
	return nil
}

func (c *converter) gatewayRoute(gr *v1beta2.GatewayRoute) *Result {
	r, e := c.start(Object{Kind: mesh.KindGatewayRoute, Namespace: gr.Namespace, Name: gr.Name}, gr.Finalizers)
	gw := c.gatewayOf(r, gr)
	if gw != nil {
		// The route is in its gateway's mesh.
		e.meshObj, e.meshErr = gw.meshObj, gw.meshErr
		switch {
		case gw.meshErr != nil:
			r.fail("spec.virtualGatewayRef", v1beta2.ReasonNoMesh, "its virtual gateway %s belongs to no mesh", gw.obj)
		case c.meshName(gw.meshObj) == "":
			r.fail("spec.virtualGatewayRef", v1beta2.ReasonNoMesh, "its mesh %q is refused", gw.meshObj.Name)
		default:
			r.Mesh = c.meshName(gw.meshObj)
		}
		if ref := gr.Spec.MeshRef; ref != nil && gw.meshObj != nil && ref.Name != gw.meshObj.Name {
			r.fail("spec.meshRef.name", v1beta2.ReasonNoMesh, "mesh %q is not its gateway's mesh %q", ref.Name, gw.meshObj.Name)
		}
		c.checkMeshRefUID(r, e, gr.Spec.MeshRef)
		if gw.name == "" {
			r.fail("spec.virtualGatewayRef", v1beta2.ReasonDanglingRef, "its virtual gateway %s has no valid gmesh name (it is refused)", gw.obj)
		}
		r.VirtualGateway = gw.name
	}
	spec := &mesh.GatewayRouteSpec{VirtualGatewayName: r.VirtualGateway}
	if gr.Spec.Priority != nil {
		p := int(*gr.Spec.Priority)
		spec.Priority = &p
	}
	n := 0
	if g := gr.Spec.GRPCRoute; g != nil {
		n++
		f := "spec.grpcRoute"
		gm := mesh.GatewayGRPCMatch{ServiceName: deref(g.Match.ServiceName, ""), Hostname: hostnameMatch(g.Match.Hostname)}
		for j, m := range g.Match.Metadata {
			gm.Metadata = append(gm.Metadata, metadataMatch(r, fmt.Sprintf("%s.match.metadata[%d]", f, j), deref(m.Name, ""), m.Invert, metadataMethod(m.Match)))
		}
		if g.Match.Port != nil {
			gm.Port = int(*g.Match.Port)
		}
		ga := mesh.GatewayGRPCRouteAction{Target: c.gatewayTarget(r, e, f+".action.target", g.Action.Target)}
		if rw := g.Action.Rewrite; rw != nil && rw.Hostname != nil {
			ga.Rewrite = &mesh.GatewayGRPCRewrite{Hostname: hostnameRewrite(rw.Hostname)}
		}
		spec.GRPCRoute = &mesh.GatewayGRPCRoute{Match: gm, Action: ga}
	}
	for _, x := range []struct {
		name string
		h    *v1beta2.HTTPGatewayRoute
		out  **mesh.GatewayHTTPRoute
	}{{"httpRoute", gr.Spec.HTTPRoute, &spec.HTTPRoute}, {"http2Route", gr.Spec.HTTP2Route, &spec.HTTP2Route}} {
		if x.h == nil {
			continue
		}
		n++
		f := "spec." + x.name
		h := x.h
		hm := mesh.GatewayHTTPMatch{Prefix: deref(h.Match.Prefix, ""), Method: deref(h.Match.Method, ""), Hostname: hostnameMatch(h.Match.Hostname)}
		if p := h.Match.Path; p != nil {
			hm.Path = &mesh.HeaderMatch{Exact: deref(p.Exact, ""), Regex: deref(p.Regex, "")}
		}
		if hm.Prefix == "" && hm.Path == nil {
			// App Mesh let a route match on the host name alone: every
			// path of that host, which is prefix / (and its default
			// rewrite of / to / changes nothing).
			hm.Prefix = "/"
		}
		for j, hd := range h.Match.Headers {
			hm.Headers = append(hm.Headers, metadataMatch(r, fmt.Sprintf("%s.match.headers[%d]", f, j), hd.Name, hd.Invert, headerMethod(hd.Match)))
		}
		for _, q := range h.Match.QueryParameters {
			qm := mesh.QueryParameterMatch{Name: deref(q.Name, "")}
			if q.Match != nil {
				qm.Match = &mesh.QueryMatch{Exact: deref(q.Match.Exact, "")}
			}
			hm.QueryParameters = append(hm.QueryParameters, qm)
		}
		if h.Match.Port != nil {
			hm.Port = int(*h.Match.Port)
		}
		ha := mesh.GatewayHTTPRouteAction{Target: c.gatewayTarget(r, e, f+".action.target", h.Action.Target)}
		if rw := h.Action.Rewrite; rw != nil {
			mr := &mesh.GatewayHTTPRewrite{Hostname: hostnameRewrite(rw.Hostname)}
			if p := rw.Prefix; p != nil {
				mr.Prefix = &mesh.PrefixRewrite{DefaultPrefix: deref(p.DefaultPrefix, ""), Value: deref(p.Value, "")}
			}
			if p := rw.Path; p != nil {
				mr.Path = &mesh.PathRewrite{Exact: deref(p.Exact, "")}
			}
			ha.Rewrite = mr
		}
		*x.out = &mesh.GatewayHTTPRoute{Match: hm, Action: ha}
	}
	if n != 1 {
		r.fail("spec", v1beta2.ReasonInvalidValue, "exactly one of grpcRoute, httpRoute, http2Route is required, got %d", n)
	}
	if len(r.Errors) == 0 {
		res := newResource(mesh.KindGatewayRoute, r.Mesh, r.Name, spec)
		if r.validate(res) {
			r.Resources = append(r.Resources, res)
		}
	}
	return r.Result
}

func (c *converter) gatewayTarget(r result, from *entry, f string, t v1beta2.GatewayRouteTarget) mesh.GatewayTarget {
	var mt mesh.GatewayTarget
	if t.Port != nil {
		mt.Port = int(*t.Port)
	}
	vs := t.VirtualService
	switch {
	case vs.VirtualServiceRef != nil && vs.VirtualServiceARN != nil:
		r.fail(f+".virtualService", v1beta2.ReasonInvalidValue, "exactly one of virtualServiceRef, virtualServiceARN is allowed, got both")
	case vs.VirtualServiceRef != nil:
		if from.meshObj != nil { // else the route's mesh is unknown: already failed
			mt.VirtualService.VirtualServiceName = c.resolveRef(r, f+".virtualService.virtualServiceRef", mesh.KindVirtualService, from, vs.VirtualServiceRef.Namespace, vs.VirtualServiceRef.Name)
		}
	case vs.VirtualServiceARN != nil:
		mt.VirtualService.VirtualServiceName = c.resolveARN(r, f+".virtualService.virtualServiceARN", mesh.KindVirtualService, from, *vs.VirtualServiceARN)
	default:
		r.fail(f+".virtualService", v1beta2.ReasonInvalidValue, "one of virtualServiceRef, virtualServiceARN is required")
	}
	return mt
}

func hostnameMatch(h *v1beta2.GatewayRouteHostnameMatch) *mesh.HostnameMatch {
	if h == nil {
		return nil
	}
	return &mesh.HostnameMatch{Exact: deref(h.Exact, ""), Suffix: deref(h.Suffix, "")}
}

func hostnameRewrite(h *v1beta2.GatewayRouteHostnameRewrite) *mesh.HostnameRewrite {
	if h == nil {
		return nil
	}
	return &mesh.HostnameRewrite{DefaultTargetHostname: deref(h.DefaultTargetHostname, "")}
}
