package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gmesh-dev/gmesh/internal/browsertest"
	"github.com/gmesh-dev/gmesh/internal/dashboard"
)

var dashboardRe = regexp.MustCompile(`Dashboard: (\S+)`)

// pageDump is what a failed wait reports about the page.
const pageDump = `JSON.stringify({conn: window.__gmesh && window.__gmesh.connection, events: window.__gmesh && window.__gmesh.events, last: window.__gmesh && window.__gmesh.lastAction, phase: (document.getElementById('rollout-phase')||{dataset:{}}).dataset.phase})`

// TestDashboardRollout is issue 8's browser test: `gmesh up`, the dashboard
// in headless Chromium shows both echo-server tasks healthy; a deploy starts;
// the 1.0 share rises in the chart's data; pause pauses the rollout; promote
// finishes it. A screenshot of the rollout in progress is saved as a CI
// artifact ($GMESH_ARTIFACT_DIR, default .ci/artifacts).
func TestDashboardRollout(t *testing.T) {
	browsertest.Chromium(t) // skip (or fail in CI) before starting anything
	stateDir := t.TempDir()
	v10 := buildEchoServer(t, "1.0")
	u := startUp(t, stateDir)
	m := dashboardRe.FindStringSubmatch(u.output())
	if m == nil {
		t.Fatalf("gmesh up printed no dashboard address:\n%s", u.output())
	}
	dashURL := m[1]

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := browsertest.New(t, ctx)
	if err := chromedp.Do(b, chromedp.Navigate(dashURL)); err != nil {
		t.Fatalf("open %s: %v", dashURL, err)
	}
	browsertest.WaitJS(t, b, "both echo-server tasks healthy",
		`document.querySelectorAll('[data-service="echo-server"] [data-task-id][data-health="HEALTHY"]').length === 2`, pageDump, 30*time.Second)

	lr := startLoad(u.public+"/?name=Yusuke", 100, 3*time.Minute)
	defer lr.stop()

	// The gateway as it really listens (up --listen 127.0.0.1:0, not the
	// spec's 8080), and echo-client, an HTTP service carrying all the
	// traffic, with its request rate.
	listen := strings.TrimPrefix(u.public, "http://")
	browsertest.WaitJS(t, b, "the gateway's real listen address",
		`document.querySelector('[data-gateway="echo-gateway"] .gateway-listen')?.textContent === `+strconv.Quote(listen), pageDump, 30*time.Second)
	poll(t, 30*time.Second, "echo-client's request rate on the dashboard", func() error {
		var st dashboard.State
		if err := getJSON(dashURL+"/api/state", &st); err != nil {
			return err
		}
		for _, sv := range st.Services {
			if sv.Key == "echo/echo-client" {
				if sv.RPS < 50 {
					return fmt.Errorf("echo-client at %.1f rps under a 100 rps load", sv.RPS)
				}
				return nil
			}
		}
		return errors.New("no echo/echo-client service")
	})
	// A long bake, so the rollout is still baking when pause is pressed.
	d := startDeploy(t, stateDir, "echo-server", "--binary", v10, "--interval", "60s", "--timeout", "2m", "--env", "E2E_SECRET="+e2eSecret)

	browsertest.WaitJS(t, b, "the 1.0 share rising in the chart's data", `(() => {
		const s = window.__gmesh.series('echo/echo-server');
		const v = s && s.versions && s.versions['1.0'];
		return !!v && v.share.some((x) => x !== null && x > 0.2);
	})()`, pageDump, 90*time.Second)
	// Show echo-server's rollout (the chart tabs pick the service).
	browsertest.WaitJS(t, b, "echo-server's tab selected", `(() => {
		const tab = document.querySelector('#chart-tabs button[data-service="echo/echo-server"]');
		if (tab) tab.click();
		return document.getElementById('rollout-panel').dataset.service === 'echo/echo-server' || document.getElementById('rollout-panel').dataset.service === 'echo-server';
	})()`, pageDump, 30*time.Second)
	browsertest.WaitJS(t, b, "the rollout baking", `document.getElementById('rollout-phase').dataset.phase === 'Baking'`, pageDump, 30*time.Second)

	// Issue 14: the DNS-rebinding request is refused and pauses nothing;
	// no read shows the --env value.
	checkRebindingRefused(t, dashURL)
	browsertest.WaitJS(t, b, "the rollout still baking after the refused pause", `document.getElementById('rollout-phase').dataset.phase === 'Baking'`, pageDump, 5*time.Second)
	if out, err := gmesh(t, stateDir, "rollout", "status", "echo-server"); err != nil || strings.Contains(out, "Paused") {
		t.Errorf("rollout status after the rebinding request: err %v, output %q; want it not paused", err, out)
	}
	checkSecretNotShown(t, stateDir, dashURL)

	if err := chromedp.Do(b, chromedp.Click(chromedp.ID("btn-pause"))); err != nil {
		t.Fatalf("click pause: %v", err)
	}
	browsertest.WaitJS(t, b, "the rollout paused", `document.getElementById('rollout-phase').dataset.phase === 'Paused'`, pageDump, 30*time.Second)
	saveScreenshot(t, b, "dashboard-rollout-paused.png")

	// A second deploy of the same service while this one runs is refused.
	out, err := gmesh(t, stateDir, "deploy", "echo-server", "--binary", v10, "--force")
	if err == nil || !strings.Contains(out, "already in progress") {
		t.Errorf("second deploy: err %v, output %q; want a refusal", err, out)
	}

	if err := chromedp.Do(b, chromedp.Click(chromedp.ID("btn-promote"))); err != nil {
		t.Fatalf("click promote: %v", err)
	}
	browsertest.WaitJS(t, b, "the rollout finished", `document.getElementById('rollout-phase').dataset.phase === 'Succeeded'`, pageDump, 90*time.Second)
	if err := d.wait(t, time.Minute); err != nil {
		t.Fatalf("deploy after promote: %v\n%s", err, d.output())
	}
	saveScreenshot(t, b, "dashboard-rollout-done.png")
	// Nor do the logs: gmesh up's and deploy's output, the control plane's
	// log.
	cpLog, _ := os.ReadFile(filepath.Join(stateDir, "logs", "controlplane.log"))
	for what, out := range map[string]string{"gmesh up": u.output(), "gmesh deploy": d.output(), "controlplane.log": string(cpLog)} {
		if strings.Contains(out, e2eSecret) {
			t.Errorf("%s shows the --env value", what)
		}
	}
	if res := lr.stop(); res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the rollout: %v", res.Failed, res.Sent, res.Failures)
	}
}

// e2eSecret is the deploy's --env value no output may show.
const e2eSecret = "e2e-hunter2-secret"

// checkRebindingRefused sends issue 14's request: a page on evil.example,
// whose name now points at 127.0.0.1, posts to pause the rollout.
func checkRebindingRefused(t *testing.T, dashURL string) {
	t.Helper()
	u, err := url.Parse(dashURL)
	if err != nil {
		t.Fatal(err)
	}
	evil := "evil.example:" + u.Port()
	for _, tc := range []struct{ method, path string }{
		{"POST", "/api/rollouts/echo/echo-server/pause"},
		{"GET", "/api/state"},
	} {
		req, _ := http.NewRequest(tc.method, dashURL+tc.path, nil)
		req.Host = evil
		req.Header.Set("Origin", "http://"+evil)
		req.Header.Set("X-Gmesh", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s with Host %s: %v", tc.method, tc.path, evil, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "refused Host header") {
			t.Errorf("%s %s with Host %s: got %d %s, want 403 naming the Host header", tc.method, tc.path, evil, resp.StatusCode, body)
		}
	}
}

// checkSecretNotShown reads the dashboard's state and the CLI's views of
// the rollout: the --env key is there, its value is not.
func checkSecretNotShown(t *testing.T, stateDir, dashURL string) {
	t.Helper()
	resp, err := http.Get(dashURL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	outputs := map[string]string{"/api/state": string(body)}
	for _, args := range [][]string{{"get", "rollout", "echo-server", "-o", "yaml"}, {"rollout", "status", "echo-server"}, {"status", "-o", "json"}, {"get", "tasksets", "-o", "json"}} {
		out, err := gmesh(t, stateDir, args...)
		if err != nil {
			t.Errorf("gmesh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		outputs["gmesh "+strings.Join(args, " ")] = out
	}
	for what, out := range outputs {
		if strings.Contains(out, e2eSecret) {
			t.Errorf("%s shows the --env value:\n%s", what, out)
		}
	}
	if !strings.Contains(outputs["/api/state"], "E2E_SECRET") {
		t.Errorf("/api/state does not name the --env key E2E_SECRET:\n%s", outputs["/api/state"])
	}
}

// getJSON GETs url and decodes its JSON body into v.
func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func saveScreenshot(t *testing.T, b context.Context, name string) {
	t.Helper()
	buf, err := chromedp.Run(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	dir := os.Getenv("GMESH_ARTIFACT_DIR")
	if dir == "" {
		dir = filepath.Join(moduleRoot, ".ci", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("artifact dir: %v", err)
		return
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	t.Logf("screenshot saved: %s", p)
}
