package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/load"
)

// clientVersions sends n sequential requests and counts replies by the echo
// client's version (its Echo-Client-Version header).
func clientVersions(t *testing.T, url string, n int) (map[string]int, int) {
	t.Helper()
	counts := map[string]int{}
	failed := 0
	for range n {
		resp, err := httpClient.Get(url)
		if err != nil {
			failed++
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed++
			continue
		}
		counts[resp.Header.Get(echo.VersionHeader)]++
	}
	return counts, failed
}

// TestDeployEchoClient: the service behind the gateway is deployed like any
// other. Under 200 rps through the gateway, echo-client 0.1 -> 0.2 with steps
// 10, 50, 100: at the 10% step the gateway splits 90/10 (±5 points over
// 2,000 requests), at 50% about evenly, then only 0.2 answers, with 0 failed
// requests and 0.1's virtual node gone.
func TestDeployEchoClient(t *testing.T) {
	stateDir := t.TempDir()
	u := startUp(t, stateDir)
	url := u.public + "/?name=Yusuke"

	var (
		mu      sync.Mutex
		seconds []map[string]int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var res *load.Result
	go func() {
		defer close(done)
		res, _ = load.Run(ctx, load.Config{URL: url, RPS: 200, Duration: 4 * time.Minute, Concurrency: 64, Timeout: 5 * time.Second,
			VersionHeader: echo.VersionHeader, Every: func(r load.Report) {
				mu.Lock()
				seconds = append(seconds, r.ByVersion)
				mu.Unlock()
			}})
	}()
	stopLoad := func() *load.Result { cancel(); <-done; return res }
	defer stopLoad()

	d := startDeploy(t, stateDir, "echo-client", "--version", "0.2", "--env", "ECHO_CLIENT_VERSION=0.2",
		"--steps", "10,50,100", "--interval", "20s", "--timeout", "2m")
	d.waitLine(t, "Analysing version 0.2 at 10%", 3*time.Minute)
	// Hold the 10% step while sampling: 2,000 sequential requests on a
	// loaded machine can outlast the bake.
	if out, err := gmesh(t, stateDir, "rollout", "pause", "echo-client"); err != nil {
		t.Fatalf("rollout pause: %v\n%s", err, out)
	}
	counts, failed := clientVersions(t, url, 2000)
	if failed > 0 {
		t.Errorf("%d of 2000 sampled requests failed at the 10%% step", failed)
	}
	for v, want := range map[string]float64{"0.1": 0.90, "0.2": 0.10} {
		if share := float64(counts[v]) / 2000; share < want-0.05 || share > want+0.05 {
			t.Errorf("at the 10%% step version %s got %.1f%% of 2000 replies (%v); want %.0f%% ±5", v, 100*share, counts, 100*want)
		}
	}
	if ro := rolloutOf(t, stateDir, "echo-client"); ro.RolloutStatus().Weight != 10 {
		t.Fatalf("the paused rollout is at %d%%, want 10%%", ro.RolloutStatus().Weight)
	}
	if out, err := gmesh(t, stateDir, "rollout", "resume", "echo-client"); err != nil {
		t.Fatalf("rollout resume: %v\n%s", err, out)
	}
	d.waitLine(t, "Analysing version 0.2 at 50%", 2*time.Minute)
	if out, err := gmesh(t, stateDir, "rollout", "pause", "echo-client"); err != nil {
		t.Fatalf("rollout pause: %v\n%s", err, out)
	}
	counts, failed = clientVersions(t, url, 400)
	if failed > 0 {
		t.Errorf("%d of 400 sampled requests failed at the 50%% step", failed)
	}
	for _, v := range []string{"0.1", "0.2"} {
		if share := float64(counts[v]) / 400; share < 0.40 || share > 0.60 {
			t.Errorf("at the 50%% step version %s got %.1f%% of replies (%v); want 50%% ±10", v, 100*share, counts)
		}
	}
	if out, err := gmesh(t, stateDir, "rollout", "resume", "echo-client"); err != nil {
		t.Fatalf("rollout resume: %v\n%s", err, out)
	}
	if err := d.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("deploy failed: %v\n%s", err, d.output())
	}
	r := stopLoad()
	t.Logf("load during the deploy: sent %d ok %d failed %d %v by version %v", r.Sent, r.OK, r.Failed, r.Failures, r.ByVersion)
	if r.Failed != 0 {
		t.Errorf("%d of %d requests failed during the deploy: %v", r.Failed, r.Sent, r.Failures)
	}
	if !strings.Contains(d.output(), "Version 0.1 retired") {
		t.Errorf("deploy output does not say 0.1 was retired:\n%s", d.output())
	}
	// The steps show in the per-second shares: some second with both
	// versions, 0.2 the minority.
	mu.Lock()
	var mixed bool
	for _, s := range seconds {
		if s["0.1"] > 0 && s["0.2"] > 0 && s["0.2"] < s["0.1"] {
			mixed = true
		}
	}
	mu.Unlock()
	if !mixed {
		t.Errorf("no second of the load saw both versions with 0.2 the minority: %v", seconds)
	}
	counts, failed = clientVersions(t, url, 100)
	if failed > 0 || counts["0.2"] != 100 {
		t.Errorf("after the deploy: %v, %d failed; want only 0.2", counts, failed)
	}
	out, err := gmesh(t, stateDir, "get", "vn", "echo-client-0-1")
	if err == nil || !strings.Contains(out, "not found") {
		t.Errorf("virtual node echo-client-0-1 still exists: %v %s", err, out)
	}
}
