package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

// newTest returns a dashboard over src on a fake clock, and its server.
func newTest(t *testing.T, src Source, cfg Config) (*Dashboard, *clock.Fake, *httptest.Server) {
	t.Helper()
	fc := clock.NewFake(t0)
	cfg.Source = src
	cfg.Logger = testLogger(t)
	if cfg.Clock == nil {
		cfg.Clock = fc
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return d, fc, srv
}

func getState(t *testing.T, srv *httptest.Server) *State {
	t.Helper()
	resp, err := http.Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatalf("GET /api/state: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/state: got status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /api/state: got Content-Type %q, want application/json", ct)
	}
	var s State
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decode state: %v", err)
	}
	return &s
}

func service(t *testing.T, s *State, key string) *ServiceView {
	t.Helper()
	for _, sv := range s.Services {
		if sv.Key == key {
			return sv
		}
	}
	t.Fatalf("state has no service %s", key)
	return nil
}

func version(t *testing.T, sv *ServiceView, v string) *VersionView {
	t.Helper()
	for _, vv := range sv.Versions {
		if vv.Version == v {
			return vv
		}
	}
	t.Fatalf("service %s has no version %s", sv.Key, v)
	return nil
}

func approx(p *float64, want float64) bool {
	return p != nil && math.Abs(*p-want) < 1e-9
}

func fmtp(p *float64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func TestStateTraffic(t *testing.T) {
	ctx := testContext(t)
	oldT, newT := newMetricTask(t, "0.9"), newMetricTask(t, "1.0")
	oldT.add(1000, 3) // before the dashboard: a baseline, not traffic
	newT.add(5, 0)
	src := &fakeSource{}
	src.set(echoStatus(90, 10, oldT.addr(), newT.addr()), nil)
	d, fc, srv := newTest(t, src, Config{})

	d.poll(ctx)
	s := getState(t, srv)
	sv := service(t, s, "echo/echo-server")
	if sv.RPS != 0 || version(t, sv, "0.9").Share != nil {
		t.Errorf("first poll: got rps %v share %s, want 0 and nil (counters before the first poll are a baseline)", sv.RPS, fmtp(version(t, sv, "0.9").Share))
	}

	oldT.add(180, 0)
	newT.add(16, 4)
	fc.Advance(2 * time.Second)
	d.poll(ctx)
	s = getState(t, srv)
	if !s.Connected || s.Seq != 2 {
		t.Errorf("got connected %v seq %d, want true 2", s.Connected, s.Seq)
	}
	sv = service(t, s, "echo/echo-server")
	if sv.Route != "echo-server-route" || sv.Router != "echo-server" || sv.VirtualNode != "echo-server-0-9" {
		t.Errorf("got route %q router %q node %q, want echo-server-route echo-server echo-server-0-9", sv.Route, sv.Router, sv.VirtualNode)
	}
	if got := []string{sv.Versions[0].Version, sv.Versions[1].Version}; !cmp.Equal(got, []string{"0.9", "1.0"}) {
		t.Errorf("got versions %v, want [0.9 1.0] (by revision)", got)
	}
	tests := []struct {
		version           string
		rps               float64
		share, weight, sr float64
		requests, errors  int64
	}{
		{"0.9", 90, 0.9, 0.9, 1, 180, 0},
		{"1.0", 10, 0.1, 0.1, 0.8, 20, 4},
	}
	for _, tt := range tests {
		v := version(t, sv, tt.version)
		if v.RPS != tt.rps || !approx(v.Share, tt.share) || !approx(v.Weight, tt.weight) || !approx(v.SuccessRate, tt.sr) ||
			v.Requests != tt.requests || v.Errors != tt.errors {
			t.Errorf("version %s: got rps %v share %s weight %s success %s requests %d errors %d, want %v %v %v %v %d %d",
				tt.version, v.RPS, fmtp(v.Share), fmtp(v.Weight), fmtp(v.SuccessRate), v.Requests, v.Errors,
				tt.rps, tt.share, tt.weight, tt.sr, tt.requests, tt.errors)
		}
		if len(v.Tasks) != 1 || v.Tasks[0].Health != "HEALTHY" || v.Tasks[0].ScrapeError != "" {
			t.Errorf("version %s: got tasks %+v, want one healthy task scraped", tt.version, v.Tasks)
		}
	}
	if sv.RPS != 100 {
		t.Errorf("got service rps %v, want 100", sv.RPS)
	}
	if len(s.History) != 2 {
		t.Fatalf("got %d history points, want 2", len(s.History))
	}
	p := s.History[1].S["echo/echo-server"]["1.0"]
	if got := s.History[1].T; got != t0.Add(2*time.Second).UnixMilli() {
		t.Errorf("got point time %d, want %d", got, t0.Add(2*time.Second).UnixMilli())
	}
	if p.RPS != 10 || !approx(p.Share, 0.1) || !approx(p.Weight, 0.1) || !approx(p.Success, 0.8) {
		t.Errorf("got point %+v, want rps 10 share 0.1 weight 0.1 success 0.8", p)
	}

	// The rollout and the actions its phase allows.
	ro := sv.Rollout
	if ro == nil || ro.Status.Phase != mesh.PhaseBaking || ro.Step != 1 || ro.Steps != 3 || !ro.Active {
		t.Fatalf("got rollout %+v, want Baking step 1/3 active", ro)
	}
	if want := map[string]bool{"pause": true, "resume": false, "promote": true, "abort": true}; !cmp.Equal(ro.Actions, want) {
		t.Errorf("got actions %v, want %v", ro.Actions, want)
	}

	// Convergence: client 2 is behind on RDS and has a NACK.
	if len(s.Clients) != 2 {
		t.Fatalf("got %d clients, want 2", len(s.Clients))
	}
	c1, c2 := s.Clients[0], s.Clients[1]
	if !c1.Converged || c1.Types["RDS"].ACKed != "e-7" || c1.LastNACK != nil {
		t.Errorf("client 1: got converged %v RDS %+v nack %+v, want converged at e-7 without NACK", c1.Converged, c1.Types["RDS"], c1.LastNACK)
	}
	if c2.Converged || c2.Types["RDS"].Current || c2.LastNACK == nil || c2.LastNACK.Type != "RDS" || c2.LastNACK.Detail != "route: weights sum to 0" {
		t.Errorf("client 2: got converged %v RDS %+v nack %+v, want behind with an RDS NACK", c2.Converged, c2.Types["RDS"], c2.LastNACK)
	}
	for _, k := range []string{"LDS", "RDS", "CDS", "EDS"} {
		if c1.Types[k] == nil {
			t.Errorf("client 1: no %s in types %v", k, c1.Types)
		}
	}
}

func TestHistoryBounded(t *testing.T) {
	ctx := testContext(t)
	src := &fakeSource{}
	src.set(echoStatus(100, 0, "", ""), nil)
	d, fc, srv := newTest(t, src, Config{Interval: time.Second, History: 5 * time.Second})
	for range 12 {
		d.poll(ctx)
		fc.Advance(time.Second)
	}
	s := getState(t, srv)
	if len(s.History) != 5 {
		t.Fatalf("got %d points, want 5", len(s.History))
	}
	for i, p := range s.History {
		if want := t0.Add(time.Duration(7+i) * time.Second).UnixMilli(); p.T != want {
			t.Errorf("point %d: got t %d, want %d (the last five polls, oldest first)", i, p.T, want)
		}
	}
	if s.HistoryMillis != 5000 || s.IntervalMillis != 1000 {
		t.Errorf("got history %d ms interval %d ms, want 5000 1000", s.HistoryMillis, s.IntervalMillis)
	}
}

func TestCounterResets(t *testing.T) {
	ep := func(id string, pid int) *mesh.Endpoint {
		return &mesh.Endpoint{ID: id, Process: &mesh.ProcessStatus{PID: pid}}
	}
	sample := func(req, errs int64) analysis.Sample { return analysis.Sample{Requests: req, Errors: errs} }
	tr := newTraffic()
	tr.begin([]*mesh.Endpoint{ep("a", 1)})
	steps := []struct {
		name string
		ep   *mesh.Endpoint
		s    analysis.Sample
		want counts
	}{
		{"first sample of a task present at start is a baseline", ep("a", 1), sample(500, 5), counts{}},
		{"increase", ep("a", 1), sample(520, 6), counts{20, 1}},
		{"no traffic", ep("a", 1), sample(520, 6), counts{}},
		{"reset under the same pid counts the new value", ep("a", 1), sample(7, 0), counts{7, 0}},
		{"restart with a new pid counts from zero", ep("a", 2), sample(3, 1), counts{3, 1}},
		{"task registered later counts from zero", ep("b", 9), sample(40, 0), counts{40, 0}},
		{"then deltas", ep("b", 9), sample(45, 0), counts{5, 0}},
	}
	for _, st := range steps {
		if got := tr.observe(st.ep, st.s); got != st.want {
			t.Errorf("%s: got %+v, want %+v", st.name, got, st.want)
		}
	}
	tr.gc([]*mesh.Endpoint{ep("b", 9)})
	if _, ok := tr.prev["a/1"]; ok {
		t.Errorf("gc kept a gone incarnation a/1")
	}
	if _, ok := tr.prev["b/9"]; !ok {
		t.Errorf("gc dropped a live incarnation b/9")
	}
}

func TestCounterResetThroughPolls(t *testing.T) {
	ctx := testContext(t)
	oldT, newT := newMetricTask(t, "0.9"), newMetricTask(t, "1.0")
	oldT.add(100, 0)
	src := &fakeSource{}
	st := echoStatus(50, 50, oldT.addr(), newT.addr())
	src.set(st, nil)
	d, fc, srv := newTest(t, src, Config{})
	d.poll(ctx)

	// The 0.9 task restarts: new pid, counters from zero.
	st2 := echoStatus(50, 50, oldT.addr(), newT.addr())
	st2.Endpoints[0].Process = &mesh.ProcessStatus{PID: 4242, Restarts: 1}
	src.set(st2, nil)
	oldT.ok.Store(30)
	newT.add(30, 0)
	fc.Advance(time.Second)
	d.poll(ctx)
	sv := service(t, getState(t, srv), "echo/echo-server")
	if v := version(t, sv, "0.9"); v.RPS != 30 || !approx(v.Share, 0.5) || v.Tasks[0].Restarts != 1 {
		t.Errorf("after a restart: got 0.9 rps %v share %s restarts %d, want 30 0.5 1", v.RPS, fmtp(v.Share), v.Tasks[0].Restarts)
	}
}

func TestStatusError(t *testing.T) {
	ctx := testContext(t)
	src := &fakeSource{}
	src.set(echoStatus(100, 0, "", ""), nil)
	d, fc, srv := newTest(t, src, Config{})
	d.poll(ctx)
	src.set(nil, errors.New("control plane at 127.0.0.1:1 is not reachable"))
	fc.Advance(time.Second)
	d.poll(ctx)
	s := getState(t, srv)
	if s.Connected || !strings.Contains(s.Error, "not reachable") {
		t.Errorf("got connected %v error %q, want false and the error", s.Connected, s.Error)
	}
	if len(s.Services) != 1 {
		t.Errorf("got %d services, want the last good poll's 1", len(s.Services))
	}
}

func TestScrapeError(t *testing.T) {
	ctx := testContext(t)
	src := &fakeSource{}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	src.set(echoStatus(100, 0, strings.TrimPrefix(dead.URL, "http://"), ""), nil)
	d, _, srv := newTest(t, src, Config{ScrapeTimeout: time.Second})
	d.poll(ctx)
	v := version(t, service(t, getState(t, srv), "echo/echo-server"), "0.9")
	if v.Tasks[0].ScrapeError == "" {
		t.Errorf("got no scrape error for a dead metrics endpoint")
	}
}

func TestSSE(t *testing.T) {
	ctx := testContext(t)
	oldT, newT := newMetricTask(t, "0.9"), newMetricTask(t, "1.0")
	src := &fakeSource{}
	src.set(echoStatus(90, 10, oldT.addr(), newT.addr()), nil)
	d, _, srv := newTest(t, src, Config{Clock: clock.Real{}, Interval: 20 * time.Millisecond, History: time.Second})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/events: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("got Content-Type %q, want text/event-stream", ct)
	}
	evs := make(chan sseEvent, 64)
	go readEvents(bufio.NewReader(resp.Body), evs)
	next := func() sseEvent {
		t.Helper()
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					t.Fatalf("stream ended")
				}
				if ev.name == "comment" {
					continue
				}
				return ev
			case <-time.After(5 * time.Second):
				t.Fatalf("no event within 5s")
			}
		}
	}
	first := next()
	if first.name != "snapshot" {
		t.Fatalf("got first event %q, want snapshot", first.name)
	}
	var snap State
	if err := json.Unmarshal([]byte(first.data), &snap); err != nil {
		t.Fatalf("decode snapshot: %v", err)
	}
	// Traffic starts; an update must show it.
	deadline := time.Now().Add(5 * time.Second)
	var lastSeq uint64 = snap.Seq
	for {
		oldT.add(9, 0)
		newT.add(1, 0)
		ev := next()
		if ev.name != "update" {
			t.Fatalf("got event %q, want update", ev.name)
		}
		var u State
		if err := json.Unmarshal([]byte(ev.data), &u); err != nil {
			t.Fatalf("decode update: %v", err)
		}
		if u.Seq <= lastSeq {
			t.Fatalf("got seq %d after %d, want increasing", u.Seq, lastSeq)
		}
		lastSeq = u.Seq
		if u.History != nil || u.Point == nil {
			t.Fatalf("update: got %d history points and point %v, want none and one", len(u.History), u.Point)
		}
		if p := u.Point.S["echo/echo-server"]["1.0"]; p.Share != nil && *p.Share > 0 {
			if !approx(p.Weight, 0.1) {
				t.Errorf("got weight %s, want 0.1", fmtp(p.Weight))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no update with 1.0 traffic before the deadline")
		}
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	h := newHub(10, 2)
	h.setState(&State{})
	slow, _ := h.subscribe()
	fast, _ := h.subscribe()
	got := 0
	for i := range 5 {
		h.publish(&State{}, &Point{T: int64(i)})
		select {
		case <-fast.ch:
			got++
		default:
			t.Fatalf("publish %d: fast subscriber got nothing", i)
		}
	}
	select {
	case <-slow.gone:
	default:
		t.Fatalf("slow subscriber not dropped")
	}
	if got != 5 {
		t.Errorf("fast subscriber got %d events, want 5", got)
	}
	if n, dropped := h.stats(); n != 1 || dropped != 1 {
		t.Errorf("got %d subscribers %d dropped, want 1 1", n, dropped)
	}
}

func TestSlowSubscriberOverHTTP(t *testing.T) {
	ctx := testContext(t)
	src := &fakeSource{}
	src.set(echoStatus(100, 0, "", ""), nil)
	d, _, srv := newTest(t, src, Config{SubscriberBuffer: 1})
	// A browser whose handler is stuck is modelled by a subscriber that
	// never reads; an HTTP one keeps receiving.
	stuck, _ := d.hub.subscribe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/events: %v", err)
	}
	defer resp.Body.Close()
	evs := make(chan sseEvent, 64)
	go readEvents(bufio.NewReader(resp.Body), evs)
	if ev := <-evs; ev.name != "snapshot" {
		t.Fatalf("got %q, want snapshot", ev.name)
	}
	for i := range 4 {
		d.poll(ctx)
		select {
		case ev := <-evs:
			if ev.name != "update" {
				t.Fatalf("poll %d: got %q, want update", i, ev.name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("poll %d: no update within 5s", i)
		}
	}
	select {
	case <-stuck.gone:
	default:
		t.Errorf("stuck subscriber not dropped")
	}
}

func TestControl(t *testing.T) {
	ro := echoStatus(90, 10, "", "").Rollouts[0]
	tests := []struct {
		name      string
		method    string
		path      string
		token     string // dashboard's
		auth      string // request's Authorization
		proxied   bool   // sent with X-Forwarded-For, as a proxy on this machine would
		noCSRF    bool
		srcErr    error
		wantCode  int
		wantCall  string
		wantError string
	}{
		{name: "pause", method: "POST", path: "/api/rollouts/echo/echo-server/pause", wantCode: 200, wantCall: "echo/echo-server/pause"},
		{name: "resume", method: "POST", path: "/api/rollouts/echo/echo-server/resume", wantCode: 200, wantCall: "echo/echo-server/resume"},
		{name: "promote", method: "POST", path: "/api/rollouts/echo/echo-server/promote", wantCode: 200, wantCall: "echo/echo-server/promote"},
		{name: "abort", method: "POST", path: "/api/rollouts/other/svc/abort", wantCode: 200, wantCall: "other/svc/abort"},
		{name: "bad action", method: "POST", path: "/api/rollouts/echo/echo-server/explode", wantCode: 400, wantError: "unknown rollout action"},
		{name: "GET", method: "GET", path: "/api/rollouts/echo/echo-server/pause", wantCode: 405, wantError: "use POST"},
		{name: "no CSRF header", method: "POST", path: "/api/rollouts/echo/echo-server/pause", noCSRF: true, wantCode: 403, wantError: "X-Gmesh"},
		{name: "token not needed straight from loopback", method: "POST", path: "/api/rollouts/echo/echo-server/pause", token: "s3cret", wantCode: 200, wantCall: "echo/echo-server/pause"},
		{name: "token missing through a proxy", method: "POST", path: "/api/rollouts/echo/echo-server/pause", token: "s3cret", proxied: true, wantCode: 401, wantError: "token"},
		{name: "token wrong through a proxy", method: "POST", path: "/api/rollouts/echo/echo-server/pause", token: "s3cret", proxied: true, auth: "Bearer nope", wantCode: 401, wantError: "token"},
		{name: "token right through a proxy", method: "POST", path: "/api/rollouts/echo/echo-server/pause", token: "s3cret", proxied: true, auth: "Bearer s3cret", wantCode: 200, wantCall: "echo/echo-server/pause"},
		{name: "conflict", method: "POST", path: "/api/rollouts/echo/echo-server/resume", srcErr: mesh.Errorf(mesh.EConflict, "the rollout of echo-server is not paused"),
			wantCode: 409, wantCall: "echo/echo-server/resume", wantError: "not paused"},
		{name: "not found", method: "POST", path: "/api/rollouts/echo/nope/pause", srcErr: mesh.Errorf(mesh.ENotFound, "no rollout of nope in mesh echo"),
			wantCode: 404, wantCall: "echo/nope/pause", wantError: "no rollout"},
		{name: "unavailable", method: "POST", path: "/api/rollouts/echo/echo-server/pause", srcErr: &mesh.Error{Code: mesh.EUnavailable, Message: "control plane down"},
			wantCode: 503, wantCall: "echo/echo-server/pause", wantError: "control plane down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{control: func(ctx context.Context, m, s, a string) (*mesh.Resource, error) {
				if tt.srcErr != nil {
					return nil, tt.srcErr
				}
				return ro, nil
			}}
			src.set(echoStatus(90, 10, "", ""), nil)
			_, _, srv := newTest(t, src, Config{Token: tt.token})
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if !tt.noCSRF {
				req.Header.Set("X-Gmesh", "1")
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			if tt.proxied {
				req.Header.Set("X-Forwarded-For", "203.0.113.7")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("got status %d, want %d (body %s)", resp.StatusCode, tt.wantCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("got Content-Type %q, want application/json", ct)
			}
			var out struct {
				Error   string       `json:"error"`
				Rollout *RolloutView `json:"rollout"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if tt.wantError != "" && !strings.Contains(out.Error, tt.wantError) {
				t.Errorf("got error %q, want it to contain %q", out.Error, tt.wantError)
			}
			if tt.wantCode == 200 && (out.Rollout == nil || out.Rollout.Status.Phase != mesh.PhaseBaking) {
				t.Errorf("got rollout %+v, want the rollout returned by the source", out.Rollout)
			}
			if tt.wantCode == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("got Allow %q, want POST", resp.Header.Get("Allow"))
			}
			var want []string
			if tt.wantCall != "" {
				want = []string{tt.wantCall}
			}
			if diff := cmp.Diff(want, src.Calls()); diff != "" {
				t.Errorf("source calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRolloutActions(t *testing.T) {
	tests := []struct {
		name string
		st   mesh.RolloutStatus
		want map[string]bool
	}{
		{"pending", mesh.RolloutStatus{Phase: mesh.PhasePending}, map[string]bool{"pause": true, "resume": false, "promote": true, "abort": true}},
		{"baking", mesh.RolloutStatus{Phase: mesh.PhaseBaking}, map[string]bool{"pause": true, "resume": false, "promote": true, "abort": true}},
		{"paused", mesh.RolloutStatus{Phase: mesh.PhasePaused, ResumePhase: mesh.PhaseBaking, Paused: true}, map[string]bool{"pause": false, "resume": true, "promote": true, "abort": true}},
		{"pause requested", mesh.RolloutStatus{Phase: mesh.PhaseShifting, Paused: true}, map[string]bool{"pause": false, "resume": true, "promote": true, "abort": true}},
		{"retiring", mesh.RolloutStatus{Phase: mesh.PhaseRetiring}, map[string]bool{"pause": false, "resume": false, "promote": false, "abort": false}},
		{"rolling back", mesh.RolloutStatus{Phase: mesh.PhaseRollingBack}, map[string]bool{"pause": false, "resume": false, "promote": false, "abort": false}},
		{"abort requested", mesh.RolloutStatus{Phase: mesh.PhaseBaking, Abort: true}, map[string]bool{"pause": false, "resume": false, "promote": false, "abort": false}},
		{"succeeded", mesh.RolloutStatus{Phase: mesh.PhaseSucceeded}, map[string]bool{"pause": false, "resume": false, "promote": false, "abort": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mesh.New(mesh.KindRollout, "echo", "echo-server", &mesh.RolloutSpec{Service: "echo-server", Steps: []int{10, 100}})
			st := tt.st
			r.Status = &st
			v := rolloutView(r)
			if diff := cmp.Diff(tt.want, v.Actions); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if v.Active == tt.st.Phase.Terminal() {
				t.Errorf("got active %v for phase %s", v.Active, tt.st.Phase)
			}
		})
	}
}

func TestStaticAndMethods(t *testing.T) {
	src := &fakeSource{}
	_, _, srv := newTest(t, src, Config{})
	tests := []struct {
		method, path string
		wantCode     int
		wantType     string
		wantBody     string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", "<!doctype html>"},
		{"GET", "/static/app.js", 200, "text/javascript; charset=utf-8", "EventSource"},
		{"GET", "/static/style.css", 200, "text/css; charset=utf-8", "body"},
		{"GET", "/static/nope.js", 404, "", ""},
		{"GET", "/nope", 404, "", ""},
		{"POST", "/", 405, "application/json", "use GET"},
		{"POST", "/api/state", 405, "application/json", "use GET"},
		{"DELETE", "/api/events", 405, "application/json", "use GET"},
		{"GET", "/api/nope", 404, "application/json", "no such API"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("got status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("got Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got body %.200q, want it to contain %q", body, tt.wantBody)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff header")
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Errorf("New without a Source: got nil error")
	}
	d, err := New(Config{Source: &fakeSource{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if d.cfg.Interval != time.Second || d.cfg.History != 5*time.Minute || d.hub.max != 300 {
		t.Errorf("got interval %v history %v points %d, want 1s 5m 300", d.cfg.Interval, d.cfg.History, d.hub.max)
	}
}

// TestCertificates: with TLS on, the state (over HTTP, as the page reads
// it) carries the CA's expiry and each task's certificate; a task without
// one has none.
func TestCertificates(t *testing.T) {
	ctx := testContext(t)
	st := echoStatus(100, 0, "", "")
	caExpiry := time.Date(2036, 11, 28, 12, 0, 0, 0, time.UTC)
	st.CA = &controlplane.CAStatus{Subject: "CN=gmesh mesh CA,O=gmesh", NotAfter: caExpiry}
	cert := mesh.CertificateStatus{ID: "spiffe://echo.gmesh.local/vn/echo-server-0-9", NotAfter: "2026-12-01T13:00:00Z",
		RenewAt: "2026-12-01T12:30:00Z", Renewals: 2, Failures: 1, LastError: "disk full"}
	withCert := st.Endpoints[0].ID
	st.Endpoints[0].Process.Certificate = cert
	src := &fakeSource{}
	src.set(st, nil)
	d, _, srv := newTest(t, src, Config{})
	d.poll(ctx)
	s := getState(t, srv)
	if s.CA == nil || !s.CA.NotAfter.Equal(caExpiry) || s.CA.Subject != st.CA.Subject {
		t.Errorf("state CA %+v, want %s expiring %s", s.CA, st.CA.Subject, caExpiry)
	}
	found := 0
	for _, v := range service(t, s, "echo/echo-server").Versions {
		for _, task := range v.Tasks {
			switch {
			case task.ID == withCert:
				found++
				if task.Certificate == nil || *task.Certificate != cert {
					t.Errorf("task %s certificate %+v, want %+v", task.ID, task.Certificate, cert)
				}
			case task.Certificate != nil:
				t.Errorf("task %s has certificate %+v, want none", task.ID, task.Certificate)
			}
		}
	}
	if found != 1 {
		t.Errorf("task %s found %d times in the state", withCert, found)
	}
}
