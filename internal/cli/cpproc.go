package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// cpProcess supervises `gmesh controlplane` as a child process: restarted
// with backoff if it dies, on the same address, so that tasks' xDS clients
// reconnect to it. Tasks and the gateway do not depend on it to keep
// serving.
type cpProcess struct {
	dir    statedir.Dir
	addr   string
	extra  []string // more flags (the user's CA)
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	cmd      *exec.Cmd
	restarts int
}

func startControlPlane(ctx context.Context, dir statedir.Dir, addr string, extra []string, log *slog.Logger) (*cpProcess, error) {
	exe, err := selfExe()
	if err != nil {
		return nil, fmt.Errorf("find the gmesh executable: %w", err)
	}
	if addr == "" {
		// Reuse the recorded address when it is free, so the store's tasks
		// (if any survive elsewhere) and logs stay consistent; else a new port.
		if prev, err := dir.ReadControlPlane(); err == nil && prev.Addr != "" && portFree(prev.Addr) {
			addr = prev.Addr
		} else {
			addr, err = freeLoopbackAddr()
			if err != nil {
				return nil, err
			}
		}
	}
	logPath := filepath.Join(dir.LogDir(), "controlplane.log")
	cctx, cancel := context.WithCancel(context.Background())
	p := &cpProcess{dir: dir, addr: addr, extra: extra, log: log, cancel: cancel, done: make(chan struct{})}
	first := make(chan error, 1)
	go p.run(cctx, exe, logPath, first)
	if err := <-first; err != nil {
		cancel()
		<-p.done
		return nil, err
	}
	return p, nil
}

func (p *cpProcess) run(ctx context.Context, exe, logPath string, first chan<- error) {
	defer close(p.done)
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			if attempt == 0 {
				first <- fmt.Errorf("control plane log: %w", err)
				return
			}
		}
		cmd := exec.Command(exe, append([]string{"controlplane", "--state-dir", p.dir.Path, "--addr", p.addr}, p.extra...)...)
		cmd.Args[0] = "gmesh" // not /proc/self/exe, in ps
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = childAttrs()
		if err := cmd.Start(); err != nil {
			logf.Close()
			if attempt == 0 {
				first <- fmt.Errorf("start the control plane: %w", err)
				return
			}
			p.log.Warn("control plane cannot be restarted", "err", err, "backoff", backoff)
		} else {
			if attempt == 0 {
				first <- nil
			}
			p.mu.Lock()
			p.cmd = cmd
			p.mu.Unlock()
			started := time.Now()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case <-ctx.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
				logf.Close()
				return
			case err := <-exited:
				logf.Close()
				p.mu.Lock()
				p.restarts++
				p.mu.Unlock()
				if time.Since(started) > 30*time.Second {
					backoff = 200 * time.Millisecond
				}
				p.log.Warn("control plane exited; restarting", "err", err, "backoff", backoff)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// waitReady waits until the control plane answers on its address.
func (p *cpProcess) waitReady(ctx context.Context, timeout time.Duration) (statedir.ControlPlane, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := controlplane.Dial(p.addr, "")
	if err != nil {
		return statedir.ControlPlane{}, err
	}
	defer c.Close()
	var last error
	for {
		p.mu.Lock()
		pid := 0
		if p.cmd != nil && p.cmd.Process != nil {
			pid = p.cmd.Process.Pid
		}
		p.mu.Unlock()
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Status(cctx)
		ccancel()
		if err == nil {
			return statedir.ControlPlane{Addr: p.addr, PID: pid}, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return statedir.ControlPlane{}, fmt.Errorf("the control plane did not start within %s: %v (see %s)", timeout, last, filepath.Join(p.dir.LogDir(), "controlplane.log"))
		case <-p.done:
			return statedir.ControlPlane{}, fmt.Errorf("the control plane stopped (see %s)", filepath.Join(p.dir.LogDir(), "controlplane.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the control plane (SIGTERM, then SIGKILL) and its supervision.
func (p *cpProcess) stop() {
	p.cancel()
	<-p.done
}
