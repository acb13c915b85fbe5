// Package e2e runs the real gmesh binary end to end: `gmesh up` with real
// task processes on loopback, the gateway, the control plane as its own
// process, and the CLI against them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
)

var (
	gmeshBin   string
	moduleRoot string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	wd, _ := os.Getwd()
	moduleRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	dir, err := os.MkdirTemp("", "gmesh-e2e-bin-")
	if err != nil {
		panic(err)
	}
	gmeshBin = filepath.Join(dir, "gmesh")
	build := exec.Command("go", "build", "-o", gmeshBin, "./cmd/gmesh")
	build.Dir = moduleRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build gmesh:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// up is a running `gmesh up`.
type up struct {
	t        *testing.T
	stateDir string
	cmd      *exec.Cmd
	public   string
	cpAddr   string
	mu       sync.Mutex
	out      bytes.Buffer
	exited   chan struct{}
	exitErr  error
}

var (
	publicRe = regexp.MustCompile(`Public endpoint: (\S+)`)
	cpRe     = regexp.MustCompile(`Control plane: (\S+)`)
)

// ipBase returns a random 127.x.y for the tasks of one test, so that tests
// and a developer's own `gmesh up` do not collide.
func ipBase() string {
	return fmt.Sprintf("127.%d.%d", 10+rand.IntN(200), 1+rand.IntN(250))
}

// startUp runs `gmesh up` in stateDir and waits until it is ready.
func startUp(t *testing.T, stateDir string, args ...string) *up {
	t.Helper()
	u := tryUp(t, stateDir, args...)
	if err := u.waitReady(4 * time.Minute); err != nil {
		u.kill()
		t.Fatalf("gmesh up did not get ready: %v\noutput:\n%s", err, u.output())
	}
	return u
}

func tryUp(t *testing.T, stateDir string, args ...string) *up {
	t.Helper()
	all := append([]string{"up", "--state-dir", stateDir, "--listen", "127.0.0.1:0", "--task-ip-base", ipBase()}, args...)
	cmd := exec.Command(gmeshBin, all...)
	cmd.Dir = moduleRoot
	u := &up{t: t, stateDir: stateDir, cmd: cmd, exited: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gmesh up: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			u.mu.Lock()
			u.out.WriteString(sc.Text() + "\n")
			u.mu.Unlock()
		}
	}()
	go func() {
		u.exitErr = cmd.Wait()
		pw.Close()
		close(u.exited)
	}()
	t.Cleanup(func() {
		u.kill()
		if t.Failed() {
			t.Logf("gmesh up output:\n%s", u.output())
		}
	})
	return u
}

func (u *up) output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

func (u *up) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		out := u.output()
		if strings.Contains(out, "Ready in ") {
			if m := publicRe.FindStringSubmatch(out); m != nil {
				u.public = m[1]
			}
			if m := cpRe.FindStringSubmatch(out); m != nil {
				u.cpAddr = m[1]
			}
			return nil
		}
		select {
		case <-u.exited:
			return fmt.Errorf("gmesh up exited: %v", u.exitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s", timeout)
}

// stop sends SIGTERM and waits for a clean exit.
func (u *up) stop(timeout time.Duration) error {
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.exited:
		return u.exitErr
	case <-time.After(timeout):
		return fmt.Errorf("gmesh up did not exit within %s of SIGTERM", timeout)
	}
}

func (u *up) kill() {
	select {
	case <-u.exited:
		return
	default:
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.exited:
	case <-time.After(30 * time.Second):
		_ = u.cmd.Process.Kill()
		<-u.exited
	}
}

// gmesh runs a CLI command against the state directory.
func gmesh(t *testing.T, stateDir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gmeshBin, append(args, "--state-dir", stateDir)...)
	cmd.Dir = moduleRoot
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// status returns the control plane's status document.
func status(t *testing.T, stateDir string) *controlplane.Status {
	t.Helper()
	out, err := gmesh(t, stateDir, "status", "-o", "json")
	if err != nil {
		t.Fatalf("gmesh status: %v\n%s", err, out)
	}
	var st controlplane.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode status: %v\n%s", err, out)
	}
	return &st
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func get(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// poll calls f until it returns nil or the deadline passes.
func poll(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		<-time.After(100 * time.Millisecond) // the polling interval
	}
	t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
