package k8se2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/load"
)

var rollouts = schema.GroupVersionResource{Group: "gmesh.dev", Version: "v1alpha1", Resource: "rollouts"}

// rolloutYAML is a Rollout of the echo example's echo-server from the
// Deployment stable to version, with the controls explicitly off: each
// apply is a new revision of the same object, and kubectl apply would keep
// a control set by an earlier patch.
func rolloutYAML(stable, version, target, steps, interval string) string {
	return fmt.Sprintf(`apiVersion: gmesh.dev/v1alpha1
kind: Rollout
metadata:
  name: echo-server
  namespace: echo
spec:
  virtualRouterRef: {name: echo-server}
  route: echo-server-route
  stableDeployment: %s
  version: %q
%s
  steps: %s
  interval: %s
  timeout: 3m
  ackTimeout: 20s
  onStalledClient: Rollback
  analysis: {minSuccessRate: "0.99", maxP99Latency: 2s, minRequests: 20}
  paused: false
  promote: false
  abort: false
`, stable, version, target, steps, interval)
}

// image is a Rollout target: echo-server's container on image ref.
func image(ref string) string {
	return fmt.Sprintf("  images:\n  - {container: echo-server, image: %s}", ref)
}

// failing is a Rollout target: image ref with the echo-server's failure
// knob at rate.
func failing(ref, rate string) string {
	return fmt.Sprintf(`  templatePatch:
    spec:
      containers:
      - name: echo-server
        image: %s
        env:
        - {name: ECHO_FAIL_RATE, value: %q}`, ref, rate)
}

// rolloutState is one observation of the Rollout's status.
type rolloutState struct {
	at         time.Time
	generation int64
	status     v1alpha1.RolloutStatus
}

func (c *cluster) rollout(ctx context.Context) (*v1alpha1.Rollout, error) {
	u, err := c.dyn.Resource(rollouts).Namespace(echoNS).Get(ctx, "echo-server", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var ro v1alpha1.Rollout
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ro); err != nil {
		return nil, err
	}
	return &ro, nil
}

// waitRollout polls the Rollout until cond holds for a status describing
// its current generation, and returns that status.
func (c *cluster) waitRollout(ctx context.Context, what string, d time.Duration, cond func(*v1alpha1.RolloutStatus) bool) v1alpha1.RolloutStatus {
	c.t.Helper()
	var st v1alpha1.RolloutStatus
	c.poll(ctx, "rollout echo/echo-server: "+what, d, func() (bool, string) {
		ro, err := c.rollout(ctx)
		if err != nil {
			return false, err.Error()
		}
		st = ro.Status
		desc := fmt.Sprintf("generation %d observed %d, %s %s weight %d: %s %s", ro.Generation, st.ObservedGeneration, st.Phase, st.Step, st.Weight, st.Message, st.Reason)
		return st.ObservedGeneration == ro.Generation && cond(&st), desc
	})
	return st
}

// watchRollout records the Rollout's status every 100 ms until stop is
// closed.
func (c *cluster) watchRollout(ctx context.Context, stop <-chan struct{}) func() []rolloutState {
	var (
		mu     sync.Mutex
		states []rolloutState
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if ro, err := c.rollout(ctx); err == nil {
				mu.Lock()
				states = append(states, rolloutState{at: time.Now(), generation: ro.Generation, status: ro.Status})
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() []rolloutState {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return states
	}
}

// phaseAt is the phase and step index the observations say held
// throughout [from, to], ok false when they changed or none covers it.
func phaseAt(states []rolloutState, from, to time.Time) (phase string, step int32, ok bool) {
	var before *rolloutState
	for i := range states {
		s := &states[i]
		if !s.at.After(from) {
			before = s
			continue
		}
		if before == nil {
			return "", 0, false
		}
		if s.at.After(to) {
			break
		}
		if s.status.Phase != before.status.Phase || s.status.StepIndex != before.status.StepIndex {
			return "", 0, false
		}
	}
	if before == nil || !states[len(states)-1].at.After(to) {
		return "", 0, false
	}
	return before.status.Phase, before.status.StepIndex, true
}

// loadReport is one second of load and when it ended.
type loadReport struct {
	end time.Time
	load.Report
}

// loadRun is 100 rps through the gateway, until stopped.
type loadRun struct {
	t       *testing.T
	stop    chan struct{}
	done    chan struct{}
	res     *load.Result
	err     error
	mu      sync.Mutex
	reports []loadReport
	tick    chan struct{} // one per report
}

// startLoad sends 100 rps through the gateway until finish (at most
// limit).
func startLoad(ctx context.Context, t *testing.T, gw string, limit time.Duration) *loadRun {
	l := &loadRun{t: t, stop: make(chan struct{}), done: make(chan struct{}), tick: make(chan struct{}, 1<<12)}
	go func() {
		defer close(l.done)
		l.res, l.err = load.Run(ctx, load.Config{
			URL: gw + "/?name=rollout", RPS: 100, Duration: limit, Concurrency: 256, AllowRemote: true, Stop: l.stop,
			Every: func(r load.Report) {
				l.mu.Lock()
				l.reports = append(l.reports, loadReport{end: time.Now(), Report: r})
				l.mu.Unlock()
				select {
				case l.tick <- struct{}{}:
				default:
				}
			},
		})
	}()
	return l
}

// finish lets n more seconds of load be reported, stops the load and
// returns the run and its per-second reports.
func (l *loadRun) finish(ctx context.Context, n int) (*load.Result, []loadReport) {
	l.t.Helper()
	for range len(l.tick) { // reports already made do not count
		<-l.tick
	}
	for i := 0; i < n; i++ {
		select {
		case <-l.tick:
		case <-l.done:
			l.t.Errorf("the load ended after %d of the %d seconds asked for", i, n)
			i = n
		case <-ctx.Done():
			l.t.Fatalf("the load's last %d seconds: %v", n, ctx.Err())
		}
	}
	close(l.stop)
	<-l.done
	if l.err != nil {
		l.t.Fatalf("load through the gateway: %v", l.err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res, l.reports
}

// leader is the control plane's Lease holder.
func (c *cluster) leader(ctx context.Context) (string, error) {
	var l *coordinationv1.Lease
	l, err := c.c.Client().CoordinationV1().Leases(cpNamespace).Get(ctx, cpDeployment, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// TestRolloutOnRealCluster runs issue 13's "done when" on a fresh cluster
// with the echo example: a Rollout naming a missing Deployment and a second
// rollout of the same route are refused at admission; a failing version is
// rolled back by the analysis gates within two bake intervals; an aborted
// rollout returns all traffic to 0.9; 0.9 -> 1.0 in steps 10, 50, 100
// under 100 rps through the gateway, with the leader's pod deleted during
// a bake, fails no request, each step's share is within 10 points of its
// weight, and the old version's Deployment and VirtualNode are gone at the
// end; and gmesh rollback, rollout pause, resume and promote (the CLI
// against the cluster) bring 0.9 back from its recorded pod template.
func TestRolloutOnRealCluster(t *testing.T) {
	c, ctx, gw := startEcho(t)
	kc := c.c
	deps := kc.Client().AppsV1().Deployments(echoNS)

	t.Run("a Rollout naming a Deployment that does not exist is refused at admission", func(t *testing.T) {
		c := c.in(t)
		out, err := c.kubectl(ctx, rolloutYAML("echo-server-0-8", "1.0", image("gmesh.local/echo-server:1.0"), "[10, 50, 100]", "10s"), "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "spec.stableDeployment") || !strings.Contains(out, "echo-server-0-8") {
			t.Fatalf("apply of a Rollout from the missing Deployment echo-server-0-8: err %v, output %q; want a refusal naming spec.stableDeployment and the Deployment", err, out)
		}
		if _, err := c.rollout(ctx); err == nil {
			t.Fatal("the refused Rollout exists")
		}
	})

	t.Run("a failing version is rolled back within two bake intervals", func(t *testing.T) {
		c := c.in(t)
		const interval = 10 * time.Second
		stop := make(chan struct{})
		states := c.watchRollout(ctx, stop)
		run := startLoad(ctx, t, gw, 4*time.Minute)
		c.kubectlOK(ctx, rolloutYAML("echo-server-0-9", "1.0-bad", failing("gmesh.local/echo-server:1.0", "0.2"), "[10, 50, 100]", interval.String()), "apply", "-f", "-")
		st := c.waitRollout(ctx, "rolled back", 3*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "RolledBack" || st.Phase == "Succeeded" || st.Phase == "Failed" || st.Phase == "Aborted"
		})
		// After the rollback, every reply is 0.9: 5 more seconds of load.
		after := time.Now()
		res, reports := run.finish(ctx, 5)
		close(stop)
		seen := states()
		if st.Phase != "RolledBack" {
			t.Fatalf("the failing version ended %s (%s), want RolledBack", st.Phase, st.Reason)
		}
		t.Logf("rolled back: %s; load: %s", st.Reason, load.FormatReport(load.Report{Counts: res.Counts}))
		// From the first bake of the bad version to the rollback.
		var firstBake, rollingBack time.Time
		for _, s := range seen {
			if firstBake.IsZero() && s.status.Phase == "Baking" {
				firstBake = s.at
			}
			if rollingBack.IsZero() && (s.status.Phase == "RollingBack" || s.status.Phase == "RolledBack") {
				rollingBack = s.at
			}
		}
		if firstBake.IsZero() || rollingBack.IsZero() {
			t.Fatalf("no Baking or no RollingBack phase seen in %d observations", len(seen))
		}
		took := rollingBack.Sub(firstBake)
		t.Logf("first bad bake to rolling back: %s (bake interval %s)", took.Round(time.Millisecond), interval)
		if took > 2*interval {
			t.Errorf("the failing version was rolled back %s after its first bake, want within two bake intervals (%s)", took.Round(time.Millisecond), 2*interval)
		}
		for _, r := range reports {
			if r.end.Before(after.Add(time.Second)) {
				continue
			}
			if r.OK != r.ByVersion["0.9"] || r.Failed != 0 {
				t.Errorf("second %d after the rollback: %d OK by version %v, %d failed %v; want every reply from 0.9", r.Second, r.OK, r.ByVersion, r.Failed, r.Failures)
			}
		}
		c.poll(ctx, "the failing version's Deployment gone", time.Minute, func() (bool, string) {
			_, err := deps.Get(ctx, "echo-server-1-0-bad", metav1.GetOptions{})
			return err != nil, fmt.Sprint(err)
		})
	})

	t.Run("abort returns all traffic to 0.9, and a second rollout of the route is refused meanwhile", func(t *testing.T) {
		c := c.in(t)
		c.kubectlOK(ctx, rolloutYAML("echo-server-0-9", "1.0", image("gmesh.local/echo-server:1.0"), "[10, 50, 100]", "5m"), "apply", "-f", "-")
		c.waitRollout(ctx, "baking at 10%", 2*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Baking" && st.Weight == 10
		})
		second := strings.Replace(rolloutYAML("echo-server-0-9", "1.1", image("gmesh.local/echo-server:1.0"), "[50, 100]", "10s"), "name: echo-server\n  namespace", "name: echo-server-again\n  namespace", 1)
		out, err := c.kubectl(ctx, second, "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "rollout echo/echo-server (Baking") || !strings.Contains(out, "abort") {
			t.Errorf("a second Rollout of echo-server-route while one bakes: err %v, output %q; want a refusal naming the running rollout", err, out)
		}
		c.kubectlOK(ctx, "", "-n", echoNS, "patch", "rollout", "echo-server", "--type", "merge", "-p", `{"spec":{"abort":true}}`)
		st := c.waitRollout(ctx, "aborted", 2*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Aborted" || st.Phase == "RolledBack"
		})
		t.Logf("aborted: %s %s", st.Phase, st.Message)
		for i := 0; i < 50; i++ {
			if code, body := get(ctx, t, gw+"/?name=k8s"); code != http.StatusOK || !referenceReply.MatchString(body) {
				t.Fatalf("after the abort: %d %q, want the 0.9 reference reply", code, body)
			}
		}
	})

	t.Run("0.9 to 1.0 in steps 10, 50, 100 under 100 rps, the leader deleted during a bake", func(t *testing.T) {
		c := c.in(t)
		const interval = 5 * time.Second
		stop := make(chan struct{})
		states := c.watchRollout(ctx, stop)
		run := startLoad(ctx, t, gw, 6*time.Minute)
		start := time.Now()
		c.kubectlOK(ctx, rolloutYAML("echo-server-0-9", "1.0", image("gmesh.local/echo-server:1.0"), "[10, 50, 100]", interval.String()), "apply", "-f", "-")

		// The leader's pod deleted during the 50% bake.
		c.waitRollout(ctx, "baking at 50%", 3*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Baking" && st.Weight == 50
		})
		old, err := c.leader(ctx)
		if err != nil || old == "" {
			t.Fatalf("the Lease holder: %q, %v", old, err)
		}
		deleted := time.Now()
		if err := kc.Client().CoreV1().Pods(cpNamespace).Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete the leader's pod %s: %v", old, err)
		}
		var next string
		c.poll(ctx, "another replica holding the Lease", 2*time.Minute, func() (bool, string) {
			next, err = c.leader(ctx)
			return err == nil && next != "" && next != old, fmt.Sprintf("holder %q, %v", next, err)
		})
		takeover := time.Since(deleted)
		st := c.waitRollout(ctx, "succeeded", 4*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Succeeded" || st.Phase == "RolledBack" || st.Phase == "Failed" || st.Phase == "Aborted"
		})
		total := time.Since(start)
		after := time.Now()
		res, reports := run.finish(ctx, 5)
		close(stop)
		seen := states()
		t.Logf("leader %s deleted during the 50%% bake; %s took over the Lease %s later", old, next, takeover.Round(time.Millisecond))
		t.Logf("rollout %s in %s; load: %s", st.Phase, total.Round(time.Millisecond), load.FormatReport(load.Report{Counts: res.Counts}))
		for _, e := range st.Events {
			t.Logf("  %s %-13s %s", e.Time, e.Phase, e.Message)
		}
		if st.Phase != "Succeeded" {
			t.Fatalf("the rollout ended %s: %s %s", st.Phase, st.Message, st.Reason)
		}
		checkNoFailures(t, "the rollout under load", res)
		// Each step's share, over the seconds wholly inside its bake.
		type share struct{ n, v1 int64 }
		shares := map[int32]*share{}
		for _, r := range reports {
			phase, step, ok := phaseAt(seen, r.end.Add(-time.Second), r.end)
			if !ok || phase != "Baking" {
				continue
			}
			if shares[step] == nil {
				shares[step] = &share{}
			}
			shares[step].n += r.OK
			shares[step].v1 += r.ByVersion["1.0"]
		}
		for i, w := range []int64{10, 50} {
			s := shares[int32(i)]
			if s == nil || s.n < 200 {
				t.Errorf("step %d (%d%%): %v requests inside its bake, want at least 200 to judge the share", i+1, w, s)
				continue
			}
			got := float64(s.v1) * 100 / float64(s.n)
			t.Logf("step %d: 1.0 answered %.1f%% of %d requests at weight %d", i+1, got, s.n, w)
			if got < float64(w)-10 || got > float64(w)+10 {
				t.Errorf("step %d: 1.0 answered %.1f%% of %d requests, want %d ± 10", i+1, got, s.n, w)
			}
		}
		for _, r := range reports {
			if r.end.Before(after.Add(time.Second)) {
				continue
			}
			if r.OK != r.ByVersion["1.0"] {
				t.Errorf("second %d after the rollout: %d OK by version %v; want every reply from 1.0", r.Second, r.OK, r.ByVersion)
			}
		}
		if _, err := deps.Get(ctx, "echo-server-0-9", metav1.GetOptions{}); err == nil {
			t.Error("Deployment echo-server-0-9 still exists after the rollout")
		}
		if _, err := c.dyn.Resource(virtualNodes).Namespace(echoNS).Get(ctx, "echo-server-0-9", metav1.GetOptions{}); err == nil {
			t.Error("VirtualNode echo-server-0-9 still exists after the rollout")
		}
	})

	t.Run("gmesh rollback, rollout pause, resume and promote return to 0.9 through the CLI", func(t *testing.T) {
		c := c.in(t)
		bin := filepath.Join(t.TempDir(), "gmesh")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gmesh")
		build.Dir = c.repo
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/gmesh: %v\n%s", err, out)
		}
		gmesh := func(args ...string) string {
			t.Helper()
			cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", kc.Kubeconfig(), "-n", echoNS)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("gmesh %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		// Back to 0.9, from the pod template its history entry recorded
		// (its Deployment is gone).
		gmesh("rollback", "echo-server", "--steps", "10,50,100", "--interval", "5m", "--detach")
		c.waitRollout(ctx, "rolling back to 0.9, baking at 10%", 2*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Baking" && st.Weight == 10 && st.NewVersion == "0.9"
		})
		gmesh("rollout", "pause", "echo-server")
		c.waitRollout(ctx, "paused", time.Minute, func(st *v1alpha1.RolloutStatus) bool { return st.Phase == "Paused" })
		if out := gmesh("rollout", "status", "echo-server"); !strings.Contains(out, "Paused") {
			t.Errorf("gmesh rollout status of a paused rollout:\n%s", out)
		}
		gmesh("rollout", "resume", "echo-server")
		c.waitRollout(ctx, "baking again", time.Minute, func(st *v1alpha1.RolloutStatus) bool { return st.Phase == "Baking" })
		gmesh("rollout", "promote", "echo-server")
		st := c.waitRollout(ctx, "promoted to the end", 3*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Succeeded" || st.Phase == "RolledBack" || st.Phase == "Failed" || st.Phase == "Aborted"
		})
		if st.Phase != "Succeeded" {
			t.Fatalf("the promoted rollback ended %s: %s", st.Phase, st.Reason)
		}
		for i := 0; i < 50; i++ {
			if code, body := get(ctx, t, gw+"/?name=k8s"); code != http.StatusOK || !referenceReply.MatchString(body) {
				t.Fatalf("after the rollback to 0.9: %d %q, want the 0.9 reference reply", code, body)
			}
		}
	})
}
