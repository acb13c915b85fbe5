// Package local is gmesh's task supervisor on one machine, the role the ECS
// agent plays on a container instance: it runs each task of each TaskSet as a
// supervised OS process with its own loopback address, keeps the desired
// count (restarting dead tasks with exponential backoff), writes each task's
// output to a log file, drains and stops tasks gracefully, and reports every
// task to the control plane's registry in the background. It is the local
// implementation of the runtime contract (internal/runtime); what only it
// knows about a task, the process, it reports in mesh.Endpoint.Process.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	rt "github.com/gmesh-dev/gmesh/internal/runtime"
)

var _ rt.Runtime = (*Supervisor)(nil)

// TaskBackoff is the state of a task waiting to be restarted after it
// exited. It is a TaskInfo state only; the registry sees TaskStopped.
const TaskBackoff mesh.TaskState = "BACKOFF"

// Defaults for Config's zero values.
const (
	DefaultIPBase      = "127.0.0"
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultStableAfter = 10 * time.Second
	DefaultStopTimeout = 15 * time.Second
	DefaultDrainDelay  = time.Second
)

// Config configures a Supervisor. Zero values take the defaults above.
type Config struct {
	Logger *slog.Logger
	// StateDir holds task logs, under StateDir/logs/<service>/<task-id>.log.
	StateDir string
	// Registrar is where the supervisor reports tasks; the admin API client
	// implements it. Calls may fail while the control plane is down: the
	// supervisor retries in the background with backoff, keeps only the
	// latest state per task, and never holds process supervision up on it.
	// Nil: report nothing.
	Registrar rt.Registrar
	// Bootstrap returns the xDS bootstrap JSON for a task, passed to it as
	// GRPC_XDS_BOOTSTRAP_CONFIG, before each start. It may write files the
	// task reads into the task's own directory (TaskStart.Dir), which the
	// supervisor removes when the task goes away for good. Nil: none.
	Bootstrap func(TaskStart) ([]byte, error)
	// Released, when set, is called once a task has gone away for good
	// (after it stopped and was deregistered), before its directory is
	// removed.
	Released func(TaskStart)
	// Certificate, when set, returns the workload certificate status of
	// the task whose directory is dir (TaskDir), reported with the task's
	// endpoint (mesh.ProcessStatus.Certificate); ok false when it has none.
	// Refresh re-reports a task when it changes.
	Certificate func(dir string) (status mesh.CertificateStatus, ok bool)
	// IPBase is the first three octets of task addresses: tasks get
	// IPBase.2, .3, ... Tests pass a random "127.0.N".
	IPBase string
	// MinBackoff and MaxBackoff bound the restart delay of a crashing task,
	// which doubles per consecutive crash; a task that stayed up StableAfter
	// starts over at MinBackoff. Registrar retries use the same bounds.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	// StopTimeout is the grace between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// DrainDelay is how long a stopping task stays up after it is reported
	// draining, so xDS clients drop it from EDS first. Negative: none.
	DrainDelay time.Duration
	// MaxLogBytes is the size at which a task log rotates (default 10 MiB).
	MaxLogBytes int64
	Clock       clock.Clock
}

// TaskStart is a task about to start, as Bootstrap sees it.
type TaskStart struct {
	ID          string
	Mesh        string
	VirtualNode string
	// Dir is the task's own directory, StateDir/tasks/<id>; it does not
	// exist until someone makes it (owner-only, please).
	Dir string
	// Env is the task set's environment (not the process's).
	Env map[string]string
}

// TaskDir is the directory of task id under stateDir.
func TaskDir(stateDir, id string) string { return filepath.Join(stateDir, "tasks", id) }

// TaskInfo is a task as the supervisor sees it.
type TaskInfo struct {
	ID          string
	Mesh        string
	Service     string
	TaskSet     string
	VirtualNode string
	Version     string
	Address     string // the task's IP
	Port        int
	MetricsAddr string // ip:port of $METRICS_PORT
	PID         int    // 0 when not running
	State       mesh.TaskState
	Restarts    int
	StartedAt   time.Time
	LastExit    string        // why the last run ended ("exit status 1", "signal: killed", a start error)
	Backoff     time.Duration // the current restart delay while State is BACKOFF
	NextStart   time.Time     // when a BACKOFF task starts again
	LogPath     string
}

// Supervisor runs tasks to match the desired TaskSets.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	clock clock.Clock
	rep   *reporter

	repCancel context.CancelFunc
	repDone   chan struct{}
	spawnCh   chan spawnReq
	killNow   chan struct{} // closed when Shutdown's deadline passes
	wg        sync.WaitGroup

	mu     sync.Mutex
	tasks  map[string]*task
	ips    map[string]string // task IP -> task id, in own-IP mode
	ports  map[int]string    // port on 127.0.0.1 -> task id, in fallback mode
	closed bool
}

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

// New returns a running Supervisor with no tasks.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("supervisor: state directory is required")
	}
	if cfg.IPBase == "" {
		cfg.IPBase = DefaultIPBase
	}
	if err := checkIPBase(cfg.IPBase); err != nil {
		return nil, err
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.DrainDelay == 0 {
		cfg.DrainDelay = DefaultDrainDelay
	} else if cfg.DrainDelay < 0 {
		cfg.DrainDelay = 0
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = defaultMaxLogBytes
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("supervisor: create log directory: %w", err)
	}
	s := &Supervisor{
		cfg:     cfg,
		log:     cfg.Logger,
		clock:   cfg.Clock,
		rep:     newReporter(cfg.Registrar, cfg.Logger, cfg.Clock, cfg.MinBackoff, cfg.MaxBackoff),
		repDone: make(chan struct{}),
		spawnCh: make(chan spawnReq),
		killNow: make(chan struct{}),
		tasks:   make(map[string]*task),
		ips:     make(map[string]string),
		ports:   make(map[int]string),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.repCancel = cancel
	go func() {
		defer close(s.repDone)
		s.rep.run(ctx)
	}()
	go s.spawnLoop()
	return s, nil
}

func checkIPBase(base string) error {
	parts := strings.Split(base, ".")
	if len(parts) != 3 || parts[0] != "127" {
		return fmt.Errorf("supervisor: ip base %q: want three octets in 127.0.0.0/8, like 127.0.0", base)
	}
	for _, p := range parts {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 255 {
			return fmt.Errorf("supervisor: ip base %q: bad octet %q", base, p)
		}
	}
	return nil
}

// spawnLoop starts every task process from one goroutine locked to its OS
// thread. On Linux a task's parent-death signal fires when the thread that
// forked it exits, not the process; the Go runtime may retire idle threads,
// so forking from a thread that lives as long as the supervisor keeps tasks
// alive exactly as long as `gmesh up`.
func (s *Supervisor) spawnLoop() {
	runtime.LockOSThread()
	// Never unlocked: when this goroutine ends (after Shutdown), its thread
	// exits with it, and with it any task that somehow survived.
	for req := range s.spawnCh {
		req.res <- req.cmd.Start()
	}
}

func (s *Supervisor) spawn(cmd *exec.Cmd) error {
	res := make(chan error, 1)
	select {
	case s.spawnCh <- spawnReq{cmd: cmd, res: res}:
	case <-s.killNow:
		return errors.New("supervisor is shutting down")
	}
	return <-res
}

// slotSpec is what one task slot should run.
type slotSpec struct {
	set   string // TaskSet name
	mesh  string
	index int
	spec  mesh.TaskSetSpec
	key   string // what forces a restart when it changes
}

func newSlotSpec(setName, meshName string, index int, spec *mesh.TaskSetSpec) *slotSpec {
	sp := *spec
	sp.Command = slices.Clone(spec.Command)
	sp.Env = cloneMap(spec.Env)
	k, _ := json.Marshal(struct {
		Mesh, Service, VirtualNode, Version, Artifact string
		Command                                       []string
		Env                                           map[string]string
		Port                                          int
	}{meshName, sp.Service, sp.VirtualNode, sp.Version, sp.Artifact, sp.Command, sp.Env, sp.Port})
	return &slotSpec{set: setName, mesh: meshName, index: index, spec: sp, key: string(k)}
}

// TaskID is the id of a TaskSet's n-th task (1-based), stable across restarts.
func TaskID(taskSet string, n int) string { return taskSet + "-" + strconv.Itoa(n) }

// Apply sets the desired TaskSets: resources of kind TaskSet with a
// *mesh.TaskSetSpec. Tasks of sets that are absent or Draining, and tasks
// beyond a set's DesiredCount, are stopped gracefully; missing ones are
// started. A task whose command, env, port or version changed is restarted.
// Apply returns at once; the work happens in the background. It is
// idempotent, and a no-op after Shutdown.
func (s *Supervisor) Apply(sets []*mesh.Resource) {
	desired := make(map[string]*slotSpec)
	for _, r := range sets {
		if r == nil || r.Kind != mesh.KindTaskSet {
			continue
		}
		var spec *mesh.TaskSetSpec
		switch sp := r.Spec.(type) {
		case *mesh.TaskSetSpec:
			spec = sp
		case mesh.TaskSetSpec:
			spec = &sp
		}
		if spec == nil {
			s.log.Warn("ignoring task set without a spec", "taskSet", r.Metadata.Name)
			continue
		}
		if spec.Draining {
			continue
		}
		if len(spec.Command) == 0 {
			s.log.Warn("ignoring task set without a command", "taskSet", r.Metadata.Name)
			continue
		}
		for n := 1; n <= spec.DesiredCount; n++ {
			desired[TaskID(r.Metadata.Name, n)] = newSlotSpec(r.Metadata.Name, r.Metadata.Mesh, n, spec)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for id, t := range s.tasks {
		if _, ok := desired[id]; !ok && t.want != nil {
			t.want = nil
			t.wakeUp()
		}
	}
	for id, w := range desired {
		if t, ok := s.tasks[id]; ok {
			wake := t.want == nil || t.want.key != w.key
			t.want = w
			if wake {
				t.wakeUp()
			}
			continue
		}
		t := newTask(s, id, w)
		s.tasks[id] = t
		s.wg.Add(1)
		go t.loop()
	}
}

// Tasks returns every task the supervisor runs or is stopping, by task set
// and index.
func (s *Supervisor) Tasks() []TaskInfo {
	s.mu.Lock()
	ts := make([]*task, 0, len(s.tasks))
	for _, t := range s.tasks {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	out := make([]TaskInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.info())
	}
	slices.SortFunc(out, func(a, b TaskInfo) int {
		if c := strings.Compare(a.TaskSet, b.TaskSet); c != 0 {
			return c
		}
		ai, _ := strconv.Atoi(a.ID[strings.LastIndexByte(a.ID, '-')+1:])
		bi, _ := strconv.Atoi(b.ID[strings.LastIndexByte(b.ID, '-')+1:])
		if ai != bi {
			return ai - bi
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Refresh reports task id's endpoint again (its certificate was renewed,
// say); an unknown id is ignored.
func (s *Supervisor) Refresh(id string) {
	s.mu.Lock()
	t, ok := s.tasks[id]
	s.mu.Unlock()
	if ok {
		t.update(func() {})
	}
}

// Logs returns the last lines (up to 200) a task wrote, oldest first, each
// prefixed with a timestamp and the task id; ok is false for an unknown task.
func (s *Supervisor) Logs(taskID string) (lines []string, ok bool) {
	s.mu.Lock()
	t := s.tasks[taskID]
	s.mu.Unlock()
	if t == nil {
		return nil, false
	}
	t.mu.Lock()
	l := t.logs
	t.mu.Unlock()
	return l.lines(), true
}

// LogPath returns where a task's log file is.
func (s *Supervisor) LogPath(service, taskID string) string {
	return filepath.Join(s.cfg.StateDir, "logs", service, taskID+".log")
}

// Shutdown stops every task gracefully (drain, SIGTERM, SIGKILL after
// StopTimeout) and waits for them. When ctx ends first, the remaining tasks
// are SIGKILLed at once; either way no task process is left when it returns.
// Then it delivers pending deregistrations while ctx allows.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("supervisor: already shut down")
	}
	s.closed = true
	for _, t := range s.tasks {
		t.want = nil
		t.wakeUp()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("supervisor: graceful stop cut short, tasks killed: %w", ctx.Err())
		close(s.killNow)
		<-done
	}
	close(s.spawnCh)
	if ferr := s.rep.flush(ctx); ferr != nil && err == nil {
		err = fmt.Errorf("supervisor: deregister tasks: %w", ferr)
	}
	s.repCancel()
	<-s.repDone
	return err
}

// ParseTaskID splits a task id made by TaskID into its task set and n; ok
// is false for anything TaskID cannot have made.
func ParseTaskID(id string) (taskSet string, n int, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return "", 0, false
	}
	num := id[i+1:]
	if num[0] == '0' {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || strconv.Itoa(n) != num {
		return "", 0, false
	}
	return id[:i], n, true
}
