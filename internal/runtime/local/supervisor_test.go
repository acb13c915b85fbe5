package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	rt "github.com/gmesh-dev/gmesh/internal/runtime"
)

// recorder is a Registrar that records calls and can fail or hang.
type recorder struct {
	fail atomic.Bool // return an error
	hang atomic.Bool // block until the call's context ends

	mu     sync.Mutex
	events []string // "register <id> <state> draining=<b>", "deregister <id>"
	latest map[string]mesh.Endpoint
}

var _ rt.Registrar = (*recorder)(nil)

func newRecorder() *recorder { return &recorder{latest: map[string]mesh.Endpoint{}} }

func (r *recorder) Register(ctx context.Context, ep *mesh.Endpoint) error {
	if r.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if r.fail.Load() {
		return errors.New("control plane down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("register %s %s draining=%v", ep.ID, ep.State, ep.Draining))
	r.latest[ep.ID] = *ep
	return nil
}

func (r *recorder) Deregister(ctx context.Context, id string) error {
	if r.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if r.fail.Load() {
		return errors.New("control plane down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "deregister "+id)
	delete(r.latest, id)
	return nil
}

func (r *recorder) endpoint(id string) (mesh.Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ep, ok := r.latest[id]
	return ep, ok
}

func (r *recorder) eventsFor(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if strings.Fields(e)[1] == id {
			out = append(out, e)
		}
	}
	return out
}

func testIPBase() string { return "127.0." + strconv.Itoa(2+rand.IntN(250)) }

func newTestSupervisor(t *testing.T, reg rt.Registrar, mod func(*Config)) *Supervisor {
	t.Helper()
	cfg := Config{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		StateDir:    t.TempDir(),
		Registrar:   reg,
		IPBase:      testIPBase(),
		MinBackoff:  20 * time.Millisecond,
		MaxBackoff:  2 * time.Second,
		StopTimeout: 5 * time.Second,
		DrainDelay:  20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

func taskSet(name string, count int, env map[string]string) *mesh.Resource {
	e := map[string]string{"GMESH_TEST_TASK": "task"}
	for k, v := range env {
		e[k] = v
	}
	return &mesh.Resource{
		APIVersion: mesh.APIVersion,
		Kind:       mesh.KindTaskSet,
		Metadata:   mesh.Metadata{Name: name, Mesh: "echo"},
		Spec: &mesh.TaskSetSpec{
			Service: "echo-server", VirtualNode: "echo-server-v1", Version: "0.9",
			Command: []string{os.Args[0]}, Env: e, DesiredCount: count, Port: 18080,
		},
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-time.After(10 * time.Millisecond) // the polling interval
	}
}

func running(s *Supervisor, n int) func() bool {
	return func() bool {
		ts := s.Tasks()
		if len(ts) != n {
			return false
		}
		for _, ti := range ts {
			if ti.State != mesh.TaskRunning {
				return false
			}
		}
		return true
	}
}

func taskInfo(t *testing.T, s *Supervisor, id string) TaskInfo {
	t.Helper()
	for _, ti := range s.Tasks() {
		if ti.ID == id {
			return ti
		}
	}
	t.Fatalf("no task %s in %+v", id, s.Tasks())
	return TaskInfo{}
}

// replaced reports whether task id runs in a process other than pid.
func replaced(t *testing.T, s *Supervisor, id string, pid int) func() bool {
	return func() bool {
		ti := taskInfo(t, s, id)
		return ti.State == mesh.TaskRunning && ti.PID != pid
	}
}

// killAndWaitRestart SIGKILLs task id and waits (for what, as waitFor
// says) until a new process runs in its place; it returns the task as it
// was before the kill.
func killAndWaitRestart(t *testing.T, s *Supervisor, id, what string) TaskInfo {
	t.Helper()
	before := taskInfo(t, s, id)
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, what, 20*time.Second, replaced(t, s, id, before.PID))
	return before
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// taskGet GETs path from the task, retrying until it listens.
func taskGet(t *testing.T, ti TaskInfo, path string) []byte {
	t.Helper()
	url := "http://" + net.JoinHostPort(ti.Address, strconv.Itoa(ti.Port)) + path
	var lastErr error
	for i := 0; i < 200; i++ {
		resp, err := httpClient.Get(url)
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				return b
			}
			lastErr = fmt.Errorf("status %d, %v", resp.StatusCode, err)
		} else {
			lastErr = err
		}
		<-time.After(20 * time.Millisecond) // the polling interval
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return nil
}

// alive reports whether pid is a live (non-zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestTasksGetOwnIPsAndTheEnvContract(t *testing.T) {
	t.Setenv("GRPC_XDS_BOOTSTRAP", "/parent/bootstrap.json")
	t.Setenv("GMESH_PARENT_VAR", "kept")
	reg := newRecorder()
	s := newTestSupervisor(t, reg, func(c *Config) {
		c.Bootstrap = func(ts TaskStart) ([]byte, error) {
			if ts.Mesh != "echo" || ts.Env["GREETING"] != "hi" || ts.Dir != TaskDir(c.StateDir, ts.ID) {
				return nil, fmt.Errorf("bootstrap asked for %+v, want mesh echo, the set's env and the task's directory", ts)
			}
			return []byte(`{"node":"` + ts.ID + `"}`), nil
		}
	})
	s.Apply([]*mesh.Resource{taskSet("echo-server-v1", 2, map[string]string{"GREETING": "hi", "PORT": "1"})})
	waitFor(t, "2 running tasks", 20*time.Second, running(s, 2))

	ts := s.Tasks()
	if ts[0].ID != "echo-server-v1-1" || ts[1].ID != "echo-server-v1-2" {
		t.Fatalf("got ids %s, %s, want echo-server-v1-1, echo-server-v1-2", ts[0].ID, ts[1].ID)
	}
	if ts[0].Address == ts[1].Address {
		t.Fatalf("both tasks got address %s, want distinct", ts[0].Address)
	}
	for _, ti := range ts {
		if ownLoopbackIPs && !strings.HasPrefix(ti.Address, s.cfg.IPBase+".") {
			t.Errorf("task %s address %s, want in %s.x", ti.ID, ti.Address, s.cfg.IPBase)
		}
		var envList []string
		if err := json.Unmarshal(taskGet(t, ti, "/env"), &envList); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, kv := range envList {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		_, metricsPort, _ := net.SplitHostPort(ti.MetricsAddr)
		want := map[string]string{
			"PORT":                      strconv.Itoa(ti.Port),
			"HOST":                      ti.Address,
			"METRICS_PORT":              metricsPort,
			"GMESH_TASK_ID":             ti.ID,
			"GMESH_SERVICE":             "echo-server",
			"GMESH_VERSION":             "0.9",
			"GMESH_TASK_SET":            "echo-server-v1",
			"GMESH_MESH":                "echo",
			"GRPC_XDS_BOOTSTRAP_CONFIG": `{"node":"` + ti.ID + `"}`,
			"GREETING":                  "hi",
			"GMESH_PARENT_VAR":          "kept",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("task %s: got %s=%q, want %q", ti.ID, k, env[k], v)
			}
		}
		if v, ok := env["GRPC_XDS_BOOTSTRAP"]; ok {
			t.Errorf("task %s: parent's GRPC_XDS_BOOTSTRAP=%q leaked into the task", ti.ID, v)
		}
		if ti.Port != 18080 && ownLoopbackIPs {
			t.Errorf("task %s: got port %d, want 18080", ti.ID, ti.Port)
		}

		waitFor(t, "registered RUNNING", 10*time.Second, func() bool {
			ep, ok := reg.endpoint(ti.ID)
			return ok && ep.State == mesh.TaskRunning && ep.Proc().PID == ti.PID
		})
		ep, _ := reg.endpoint(ti.ID)
		if ep.Mesh != "echo" || ep.Service != "echo-server" || ep.Address != ti.Address || ep.Port != ti.Port ||
			ep.MetricsAddr != ti.MetricsAddr || ep.Attributes[mesh.AttrVersion] != "0.9" || ep.Attributes[mesh.AttrTaskSet] != "echo-server-v1" {
			t.Errorf("got endpoint %+v, want it to match task %+v", ep, ti)
		}
	}

	// Output goes to the log file with a timestamp and task id per line.
	ti := ts[0]
	if want := filepath.Join(s.cfg.StateDir, "logs", "echo-server", ti.ID+".log"); ti.LogPath != want {
		t.Errorf("got log path %s, want %s", ti.LogPath, want)
	}
	waitFor(t, "task output in its log", 10*time.Second, func() bool {
		b, _ := os.ReadFile(ti.LogPath)
		return strings.Contains(string(b), " "+ti.ID+" task up pid="+strconv.Itoa(ti.PID))
	})
	lines, ok := s.Logs(ti.ID)
	if !ok || len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), "task up") {
		t.Errorf("got in-memory log %q, want the task's output", lines)
	}

	// Applying the same sets again changes nothing.
	s.Apply([]*mesh.Resource{taskSet("echo-server-v1", 2, map[string]string{"GREETING": "hi", "PORT": "1"})})
	for i, after := range s.Tasks() {
		if after.PID != ts[i].PID || after.Restarts != 0 {
			t.Errorf("re-apply: task %s pid %d restarts %d, want pid %d restarts 0", after.ID, after.PID, after.Restarts, ts[i].PID)
		}
	}
}

func TestKilledTaskIsRestartedAndReRegistered(t *testing.T) {
	reg := newRecorder()
	s := newTestSupervisor(t, reg, nil)
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, nil)})
	waitFor(t, "running", 20*time.Second, running(s, 1))
	before := killAndWaitRestart(t, s, "svc-v1-1", "restart")
	after := taskInfo(t, s, "svc-v1-1")
	if after.Restarts != 1 {
		t.Errorf("got restarts %d, want 1", after.Restarts)
	}
	if after.LastExit != "signal: killed" {
		t.Errorf("got last exit %q, want %q", after.LastExit, "signal: killed")
	}
	if after.Address != before.Address || after.Port != before.Port {
		t.Errorf("restarted on %s:%d, want the same address %s:%d", after.Address, after.Port, before.Address, before.Port)
	}
	if got := string(taskGet(t, after, "/pid")); got != strconv.Itoa(after.PID) {
		t.Errorf("task answers as pid %s, want %d", got, after.PID)
	}
	waitFor(t, "re-registered", 10*time.Second, func() bool {
		ep, ok := reg.endpoint("svc-v1-1")
		return ok && ep.Proc().PID == after.PID && ep.Proc().Restarts == 1 && ep.State == mesh.TaskRunning
	})
}

func TestCrashLoopBackoffGrows(t *testing.T) {
	s := newTestSupervisor(t, nil, func(c *Config) {
		c.MinBackoff = 20 * time.Millisecond
		c.MaxBackoff = 160 * time.Millisecond
	})
	s.Apply([]*mesh.Resource{taskSet("crash-v1", 1, map[string]string{"CRASH": "1"})})
	seen := map[int]time.Duration{}
	var startedAt []time.Time
	waitFor(t, "5 restarts", 30*time.Second, func() bool {
		ti := taskInfo(t, s, "crash-v1-1")
		if ti.State == TaskBackoff {
			seen[ti.Restarts] = ti.Backoff
			if ti.LastExit != "exit status 3" {
				t.Fatalf("got last exit %q, want %q", ti.LastExit, "exit status 3")
			}
		}
		if n := len(startedAt); n == 0 || !ti.StartedAt.Equal(startedAt[n-1]) {
			startedAt = append(startedAt, ti.StartedAt)
		}
		return ti.Restarts >= 6
	})
	for n, got := range seen {
		want := 20 * time.Millisecond << (n - 1)
		if want > 160*time.Millisecond {
			want = 160 * time.Millisecond
		}
		if got != want {
			t.Errorf("after %d crashes: got backoff %s, want %s", n, got, want)
		}
	}
	if len(seen) == 0 {
		t.Fatal("never saw the task in BACKOFF")
	}
	// The real gaps between starts respect the backoff (lower bounds only:
	// a loaded machine makes them longer, never shorter).
	for i := 2; i < len(startedAt); i++ {
		if startedAt[i-1].IsZero() {
			continue
		}
		if gap := startedAt[i].Sub(startedAt[i-1]); gap < 20*time.Millisecond {
			t.Errorf("restart %d came %s after the previous start, want at least the minimum backoff", i, gap)
		}
	}
}

func TestScaleDownDrainsThenStops(t *testing.T) {
	reg := newRecorder()
	s := newTestSupervisor(t, reg, func(c *Config) { c.DrainDelay = 100 * time.Millisecond })
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 2, nil)})
	waitFor(t, "2 running", 20*time.Second, running(s, 2))
	gone := taskInfo(t, s, "svc-v1-2")
	taskGet(t, gone, "/pid") // serving, so its SIGTERM handler is installed

	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, nil)})
	waitFor(t, "scaled to 1", 20*time.Second, running(s, 1))
	if alive(gone.PID) {
		t.Errorf("pid %d of the removed task is still alive", gone.PID)
	}
	b, _ := os.ReadFile(gone.LogPath)
	if !strings.Contains(string(b), "got SIGTERM") {
		t.Errorf("removed task's log has no SIGTERM:\n%s", b)
	}
	waitFor(t, "deregistered", 10*time.Second, func() bool {
		_, ok := reg.endpoint(gone.ID)
		return !ok
	})
	ev := reg.eventsFor(gone.ID)
	var sawDrain bool
	for i, e := range ev {
		if e == "register svc-v1-2 STOPPING draining=true" {
			sawDrain = true
			if ev[len(ev)-1] != "deregister svc-v1-2" || i > len(ev)-2 {
				t.Errorf("got events %q, want draining then deregister last", ev)
			}
		}
	}
	if !sawDrain {
		t.Errorf("got events %q, want a draining STOPPING registration before the deregistration", ev)
	}
	if kept := taskInfo(t, s, "svc-v1-1"); kept.Restarts != 0 {
		t.Errorf("kept task restarted %d times, want 0", kept.Restarts)
	}
}

func TestStopKillsATaskThatIgnoresSIGTERM(t *testing.T) {
	// Long enough for a starved task to log its SIGTERM on a loaded machine.
	const stopTimeout = 2 * time.Second
	s := newTestSupervisor(t, nil, func(c *Config) { c.StopTimeout = stopTimeout })
	set := taskSet("stubborn-v1", 1, map[string]string{"IGNORE_TERM": "1"})
	s.Apply([]*mesh.Resource{set})
	waitFor(t, "running", 20*time.Second, running(s, 1))
	ti := taskInfo(t, s, "stubborn-v1-1")
	taskGet(t, ti, "/pid")

	set.Spec.(*mesh.TaskSetSpec).Draining = true
	start := time.Now()
	s.Apply([]*mesh.Resource{set})
	waitFor(t, "task gone", 20*time.Second, func() bool { return len(s.Tasks()) == 0 })
	if took := time.Since(start); took < stopTimeout {
		t.Errorf("stopped after %s, want SIGKILL only after the %s stop timeout", took, stopTimeout)
	}
	if alive(ti.PID) {
		t.Errorf("pid %d still alive", ti.PID)
	}
	b, _ := os.ReadFile(ti.LogPath)
	log := string(b)
	if !strings.Contains(log, "got SIGTERM") || !strings.Contains(log, "SIGKILL") || !strings.Contains(log, "signal: killed") {
		t.Errorf("want SIGTERM, then SIGKILL in the log:\n%s", log)
	}
}

func TestShutdownLeavesNoProcess(t *testing.T) {
	reg := newRecorder()
	s := newTestSupervisor(t, reg, nil)
	s.Apply([]*mesh.Resource{taskSet("a-v1", 2, map[string]string{"GRANDCHILD": "1"}), taskSet("b-v1", 1, nil)})
	waitFor(t, "3 running", 20*time.Second, running(s, 3))
	var pids []int
	for _, ti := range s.Tasks() {
		pids = append(pids, ti.PID)
		taskGet(t, ti, "/pid")
	}
	for _, id := range []string{"a-v1-1", "a-v1-2"} {
		waitFor(t, "grandchild pid", 10*time.Second, func() bool {
			l, _ := s.Logs(id)
			for _, line := range l {
				if _, p, ok := strings.Cut(line, "grandchild pid="); ok {
					n, _ := strconv.Atoi(p)
					pids = append(pids, n)
					return true
				}
			}
			return false
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, pid := range pids {
		waitFor(t, "pid "+strconv.Itoa(pid)+" gone", 5*time.Second, func() bool { return !alive(pid) })
	}
	if n := len(s.Tasks()); n != 0 {
		t.Errorf("got %d tasks after shutdown, want 0", n)
	}
	for _, id := range []string{"a-v1-1", "a-v1-2", "b-v1-1"} {
		if _, ok := reg.endpoint(id); ok {
			t.Errorf("task %s still registered after shutdown", id)
		}
	}
	s.Apply([]*mesh.Resource{taskSet("late-v1", 1, nil)})
	if n := len(s.Tasks()); n != 0 {
		t.Errorf("apply after shutdown started %d tasks, want 0", n)
	}
}

func TestRegistrarFailuresDoNotBlockSupervision(t *testing.T) {
	reg := newRecorder()
	reg.hang.Store(true)
	s := newTestSupervisor(t, reg, nil)
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 2, nil)})
	waitFor(t, "2 running while the registrar hangs", 20*time.Second, running(s, 2))
	killAndWaitRestart(t, s, "svc-v1-1", "restart while the registrar hangs")
	reg.hang.Store(false)
	reg.fail.Store(true)
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, nil)})
	waitFor(t, "scale down while the registrar fails", 20*time.Second, running(s, 1))

	reg.fail.Store(false)
	now := taskInfo(t, s, "svc-v1-1")
	waitFor(t, "latest state delivered once the registrar is back", 30*time.Second, func() bool {
		ep, ok := reg.endpoint("svc-v1-1")
		_, stale := reg.endpoint("svc-v1-2")
		return ok && ep.Proc().PID == now.PID && ep.Proc().Restarts == 1 && ep.State == mesh.TaskRunning && !stale
	})
}

func TestReAddWhileStoppingKeepsOneTask(t *testing.T) {
	s := newTestSupervisor(t, nil, func(c *Config) { c.DrainDelay = 200 * time.Millisecond })
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, nil)})
	waitFor(t, "running", 20*time.Second, running(s, 1))
	s.Apply(nil)
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, nil)})
	waitFor(t, "running again", 20*time.Second, running(s, 1))
	if n := len(s.Tasks()); n != 1 {
		t.Fatalf("got %d tasks, want 1", n)
	}
}

func TestChangedSpecRestartsTask(t *testing.T) {
	s := newTestSupervisor(t, nil, nil)
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, map[string]string{"A": "1"})})
	waitFor(t, "running", 20*time.Second, running(s, 1))
	before := taskInfo(t, s, "svc-v1-1")
	s.Apply([]*mesh.Resource{taskSet("svc-v1", 1, map[string]string{"A": "2"})})
	waitFor(t, "restarted with the new env", 20*time.Second, replaced(t, s, "svc-v1-1", before.PID))
	var env []string
	if err := json.Unmarshal(taskGet(t, taskInfo(t, s, "svc-v1-1"), "/env"), &env); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "A=2") {
		t.Errorf("env after change lacks A=2")
	}
	if ti := taskInfo(t, s, "svc-v1-1"); ti.Restarts != 0 {
		t.Errorf("got restarts %d after a spec change, want 0 (not a crash)", ti.Restarts)
	}
}

func TestBackoffFor(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, 200 * time.Millisecond}, {2, 400 * time.Millisecond}, {5, 3200 * time.Millisecond}, {6, 6400 * time.Millisecond}, {7, 10 * time.Second}, {50, 10 * time.Second}} {
		if got := backoffFor(DefaultMinBackoff, DefaultMaxBackoff, tc.n); got != tc.want {
			t.Errorf("backoffFor(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func TestLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x", "t-1.log")
	l, err := openLogSink(path, "t-1", 1000, clock.Real{})
	if err != nil {
		t.Fatal(err)
	}
	l.copyFrom(strings.NewReader(strings.Repeat(strings.Repeat("x", 99)+"\n", 50)))
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1200 {
			t.Errorf("%s is %d bytes, want about 1000 at most", p, st.Size())
		}
	}
	if n := len(l.lines()); n != 50 {
		t.Errorf("got %d lines in memory, want 50", n)
	}
}

// TestTaskDirectory: Bootstrap may write into the task's own directory;
// when the task goes away for good, Released is told and the directory is
// removed.
func TestTaskDirectory(t *testing.T) {
	var mu sync.Mutex
	released := map[string]TaskStart{}
	s := newTestSupervisor(t, newRecorder(), func(c *Config) {
		c.Bootstrap = func(ts TaskStart) ([]byte, error) {
			if err := os.MkdirAll(filepath.Join(ts.Dir, "tls"), 0o700); err != nil {
				return nil, err
			}
			return []byte(`{}`), os.WriteFile(filepath.Join(ts.Dir, "tls", "f"), []byte("x"), 0o600)
		}
		c.Released = func(ts TaskStart) {
			mu.Lock()
			released[ts.ID] = ts
			mu.Unlock()
		}
	})
	s.Apply([]*mesh.Resource{taskSet("echo-server-v1", 1, nil)})
	waitFor(t, "1 running task", 20*time.Second, running(s, 1))
	dir := TaskDir(s.cfg.StateDir, "echo-server-v1-1")
	if _, err := os.Stat(filepath.Join(dir, "tls", "f")); err != nil {
		t.Fatalf("the task's file: %v", err)
	}
	s.Apply(nil)
	waitFor(t, "the task released", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := released["echo-server-v1-1"]
		return ok
	})
	mu.Lock()
	ts := released["echo-server-v1-1"]
	mu.Unlock()
	if ts.Mesh != "echo" || ts.Dir != dir {
		t.Errorf("released %+v, want mesh echo and dir %s", ts, dir)
	}
	waitFor(t, "the task directory removed", 10*time.Second, func() bool {
		_, err := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist)
	})
}

// TestCertificateInEndpoint: a task's endpoint carries its certificate
// status from Config.Certificate (asked with the task's directory), and
// Refresh reports it again when it changes.
func TestCertificateInEndpoint(t *testing.T) {
	rec := newRecorder()
	var mu sync.Mutex
	cert := mesh.CertificateStatus{ID: "spiffe://echo.gmesh.local/vn/echo-server-v1", NotAfter: "2026-12-01T13:00:00Z"}
	var dirs []string
	s := newTestSupervisor(t, rec, func(c *Config) {
		c.Certificate = func(dir string) (mesh.CertificateStatus, bool) {
			mu.Lock()
			defer mu.Unlock()
			dirs = append(dirs, dir)
			return cert, true
		}
	})
	s.Apply([]*mesh.Resource{taskSet("ts", 1, nil)})
	waitFor(t, "task running", 10*time.Second, running(s, 1))
	id := s.Tasks()[0].ID
	waitFor(t, "endpoint with the certificate", 10*time.Second, func() bool {
		ep, ok := rec.endpoint(id)
		return ok && ep.State == mesh.TaskRunning && ep.Proc().Certificate == cert
	})
	mu.Lock()
	if len(dirs) == 0 || dirs[0] != TaskDir(s.cfg.StateDir, id) {
		t.Errorf("Certificate asked for %v, want the task's directory %s", dirs, TaskDir(s.cfg.StateDir, id))
	}
	cert.Renewals, cert.NotAfter = 1, "2026-12-01T13:30:00Z"
	renewed := cert
	mu.Unlock()
	s.Refresh(id)
	s.Refresh("no-such-task-1")
	waitFor(t, "endpoint with the renewed certificate", 10*time.Second, func() bool {
		ep, ok := rec.endpoint(id)
		return ok && ep.Proc().Certificate == renewed
	})
}
