package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUpRefusals: a port in use and a missing Go toolchain are each a
// clear one-line error, with nothing started.
func TestUpRefusals(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stateDir := t.TempDir()
	out, err := gmesh(t, stateDir, "up", "--listen", ln.Addr().String())
	if err == nil || !strings.Contains(out, ln.Addr().String()+" is already in use") {
		t.Errorf("up on a busy port: err %v, output %q", err, out)
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
		t.Errorf("want a one-line error, got %d lines:\n%s", n+1, out)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "controlplane.json")); err == nil {
		t.Errorf("a control plane was started although the port was busy")
	}

	// No Go on PATH, and a build is needed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gmeshBin, "up", "--state-dir", t.TempDir(), "--listen", "127.0.0.1:0")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "no Go toolchain") {
		t.Errorf("up without Go: err %v, output %q", err, b)
	}
}

// TestUpDetachDownAndLogs: `up --detach` returns once the mesh answers,
// `gmesh logs` shows the tasks' output prefixed by task, and `gmesh down`
// stops everything.
func TestUpDetachDownAndLogs(t *testing.T) {
	stateDir := t.TempDir()
	out, err := gmesh(t, stateDir, "up", "--detach", "--listen", "127.0.0.1:0", "--task-ip-base", ipBase())
	if err != nil {
		t.Fatalf("up --detach: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = gmesh(t, stateDir, "down") })
	m := publicRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no public endpoint in:\n%s", out)
	}
	code, body, err := get(m[1] + "/?name=Yusuke")
	if err != nil || code != 200 || !replyRe.MatchString(strings.TrimSpace(body)) {
		t.Fatalf("detached mesh: %d %q %v", code, body, err)
	}
	logs, err := gmesh(t, stateDir, "logs", "echo-server")
	if err != nil {
		t.Fatalf("logs: %v\n%s", err, logs)
	}
	for _, want := range []string{"echo-server-0-9-1 ", "echo-server-0-9-2 ", "Echo Server Version 0.9"} {
		if !strings.Contains(logs, want) {
			t.Errorf("gmesh logs echo-server has no %q:\n%s", want, logs)
		}
	}
	st := status(t, stateDir)
	out, err = gmesh(t, stateDir, "down")
	if err != nil || !strings.Contains(out, "Stopped.") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	for _, ep := range st.Endpoints {
		if processAlive(ep.PID) {
			t.Errorf("task %s (pid %d) is alive after gmesh down", ep.ID, ep.PID)
		}
	}
	if _, _, err := get(m[1] + "/"); err == nil {
		t.Errorf("the public endpoint still answers after gmesh down")
	}
}
