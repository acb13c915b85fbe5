package rollout

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func TestPauseResume(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 10, 50, 100)
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
	if err := h.e.Control(h.ctx, h.ref, ActionPause); err != nil {
		t.Fatalf("pause: %v", err)
	}
	st := h.runUntil(time.Second, phaseIs(mesh.PhasePaused))
	if st.ResumePhase != mesh.PhaseBaking || st.Weight != 10 || st.Message != "Paused at 10% (in Baking)" {
		t.Errorf("paused status: resume %s weight %d message %q, want Baking, 10, Paused at 10%% (in Baking)", st.ResumePhase, st.Weight, st.Message)
	}
	// Paused holds: no timeout, no progress, however long.
	for range 10 {
		d, err := h.reconcile()
		if err != nil || d != 0 {
			t.Fatalf("paused Reconcile = %v, %v, want 0, nil", d, err)
		}
		h.advance(time.Minute)
	}
	if st := h.status(); st.Phase != mesh.PhasePaused {
		t.Fatalf("phase = %s after 10 paused minutes, want Paused", st.Phase)
	}
	if got, want := h.route(), "echo-server-0-9=90,echo-server-1-0=10"; got != want {
		t.Errorf("route while paused = %s, want %s", got, want)
	}
	if err := h.e.Control(h.ctx, h.ref, ActionPause); err != nil {
		t.Errorf("second pause: %v, want nil (idempotent)", err)
	}
	if err := h.e.Control(h.ctx, h.ref, ActionResume); err != nil {
		t.Fatalf("resume: %v", err)
	}
	st = h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
	if st.Phase != mesh.PhaseSucceeded {
		t.Fatalf("phase = %s (%s), want Succeeded", st.Phase, st.Reason)
	}
	for _, want := range []string{"Pause requested", "Resume requested", "Resumed at 10%", "Step 1/3 (10%) passed", "Step 2/3 (50%) passed"} {
		if !hasEvent(st, want) {
			t.Errorf("no event %q; events:\n%s", want, events(st))
		}
	}
	if err := h.e.Control(h.ctx, h.ref, ActionResume); mesh.ErrorCode(err) != mesh.EConflict {
		t.Errorf("resume of a finished rollout: %v, want a conflict", err)
	}
}

func TestPromote(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 10, 25, 50, 100)
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
	if err := h.e.Control(h.ctx, h.ref, ActionPromote); err != nil {
		t.Fatalf("promote: %v", err)
	}
	st := h.runUntil(time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
	if st.Phase != mesh.PhaseSucceeded {
		t.Fatalf("phase = %s, want Succeeded", st.Phase)
	}
	want := []string{"echo-server-0-9=100,echo-server-1-0=0", "echo-server-0-9=90,echo-server-1-0=10", "echo-server-0-9=0,echo-server-1-0=100", "echo-server-1-0=100"}
	if got := h.routeLog(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("route changes = %q, want %q", got, want)
	}
	if !hasEvent(st, "Routing 100% of traffic to the new version (promoted)") {
		t.Errorf("no promoted event; events:\n%s", events(st))
	}
}

func TestPromoteWhilePausedAndWaitingForACKs(t *testing.T) {
	h := newHarness(t)
	h.conv.auto, h.conv.acked = false, 0
	h.start("1.0", 10, 50, 100)
	h.conv.acked = 2 // weight-0 commit
	h.runUntil(time.Minute, phaseIs(mesh.PhaseShifting))
	if err := h.e.Control(h.ctx, h.ref, ActionPause); err != nil {
		t.Fatal(err)
	}
	h.runUntil(time.Second, phaseIs(mesh.PhasePaused))
	h.advance(time.Hour) // no ACK timeout while paused
	if err := h.e.Control(h.ctx, h.ref, ActionPromote); err != nil {
		t.Fatal(err)
	}
	// Back in Shifting, with a fresh timeout, still waiting for the ACK.
	st := h.runUntil(5*time.Second, phaseIs(mesh.PhaseShifting))
	if st.Paused || !st.Promote {
		t.Errorf("paused %v promote %v, want false, true", st.Paused, st.Promote)
	}
	h.conv.mu.Lock()
	h.conv.auto = true
	h.conv.mu.Unlock()
	st = h.runUntil(time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
	if st.Phase != mesh.PhaseSucceeded {
		t.Fatalf("phase = %s (%s), want Succeeded", st.Phase, st.Reason)
	}
}

func TestAbort(t *testing.T) {
	for _, at := range []mesh.Phase{mesh.PhaseStartingTasks, mesh.PhaseBaking, mesh.PhasePaused} {
		t.Run(string(at), func(t *testing.T) {
			h := newHarness(t)
			h.start("1.0", 50, 100)
			if at == mesh.PhasePaused {
				h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
				if err := h.e.Control(h.ctx, h.ref, ActionPause); err != nil {
					t.Fatal(err)
				}
			}
			h.runUntil(time.Minute, phaseIs(at))
			if err := h.e.Control(h.ctx, h.ref, ActionAbort); err != nil {
				t.Fatalf("abort: %v", err)
			}
			st := h.runUntil(time.Minute, phaseIs(mesh.PhaseAborted, mesh.PhaseRolledBack, mesh.PhaseSucceeded))
			checkRolledBack(t, h, st, mesh.PhaseAborted, "aborted on request")
			if st.Message != "Aborted; version 0.9 serves all traffic" {
				t.Errorf("message = %q", st.Message)
			}
		})
	}
}

func TestControlRefusals(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 50, 100)
	if err := h.e.Control(h.ctx, h.ref, "explode"); mesh.ErrorCode(err) != mesh.EInvalid {
		t.Errorf("unknown action: %v, want invalid", err)
	}
	if err := h.e.Control(h.ctx, h.ref, ActionResume); mesh.ErrorCode(err) != mesh.EConflict {
		t.Errorf("resume of a running rollout: %v, want conflict", err)
	}
	h.runUntil(time.Minute, phaseIs(mesh.PhaseRetiring))
	err := h.e.Control(h.ctx, h.ref, ActionAbort)
	if mesh.ErrorCode(err) != mesh.EConflict || !strings.Contains(err.Error(), "too late to abort") {
		t.Errorf("abort while retiring: %v, want too late", err)
	}
	if err := h.e.Control(h.ctx, h.ref, ActionPause); mesh.ErrorCode(err) != mesh.EConflict {
		t.Errorf("pause while retiring: %v, want conflict", err)
	}
	missing := h.ref
	missing.Name = "nope"
	if err := h.e.Control(h.ctx, missing, ActionPause); !mesh.IsNotFound(err) {
		t.Errorf("control of a missing rollout: %v, want not found", err)
	}
}

// TestControlConflictRetry: a status write that races the engine is retried.
func TestControlConflictRetry(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 50, 100)
	racy := &racyStore{memStore: h.mem(), races: 2}
	h.e.store = racy
	if err := h.e.Control(h.ctx, h.ref, ActionPause); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if !h.status().Paused {
		t.Error("pause flag not set")
	}
}

// racyStore fails the first races status writes with a conflict: another
// writer updated the rollout just before (its status, unchanged, is
// written again, so its resourceVersion moves on).
type racyStore struct {
	*memStore
	races int
}

func (s *racyStore) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	if s.races > 0 {
		s.races--
		cur, err := s.memStore.Get(ctx, ref)
		if err != nil {
			return nil, err
		}
		if _, err := s.memStore.UpdateStatus(ctx, ref, cur.Status, ""); err != nil {
			return nil, err
		}
		return nil, mesh.Errorf(mesh.EConflict, "changed concurrently")
	}
	return s.memStore.UpdateStatus(ctx, ref, status, rv)
}

func TestStartRefusals(t *testing.T) {
	h := newHarness(t)
	_, err := h.e.Start(h.ctx, rolloutOf("0.9"))
	if mesh.ErrorCode(err) != mesh.EInvalid || !strings.Contains(err.Error(), "version 0.9 of echo-server is already running; deploy it again with --force") {
		t.Errorf("same version: %v, want refused", err)
	}
	h.start("1.0", 50, 100)
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
	_, err = h.e.Start(h.ctx, rolloutOf("1.1"))
	want := "a rollout of echo-server is already in progress (phase Baking, step 1/2); use `gmesh rollout status echo-server` or `gmesh rollout abort echo-server`"
	if mesh.ErrorCode(err) != mesh.EConflict || err.Error() != want {
		t.Errorf("second Start: %v, want %q", err, want)
	}

	bad := []struct {
		name string
		mod  func(r *mesh.Resource)
		want string
	}{
		{"no service", func(r *mesh.Resource) { r.Rollout().Service = "ghost"; r.Metadata.Name = "ghost" }, "service ghost not found in mesh demo"},
		{"name differs", func(r *mesh.Resource) { r.Metadata.Name = "other" }, "a rollout is named after its service"},
		{"steps", func(r *mesh.Resource) { r.Rollout().Steps = []int{50, 40, 100} }, "steps must be ascending"},
		{"last step", func(r *mesh.Resource) { r.Rollout().Steps = []int{50} }, "the last step must be 100"},
		{"no command", func(r *mesh.Resource) { r.Rollout().Target.Command = nil }, "spec.target.command"},
		{"no version", func(r *mesh.Resource) { r.Rollout().Target.Version = "" }, "spec.target.version"},
	}
	h2 := newHarness(t)
	for _, b := range bad {
		r := rolloutOf("2.0")
		b.mod(r)
		if _, err := h2.e.Start(h2.ctx, r); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: Start error %v, want one containing %q", b.name, err, b.want)
		}
	}
}

func TestForceSameVersion(t *testing.T) {
	h := newHarness(t)
	r := rolloutOf("0.9", 50, 100)
	r.Rollout().Force = true
	if _, err := h.e.Start(h.ctx, r); err != nil {
		t.Fatal(err)
	}
	st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
	if st.Phase != mesh.PhaseSucceeded {
		t.Fatalf("phase %s (%s), want Succeeded", st.Phase, st.Reason)
	}
	// The name echo-server-0-9 was taken by the running version.
	if st.NewVirtualNode != "echo-server-0-9-r2" || st.NewTaskSet != "echo-server-0-9-r2" {
		t.Errorf("new node, set = %s, %s, want echo-server-0-9-r2", st.NewVirtualNode, st.NewTaskSet)
	}
	attrs := h.get(mesh.KindVirtualNode, "echo-server-0-9-r2").VirtualNode().ServiceDiscovery.Registry.Attributes
	if len(attrs) != 2 || attrs[1] != (mesh.Attribute{Key: "taskSet", Value: "echo-server-0-9-r2"}) {
		t.Errorf("attributes = %+v, want version and taskSet (a forced redeploy must not select the old tasks)", attrs)
	}
	if got := h.route(); got != "echo-server-0-9-r2=100" {
		t.Errorf("route = %s", got)
	}
}

// TestNextRolloutKeepsHistory: a finished rollout is replaced by the next
// one, which carries the revision history; RollbackSpec deploys the
// previous revision again.
func TestNextRolloutKeepsHistory(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 50, 100)
	h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded))
	h.errRate = 0.5
	h.start("1.1", 50, 100)
	st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseRolledBack, mesh.PhaseSucceeded))
	if st.Phase != mesh.PhaseRolledBack || st.Revision != 3 {
		t.Fatalf("phase %s revision %d, want RolledBack 3", st.Phase, st.Revision)
	}
	if got := len(st.History); got != 2 || st.History[1].Version != "1.0" {
		t.Fatalf("history = %s, want 0.9, 1.0", dump(st.History))
	}
	h.errRate = 0
	spec, err := RollbackSpec(h.get(mesh.KindRollout, "echo-server"))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Target.Version != "0.9" || !spec.Rollback || spec.Target.Command[0] != "/artifacts/sha256-09" || spec.Target.Env["GREETING"] != "Hello" {
		t.Fatalf("rollback spec = %s", dump(spec))
	}
	r := mesh.New(mesh.KindRollout, meshName, "echo-server", spec)
	if _, err := h.e.Start(h.ctx, r); err != nil {
		t.Fatal(err)
	}
	st = h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
	if st.Phase != mesh.PhaseSucceeded || st.Revision != 4 {
		t.Fatalf("phase %s revision %d, want Succeeded 4", st.Phase, st.Revision)
	}
	if got := h.route(); got != "echo-server-0-9=100" {
		t.Errorf("route = %s, want back on a 0.9 node named echo-server-0-9", got)
	}
	if n := len(st.History); n != 3 || st.History[n-1].Version != "0.9" || st.History[n-1].Revision != 4 {
		t.Errorf("history = %s", dump(st.History))
	}
	if env := h.get(mesh.KindTaskSet, "echo-server-0-9").TaskSet().Env; len(env) != 1 || env["GREETING"] != "Hello" {
		t.Errorf("rolled-back env = %v, want 0.9's own (GREETING only, nothing of 1.0's)", env)
	}
}

// TestResumeAfterCrash: a new Engine over the same store (a restarted
// control plane) carries on from the stored phase, whatever it is.
func TestResumeAfterCrash(t *testing.T) {
	tests := []struct {
		at            mesh.Phase
		hold, release func(h *harness) // keep the rollout in phase at, then let it go
	}{
		{at: mesh.PhaseStartingTasks,
			hold:    func(h *harness) { h.rt.behavior["echo-server-1-0"] = neverRun },
			release: func(h *harness) { h.rt.behavior["echo-server-1-0"] = healthy }},
		{at: mesh.PhaseWaitingHealthy,
			hold:    func(h *harness) { h.rt.behavior["echo-server-1-0"] = unhealthy },
			release: func(h *harness) { h.rt.behavior["echo-server-1-0"] = healthy }},
		{at: mesh.PhaseShifting,
			hold:    func(h *harness) { h.conv.auto, h.conv.acked = false, 2 },
			release: func(h *harness) { h.conv.mu.Lock(); h.conv.auto = true; h.conv.mu.Unlock() }},
		{at: mesh.PhaseBaking},
		{at: mesh.PhaseRetiring,
			hold:    func(h *harness) { h.rt.behavior["echo-server-0-9"] = stuckOnStop },
			release: func(h *harness) { h.rt.behavior["echo-server-0-9"] = healthy }},
	}
	for _, tt := range tests {
		t.Run(string(tt.at), func(t *testing.T) {
			h := newHarness(t)
			if tt.hold != nil {
				tt.hold(h)
			}
			h.start("1.0", 10, 50, 100)
			h.runUntil(time.Minute, phaseIs(tt.at))
			h.e = h.newEngine() // the control plane restarts
			if tt.release != nil {
				tt.release(h)
			}
			st := h.runUntil(5*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
			if st.Phase != mesh.PhaseSucceeded {
				t.Fatalf("phase %s (%s), want Succeeded; events:\n%s", st.Phase, st.Reason, events(st))
			}
			if got := h.route(); got != "echo-server-1-0=100" {
				t.Errorf("route = %s", got)
			}
			if h.exists(mesh.KindTaskSet, "echo-server-0-9") {
				t.Error("old task set not deleted")
			}
		})
	}
}

// TestCrashBetweenCommitAndStatus: every commit is followed by a lost status
// write once; the rollout still completes, creating nothing twice.
func TestCrashBetweenCommitAndStatus(t *testing.T) {
	for _, failAt := range []int{1, 2, 3, 4, 5, 6} {
		t.Run(itoa(failAt), func(t *testing.T) {
			h := newHarness(t)
			h.start("1.0", 50, 100)
			commits := 0
			h.mem().beforeCommit = func(puts []*mesh.Resource, deletes []mesh.Ref) error {
				commits++
				if commits == failAt {
					h.mem().failNextStatus = true
				}
				return nil
			}
			deadline := h.clock.Now().Add(5 * time.Minute)
			for {
				d, err := h.reconcile()
				if err != nil {
					// The control plane dies; a new one takes over.
					h.e = h.newEngine()
					d = time.Second
				}
				if st := h.status(); st.Phase.Terminal() {
					if st.Phase != mesh.PhaseSucceeded {
						t.Fatalf("phase %s (%s), want Succeeded; events:\n%s", st.Phase, st.Reason, events(st))
					}
					break
				}
				if h.clock.Now().After(deadline) {
					t.Fatalf("not done: %s", dump(h.status()))
				}
				h.advance(max(d, time.Millisecond))
			}
			if h.exists(mesh.KindVirtualNode, "echo-server-1-0-r2") || h.exists(mesh.KindTaskSet, "echo-server-1-0-r2") {
				t.Error("the new version was created twice")
			}
			if got := h.route(); got != "echo-server-1-0=100" {
				t.Errorf("route = %s", got)
			}
		})
	}
}

// TestCounterReset: the new version's task restarts mid-bake; its fresh
// counters are neither subtracted from the old ones nor lose what the
// earlier process served.
func TestCounterReset(t *testing.T) {
	h := newHarness(t)
	h.rps = 0 // traffic by hand
	h.start("1.0", 50, 100)
	h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking)) // baseline: nothing yet
	check := func(req, errs int64) {
		t.Helper()
		h.advance(time.Second)
		if _, err := h.reconcile(); err != nil {
			t.Fatal(err)
		}
		st := h.status()
		if st.Phase != mesh.PhaseBaking || st.Analysis == nil || st.Analysis.Requests != req || st.Analysis.Errors != errs || !st.Analysis.Passed {
			t.Fatalf("phase %s analysis %+v, want Baking with %d requests, %d errors, passed", st.Phase, st.Analysis, req, errs)
		}
	}
	h.metrics.serve("echo-server-1-0", "task-a/1", 1000, 0)
	check(1000, 0)
	h.metrics.restart("echo-server-1-0", "task-a/1") // new process, new pid
	h.metrics.serve("echo-server-1-0", "task-a/2", 30, 0)
	check(1030, 0)
	h.metrics.restart("echo-server-1-0", "task-a/2") // a reset the pid does not show
	h.metrics.serve("echo-server-1-0", "task-a/2", 5, 5)
	check(1035, 5)
}

// TestRun drives the Run loop on the fake clock: Notify and the requeue
// timer wake it, and it carries a rollout to the end.
func TestRun(t *testing.T) {
	h := newHarness(t)
	h.e.cfg.Resync = time.Hour
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	h.rt.sync(t, h.store)
	syncing := &syncRuntime{fakeRuntime: h.rt, t: t, s: h.store}
	h.e.eps = syncing
	h.start("1.0", 50, 100)
	<-h.e.notify // Start's wake-up: Run's first pass reconciles anyway
	// From here on only Run's timer wakes it: each time Run re-arms its
	// timer, it is idle, and the test moves the clock to the deadline.
	armed := h.clock.Armed()
	go func() { done <- h.e.Run(ctx) }()
	for {
		select {
		case <-armed:
		case <-h.ctx.Done():
			t.Fatalf("timed out; status:\n%s", dump(h.status()))
		}
		armed = h.clock.Armed()
		st := h.status()
		if st.Phase.Terminal() {
			if st.Phase != mesh.PhaseSucceeded {
				t.Fatalf("phase %s (%s)", st.Phase, st.Reason)
			}
			break
		}
		// Run is waiting on its timer: move the clock to it.
		if next, ok := h.clock.NextDeadline(); ok {
			h.advance(next.Sub(h.clock.Now()))
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
}

// syncRuntime brings the fake runtime in line with the store on every List,
// so the Run loop sees tasks start without the test stepping it.
type syncRuntime struct {
	*fakeRuntime
	t *testing.T
	s Store
}

func (r *syncRuntime) List(meshName, service string) []*mesh.Endpoint {
	r.fakeRuntime.sync(r.t, r.s)
	return r.fakeRuntime.List(meshName, service)
}

// TestReconcileStatusConflict: a status write that loses to a concurrent
// control is redone from a fresh read, not reported as an error.
func TestReconcileStatusConflict(t *testing.T) {
	h := newHarness(t)
	h.start("1.0", 50, 100)
	h.e.store = &racyStore{memStore: h.mem(), races: 1}
	if _, err := h.reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if st := h.status(); st.Phase != mesh.PhaseStartingTasks {
		t.Errorf("phase = %s, want StartingTasks", st.Phase)
	}
	if h.exists(mesh.KindVirtualNode, "echo-server-1-0-r2") {
		t.Error("the retried pass created the node twice")
	}
}

// TestRolloutNotStartedByEngine: a Rollout written without Start (no
// revision) fails without touching anything.
func TestRolloutNotStartedByEngine(t *testing.T) {
	h := newHarness(t)
	r := rolloutOf("1.0", 50, 100)
	if _, err := h.store.Commit(h.ctx, []*mesh.Resource{r}, nil); err != nil {
		t.Fatal(err)
	}
	st := h.runUntil(time.Second, phaseIs(mesh.PhaseFailed, mesh.PhaseStartingTasks))
	if st.Phase != mesh.PhaseFailed || !strings.Contains(st.Reason, "not started by the rollout engine") {
		t.Errorf("phase %s reason %q, want Failed", st.Phase, st.Reason)
	}
	if h.exists(mesh.KindVirtualNode, "echo-server-1-0") || len(h.routeLog()) != 0 {
		t.Error("a rollout that was not started changed the mesh")
	}
}

// TestStalledClient: a client that subscribes to the shifted route and never
// ACKs it is named in the status and the events once the ACK timeout passes,
// and the rollout does what onStalledClient says: pause (and wait again on
// resume), proceed, or roll back. Never a silent wait.
func TestStalledClient(t *testing.T) {
	for _, policy := range []string{mesh.StalledPause, mesh.StalledProceed, mesh.StalledRollback} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t)
			h.conv.auto, h.conv.acked = false, 2 // the weight-0 commit, not the 10% step
			r := rolloutOf("1.0", 10, 100)
			r.Rollout().AckTimeoutMillis = 5_000
			r.Rollout().OnStalledClient = policy
			if _, err := h.e.Start(h.ctx, r); err != nil {
				t.Fatal(err)
			}
			hasEvent := func(st *mesh.RolloutStatus, s string) bool {
				for _, e := range st.Events {
					if strings.Contains(e.Message, s) {
						return true
					}
				}
				return false
			}
			named := "xDS clients echo-client-1 have not acknowledged the route at 10% within 5s"
			switch policy {
			case mesh.StalledPause:
				st := h.runUntil(time.Minute, phaseIs(mesh.PhasePaused))
				if !hasEvent(st, named+"; pausing") || !slices.Equal(st.StalledClients, []string{"echo-client-1"}) || st.Weight != 10 || st.ResumePhase != mesh.PhaseShifting {
					t.Fatalf("paused with stalled %v weight %d resume %s events %+v; want echo-client-1 named, 10%%, back to Shifting", st.StalledClients, st.Weight, st.ResumePhase, st.Events)
				}
				h.advance(time.Hour) // paused: no timeout runs
				h.conv.mu.Lock()
				h.conv.auto = true // the client catches up
				h.conv.mu.Unlock()
				if err := h.e.Control(h.ctx, h.ref, ActionResume); err != nil {
					t.Fatal(err)
				}
				st = h.runUntil(2*time.Minute, phaseIs(mesh.PhaseSucceeded, mesh.PhaseRolledBack))
				if st.Phase != mesh.PhaseSucceeded || len(st.StalledClients) != 0 {
					t.Fatalf("after resume: %s (%s), stalled %v; want Succeeded, none stalled", st.Phase, st.Reason, st.StalledClients)
				}
			case mesh.StalledProceed:
				st := h.runUntil(time.Minute, phaseIs(mesh.PhaseBaking))
				if !hasEvent(st, named+"; proceeding without them") || !slices.Equal(st.StalledClients, []string{"echo-client-1"}) {
					t.Fatalf("baking with stalled %v events %+v; want echo-client-1 named", st.StalledClients, st.Events)
				}
				if at := h.clock.Now().Sub(t0); at > 20*time.Second {
					t.Errorf("proceeded %s after the start, want about the 5s ACK timeout after the step", at)
				}
			case mesh.StalledRollback:
				st := h.runUntil(time.Minute, phaseIs(mesh.PhaseRolledBack, mesh.PhaseSucceeded))
				if st.Phase != mesh.PhaseRolledBack || !strings.Contains(st.Reason, "timed out after 5s waiting for xDS clients to acknowledge the route at 10%: echo-client-1") {
					t.Fatalf("got %s (%s), want RolledBack naming echo-client-1", st.Phase, st.Reason)
				}
			}
		})
	}
}
