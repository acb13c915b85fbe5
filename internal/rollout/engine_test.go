package rollout

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func TestHappyPath(t *testing.T) {
	tests := []struct {
		steps    []int
		routeLog []string
		bakes    int
	}{
		{
			steps: []int{50, 100},
			routeLog: []string{
				"echo-server-0-9=100,echo-server-1-0=0",
				"echo-server-0-9=50,echo-server-1-0=50",
				"echo-server-0-9=0,echo-server-1-0=100", // 0.9 kept at 0 until its tasks are gone
				"echo-server-1-0=100",
			},
			bakes: 1,
		},
		{
			steps: []int{10, 25, 50, 100},
			routeLog: []string{
				"echo-server-0-9=100,echo-server-1-0=0",
				"echo-server-0-9=90,echo-server-1-0=10",
				"echo-server-0-9=75,echo-server-1-0=25",
				"echo-server-0-9=50,echo-server-1-0=50",
				"echo-server-0-9=0,echo-server-1-0=100", // 0.9 kept at 0 until its tasks are gone
				"echo-server-1-0=100",
			},
			bakes: 3,
		},
	}
	for _, tt := range tests {
		t.Run(strings.Trim(strings.Join(strings.Fields(fmtInts(tt.steps)), ","), "[]"), func(t *testing.T) {
			h := newHarness(t)
			h.start("1.0", tt.steps...)
			st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack, mesh.PhaseFailed))
			if st.Phase != mesh.PhaseSucceeded {
				t.Fatalf("phase = %s (%s), want Succeeded; events:\n%s", st.Phase, st.Reason, events(st))
			}
			if diff := cmp.Diff(tt.routeLog, h.routeLog()); diff != "" {
				t.Errorf("route changes (-want +got):\n%s", diff)
			}
			if got, want := st.Message, "Version 0.9 retired"; got != want {
				t.Errorf("message = %q, want %q", got, want)
			}
			if got, want := h.route(), "echo-server-1-0=100"; got != want {
				t.Errorf("route = %s, want %s", got, want)
			}
			for _, k := range []mesh.Kind{mesh.KindTaskSet, mesh.KindVirtualNode} {
				if h.exists(k, "echo-server-0-9") {
					t.Errorf("old %s echo-server-0-9 still exists", k)
				}
				if !h.exists(k, "echo-server-1-0") {
					t.Errorf("new %s echo-server-1-0 missing", k)
				}
			}
			if got := h.get(mesh.KindService, "echo-server").Service().VirtualNode; got != "echo-server-1-0" {
				t.Errorf("service virtualNode = %s, want echo-server-1-0", got)
			}
			node := h.get(mesh.KindVirtualNode, "echo-server-1-0").VirtualNode()
			if diff := cmp.Diff([]mesh.Attribute{{Key: "version", Value: "1.0"}}, node.ServiceDiscovery.Registry.Attributes); diff != "" {
				t.Errorf("new node attributes (-want +got):\n%s", diff)
			}
			set := h.get(mesh.KindTaskSet, "echo-server-1-0").TaskSet()
			if set.Revision != 2 || set.DesiredCount != 2 || set.Port != 8080 || set.Env["GREETING"] != "Hello" || set.Env["ECHO_VERSION"] != "1.0" {
				t.Errorf("new task set = %+v, want revision 2, 2 tasks on 8080, env inherited and overridden", set)
			}
			if got := len(st.History); got != 2 || st.History[0].Version != "0.9" || st.History[1].Version != "1.0" {
				t.Errorf("history = %s, want 0.9 then 1.0", dump(st.History))
			}
			if prev := Previous(st); prev == nil || prev.Version != "0.9" || prev.Command[0] != "/artifacts/sha256-09" {
				t.Errorf("Previous = %+v, want 0.9's spec", prev)
			}
			passed := 0
			for _, e := range st.Events {
				if strings.Contains(e.Message, "passed: success rate 100.0%") {
					passed++
				}
			}
			if passed != tt.bakes {
				t.Errorf("passed bakes = %d, want %d; events:\n%s", passed, tt.bakes, events(st))
			}
			for _, want := range []string{"Waiting for tasks to be RUNNING...", "Tasks started", "Waiting for tasks to be HEALTHY...",
				"Tasks healthy", "Routing " + itoa(tt.steps[0]) + "% of traffic to the new version", "Routing 100% of traffic to the new version",
				"Draining version 0.9"} {
				if !hasEvent(st, want) {
					t.Errorf("no event %q; events:\n%s", want, events(st))
				}
			}
			if st.FinishedAt == "" || st.Weight != 100 {
				t.Errorf("finishedAt %q weight %d, want set and 100", st.FinishedAt, st.Weight)
			}
		})
	}
}

func fmtInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, itoa(x))
	}
	return strings.Join(s, " ")
}

// checkRolledBack asserts the state after a rollback: the route back on the
// old version only, the new task set and node gone, the old ones intact.
func checkRolledBack(t *testing.T, h *harness, st *mesh.RolloutStatus, phase mesh.Phase, reason string) {
	t.Helper()
	if st.Phase != phase {
		t.Fatalf("phase = %s, want %s; events:\n%s", st.Phase, phase, events(st))
	}
	if !strings.Contains(st.Reason, reason) {
		t.Errorf("reason = %q, want it to contain %q", st.Reason, reason)
	}
	if got, want := h.route(), "echo-server-0-9=100"; got != want {
		t.Errorf("route = %s, want %s", got, want)
	}
	for _, k := range []mesh.Kind{mesh.KindTaskSet, mesh.KindVirtualNode} {
		if h.exists(k, "echo-server-1-0") {
			t.Errorf("new %s echo-server-1-0 still exists", k)
		}
		if !h.exists(k, "echo-server-0-9") {
			t.Errorf("old %s echo-server-0-9 is gone", k)
		}
	}
	if h.get(mesh.KindTaskSet, "echo-server-0-9").TaskSet().Draining {
		t.Error("old task set is draining")
	}
	if got := h.get(mesh.KindService, "echo-server").Service().VirtualNode; got != "echo-server-0-9" {
		t.Errorf("service virtualNode = %s, want echo-server-0-9", got)
	}
	if st.Weight != 0 || st.FinishedAt == "" {
		t.Errorf("weight %d finishedAt %q, want 0 and set", st.Weight, st.FinishedAt)
	}
	if len(h.rt.List(meshName, "echo-server")) != 2 {
		t.Errorf("endpoints = %s, want only the old version's 2", dump(h.rt.List(meshName, "echo-server")))
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *harness)
		reason  string
		within  time.Duration // of fake time from the start
		warning string        // an event the rollback must have logged
	}{
		{
			name:   "tasks never RUNNING",
			setup:  func(h *harness) { h.rt.behavior["echo-server-1-0"] = neverRun },
			reason: "timed out after 30s waiting for tasks of echo-server-1-0 to be RUNNING (0/2)",
			within: 30 * time.Second,
		},
		{
			name:   "tasks never HEALTHY",
			setup:  func(h *harness) { h.rt.behavior["echo-server-1-0"] = unhealthy },
			reason: "timed out after 30s waiting for tasks of echo-server-1-0 to be HEALTHY (0/2): rpc error: code = Unavailable",
			within: 33 * time.Second, // RUNNING after the first 2s poll
		},
		{
			name: "ACK never arrives",
			setup: func(h *harness) {
				h.conv.auto = false
				h.conv.acked = 2 // the weight-0 commit, not the 50% one
			},
			reason:  "timed out after 30s waiting for xDS clients to acknowledge the route at 50%: echo-client-1",
			within:  33 * time.Second,
			warning: "did not acknowledge the route back to version 0.9",
		},
		{
			name:   "gate fails at step 1",
			setup:  func(h *harness) { h.errRate = 0.2 },
			reason: "analysis of version 1.0 at 50% failed: success rate 80.0% < 99.0% over",
			within: 5 * time.Second, // judged mid-bake, long before the 10s interval ends
		},
		{
			name:   "not enough traffic",
			setup:  func(h *harness) { h.rps = 0.9 }, // 0.45 requests/s at 50%: under 20 in 40s
			reason: "not enough traffic to judge version 1.0 at 50% within 40s: 17 requests, fewer than the 20 needed to judge",
			within: 43 * time.Second,
		},
		{
			name:   "metrics unavailable",
			setup:  func(h *harness) { h.metrics.err = errString("connection refused") },
			reason: "metrics of version 1.0 unavailable: connection refused",
			within: 45 * time.Second,
		},
		{
			name:    "new tasks do not stop when drained",
			setup:   func(h *harness) { h.rt.behavior["echo-server-1-0"] = stuckOnStop; h.errRate = 0.5 },
			reason:  "success rate 50.0% < 99.0%",
			within:  40 * time.Second,
			warning: "2 tasks of version 1.0 did not stop within 30s; deleting them anyway",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			h.start("1.0", 50, 100)
			st := h.runUntil(3*time.Minute, phaseIs(mesh.PhaseRolledBack, mesh.PhaseSucceeded, mesh.PhaseFailed))
			if tt.name == "new tasks do not stop when drained" {
				h.rt.mu.Lock()
				h.rt.eps = nil // the fake runtime finally kills them
				h.rt.mu.Unlock()
				h.rt.sync(t, h.store)
			}
			checkRolledBack(t, h, st, mesh.PhaseRolledBack, tt.reason)
			if took := rollbackAt(t, st).Sub(t0); took > tt.within {
				t.Errorf("started rolling back after %s, want within %s", took, tt.within)
			}
			if tt.warning != "" && !hasEvent(st, tt.warning) {
				t.Errorf("no event %q; events:\n%s", tt.warning, events(st))
			}
			if !hasEvent(st, "Rolled back to version 0.9: "+st.Reason) {
				t.Errorf("no final event; events:\n%s", events(st))
			}
		})
	}
}

// rollbackAt returns when the rollout started rolling back.
func rollbackAt(t *testing.T, st *mesh.RolloutStatus) time.Time {
	t.Helper()
	for _, e := range st.Events {
		if e.Phase == mesh.PhaseRollingBack {
			at, ok := parseTime(e.Time)
			if !ok {
				t.Fatalf("bad event time %q", e.Time)
			}
			return at
		}
	}
	t.Fatalf("never rolled back; events:\n%s", events(st))
	return time.Time{}
}

type errString string

func (e errString) Error() string { return string(e) }
