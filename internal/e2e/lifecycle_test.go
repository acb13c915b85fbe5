package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	upOut, err := gmesh(t, stateDir, "up", "--detach", "--listen", "127.0.0.1:0", "--task-ip-base", ipBase())
	if err != nil {
		t.Fatalf("up --detach: %v\n%s", err, upOut)
	}
	t.Cleanup(func() { _, _ = gmesh(t, stateDir, "down") })
	out := upOut
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

	// The printed hint carries the state directory, and works as printed
	// from any directory.
	hint := regexp.MustCompile(`(?m)^Stop it with: (.+)$`).FindStringSubmatch(upOut)
	if hint == nil || hint[1] != "gmesh down --state-dir "+stateDir {
		t.Fatalf("up --detach --state-dir %s printed the stop hint %q, want %q", stateDir, hint, "gmesh down --state-dir "+stateDir)
	}
	elsewhere := t.TempDir()
	// A plain `gmesh down` elsewhere finds nothing in its ./.gmesh, says
	// so, exits 0 and creates nothing; the mesh runs on.
	out, err = runIn(t, elsewhere, "down")
	if err != nil || !strings.Contains(out, "nothing is running in "+elsewhere+"/.gmesh") {
		t.Errorf("down in another directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, ".gmesh")); err == nil {
		t.Errorf("gmesh down in %s created .gmesh", elsewhere)
	}
	if code, _, err := get(m[1] + "/?name=Yusuke"); err != nil || code != 200 {
		t.Fatalf("after a down elsewhere the mesh answers %d, %v; want 200", code, err)
	}
	out, err = runIn(t, elsewhere, strings.Fields(hint[1])[1:]...)
	if err != nil || !strings.Contains(out, "Stopped.") {
		t.Fatalf("%s (the printed hint, run from another directory): %v\n%s", hint[1], err, out)
	}
	// Now nothing runs there: for a named state directory that is an error.
	out, err = runIn(t, elsewhere, "down", "--state-dir", stateDir)
	if err == nil || strings.TrimSpace(out) != "gmesh: nothing is running in "+stateDir {
		t.Errorf("down --state-dir of a stopped mesh: %v, %q; want exit 1 and one line", err, out)
	}
	for _, ep := range st.Endpoints {
		if processAlive(ep.Proc().PID) {
			t.Errorf("task %s (pid %d) is alive after gmesh down", ep.ID, ep.Proc().PID)
		}
	}
	if _, _, err := get(m[1] + "/"); err == nil {
		t.Errorf("the public endpoint still answers after gmesh down")
	}
}

// runIn runs gmesh with exactly args (nothing added) in dir.
func runIn(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gmeshBin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}
