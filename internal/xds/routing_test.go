package xds_test

import (
	"regexp"
	"strings"
	"testing"

	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/mesh/meshtest"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// TestRoutingCases asks the shared routing table of the xDS translation: it
// translates each case and evaluates the route configuration a client of
// the service receives, as grpc-go does (first matching route in order; a
// header that is absent never matches a value).
func TestRoutingCases(t *testing.T) {
	for _, c := range meshtest.RoutingCases() {
		if c.GatewayOnly {
			continue // gateway routes are the gateway's (internal/gateway)
		}
		t.Run(c.Name, func(t *testing.T) {
			var eps []*mesh.Endpoint
			for i, n := range meshtest.Nodes {
				if c.IsServing(n) {
					eps = append(eps, meshtest.Endpoint(n, n+"-1", "127.0.0.1", 9000+i))
				}
			}
			out, err := xds.Translate(xds.Input{Revision: 1, Resources: c.Resources, Endpoints: eps})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			var rc *routepb.RouteConfiguration
			for _, r := range out.Routes {
				if r.GetName() == xds.RouteConfigName(meshtest.Mesh, meshtest.Service) {
					rc = r
				}
			}
			if rc == nil {
				t.Fatalf("no route configuration for %s", meshtest.Service)
			}
			if diff := cmp.Diff(shares(c.Want), shares(evaluate(t, rc, c.Request))); diff != "" {
				t.Errorf("shares (-want +got):\n%s", diff)
			}
		})
	}
}

// evaluate returns the nodes and weights of the first route of rc that
// matches req, or nil.
func evaluate(t *testing.T, rc *routepb.RouteConfiguration, req mesh.Request) map[string]int {
	t.Helper()
	for _, rt := range rc.GetVirtualHosts()[0].GetRoutes() {
		if !routeMatches(t, rt.GetMatch(), req) {
			continue
		}
		node := func(cluster string) string { return strings.TrimPrefix(cluster, meshtest.Mesh+"/") }
		ra := rt.GetRoute()
		if c := ra.GetCluster(); c != "" {
			return map[string]int{node(c): 100}
		}
		out := map[string]int{}
		for _, wc := range ra.GetWeightedClusters().GetClusters() {
			out[node(wc.GetName())] = int(wc.GetWeight().GetValue())
		}
		return out
	}
	return nil
}

// shares turns weights into percentages of their total (a route with one
// cluster left is a plain cluster action: 100%).
func shares(w map[string]int) map[string]int {
	if w == nil {
		return nil
	}
	total := 0
	for _, v := range w {
		total += v
	}
	out := map[string]int{}
	for k, v := range w {
		out[k] = v * 100 / total
	}
	return out
}

func routeMatches(t *testing.T, m *routepb.RouteMatch, req mesh.Request) bool {
	switch {
	case m.GetPath() != "":
		if req.Path != m.GetPath() {
			return false
		}
	case m.GetSafeRegex() != nil:
		if !regexp.MustCompile("^(?:" + m.GetSafeRegex().GetRegex() + ")$").MatchString(req.Path) {
			return false
		}
	default:
		if !strings.HasPrefix(req.Path, m.GetPrefix()) {
			return false
		}
	}
	for _, h := range m.GetHeaders() {
		var vs []string
		if h.GetName() == ":method" {
			vs = []string{req.Method}
		} else {
			vs = req.Header.Values(h.GetName())
		}
		if _, ok := h.GetHeaderMatchSpecifier().(*routepb.HeaderMatcher_PresentMatch); ok {
			if (len(vs) > 0) == h.GetInvertMatch() {
				return false
			}
			continue
		}
		if len(vs) == 0 {
			return false
		}
		v := strings.Join(vs, ",")
		var ok bool
		switch p := h.GetHeaderMatchSpecifier().(type) {
		case *routepb.HeaderMatcher_ExactMatch:
			ok = v == p.ExactMatch
		case *routepb.HeaderMatcher_PrefixMatch:
			ok = strings.HasPrefix(v, p.PrefixMatch)
		case *routepb.HeaderMatcher_SuffixMatch:
			ok = strings.HasSuffix(v, p.SuffixMatch)
		case *routepb.HeaderMatcher_SafeRegexMatch:
			ok = regexp.MustCompile("^(?:" + p.SafeRegexMatch.GetRegex() + ")$").MatchString(v)
		case *routepb.HeaderMatcher_StringMatch:
			ok = stringMatches(t, p.StringMatch, v)
		default:
			t.Fatalf("header matcher %v: not evaluated by this test", h)
		}
		if ok == h.GetInvertMatch() {
			return false
		}
	}
	return true
}

func stringMatches(t *testing.T, sm *matcherpb.StringMatcher, v string) bool {
	switch p := sm.GetMatchPattern().(type) {
	case *matcherpb.StringMatcher_Exact:
		return v == p.Exact
	case *matcherpb.StringMatcher_Prefix:
		return strings.HasPrefix(v, p.Prefix)
	case *matcherpb.StringMatcher_Suffix:
		return strings.HasSuffix(v, p.Suffix)
	case *matcherpb.StringMatcher_SafeRegex:
		return regexp.MustCompile("^(?:" + p.SafeRegex.GetRegex() + ")$").MatchString(v)
	}
	t.Fatalf("string matcher %v: not evaluated by this test", sm)
	return false
}
