package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/load"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var versionRe = regexp.MustCompile(`Version ([^)\s]+)\)`)

// buildEchoServer builds the echo-server stamped with version.
func buildEchoServer(t *testing.T, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "echo-server")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.stampedVersion="+version, "-o", out, "./cmd/echo-server")
	cmd.Dir = moduleRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build echo-server %s: %v\n%s", version, err, b)
	}
	return out
}

// loadRun is a bounded background load through the gateway.
type loadRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    *load.Result
	err    error
}

func startLoad(url string, rps int, max time.Duration) *loadRun {
	return startLoadC(url, rps, max, 64)
}

// startLoadC is startLoad with at most concurrency requests in flight.
func startLoadC(url string, rps int, max time.Duration, concurrency int) *loadRun {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.res, l.err = load.Run(ctx, load.Config{URL: url, RPS: rps, Duration: max, Concurrency: concurrency, Timeout: 5 * time.Second})
	}()
	return l
}

func (l *loadRun) stop() *load.Result {
	l.cancel()
	<-l.done
	return l.res
}

// deployProc is a running `gmesh deploy` whose output lines are watched.
type deployProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error
}

func startDeploy(t *testing.T, stateDir string, args ...string) *deployProc {
	t.Helper()
	cmd := exec.Command(gmeshBin, append(append([]string{"deploy"}, args...), "--state-dir", stateDir)...)
	cmd.Dir = moduleRoot
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	d := &deployProc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start deploy: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
		}
	}()
	go func() {
		d.err = cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("deploy output:\n%s", d.output())
		}
	})
	return d
}

func (d *deployProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// waitLine waits for an output line containing s.
func (d *deployProc) waitLine(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(d.output(), s) {
			return
		}
		select {
		case <-d.done:
			if strings.Contains(d.output(), s) {
				return
			}
			t.Fatalf("deploy ended (%v) before printing %q:\n%s", d.err, s, d.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("deploy did not print %q within %s:\n%s", s, timeout, d.output())
}

func (d *deployProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		t.Fatalf("deploy did not finish within %s:\n%s", timeout, d.output())
		return nil
	}
}

// versions sends n sequential requests and counts replies by version.
func versions(t *testing.T, url string, n int) (map[string]int, int) {
	t.Helper()
	counts := map[string]int{}
	failed := 0
	for i := 0; i < n; i++ {
		code, body, err := get(url)
		if err != nil || code != 200 {
			failed++
			continue
		}
		if m := versionRe.FindStringSubmatch(body); m != nil {
			counts[m[1]]++
		}
	}
	return counts, failed
}

// TestDeployUnderLoad is issue 5's main end-to-end test: 200 rps through
// the gateway while 1.0 is deployed over 0.9; both answer during the 50%
// step, only 1.0 after, zero failed requests, no 0.9 process left, the 0.9
// virtual node gone.
func TestDeployUnderLoad(t *testing.T) {
	stateDir := t.TempDir()
	v10 := buildEchoServer(t, "1.0")
	u := startUp(t, stateDir)
	url := u.public + "/?name=Yusuke"
	before := status(t, stateDir)
	var oldPIDs []int
	for _, ep := range before.Endpoints {
		if ep.Attributes[mesh.AttrVersion] == "0.9" {
			oldPIDs = append(oldPIDs, ep.Proc().PID)
		}
	}

	lr := startLoad(url, 200, 3*time.Minute)
	d := startDeploy(t, stateDir, "echo-server", "--binary", v10, "--interval", "5s", "--timeout", "2m")
	d.waitLine(t, "Analysing version 1.0 at 50%", 2*time.Minute)
	counts, failed := versions(t, url, 400)
	if failed > 0 {
		t.Errorf("%d of 400 sampled requests failed during the 50%% step", failed)
	}
	for _, v := range []string{"0.9", "1.0"} {
		if share := float64(counts[v]) / 400; share < 0.40 || share > 0.60 {
			t.Errorf("during the 50%% step version %s got %.1f%% of replies (%v); want 50%% ±10", v, share*100, counts)
		}
	}
	if err := d.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("deploy failed: %v\n%s", err, d.output())
	}
	res := lr.stop()
	t.Logf("load during the deploy: sent %d ok %d failed %d %v by version %v", res.Sent, res.OK, res.Failed, res.Failures, res.ByVersion)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the deploy: %v", res.Failed, res.Sent, res.Failures)
	}
	if !strings.Contains(d.output(), "Version 0.9 retired") {
		t.Errorf("deploy output does not say 0.9 was retired:\n%s", d.output())
	}

	counts, failed = versions(t, url, 100)
	if failed > 0 || counts["1.0"] != 100 {
		t.Errorf("after the deploy: %v, %d failed; want only 1.0", counts, failed)
	}
	for _, pid := range oldPIDs {
		if processAlive(pid) {
			t.Errorf("0.9 task process %d is still alive", pid)
		}
	}
	out, err := gmesh(t, stateDir, "get", "vn", "echo-server-0-9")
	if err == nil || !strings.Contains(out, "not found") {
		t.Errorf("virtual node echo-server-0-9 still exists: %v %s", err, out)
	}

	// gmesh rollback: back to 0.9 from its kept artifact, progressively.
	lr = startLoad(url, 200, 3*time.Minute)
	out, err = gmesh(t, stateDir, "rollback", "echo-server", "--interval", "2s", "--timeout", "2m")
	res = lr.stop()
	if err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Version 1.0 retired") {
		t.Errorf("rollback output does not retire 1.0:\n%s", out)
	}
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the rollback: %v", res.Failed, res.Sent, res.Failures)
	}
	counts, failed = versions(t, url, 100)
	if failed > 0 || counts["0.9"] != 100 {
		t.Errorf("after the rollback: %v, %d failed; want only 0.9", counts, failed)
	}
}

// TestDeployBadVersionRollsBack: a version failing 20% of calls is rolled
// back automatically; afterwards every reply is 0.9 again.
func TestDeployBadVersionRollsBack(t *testing.T) {
	stateDir := t.TempDir()
	bad := buildEchoServer(t, "1.1")
	u := startUp(t, stateDir)
	url := u.public + "/?name=Yusuke"

	lr := startLoad(url, 200, 3*time.Minute)
	start := time.Now()
	d := startDeploy(t, stateDir, "echo-server", "--binary", bad, "--env", "ECHO_FAIL_RATE=0.2", "--steps", "10,50,100", "--interval", "4s", "--timeout", "2m")
	err := d.wait(t, 3*time.Minute)
	res := lr.stop()
	if err == nil {
		t.Fatalf("deploy of a failing version exited 0:\n%s", d.output())
	}
	if !strings.Contains(d.output(), "Rolled back to version 0.9") {
		t.Errorf("deploy output does not report the rollback:\n%s", d.output())
	}
	t.Logf("bad deploy took %s; load: sent %d failed %d %v by version %v", time.Since(start).Round(time.Millisecond), res.Sent, res.Failed, res.Failures, res.ByVersion)
	// Failures are bounded by what the 10% canary exposed: 20% of 10%, plus
	// slack for the gateway's own retries and the bake window.
	if res.Sent > 0 && float64(res.Failed) > 0.05*float64(res.Sent) {
		t.Errorf("%d of %d requests failed; want at most 5%% with a 10%% canary failing 20%%", res.Failed, res.Sent)
	}
	if res.ByVersion["1.1"] == 0 {
		t.Errorf("the canary never received traffic: %v", res.ByVersion)
	}
	// From the bad version's first analysed step to every client on the
	// rollback's route (the engine stops the new tasks only after that).
	if r := rolloutOf(t, stateDir, "echo-server"); r != nil {
		var firstBake, allBack time.Time
		for _, ev := range r.RolloutStatus().Events {
			ts, _ := time.Parse(time.RFC3339Nano, ev.Time)
			if firstBake.IsZero() && strings.HasPrefix(ev.Message, "Analysing") {
				firstBake = ts
			}
			if allBack.IsZero() && strings.HasPrefix(ev.Message, "Stopping version") {
				allBack = ts
			}
		}
		if !firstBake.IsZero() && !allBack.IsZero() {
			t.Logf("first failing step's bake start -> every client ACKed the rollback: %s", allBack.Sub(firstBake).Round(time.Millisecond))
		}
	}
	counts, failed := versions(t, url, 100)
	if failed > 0 || counts["0.9"] != 100 {
		t.Errorf("after the rollback: %v, %d failed; want only 0.9", counts, failed)
	}
	st := status(t, stateDir)
	for _, ep := range st.Endpoints {
		if ep.Attributes[mesh.AttrVersion] == "1.1" {
			t.Errorf("task %s of the bad version is still registered", ep.ID)
		}
	}
	for _, n := range st.Nodes {
		if strings.Contains(n.Metadata.Name, "1-1") {
			t.Errorf("virtual node %s of the bad version still exists", n.Metadata.Name)
		}
	}
}

// TestDeployControlPlaneKilledMidRollout: the control plane is SIGKILLed
// while a rollout bakes; traffic keeps flowing with zero failures, `gmesh
// up` restarts it, and the rollout resumes and completes.
func TestDeployControlPlaneKilledMidRollout(t *testing.T) {
	stateDir := t.TempDir()
	v10 := buildEchoServer(t, "1.0")
	u := startUp(t, stateDir)
	url := u.public + "/?name=Yusuke"

	lr := startLoad(url, 200, 3*time.Minute)
	d := startDeploy(t, stateDir, "echo-server", "--binary", v10, "--interval", "5s", "--timeout", "2m")
	d.waitLine(t, "Analysing version 1.0 at 50%", 2*time.Minute)
	cpPID := controlPlanePID(t, stateDir)
	if err := syscall.Kill(cpPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill control plane %d: %v", cpPID, err)
	}
	killed := time.Now()
	if err := d.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("deploy after the control plane restart: %v\n%s", err, d.output())
	}
	t.Logf("rollout finished %s after the control plane was killed", time.Since(killed).Round(time.Millisecond))
	res := lr.stop()
	t.Logf("load: sent %d failed %d %v by version %v", res.Sent, res.Failed, res.Failures, res.ByVersion)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed while the control plane was down: %v", res.Failed, res.Sent, res.Failures)
	}
	if newPID := controlPlanePID(t, stateDir); newPID == cpPID {
		t.Errorf("control plane pid is still %d; it was not restarted", cpPID)
	}
	counts, failed := versions(t, url, 100)
	if failed > 0 || counts["1.0"] != 100 {
		t.Errorf("after the deploy: %v, %d failed; want only 1.0", counts, failed)
	}
}

func controlPlanePID(t *testing.T, stateDir string) int {
	t.Helper()
	b, err := readFile(filepath.Join(stateDir, "controlplane.json"))
	if err != nil {
		t.Fatalf("read controlplane.json: %v", err)
	}
	var pid int
	if m := regexp.MustCompile(`"pid": (\d+)`).FindStringSubmatch(b); m != nil {
		fmt.Sscan(m[1], &pid)
	}
	if pid == 0 {
		t.Fatalf("no pid in controlplane.json: %s", b)
	}
	return pid
}

// rolloutOf reads a service's Rollout resource.
func rolloutOf(t *testing.T, stateDir, service string) *mesh.Resource {
	t.Helper()
	raw, err := gmesh(t, stateDir, "get", "rollout", service, "-o", "json")
	if err != nil {
		t.Errorf("get rollout %s: %v\n%s", service, err, raw)
		return nil
	}
	var r mesh.Resource
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Errorf("decode rollout: %v", err)
		return nil
	}
	return &r
}
