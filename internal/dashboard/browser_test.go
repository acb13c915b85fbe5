package dashboard

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/browsertest"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// listingSource is a fakeSource that also lists the kinds the status
// leaves out (as controlplane.Client does).
type listingSource struct {
	*fakeSource
	lists map[mesh.Kind][]*mesh.Resource
}

func (l *listingSource) List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	return l.lists[kind], nil
}

var _ Lister = (*listingSource)(nil)

// echoLists are the echo stack's virtual services, gateway and gateway route.
func echoLists() map[mesh.Kind][]*mesh.Resource {
	return map[mesh.Kind][]*mesh.Resource{
		mesh.KindVirtualService: {
			mesh.New(mesh.KindVirtualService, "echo", "echo-server.echo.local", &mesh.VirtualServiceSpec{
				Provider: &mesh.VirtualServiceProvider{VirtualRouter: &mesh.ProviderRef{VirtualRouterName: "echo-server"}}}),
			mesh.New(mesh.KindVirtualService, "echo", "echo-client.echo.local", &mesh.VirtualServiceSpec{
				Provider: &mesh.VirtualServiceProvider{VirtualNode: &mesh.ProviderRef{VirtualNodeName: "echo-client"}}}),
		},
		mesh.KindVirtualGateway: {
			mesh.New(mesh.KindVirtualGateway, "echo", "echo-gateway", &mesh.VirtualGatewaySpec{
				Listeners: []mesh.GatewayListener{{PortMapping: mesh.PortMapping{Port: 8080, Protocol: "http"}}}}),
		},
		mesh.KindGatewayRoute: {
			mesh.New(mesh.KindGatewayRoute, "echo", "echo-client-route", &mesh.GatewayRouteSpec{
				VirtualGatewayName: "echo-gateway",
				HTTPRoute: &mesh.GatewayHTTPRoute{Match: mesh.GatewayHTTPMatch{Prefix: "/"},
					Action: mesh.GatewayHTTPRouteAction{Target: mesh.GatewayTarget{VirtualService: mesh.VirtualServiceBackend{VirtualServiceName: "echo-client.echo.local"}}}}}),
		},
	}
}

// demoStatus is echoStatus plus the echo-client service and its tasks.
func demoStatus(oldW, newW int, oldAddr, newAddr string) *controlplane.Status {
	st := echoStatus(oldW, newW, oldAddr, newAddr)
	st.Services = append(st.Services, mesh.New(mesh.KindService, "echo", "echo-client", &mesh.ServiceSpec{VirtualNode: "echo-client", DesiredCount: 2, Port: 8080}))
	st.TaskSets = append(st.TaskSets, mesh.New(mesh.KindTaskSet, "echo", "echo-client-1", &mesh.TaskSetSpec{Service: "echo-client", VirtualNode: "echo-client", Version: "1.0", Revision: 1, DesiredCount: 2}))
	st.Nodes = append(st.Nodes, mesh.New(mesh.KindVirtualNode, "echo", "echo-client", &mesh.VirtualNodeSpec{
		Backends: []mesh.Backend{{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: "echo-server.echo.local"}}}}))
	for i, port := range []int{8081, 8082} {
		st.Endpoints = append(st.Endpoints, &mesh.Endpoint{ID: "echo-client-1-" + string(rune('a'+i)), Mesh: "echo", Service: "echo-client",
			Address: "127.0.0.1", Port: port, Attributes: map[string]string{mesh.AttrVersion: "1.0", mesh.AttrTaskSet: "echo-client-1"},
			Process: &mesh.ProcessStatus{PID: 2000 + i}, State: mesh.TaskRunning, Health: mesh.HealthHealthy})
	}
	st.Endpoints = append(st.Endpoints, &mesh.Endpoint{ID: "echo-server-0-9-b", Mesh: "echo", Service: "echo-server",
		Address: "127.0.0.1", Port: 50053, Attributes: map[string]string{mesh.AttrVersion: "0.9", mesh.AttrTaskSet: "echo-server-0-9"},
		Process: &mesh.ProcessStatus{PID: 3001, Restarts: 1}, State: mesh.TaskRunning, Health: mesh.HealthHealthy})
	st.Clients[0].NodeID, st.Clients[1].NodeID = "echo-client-1-a", "echo-client-1-b"
	c := st.Clients[0]
	c.NodeID = "echo-gateway"
	st.Clients = append(st.Clients, c)
	return st
}

// newBrowser starts a headless Chromium for the test.
func newBrowser(t *testing.T, parent context.Context) context.Context {
	t.Helper()
	return browsertest.New(t, parent)
}

// waitJS polls a JavaScript predicate in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	browsertest.WaitJS(t, ctx, what, expr, `JSON.stringify({conn: window.__gmesh && window.__gmesh.connection, events: window.__gmesh && window.__gmesh.events, last: window.__gmesh && window.__gmesh.lastAction, phase: document.getElementById('rollout-phase').dataset.phase})`, 15*time.Second)
}

func TestBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	oldT, newT := newMetricTask(t, "0.9"), newMetricTask(t, "1.0")
	oldT.perScrape.Store(9)
	newT.perScrape.Store(1)
	src := &listingSource{fakeSource: &fakeSource{}, lists: echoLists()}
	src.set(demoStatus(90, 10, oldT.addr(), newT.addr()), nil)
	src.control = func(ctx context.Context, m, s, action string) (*mesh.Resource, error) {
		// The control plane's reaction, as the next status shows it.
		st := demoStatus(90, 10, oldT.addr(), newT.addr())
		ro := st.Rollouts[0]
		rs := ro.RolloutStatus()
		switch action {
		case "pause":
			rs.Phase, rs.ResumePhase, rs.Paused, rs.Message = mesh.PhasePaused, mesh.PhaseBaking, true, "paused at 10%"
		case "promote":
			st = demoStatus(0, 100, oldT.addr(), newT.addr())
			ro = st.Rollouts[0]
			rs = ro.RolloutStatus()
			rs.Phase, rs.StepIndex, rs.Weight, rs.Message = mesh.PhaseSucceeded, 2, 100, "1.0 takes all traffic"
			oldT.perScrape.Store(0)
			newT.perScrape.Store(10)
		}
		src.set(st, nil)
		return ro, nil
	}
	d, err := New(Config{Source: src, Logger: testLogger(t), Interval: 100 * time.Millisecond, History: time.Minute,
		GatewayListen: map[string]string{"echo/echo-gateway": "127.0.0.1:18181"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	// Run stops first: that ends the page's event stream, so Close does not
	// wait for it.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() { stop(); <-done }()

	bctx := newBrowser(t, ctx)
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, bctx, "the stream", `window.__gmesh.connection === "open" && window.__gmesh.events > 1`)
	waitJS(t, bctx, "the gateway's real listen address, not the spec's 8080",
		`document.querySelector('[data-gateway="echo-gateway"] .gateway-listen')?.textContent === "127.0.0.1:18181"`)
	waitJS(t, bctx, "three healthy echo-server tasks", `document.querySelectorAll('[data-service="echo-server"] [data-task-id][data-health="HEALTHY"]').length === 3`)
	waitJS(t, bctx, "1.0 traffic in the chart's data",
		`(() => { const s = JSON.parse(document.getElementById('share-chart').dataset.series); return s.service === "echo/echo-server" && (s.versions["1.0"]?.share || []).some(x => x > 0.05 && x < 0.2); })()`)
	waitJS(t, bctx, "the rollout baking", `document.getElementById('rollout-phase').dataset.phase === "Baking" && !document.getElementById('btn-pause').disabled && document.getElementById('btn-resume').disabled`)
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.ID("btn-pause"))); err != nil {
		t.Fatalf("click pause: %v", err)
	}
	waitJS(t, bctx, "the rollout paused", `document.getElementById('rollout-phase').dataset.phase === "Paused" && !document.getElementById('btn-resume').disabled && document.getElementById('btn-pause').disabled`)
	waitJS(t, bctx, "the action's result", `document.getElementById('action-result').dataset.status === "ok" && window.__gmesh.lastAction.action === "pause"`)
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.ID("btn-promote"))); err != nil {
		t.Fatalf("click promote: %v", err)
	}
	waitJS(t, bctx, "the rollout succeeded with all traffic on 1.0",
		`(() => { const s = window.__gmesh.series("echo/echo-server").versions["1.0"].share; return document.getElementById('rollout-phase').dataset.phase === "Succeeded" && s[s.length-1] === 1; })()`)
	if got, want := src.Calls(), []string{"echo/echo-server/pause", "echo/echo-server/promote"}; !slices.Equal(got, want) {
		t.Errorf("source calls: got %v, want %v", got, want)
	}
	if p := os.Getenv("GMESH_DASHBOARD_SCREENSHOT"); p != "" {
		buf, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDemoScreenshot renders a rollout in progress (four minutes of
// simulated history) and saves it to $GMESH_DASHBOARD_DEMO_PNG; it is how
// docs/dashboard.png is made.
func TestDemoScreenshot(t *testing.T) {
	out := os.Getenv("GMESH_DASHBOARD_DEMO_PNG")
	if out == "" {
		t.Skip("set GMESH_DASHBOARD_DEMO_PNG to write the demo screenshot")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const polls = 240
	fc := clock.NewFake(time.Now().Add(-polls * time.Second))
	rng := rand.New(rand.NewPCG(1, 2))
	cum := map[string]*analysis.Sample{"old": {}, "new": {}, "old2": {}}
	weightAt := func(i int) int {
		switch {
		case i < 70:
			return 0
		case i < 150:
			return 10
		default:
			return 50
		}
	}
	step := 0
	src := &listingSource{fakeSource: &fakeSource{}, lists: echoLists()}
	scrape := func(ctx context.Context, addr, path string) (analysis.Sample, error) {
		return *cum[addr], nil
	}
	d, err := New(Config{Source: src, Logger: testLogger(t), Clock: fc, Scrape: scrape})
	if err != nil {
		t.Fatal(err)
	}
	for i := range polls {
		w := weightAt(i)
		st := demoStatus(100-w, w, "old", "new")
		for _, ep := range st.Endpoints {
			if ep.ID == "echo-server-0-9-b" {
				ep.MetricsAddr = "old2"
			}
		}
		ro := st.Rollouts[0]
		rs := ro.RolloutStatus()
		if w == 50 {
			step = 1
		}
		rs.StepIndex, rs.Weight = step, w
		rs.Message = map[int]string{0: "baking step 1/3 at 10% (60s)", 1: "baking step 2/3 at 50% (60s)"}[step]
		rs.Analysis = &mesh.Analysis{Requests: int64(40 + 4*(i%60)), Errors: 0, SuccessRate: 1, P99Millis: 4.1 + float64(i%7)/10, Passed: true, Judged: i%60 > 5}
		rs.Events = []mesh.RolloutEvent{
			{Time: fc.Now().Add(-time.Duration(i-68) * time.Second).Format(time.RFC3339), Phase: mesh.PhasePending, Message: "rollout of echo-server 0.9 -> 1.0 started"},
			{Time: fc.Now().Add(-time.Duration(i-69) * time.Second).Format(time.RFC3339), Phase: mesh.PhaseStartingTasks, Message: "starting 1 task of 1.0"},
			{Time: fc.Now().Add(-time.Duration(i-70) * time.Second).Format(time.RFC3339), Phase: mesh.PhaseShifting, Message: "weight 10%, waiting for 3 clients to ACK route e-7"},
			{Time: fc.Now().Add(-time.Duration(i-71) * time.Second).Format(time.RFC3339), Phase: mesh.PhaseBaking, Message: "all clients ACKed; baking 60s"},
		}
		if step == 1 {
			rs.Events = append(rs.Events,
				mesh.RolloutEvent{Time: fc.Now().Add(-time.Duration(i-150) * time.Second).Format(time.RFC3339), Phase: mesh.PhaseShifting, Message: "step 1 passed: 412 requests, 100.00% success, p99 4.6ms; weight 50%"},
				mesh.RolloutEvent{Time: fc.Now().Add(-time.Duration(i-151) * time.Second).Format(time.RFC3339), Phase: mesh.PhaseBaking, Message: "all clients ACKed; baking 60s"})
		}
		if i < 68 {
			st.Rollouts = nil
			st.Endpoints = slices.Delete(st.Endpoints, 1, 2) // 1.0's task
			st.TaskSets = st.TaskSets[1:]                    // 1.0's task set
		}
		src.set(st, nil)
		// Traffic: ~100 rps split by the weight, with noise.
		total := 95 + rng.IntN(11)
		newN := 0
		for range total {
			if rng.IntN(100) < w {
				newN++
			}
		}
		oldN := total - newN
		cum["old"].Requests += int64(oldN / 2)
		cum["old2"].Requests += int64(oldN - oldN/2)
		cum["new"].Requests += int64(newN)
		if rng.IntN(20) == 0 {
			cum["new"].Errors++
			cum["new"].Requests++
		}
		d.poll(ctx)
		fc.Advance(time.Second)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	defer d.hub.closeAll() // ends the page's event stream before Close
	bctx := newBrowser(t, ctx)
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, bctx, "the chart", `document.querySelectorAll('#share-chart path').length >= 4`)
	h, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`document.documentElement.scrollHeight`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, int64(math.Ceil(h)))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, bctx, "the chart redrawn", `document.querySelectorAll('#share-chart path').length >= 4`)
	buf, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}
