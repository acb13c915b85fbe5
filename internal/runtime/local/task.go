package local

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// task is one slot of a TaskSet ("<set>-<n>"). Its loop goroutine owns the
// process; its fields are read by Tasks under mu.
type task struct {
	s    *Supervisor
	id   string
	logs *logSink
	wake chan struct{} // buffered 1: want changed

	// want is guarded by s.mu; nil means the slot should go away.
	want *slotSpec

	mu        sync.Mutex
	cur       *slotSpec // spec of the current or last run
	ip        string
	port      int
	metrics   int
	pid       int
	state     mesh.TaskState
	restarts  int
	crashes   int // consecutive, for backoff
	startedAt time.Time
	lastExit  string
	backoff   time.Duration
	nextStart time.Time
	logPath   string
}

func newTask(s *Supervisor, id string, w *slotSpec) *task {
	return &task{s: s, id: id, want: w, wake: make(chan struct{}, 1), state: mesh.TaskPending}
}

func (t *task) wakeUp() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *task) getWant() *slotSpec {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.want
}

func (t *task) info() TaskInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	ti := TaskInfo{
		ID: t.id, Address: t.ip, Port: t.port, PID: t.pid, State: t.state,
		Restarts: t.restarts, StartedAt: t.startedAt, LastExit: t.lastExit,
		LogPath: t.logPath,
	}
	if t.metrics != 0 {
		ti.MetricsAddr = net.JoinHostPort(t.ip, strconv.Itoa(t.metrics))
	}
	if t.state == TaskBackoff {
		ti.Backoff, ti.NextStart = t.backoff, t.nextStart
	}
	if c := t.cur; c != nil {
		ti.Mesh, ti.Service, ti.TaskSet, ti.VirtualNode, ti.Version = c.mesh, c.spec.Service, c.set, c.spec.VirtualNode, c.spec.Version
	}
	return ti
}

// endpoint is the task's registry entry. Called with t.mu held.
func (t *task) endpoint() mesh.Endpoint {
	proc := &mesh.ProcessStatus{PID: t.pid, Restarts: t.restarts, LastExit: t.lastExit}
	if f := t.s.cfg.Certificate; f != nil {
		if c, ok := f(TaskDir(t.s.cfg.StateDir, t.id)); ok {
			proc.Certificate = c
		}
	}
	ep := mesh.Endpoint{
		ID: t.id, Address: t.ip, Port: t.port,
		State: t.state, Health: mesh.HealthUnknown, Process: proc,
	}
	if ep.State == TaskBackoff {
		ep.State = mesh.TaskStopped
		if !t.nextStart.IsZero() {
			proc.RestartAt = t.nextStart.UTC().Format(time.RFC3339Nano)
		}
	}
	if t.metrics != 0 {
		ep.MetricsAddr = net.JoinHostPort(t.ip, strconv.Itoa(t.metrics))
	}
	if c := t.cur; c != nil {
		ep.Mesh, ep.Service = c.mesh, c.spec.Service
		ep.Attributes = map[string]string{mesh.AttrVersion: c.spec.Version, mesh.AttrTaskSet: c.set}
	}
	if t.state == mesh.TaskStopping {
		ep.Draining = true
	}
	return ep
}

// setState updates the task under t.mu via f and reports it.
func (t *task) update(f func()) {
	t.mu.Lock()
	f()
	ep := t.endpoint()
	t.mu.Unlock()
	t.s.rep.register(ep)
}

// proc is one run of the task's process.
type proc struct {
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed after Wait returned
	exitErr error
	logDone chan struct{} // closed when its output is fully copied
}

func (t *task) loop() {
	defer t.s.wg.Done()
	s := t.s
	for {
		w := t.getWant()
		if w == nil {
			if t.finish() {
				return
			}
			continue
		}
		t.mu.Lock()
		if t.cur != nil && t.cur.key != w.key {
			// A new spec starts at once, with a fresh backoff.
			t.crashes, t.nextStart = 0, time.Time{}
		}
		wait := t.nextStart.Sub(s.clock.Now())
		t.mu.Unlock()
		if wait > 0 {
			timer := s.clock.NewTimer(wait)
			select {
			case <-timer.C():
			case <-t.wake:
			}
			timer.Stop()
			if t.getWant() != w {
				continue // re-evaluate: removed or changed while waiting
			}
			if s.clock.Now().Before(t.nextStartTime()) {
				continue
			}
		}

		p, err := t.start(w)
		if err != nil {
			s.log.Warn("task failed to start", "task", t.id, "err", err)
			t.crashed(fmt.Sprintf("start: %v", err), time.Time{})
			continue
		}
		t.supervise(p)
	}
}

func (t *task) nextStartTime() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nextStart
}

// supervise waits for p to exit (a crash: restart with backoff) or for the
// slot's desired spec to change (stop it gracefully).
func (t *task) supervise(p *proc) {
	for {
		select {
		case <-p.done:
			t.mu.Lock()
			started := t.startedAt
			t.mu.Unlock()
			t.s.log.Warn("task exited", "task", t.id, "pid", p.pid, "exit", exitReason(p.exitErr))
			t.crashed(exitReason(p.exitErr), started)
			return
		case <-t.wake:
			w := t.getWant()
			t.mu.Lock()
			same := w != nil && t.cur != nil && w.key == t.cur.key
			t.mu.Unlock()
			if same {
				continue
			}
			t.stop(p)
			return
		}
	}
}

// crashed records an unexpected end of a run (or a failed start) and
// schedules the restart.
func (t *task) crashed(reason string, startedAt time.Time) {
	now := t.s.clock.Now()
	cfg := &t.s.cfg
	t.update(func() {
		if !startedAt.IsZero() && now.Sub(startedAt) >= cfg.StableAfter {
			t.crashes = 0
		}
		t.crashes++
		t.restarts++
		t.backoff = backoffFor(cfg.MinBackoff, cfg.MaxBackoff, t.crashes)
		t.nextStart = now.Add(t.backoff)
		t.state = TaskBackoff
		t.pid = 0
		t.lastExit = reason
	})
	t.logs.note("task ended (%s); restarting in %s", reason, t.backoff)
}

// stop drains and stops p: report STOPPING/draining, wait DrainDelay, SIGTERM
// the process group, wait StopTimeout, SIGKILL.
func (t *task) stop(p *proc) {
	s := t.s
	t.update(func() { t.state = mesh.TaskStopping })
	t.logs.note("stopping: draining for %s", s.cfg.DrainDelay)
	if d := s.cfg.DrainDelay; d > 0 {
		timer := s.clock.NewTimer(d)
		select {
		case <-timer.C():
		case <-p.done:
		case <-s.killNow:
		}
		timer.Stop()
	}
	select {
	case <-p.done:
	default:
		if err := signalGroup(p.pid, syscall.SIGTERM); err != nil {
			s.log.Warn("signal task", "task", t.id, "signal", "SIGTERM", "err", err)
		}
		timer := s.clock.NewTimer(s.cfg.StopTimeout)
		select {
		case <-p.done:
		case <-timer.C():
			t.logs.note("still running %s after SIGTERM: SIGKILL", s.cfg.StopTimeout)
			s.log.Warn("task ignored SIGTERM, killing", "task", t.id, "pid", p.pid)
		case <-s.killNow:
		}
		timer.Stop()
		select {
		case <-p.done:
		default:
			_ = signalGroup(p.pid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Let the copier write the task's last lines before the log may close.
	timer := s.clock.NewTimer(time.Second)
	select {
	case <-p.logDone:
	case <-timer.C():
	}
	timer.Stop()
	reason := exitReason(p.exitErr)
	t.logs.note("task stopped (%s)", reason)
	t.update(func() {
		t.state = mesh.TaskStopped
		t.pid = 0
		t.lastExit = reason
		t.nextStart = time.Time{}
	})
}

// finish ends the slot if it is still unwanted: releases its address,
// deregisters it and closes its log. It reports false when the slot was
// wanted again meanwhile.
func (t *task) finish() bool {
	s := t.s
	s.mu.Lock()
	if t.want != nil {
		s.mu.Unlock()
		return false
	}
	delete(s.tasks, t.id)
	t.mu.Lock()
	s.releaseAddr(t.id, t.ip, t.port)
	t.mu.Unlock()
	// Under s.mu, so a slot re-created with the same id reports after this.
	s.rep.deregister(t.id)
	s.mu.Unlock()
	if t.logs != nil {
		if err := t.logs.close(); err != nil {
			s.log.Warn("task log", "task", t.id, "err", err)
		}
	}
	dir := TaskDir(s.cfg.StateDir, t.id)
	if s.cfg.Released != nil {
		ts := TaskStart{ID: t.id, Dir: dir}
		t.mu.Lock()
		if c := t.cur; c != nil {
			ts.Mesh, ts.VirtualNode = c.mesh, c.spec.VirtualNode
		}
		t.mu.Unlock()
		s.cfg.Released(ts)
	}
	if err := os.RemoveAll(dir); err != nil {
		s.log.Warn("task directory", "task", t.id, "err", err)
	}
	return true
}

// start runs the process for w.
func (t *task) start(w *slotSpec) (*proc, error) {
	s := t.s
	if t.logs == nil || t.logPath != s.LogPath(w.spec.Service, t.id) {
		if t.logs != nil {
			t.logs.close()
		}
		path := s.LogPath(w.spec.Service, t.id)
		l, err := openLogSink(path, t.id, s.cfg.MaxLogBytes, s.clock)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		t.logs, t.logPath = l, path
		t.mu.Unlock()
	}

	t.mu.Lock()
	prevIP, prevPort := t.ip, t.port
	t.mu.Unlock()
	ip, port, err := s.allocAddr(t.id, prevIP, prevPort, w.spec.Port)
	if err != nil {
		return nil, err
	}
	metrics, err := freePort(ip)
	if err != nil {
		return nil, fmt.Errorf("metrics port: %w", err)
	}
	t.update(func() {
		t.cur, t.ip, t.port, t.metrics = w, ip, port, metrics
		t.state, t.pid = mesh.TaskPending, 0
	})

	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GRPC_XDS_") {
			continue
		}
		env[k] = v
	}
	for k, v := range w.spec.Env {
		env[k] = v
	}
	env["PORT"] = strconv.Itoa(port)
	env["HOST"] = ip
	env["METRICS_PORT"] = strconv.Itoa(metrics)
	env["GMESH_TASK_ID"] = t.id
	env["GMESH_SERVICE"] = w.spec.Service
	env["GMESH_VERSION"] = w.spec.Version
	env["GMESH_TASK_SET"] = w.set
	env["GMESH_MESH"] = w.mesh
	env["GMESH_VIRTUAL_NODE"] = w.spec.VirtualNode
	if s.cfg.Bootstrap != nil {
		b, err := s.cfg.Bootstrap(TaskStart{ID: t.id, Mesh: w.mesh, VirtualNode: w.spec.VirtualNode,
			Dir: TaskDir(s.cfg.StateDir, t.id), Env: cloneMap(w.spec.Env)})
		if err != nil {
			return nil, fmt.Errorf("xds bootstrap: %w", err)
		}
		env["GRPC_XDS_BOOTSTRAP_CONFIG"] = string(b)
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)

	cmd := exec.Command(w.spec.Command[0], w.spec.Command[1:]...)
	cmd.Env = envList // the working directory is the supervisor's
	cmd.SysProcAttr = sysProcAttr()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = s.spawn(cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), logDone: make(chan struct{})}
	logs := t.logs
	go func() {
		defer close(p.logDone)
		logs.copyFrom(pr)
		pr.Close()
	}()
	go func() {
		p.exitErr = cmd.Wait()
		// Take down anything the task left in its process group.
		_ = signalGroup(p.pid, syscall.SIGKILL)
		close(p.done)
	}()
	now := s.clock.Now()
	t.update(func() {
		t.state, t.pid, t.startedAt = mesh.TaskRunning, p.pid, now
	})
	logs.note("started pid %d on %s:%d (metrics %d)", p.pid, ip, port, metrics)
	s.log.Info("task started", "task", t.id, "pid", p.pid, "addr", net.JoinHostPort(ip, strconv.Itoa(port)))
	return p, nil
}

func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.Error()
	}
	return err.Error()
}
