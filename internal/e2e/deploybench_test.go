package e2e

import (
	"encoding/json"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var (
	deployBench    = flag.Bool("deploy-bench", false, "run the deploy-under-load benchmark (minutes; by hand, for BENCHMARKS.md)")
	deployBenchRPS = flag.Int("deploy-bench-rps", 2000, "load of the deploy benchmark, requests per second through the gateway")
	deployBenchDur = flag.Duration("deploy-bench-duration", 60*time.Second, "how long the deploy benchmark's load runs (the deploy starts 5s in)")
)

// TestDeployBench measures a full deploy under load for BENCHMARKS.md:
// total time, the time from each weight change to the last client's ACK,
// and failed requests over the whole load. It runs only with -deploy-bench:
//
//	go test ./internal/e2e -run TestDeployBench -deploy-bench -v -timeout 30m
func TestDeployBench(t *testing.T) {
	if !*deployBench {
		t.Skip("a benchmark, run by hand with -deploy-bench")
	}
	stateDir := t.TempDir()
	v10 := buildEchoServer(t, "1.0")
	u := startUp(t, stateDir)
	url := u.public + "/?name=Yusuke"
	lr := startLoadC(url, *deployBenchRPS, *deployBenchDur, 256)
	<-time.After(5 * time.Second) // steady load before the deploy starts
	start := time.Now()
	out, err := gmesh(t, stateDir, "deploy", "echo-server", "--binary", v10, "--steps", "10,50,100", "--interval", "5s", "--timeout", "2m")
	total := time.Since(start)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	<-lr.done
	res := lr.res

	raw, err := gmesh(t, stateDir, "get", "rollout", "echo-server", "-o", "json")
	if err != nil {
		t.Fatalf("get rollout: %v\n%s", err, raw)
	}
	var r mesh.Resource
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("decode rollout: %v", err)
	}
	st := r.RolloutStatus()
	t.Logf("deploy 0.9 -> 1.0, steps 10,50,100, bake 5s: total %s", total.Round(time.Millisecond))
	// A weight change is the "Routing N%" event; it has reached every
	// client when the next step starts (the bake, or the old version's
	// drain at 100%), which the engine does only once all have ACKed.
	var shiftAt time.Time
	var shiftMsg string
	for _, ev := range st.Events {
		ts, _ := time.Parse(time.RFC3339Nano, ev.Time)
		switch {
		case strings.HasPrefix(ev.Message, "Routing "):
			shiftAt, shiftMsg = ts, ev.Message
		case !shiftAt.IsZero() && (strings.HasPrefix(ev.Message, "Analysing") || strings.HasPrefix(ev.Message, "Draining")):
			t.Logf("%s: every client ACKed in %s", shiftMsg, ts.Sub(shiftAt).Round(100*time.Microsecond))
			shiftAt = time.Time{}
		}
	}
	for _, ev := range st.Events {
		t.Logf("  %s %-13s %s", ev.Time, ev.Phase, ev.Message)
	}
	t.Logf("load: %d rps asked, %.0f achieved, sent %d, ok %d, failed %d %v, dropped %d, by version %v, p50 %s p99 %s max %s",
		*deployBenchRPS, res.Achieved, res.Sent, res.OK, res.Failed, res.Failures, res.Dropped, res.ByVersion, res.Latency.P50, res.Latency.P99, res.Latency.Max)
	if res.Failed != 0 {
		t.Errorf("%d requests failed", res.Failed)
	}
}
