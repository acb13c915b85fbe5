// Package browsertest starts headless Chromium (Debian's package) for
// browser tests, with the flags this machine's closed network needs.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium finds a Chromium binary: $GMESH_CHROMIUM, else on PATH. Outside
// CI a missing browser skips the test with how to install it; in CI (CI set)
// it fails, so a browser test can never silently not run there.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GMESH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium found; .ci/run installs Debian's chromium package")
	}
	t.Skip("no Chromium found (apt-get install -y chromium, or set GMESH_CHROMIUM)")
	return ""
}

// New starts a headless Chromium for the test and returns its context.
func New(t testing.TB, parent context.Context) context.Context {
	t.Helper()
	path := Chromium(t)
	dir, err := os.MkdirTemp("", "gmesh-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	// Chromium's children may still write for a moment after it stops, so
	// the profile is removed on a best-effort basis.
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancel := chromedp.NewExecAllocator(parent, opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel2)
	return ctx
}

// WaitJS polls a JavaScript predicate in the page until it is true or
// timeout passes; on failure it reports dump's value too.
func WaitJS(t testing.TB, ctx context.Context, what, expr, dump string, timeout time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		var page string
		if dump != "" {
			page, _ = chromedp.Run(ctx, chromedp.Evaluate[string](dump))
		}
		t.Fatalf("waiting for %s (%s): %v; page: %s", what, expr, err, page)
	}
}
