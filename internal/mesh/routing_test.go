package mesh_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/mesh/meshtest"
)

// resolve answers a routing case with the resolver alone: the gateway's
// routes (for gateway cases), then the service's, then the effective
// weighted targets.
func resolve(t *testing.T, c meshtest.RoutingCase) map[string]int {
	t.Helper()
	st := mesh.NewState()
	for _, r := range c.Resources {
		st.Put(r)
	}
	rt := mesh.NewRouting(st)
	req := c.Request
	service := meshtest.Service
	if c.GatewayOnly {
		rules, errs := rt.Gateway(meshtest.Mesh, meshtest.Gateway)
		if len(errs) > 0 {
			t.Fatalf("gateway routes: %v", errs)
		}
		g := mesh.MatchGateway(rules, &req)
		if g == nil {
			return nil
		}
		req.Path, req.Host = g.Rewrite(&req)
		service = g.Service
	}
	sr, err := rt.Service(meshtest.Mesh, service)
	if err != nil {
		t.Fatalf("Service: %v", err)
	}
	rule := sr.Match(&req)
	if rule == nil {
		return nil
	}
	out := map[string]int{}
	for _, tg := range mesh.EffectiveTargets(rule.Targets, c.IsServing) {
		out[tg.VirtualNode] = tg.Weight
	}
	return out
}

func TestRoutingCases(t *testing.T) {
	for _, c := range meshtest.RoutingCases() {
		t.Run(c.Name, func(t *testing.T) {
			// Every case is a valid mesh as users would apply it.
			rs := append(c.Resources, meshtest.AllGatewayRoute())
			if c.GatewayOnly {
				rs = c.Resources
			}
			st := mesh.NewState()
			for _, r := range rs {
				r = r.Clone()
				if err := mesh.DefaultAndValidate(r); err != nil {
					t.Fatalf("case resource invalid: %v", err)
				}
				st.Put(r)
			}
			if err := mesh.ValidateState(st); err != nil {
				t.Fatalf("case state invalid: %v", err)
			}
			if diff := cmp.Diff(c.Want, resolve(t, c)); diff != "" {
				t.Errorf("shares (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPickTarget(t *testing.T) {
	ts := []mesh.WeightedTarget{{VirtualNode: "a", Weight: 90}, {VirtualNode: "b", Weight: 0}, {VirtualNode: "c", Weight: 10}}
	counts := map[string]int{}
	for x := range uint64(1000) {
		counts[ts[mesh.PickTarget(ts, nil, x)].VirtualNode]++
	}
	if diff := cmp.Diff(map[string]int{"a": 900, "c": 100}, counts); diff != "" {
		t.Errorf("picks over every x in 0..999 (-want +got):\n%s", diff)
	}
	onlyC := func(i int) bool { return ts[i].VirtualNode == "c" }
	for x := range uint64(100) {
		if got := ts[mesh.PickTarget(ts, onlyC, x)].VirtualNode; got != "c" {
			t.Fatalf("with only c available, x=%d picked %s", x, got)
		}
	}
	none := func(int) bool { return false }
	if i := mesh.PickTarget(ts, none, 5); ts[i].Weight == 0 {
		t.Errorf("with none available, picked weight-0 target %s; want a weighted one", ts[i].VirtualNode)
	}
	if i := mesh.PickTarget([]mesh.WeightedTarget{{VirtualNode: "a"}}, nil, 3); i != -1 {
		t.Errorf("all weights 0: got %d, want -1", i)
	}
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name      string
		match     mesh.GatewayHTTPMatch
		rw        *mesh.GatewayHTTPRewrite
		path      string
		wantPath  string
		wantHost  string
		wantMatch bool
	}{
		{"prefix / unchanged, host to the service", mesh.GatewayHTTPMatch{Prefix: "/"}, nil, "/a/b", "/a/b", "svc.m.local", true},
		{"default prefix rewrite", mesh.GatewayHTTPMatch{Prefix: "/api/"}, nil, "/api/v1/x", "/v1/x", "svc.m.local", true},
		{"default rewrite of a prefix without trailing slash", mesh.GatewayHTTPMatch{Prefix: "/api"}, nil, "/api/v1", "/v1", "svc.m.local", true},
		{"prefix to a value", mesh.GatewayHTTPMatch{Prefix: "/api/"}, &mesh.GatewayHTTPRewrite{Prefix: &mesh.PrefixRewrite{Value: "/internal/"}}, "/api/x", "/internal/x", "svc.m.local", true},
		{"prefix rewrite disabled, host kept", mesh.GatewayHTTPMatch{Prefix: "/api/"}, &mesh.GatewayHTTPRewrite{
			Prefix: &mesh.PrefixRewrite{DefaultPrefix: mesh.Disabled}, Hostname: &mesh.HostnameRewrite{DefaultTargetHostname: mesh.Disabled}}, "/api/x", "/api/x", "client.example", true},
		{"exact path rewrite", mesh.GatewayHTTPMatch{Path: &mesh.HeaderMatch{Exact: "/old"}}, &mesh.GatewayHTTPRewrite{Path: &mesh.PathRewrite{Exact: "/new"}}, "/old", "/new", "svc.m.local", true},
		{"regex path", mesh.GatewayHTTPMatch{Path: &mesh.HeaderMatch{Regex: "/items/[0-9]+"}}, nil, "/items/12", "/items/12", "svc.m.local", true},
		{"regex is anchored", mesh.GatewayHTTPMatch{Path: &mesh.HeaderMatch{Regex: "/items/[0-9]+"}}, nil, "/items/12/x", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := mesh.NewState()
			st.Put(mesh.New(mesh.KindGatewayRoute, "m", "gr", &mesh.GatewayRouteSpec{VirtualGatewayName: "gw",
				HTTPRoute: &mesh.GatewayHTTPRoute{Match: tt.match, Action: mesh.GatewayHTTPRouteAction{
					Target: mesh.GatewayTarget{VirtualService: mesh.VirtualServiceBackend{VirtualServiceName: "svc.m.local"}}, Rewrite: tt.rw}}}))
			rules, errs := mesh.NewRouting(st).Gateway("m", "gw")
			if len(errs) > 0 || len(rules) != 1 {
				t.Fatalf("compile: %v", errs)
			}
			req := mesh.Request{Method: "GET", Path: tt.path, Host: "client.example"}
			if got := rules[0].Matches(&req); got != tt.wantMatch {
				t.Fatalf("matches %s: got %v, want %v", tt.path, got, tt.wantMatch)
			}
			if !tt.wantMatch {
				return
			}
			p, h := rules[0].Rewrite(&req)
			if p != tt.wantPath || h != tt.wantHost {
				t.Errorf("rewrite %s: got path %q host %q, want %q %q", tt.path, p, h, tt.wantPath, tt.wantHost)
			}
		})
	}
}

func TestCheckControl(t *testing.T) {
	// The dashboard's Controls are exactly the actions CheckControl allows,
	// less a pause of a paused rollout (allowed, changes nothing).
	phases := []mesh.Phase{mesh.PhasePending, mesh.PhaseStartingTasks, mesh.PhaseWaitingHealthy, mesh.PhaseShifting,
		mesh.PhaseBaking, mesh.PhasePaused, mesh.PhaseRetiring, mesh.PhaseRollingBack, mesh.PhaseSucceeded, mesh.PhaseRolledBack}
	for _, ph := range phases {
		for _, paused := range []bool{false, true} {
			for _, abort := range []bool{false, true} {
				st := &mesh.RolloutStatus{Phase: ph, Paused: paused, Abort: abort, ResumePhase: mesh.PhaseBaking}
				c := st.Controls()
				for _, a := range mesh.RolloutActions {
					err := st.CheckControl("s", a)
					want := err == nil && !(a == mesh.ActionPause && paused)
					if c[a] != want {
						t.Errorf("phase %s paused %v abort %v: Controls()[%s] = %v but CheckControl = %v", ph, paused, abort, a, c[a], err)
					}
					if ph.Terminal() && err == nil {
						t.Errorf("phase %s: %s allowed on an ended rollout", ph, a)
					}
				}
			}
		}
	}
	if err := (&mesh.RolloutStatus{Phase: mesh.PhaseBaking}).CheckControl("s", "explode"); mesh.ErrorCode(err) != mesh.EInvalid {
		t.Errorf("unknown action: got %v, want EInvalid", err)
	}
}
