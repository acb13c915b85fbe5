package controlplane_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/stack"
)

// testTimeout bounds every test's context.
const testTimeout = 60 * time.Second

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs warnings and up to the test log (everything with
// GMESH_CP_DEBUG set).
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GMESH_CP_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// runningCP is a control plane running in-process, with a client of its
// admin API.
type runningCP struct {
	*controlplane.ControlPlane
	client *controlplane.Client
	stop   func() error // stops Run and returns its error; idempotent
}

// startCP starts a control plane on 127.0.0.1:0 with storePath ("" for an
// in-memory store). It is stopped at the end of the test unless stopped
// earlier.
func startCP(t testing.TB, storePath string) *runningCP {
	t.Helper()
	return startCPAt(t, storePath, "127.0.0.1:0")
}

// startCPAt is startCP on addr.
func startCPAt(t testing.TB, storePath, addr string) *runningCP {
	t.Helper()
	cp, err := controlplane.New(controlplane.Config{StorePath: storePath, Addr: addr, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("controlplane.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	c, err := controlplane.Dial(cp.Addr(), "")
	if err != nil {
		cancel()
		t.Fatalf("Dial: %v", err)
	}
	var runErr error
	stopped := false
	stop := func() error {
		if stopped {
			return runErr
		}
		stopped = true
		c.Close()
		cancel()
		select {
		case runErr = <-done:
		case <-time.After(30 * time.Second):
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			runErr = fmt.Errorf("control plane Run did not return within 30s of cancel; goroutines:\n%s", b.String())
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("control plane Run: %v", err)
		}
	})
	return &runningCP{ControlPlane: cp, client: c, stop: stop}
}

// echoStack decodes the built-in stack; with runtime false it leaves out
// the Service resources (they need no runtime here, but some tests want the
// App Mesh kinds only).
func echoStack(t testing.TB, runtime bool) []*mesh.Resource {
	t.Helper()
	rs, err := mesh.Decode("echo.yaml", stack.Echo)
	if err != nil {
		t.Fatalf("decode the built-in stack: %v", err)
	}
	if runtime {
		return rs
	}
	var out []*mesh.Resource
	for _, r := range rs {
		if r.Kind != mesh.KindService && r.Kind != mesh.KindTaskSet {
			out = append(out, r)
		}
	}
	return out
}

// decodeOne decodes a single-document manifest.
func decodeOne(t testing.TB, manifest string) *mesh.Resource {
	t.Helper()
	rs, err := mesh.Decode("test.yaml", []byte(manifest))
	if err != nil {
		t.Fatalf("decode %q: %v", manifest, err)
	}
	if len(rs) != 1 {
		t.Fatalf("decoded %d resources, want 1", len(rs))
	}
	return rs[0]
}

// pollUntil calls cond every few milliseconds until it returns true or ctx
// ends.
func pollUntil(ctx context.Context, t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached after %d tries: %v", what, i+1, ctx.Err())
		case <-tick.C:
		}
	}
}
