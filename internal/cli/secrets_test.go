package cli_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDeployEnvNotShown deploys with a secret in --env and checks the
// rollout passes it to the task set it starts while no command's output
// nor the control plane's log shows it: keys only, values as "(set)".
func TestDeployEnvNotShown(t *testing.T) {
	const secret, oldSecret = "hunter2-secret", "stack-secret-7"
	ctx := testContext(t, 60*time.Second)
	var logs syncBuffer
	cp, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	defer func() { stop(); <-done }()
	server, stateDir := cp.Addr(), t.TempDir()
	t.Chdir(t.TempDir())
	if err := os.WriteFile("taskset.yaml", []byte(`apiVersion: gmesh.dev/v1
kind: TaskSet
metadata:
  name: echo-server-0-9
  mesh: echo
spec:
  service: echo-server
  virtualNode: echo-server-0-9
  version: "0.9"
  revision: 1
  command: ["/bin/true"]
  env:
    OLD_PASSWORD: `+oldSecret+`
  desiredCount: 1
  port: 50051
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "-o", "stack.yaml"},
		{"apply", "-f", "stack.yaml", "-f", "taskset.yaml"},
		{"deploy", "echo-server", "--binary", "/bin/true", "--version", "1.0", "--env", "DB_PASSWORD=" + secret, "--detach"},
	} {
		if code, out, errOut := runGmesh(ctx, server, stateDir, args...); code != 0 {
			t.Fatalf("gmesh %s: exit %d\nstdout %s\nstderr %s", strings.Join(args, " "), code, out, errOut)
		}
	}

	// The rollout still hands the values to the version it starts.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for found := false; !found; {
		sets, err := cp.Store().List(ctx, mesh.KindTaskSet, "echo")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sets {
			if env := s.TaskSet().Env; env["DB_PASSWORD"] == secret && env["OLD_PASSWORD"] == oldSecret {
				found = true
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no task set with the deployed env appeared: %v", ctx.Err())
		case <-tick.C:
		}
	}

	for _, tc := range []struct {
		args []string
		keys bool // the output shows the keys with "(set)"
	}{
		{[]string{"get", "rollout", "echo-server", "-o", "yaml"}, true},
		{[]string{"get", "rollouts", "-o", "json"}, true},
		{[]string{"get", "rollout", "echo-server", "-o", "json"}, true},
		{[]string{"get", "tasksets", "-o", "yaml"}, true},
		{[]string{"get", "tasksets"}, false},
		{[]string{"status", "-o", "json"}, true},
		{[]string{"status"}, false},
		{[]string{"rollout", "status", "echo-server"}, false},
		{[]string{"rollout", "pause", "echo-server"}, false},
	} {
		code, out, errOut := runGmesh(ctx, server, stateDir, tc.args...)
		name := "gmesh " + strings.Join(tc.args, " ")
		if code != 0 {
			t.Errorf("%s: exit %d, stderr %s", name, code, errOut)
			continue
		}
		for _, s := range []string{secret, oldSecret} {
			if strings.Contains(out, s) || strings.Contains(errOut, s) {
				t.Errorf("%s shows %q:\n%s%s", name, s, out, errOut)
			}
		}
		if tc.keys && (!strings.Contains(out, "DB_PASSWORD") || !strings.Contains(out, mesh.RedactedValue)) {
			t.Errorf("%s: got\n%s\nwant DB_PASSWORD shown as %s", name, out, mesh.RedactedValue)
		}
	}
	for _, s := range []string{secret, oldSecret} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the control plane's log shows %q:\n%s", s, logs.String())
		}
	}
}

// TestUpRefusesBadAllowedHost checks gmesh up names a bad
// --dashboard-allowed-hosts entry before it starts anything.
func TestUpRefusesBadAllowedHost(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	stateDir := t.TempDir()
	for _, bad := range []string{"user@evil.example", "http://dash.example", "dash.example:99999", "::1"} {
		code, out, errOut := runGmesh(ctx, "127.0.0.1:1", stateDir, "up", "--dashboard-allowed-hosts", "localhost,"+bad)
		if code != 1 || !strings.Contains(errOut, "--dashboard-allowed-hosts") || !strings.Contains(errOut, bad) {
			t.Errorf("up --dashboard-allowed-hosts localhost,%s: got exit %d, stdout %q, stderr %q; want exit 1 naming the flag and the entry", bad, code, out, errOut)
		}
	}
}
