package k8stest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EnvSwitch set to "off" skips the cluster tests deliberately (with a message
// saying so); unset, a machine that cannot run the cluster fails them.
const EnvSwitch = "GMESH_K8S"

// ForTest returns a cluster for t: the one named by $GMESH_K8S_KUBECONFIG if
// set (left running), or one it starts, builds what is missing for, and tears
// down when t ends, failing t if the teardown leaves anything behind. On a
// machine without root or cgroup v1 it fails t saying what is missing; only
// GMESH_K8S=off skips.
func ForTest(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvSwitch) == "off" {
		t.Skipf("%s=off: the real-cluster tests are skipped on purpose", EnvSwitch)
	}
	if kc := os.Getenv(EnvKubeconfig); kc != "" {
		c, err := Connect(kc, "")
		if err != nil {
			t.Fatalf("use the cluster of $%s: %v", EnvKubeconfig, err)
		}
		return c
	}
	return StartForTest(t)
}

// StartForTest starts a cluster of t's own (never a shared one) and registers
// its teardown, which must leave nothing behind.
func StartForTest(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvSwitch) == "off" {
		t.Skipf("%s=off: the real-cluster tests are skipped on purpose", EnvSwitch)
	}
	RequireHost(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute) // a cold build is ~7 minutes
	defer cancel()
	c, err := Start(ctx, Options{Log: log, InstallPackages: true})
	if err != nil {
		t.Fatalf("start the cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if dir := os.Getenv("GMESH_ARTIFACT_DIR"); dir != "" {
				name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
				if err := c.CopyLogs(filepath.Join(dir, "k8stest", name)); err != nil {
					t.Logf("copy the cluster logs: %v", err)
				}
			}
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Checked before the lock is released: the next package's cluster
		// waits on it and makes the same root directory at once.
		left, err := c.StopChecked(sctx)
		if err != nil {
			t.Errorf("tear down the cluster: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("teardown left behind: %s", strings.Join(left, "; "))
		}
	})
	return c
}

// RequireHost fails t, saying what is missing, unless this machine can run
// the cluster (root, cgroup v1, the host packages, which it installs when
// missing); GMESH_K8S=off skips t instead. Call it before any expensive setup.
func RequireHost(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvSwitch) == "off" {
		t.Skipf("%s=off: the real-cluster tests are skipped on purpose", EnvSwitch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := Preflight(ctx, slog.New(slog.DiscardHandler), true); err != nil {
		if errors.Is(err, ErrUnsupported) {
			t.Fatalf("the real Kubernetes cluster tests cannot run here: %v (set %s=off to skip them on purpose)", err, EnvSwitch)
		}
		t.Fatalf("prepare the host for the cluster: %v", err)
	}
}

// testWriter sends slog output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
