package xds

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// routeConfig builds a virtual service's route configuration: one virtual
// host (domains: the service name and "*") whose routes come from the
// providing router's routes in priority order, or a single catch-all route
// to the providing node.
func (t *translator) routeConfig(vs *mesh.Resource) (*routepb.RouteConfiguration, error) {
	meshName := vs.Metadata.Mesh
	vh := &routepb.VirtualHost{
		Name:    vs.Metadata.Name,
		Domains: []string{vs.Metadata.Name, "*"},
	}
	sr, err := t.routing.Service(meshName, vs.Metadata.Name)
	if err != nil {
		return nil, err
	}
	if sr.Router == nil {
		// A virtual node provides the service: one catch-all route to it.
		node := sr.Rules[0].Targets[0].VirtualNode
		nodeRef := mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: node}
		rt := &routepb.Route{
			Name:  node,
			Match: &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routepb.Route_Route{Route: &routepb.RouteAction{
				ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: ClusterName(meshName, node)},
			}},
		}
		if err := applyTimeout(rt.GetRoute(), nodeTimeout(t.byRef[nodeRef])); err != nil {
			return nil, fmt.Errorf("%s: spec.listeners[0].timeout: %w", nodeRef, err)
		}
		vh.Routes = append(vh.Routes, rt)
	} else {
		vh.Routes = append(vh.Routes, pinRoutes(meshName, sr.Nodes())...)
		for _, rule := range sr.Rules {
			rt, err := t.route(rule)
			if err != nil {
				return nil, err
			}
			vh.Routes = append(vh.Routes, rt)
		}
	}
	return &routepb.RouteConfiguration{
		Name:         RouteConfigName(meshName, vs.Metadata.Name),
		VirtualHosts: []*routepb.VirtualHost{vh},
	}, nil
}

// PinHeader is the request header (gRPC metadata) that sends a call to one
// virtual node of a router, whatever the weights: "x-gmesh-virtual-node:
// echo-server-1-0" reaches version 1.0 even at weight 0.
const PinHeader = "x-gmesh-virtual-node"

// pinRoutes returns, for every virtual node the router's routes target (at
// any weight, 0 included), a route matching PinHeader with the node's name.
// Besides letting a caller try a version before it gets weight, they keep
// every target's cluster referenced, so grpc-go stays subscribed to a weight-0
// cluster with its connections up. Without them, a weight change from 0
// makes grpc-go add the cluster while the new route is already picking it,
// and calls fail with "unknown cluster selected for RPC" in between
// (measured with grpc-go 1.85).
func pinRoutes(meshName string, nodes []string) []*routepb.Route {
	out := make([]*routepb.Route, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, &routepb.Route{
			Name: "pin/" + n,
			Match: &routepb.RouteMatch{
				PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routepb.HeaderMatcher{{
					Name:                 PinHeader,
					HeaderMatchSpecifier: exactHeader(n),
				}},
			},
			Action: &routepb.Route_Route{Route: &routepb.RouteAction{
				ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: ClusterName(meshName, n)},
			}},
		})
	}
	return out
}

// nodeTimeout is the grpc (else http2, http) per-request timeout of the
// node's first listener, used for a service the node provides directly.
func nodeTimeout(vn *mesh.Resource) *mesh.RouteTimeout {
	spec, ok := vn.Spec.(*mesh.VirtualNodeSpec)
	if !ok || spec == nil || len(spec.Listeners) == 0 || spec.Listeners[0].Timeout == nil {
		return nil
	}
	lt := spec.Listeners[0].Timeout
	return cmp.Or(lt.GRPC, lt.HTTP2, lt.HTTP)
}

// route translates one route of a virtual service.
func (t *translator) route(rule *mesh.RouteRule) (*routepb.Route, error) {
	r := rule.Route
	spec, ok := r.Spec.(*mesh.RouteSpec)
	if !ok || spec == nil {
		return nil, fmt.Errorf("%s: spec is %T, want *mesh.RouteSpec", r.Ref(), r.Spec)
	}
	rt := &routepb.Route{Name: r.Metadata.Name}
	var (
		action  mesh.RouteAction
		timeout *mesh.RouteTimeout
		retry   *routepb.RetryPolicy
		field   string
		err     error
	)
	switch {
	case spec.GRPCRoute != nil:
		g := spec.GRPCRoute
		field = "spec.grpcRoute"
		rt.Match, err = grpcMatch(g.Match)
		if err != nil {
			return nil, fmt.Errorf("%s: %s.match: %w", r.Ref(), field, err)
		}
		action, timeout = g.Action, g.Timeout
		if p := g.RetryPolicy; p != nil {
			events := slices.Concat(g.RetryPolicy.GRPCRetryEvents, httpRetryOn(p.HTTPRetryEvents), tcpRetryOn(p.TCPRetryEvents))
			retry, err = retryPolicy(events, p.MaxRetries, p.PerRetryTimeout)
		}
	case spec.HTTP2Route != nil || spec.HTTPRoute != nil:
		h, f := spec.HTTP2Route, "spec.http2Route"
		if h == nil {
			h, f = spec.HTTPRoute, "spec.httpRoute"
		}
		field = f
		rt.Match, err = httpMatch(h.Match)
		if err != nil {
			return nil, fmt.Errorf("%s: %s.match: %w", r.Ref(), field, err)
		}
		action, timeout = h.Action, h.Timeout
		if p := h.RetryPolicy; p != nil {
			retry, err = retryPolicy(slices.Concat(httpRetryOn(p.HTTPRetryEvents), tcpRetryOn(p.TCPRetryEvents)), p.MaxRetries, p.PerRetryTimeout)
		}
	default:
		return nil, fmt.Errorf("%s: spec: needs one of grpcRoute, httpRoute, http2Route", r.Ref())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s.retryPolicy: %w", r.Ref(), field, err)
	}
	ra, err := t.routeAction(r.Metadata.Mesh, action.WeightedTargets)
	if err != nil {
		return nil, fmt.Errorf("%s: %s.action: %w", r.Ref(), field, err)
	}
	ra.RetryPolicy = retry
	if err := applyTimeout(ra, timeout); err != nil {
		return nil, fmt.Errorf("%s: %s.timeout: %w", r.Ref(), field, err)
	}
	rt.Action = &routepb.Route_Route{Route: ra}
	return rt, nil
}

// routeAction splits by weight across the route's effective targets
// (mesh.EffectiveTargets: weight above 0 and serving, unless none serves).
// Weight-0 targets are left out: grpc-go does not subscribe to a weight-0
// cluster (the pin routes keep it subscribed), and Envoy would never pick
// it. A single remaining target becomes a plain cluster action.
func (t *translator) routeAction(meshName string, targets []mesh.WeightedTarget) (*routepb.RouteAction, error) {
	for i, wt := range targets {
		ref := mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: wt.VirtualNode}
		if _, ok := t.byRef[ref]; !ok {
			return nil, fmt.Errorf("weightedTargets[%d].virtualNode: %s does not exist", i, ref)
		}
		if wt.Weight < 0 || wt.Weight > 100 {
			return nil, fmt.Errorf("weightedTargets[%d].weight %d: must be 0..100", i, wt.Weight)
		}
	}
	eff := mesh.EffectiveTargets(targets, t.serves(meshName))
	ra, err := t.weightedAction(meshName, eff, t.hold)
	if err == nil || len(t.hold) == 0 {
		return ra, err
	}
	// The hold left no weight: serve the route as asked.
	return t.weightedAction(meshName, eff, nil)
}

func (t *translator) weightedAction(meshName string, targets []mesh.WeightedTarget, hold map[string]bool) (*routepb.RouteAction, error) {
	var wcs []*routepb.WeightedCluster_ClusterWeight
	for _, wt := range targets {
		if wt.Weight == 0 || hold[ClusterName(meshName, wt.VirtualNode)] {
			continue
		}
		wcs = append(wcs, &routepb.WeightedCluster_ClusterWeight{
			Name:   ClusterName(meshName, wt.VirtualNode),
			Weight: wrapperspb.UInt32(uint32(wt.Weight)),
		})
	}
	switch len(wcs) {
	case 0:
		return nil, fmt.Errorf("weightedTargets: no target has a weight above 0")
	case 1:
		return &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: wcs[0].GetName()}}, nil
	}
	return &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_WeightedClusters{
		WeightedClusters: &routepb.WeightedCluster{Clusters: wcs},
	}}, nil
}

// routeClusters lists the clusters a route may send to.
func routeClusters(rt *routepb.Route) []string {
	ra := rt.GetRoute()
	if c := ra.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, wc := range ra.GetWeightedClusters().GetClusters() {
		out = append(out, wc.GetName())
	}
	return out
}

// grpcMatch: a service name matches the path prefix "/<service>/", a method
// the exact path "/<service>/<method>"; metadata become header matchers.
func grpcMatch(m mesh.GRPCRouteMatch) (*routepb.RouteMatch, error) {
	rm := &routepb.RouteMatch{}
	switch {
	case m.ServiceName != "" && m.MethodName != "":
		rm.PathSpecifier = &routepb.RouteMatch_Path{Path: "/" + m.ServiceName + "/" + m.MethodName}
	case m.ServiceName != "":
		rm.PathSpecifier = &routepb.RouteMatch_Prefix{Prefix: "/" + m.ServiceName + "/"}
	case m.MethodName != "":
		return nil, fmt.Errorf("methodName %q: needs serviceName", m.MethodName)
	default:
		rm.PathSpecifier = &routepb.RouteMatch_Prefix{Prefix: "/"}
	}
	hs, err := headerMatchers("metadata", m.Metadata)
	if err != nil {
		return nil, err
	}
	rm.Headers = hs
	return rm, nil
}

// httpMatch: prefix, exact or regex path, method and headers.
func httpMatch(m mesh.HTTPRouteMatch) (*routepb.RouteMatch, error) {
	rm := &routepb.RouteMatch{}
	switch {
	case m.Path != nil && m.Path.Exact != "":
		rm.PathSpecifier = &routepb.RouteMatch_Path{Path: m.Path.Exact}
	case m.Path != nil && m.Path.Regex != "":
		rm.PathSpecifier = &routepb.RouteMatch_SafeRegex{SafeRegex: &matcherpb.RegexMatcher{Regex: m.Path.Regex}}
	case m.Path != nil:
		return nil, fmt.Errorf("path: needs exact or regex")
	case m.Prefix != "":
		rm.PathSpecifier = &routepb.RouteMatch_Prefix{Prefix: m.Prefix}
	default:
		rm.PathSpecifier = &routepb.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, &routepb.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: exactHeader(strings.ToUpper(m.Method)),
		})
	}
	hs, err := headerMatchers("headers", m.Headers)
	if err != nil {
		return nil, err
	}
	rm.Headers = append(rm.Headers, hs...)
	return rm, nil
}

// Header matchers use HeaderMatcher's older value fields (exact_match,
// prefix_match, suffix_match, safe_regex_match), which every gRPC release
// with xDS reads, rather than string_match, which releases before grpc-go
// and C core 1.56, grpc-java 1.53 and grpc-js-xds 1.9 do not: they NACK the
// whole route configuration for it (seen with Debian 12's python3-grpcio
// 1.51), fail every call and hold every rollout. Envoy reads both.

// exactHeader matches a header's exact value.
func exactHeader(v string) *routepb.HeaderMatcher_ExactMatch {
	return &routepb.HeaderMatcher_ExactMatch{ExactMatch: v}
}

func headerMatchers(field string, ms []mesh.MetadataMatch) ([]*routepb.HeaderMatcher, error) {
	var out []*routepb.HeaderMatcher
	for i, m := range ms {
		if m.Name == "" {
			return nil, fmt.Errorf("%s[%d].name: required", field, i)
		}
		hm := &routepb.HeaderMatcher{Name: strings.ToLower(m.Name), InvertMatch: m.Invert}
		switch hmt := m.Match; {
		case hmt == nil:
			hm.HeaderMatchSpecifier = &routepb.HeaderMatcher_PresentMatch{PresentMatch: true}
		case hmt.Exact != "":
			hm.HeaderMatchSpecifier = exactHeader(hmt.Exact)
		case hmt.Prefix != "":
			hm.HeaderMatchSpecifier = &routepb.HeaderMatcher_PrefixMatch{PrefixMatch: hmt.Prefix}
		case hmt.Suffix != "":
			hm.HeaderMatchSpecifier = &routepb.HeaderMatcher_SuffixMatch{SuffixMatch: hmt.Suffix}
		case hmt.Regex != "":
			hm.HeaderMatchSpecifier = &routepb.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherpb.RegexMatcher{Regex: hmt.Regex}}
		default:
			return nil, fmt.Errorf("%s[%d].match: needs exact, prefix, suffix or regex", field, i)
		}
		out = append(out, hm)
	}
	return out, nil
}

// retryPolicy: retry_on lists Envoy/gRPC event names (App Mesh's gRPC events
// are spelled as Envoy's, and grpc-go honours exactly those five). App Mesh
// allows maxRetries 0, meaning no retries; grpc-go rejects num_retries 0, so
// no policy is emitted then.
func retryPolicy(events []string, maxRetries int, perTry mesh.Duration) (*routepb.RetryPolicy, error) {
	if maxRetries < 0 {
		return nil, fmt.Errorf("maxRetries %d: must not be negative", maxRetries)
	}
	if maxRetries == 0 || len(events) == 0 {
		return nil, nil
	}
	rp := &routepb.RetryPolicy{
		RetryOn:    strings.Join(events, ","),
		NumRetries: wrapperspb.UInt32(uint32(maxRetries)),
	}
	if perTry.Unit != "" || perTry.Value != 0 {
		d, err := duration(perTry)
		if err != nil {
			return nil, fmt.Errorf("perRetryTimeout: %w", err)
		}
		if d > 0 {
			rp.PerTryTimeout = durationpb.New(d)
		}
	}
	return rp, nil
}

// httpRetryOn maps App Mesh's HTTP retry events to Envoy's retry_on values.
func httpRetryOn(events []string) []string {
	var out []string
	for _, e := range events {
		switch e {
		case "server-error":
			out = append(out, "5xx")
		case "gateway-error":
			out = append(out, "gateway-error")
		case "client-error":
			out = append(out, "retriable-4xx")
		case "stream-error":
			out = append(out, "reset")
		default:
			out = append(out, e)
		}
	}
	return out
}

// tcpRetryOn maps App Mesh's TCP retry events (connection-error).
func tcpRetryOn(events []string) []string {
	var out []string
	for _, e := range events {
		if e == "connection-error" {
			out = append(out, "connect-failure")
			continue
		}
		out = append(out, e)
	}
	return out
}

// applyTimeout sets a per-request timeout as both Envoy's route timeout and
// max_stream_duration (which grpc-go honours as the call deadline), and the
// idle timeout (Envoy only).
func applyTimeout(ra *routepb.RouteAction, t *mesh.RouteTimeout) error {
	if t == nil {
		return nil
	}
	if t.PerRequest != nil {
		d, err := duration(*t.PerRequest)
		if err != nil {
			return fmt.Errorf("perRequest: %w", err)
		}
		ra.Timeout = durationpb.New(d)
		ra.MaxStreamDuration = &routepb.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d)}
	}
	if t.Idle != nil {
		d, err := duration(*t.Idle)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		ra.IdleTimeout = durationpb.New(d)
	}
	return nil
}
