package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testContext returns a context that every test run is bounded by.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newServer starts an httptest server on 127.0.0.1.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func reply(w http.ResponseWriter, version string) {
	fmt.Fprintf(w, "Hello, load-san! (Said 127.0.0.1, Version %s)\n", version)
}

func TestRunCountsVersions(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch i := n.Add(1); {
		case i > 100:
			fmt.Fprintln(w, "no version here")
		case i%2 == 0:
			reply(w, "0.9")
		default:
			reply(w, "1.0")
		}
	})
	res, err := Run(testContext(t), Config{URL: s.URL, Concurrency: 4, MaxRequests: 110, Duration: 20 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := map[string]int64{"0.9": 50, "1.0": 50, "unknown": 10}
	if diff := cmp.Diff(want, res.ByVersion); diff != "" {
		t.Errorf("ByVersion mismatch (-want +got):\n%s", diff)
	}
	if res.Sent != 110 || res.OK != 110 || res.Failed != 0 {
		t.Errorf("sent %d ok %d failed %d, want 110 110 0", res.Sent, res.OK, res.Failed)
	}
	if got := n.Load(); got != 110 {
		t.Errorf("server saw %d requests, want 110", got)
	}
}

// TestRunCountsVersionsByHeader: with VersionHeader, the version is the
// header's, whatever the body says.
func TestRunCountsVersionsByHeader(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch i := n.Add(1); {
		case i > 30:
		case i%3 == 0:
			w.Header().Set("Echo-Client-Version", "0.2")
		default:
			w.Header().Set("Echo-Client-Version", "0.1")
		}
		reply(w, "0.9")
	})
	res, err := Run(testContext(t), Config{URL: s.URL, Concurrency: 1, MaxRequests: 33, Duration: 20 * time.Second, VersionHeader: "Echo-Client-Version"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := map[string]int64{"0.1": 20, "0.2": 10, "unknown": 3}
	if diff := cmp.Diff(want, res.ByVersion); diff != "" {
		t.Errorf("ByVersion mismatch (-want +got):\n%s", diff)
	}
}

func TestRunFailureKinds(t *testing.T) {
	unavailable := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
	})

	release := make(chan struct{})
	hung := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before hung.Close

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/"
	ln.Close()

	reset := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.(*net.TCPConn).SetLinger(0) // close with RST
		conn.Close()
	})

	redirect := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.1.2.3/", http.StatusFound)
	})

	tests := []struct {
		name string
		url  string
		kind string
	}{
		{"503", unavailable.URL, "http 503"},
		{"hung handler", hung.URL, "timeout"},
		{"closed listener", closedURL, "connection refused"},
		{"reset", reset.URL, "connection reset"},
		{"redirect not followed", redirect.URL, "http 302"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(testContext(t), Config{
				URL:         tt.url,
				Concurrency: 2,
				MaxRequests: 4,
				Timeout:     200 * time.Millisecond,
				Duration:    20 * time.Second,
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			want := map[string]int64{tt.kind: 4}
			if diff := cmp.Diff(want, res.Failures); diff != "" {
				t.Errorf("Failures mismatch (-want +got):\n%s", diff)
			}
			if res.Sent != 4 || res.OK != 0 || res.Failed != 4 {
				t.Errorf("sent %d ok %d failed %d, want 4 0 4", res.Sent, res.OK, res.Failed)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("read: %w", errors.New("tls: bad certificate")), "other: tls: bad certificate"},
		{errors.New(strings.Repeat("x", 100)), "other: " + strings.Repeat("x", 60) + "..."},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct{ body, want string }{
		{"Hello, a-san! (Said 10.0.0.1, Version 1.0)", "1.0"},
		{"Hello, a-san! (Said 10.0.0.1, Version 0.9-rc.1)\n", "0.9-rc.1"},
		{"Version 1.0", ""},
		{"Version )", ""},
		{"", ""},
		{"(Version " + strings.Repeat("9", 100) + ")", strings.Repeat("9", maxVersionLen)},
	}
	for _, tt := range tests {
		if got := parseVersion([]byte(tt.body)); got != tt.want {
			t.Errorf("parseVersion(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestRunOpenLoopHoldsRate(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { reply(w, "0.9") })
	res, err := Run(testContext(t), Config{URL: s.URL, RPS: 200, Duration: time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Sent < 150 || res.Sent > 250 {
		t.Errorf("sent %d at 200 rps for 1s, want 150..250", res.Sent)
	}
	if got := res.Sent + res.Dropped; got != 200 {
		t.Errorf("sent+dropped = %d, want the 200 scheduled", got)
	}
	if res.OK != res.Sent {
		t.Errorf("ok %d, want %d (sent)", res.OK, res.Sent)
	}
}

// TestRunOpenLoopDrops checks that a scheduled request finding no free slot
// is dropped and counted, not delayed: one slot, held by a request that
// outlives the run's sending time.
func TestRunOpenLoopDrops(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	res, err := Run(testContext(t), Config{
		URL:         s.URL,
		RPS:         100,
		Duration:    300 * time.Millisecond,
		Concurrency: 1,
		Timeout:     500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Sent != 1 || res.Dropped != 29 {
		t.Errorf("sent %d dropped %d, want 1 29", res.Sent, res.Dropped)
	}
	if res.Failures["timeout"] != 1 {
		t.Errorf("failures %v, want one timeout", res.Failures)
	}
	// Latency is measured from the scheduled time, so it is at least the
	// timeout.
	if res.Latency.Max < 500*time.Millisecond {
		t.Errorf("max latency %s, want >= 500ms", res.Latency.Max)
	}
}

func TestRunMaxRequests(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		reply(w, "1.0")
	})
	tests := []struct {
		name string
		rps  int
	}{
		{"closed loop", 0},
		{"open loop", 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.Store(0)
			res, err := Run(testContext(t), Config{URL: s.URL, RPS: tt.rps, Concurrency: 8, MaxRequests: 37, Duration: 20 * time.Second})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Sent != 37 || res.OK != 37 {
				t.Errorf("sent %d ok %d, want 37 37", res.Sent, res.OK)
			}
			if got := n.Load(); got != 37 {
				t.Errorf("server saw %d requests, want 37", got)
			}
			if res.Duration >= 20*time.Second {
				t.Errorf("duration %s, want the run to stop at MaxRequests", res.Duration)
			}
		})
	}
}

func TestRunDuration(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { reply(w, "0.9") })
	tests := []struct {
		name string
		rps  int
	}{
		{"closed loop", 0},
		{"open loop", 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(testContext(t), Config{URL: s.URL, RPS: tt.rps, Concurrency: 2, Duration: 300 * time.Millisecond})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Duration < 300*time.Millisecond || res.Duration > 5*time.Second {
				t.Errorf("duration %s, want 300ms (and the last requests' time)", res.Duration)
			}
			if res.Sent == 0 || res.OK != res.Sent {
				t.Errorf("sent %d ok %d, want some, all OK", res.Sent, res.OK)
			}
			want := float64(res.Sent) / res.Duration.Seconds()
			if res.Achieved != want {
				t.Errorf("achieved %.1f rps, want %.1f", res.Achieved, want)
			}
		})
	}
}

func TestRunLatencyPercentiles(t *testing.T) {
	// Every tenth request takes at least 30ms, the others none: p99 and max
	// are at least 30ms, and the median is the fast path.
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			timer := time.NewTimer(30 * time.Millisecond)
			defer timer.Stop()
			<-timer.C
		}
		reply(w, "1.0")
	})
	res, err := Run(testContext(t), Config{URL: s.URL, Concurrency: 1, MaxRequests: 200, Duration: 20 * time.Second})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	l := res.Latency
	if l.P99 < 30*time.Millisecond || l.Max < 30*time.Millisecond {
		t.Errorf("p99 %s max %s, want both >= 30ms", l.P99, l.Max)
	}
	if !(l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("percentiles not ordered: %+v", l)
	}
	if l.P50 <= 0 || l.P50 >= 30*time.Millisecond {
		t.Errorf("p50 %s, want in (0, 30ms)", l.P50)
	}
}

func TestRunEverySecond(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { reply(w, "0.9") })
	var (
		mu      sync.Mutex
		reports []Report
		done    atomic.Bool
	)
	res, err := Run(testContext(t), Config{
		URL:      s.URL,
		RPS:      50,
		Duration: 2 * time.Second,
		Every: func(r Report) {
			if done.Load() {
				t.Errorf("Every called after Run returned")
			}
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		},
	})
	done.Store(true)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) < 2 || len(reports) > 3 {
		t.Fatalf("got %d reports, want 2 or 3 (one a second, maybe a last partial one)", len(reports))
	}
	var sent, ok int64
	for i, r := range reports {
		if r.Second != i+1 {
			t.Errorf("report %d has Second %d, want %d", i, r.Second, i+1)
		}
		sent += r.Sent
		ok += r.OK
		if r.OK != r.ByVersion["0.9"] {
			t.Errorf("report %d: ok %d, 0.9 %d, want equal", i, r.OK, r.ByVersion["0.9"])
		}
	}
	if sent != res.Sent || ok != res.OK {
		t.Errorf("reports sum to sent %d ok %d, want the totals %d %d", sent, ok, res.Sent, res.OK)
	}
	if reports[0].Sent < 25 {
		t.Errorf("first second sent %d, want about 50", reports[0].Sent)
	}
}

func TestRunCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 20 {
			cancel()
		}
		reply(w, "0.9")
	})
	start := time.Now()
	res, err := Run(ctx, Config{URL: s.URL, Concurrency: 4, Duration: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want context.Canceled", err)
	}
	if res == nil || !res.Interrupted {
		t.Fatalf("Run result = %+v, want an interrupted result", res)
	}
	if res.Sent < 20 {
		t.Errorf("sent %d, want >= 20", res.Sent)
	}
	if got := res.OK + res.Failed + res.Canceled; got != res.Sent {
		t.Errorf("ok+failed+canceled = %d, want sent %d", got, res.Sent)
	}
	if res.Failed != 0 {
		t.Errorf("failed %d (%v), want 0: canceled requests are not failures", res.Failed, res.Failures)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("Run took %s after cancel, want prompt return", time.Since(start))
	}
}

func TestRunInvalidConfig(t *testing.T) {
	tests := []Config{
		{URL: "http://127.0.0.1:1/", Duration: 2 * time.Hour},
		{URL: "http://127.0.0.1:1/", Duration: -time.Second},
		{URL: "http://127.0.0.1:1/", Concurrency: 2000},
		{URL: "http://127.0.0.1:1/", MaxRequests: DefaultMaxRequests + 1},
		{URL: "http://127.0.0.1:1/", RPS: -1},
		{URL: "http://127.0.0.1:1/", Timeout: -1},
		{URL: "ftp://127.0.0.1:1/"},
	}
	for _, cfg := range tests {
		if _, err := Run(testContext(t), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestFormatReport(t *testing.T) {
	r := Report{Second: 3, Counts: Counts{
		Sent: 200, OK: 200,
		ByVersion: map[string]int64{"1.0": 96, "0.9": 104},
		Latency:   Latency{P50: 1234 * time.Microsecond, P99: 4 * time.Millisecond},
	}}
	want := "  3s  sent 200  ok 200  0.9: 104  1.0: 96  failed 0  p50 1.23ms  p99 4ms"
	if got := FormatReport(r); got != want {
		t.Errorf("FormatReport = %q, want %q", got, want)
	}

	r = Report{Second: 12, Counts: Counts{
		Sent: 10, OK: 7, Failed: 3, Dropped: 2,
		ByVersion: map[string]int64{"1.0": 7},
		Failures:  map[string]int64{"timeout": 1, "http 503": 2},
	}}
	want = " 12s  sent 10  ok 7  1.0: 7  failed 3 (http 503: 2, timeout: 1)  dropped 2  p50 0s  p99 0s"
	if got := FormatReport(r); got != want {
		t.Errorf("FormatReport = %q, want %q", got, want)
	}
}

func TestResultPrint(t *testing.T) {
	res := &Result{
		Counts: Counts{
			Sent: 100, OK: 98, Failed: 2,
			ByVersion: map[string]int64{"0.9": 49, "1.0": 49},
			Failures:  map[string]int64{"http 503": 2},
			Latency:   Latency{P50: time.Millisecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, P999: 4 * time.Millisecond, Max: 5 * time.Millisecond},
		},
		URL: "http://127.0.0.1:8080/", RPS: 100, Concurrency: 16,
		Duration: time.Second, Achieved: 100,
	}
	var b bytes.Buffer
	if err := res.Print(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"http://127.0.0.1:8080/",
		"open loop at 100 rps",
		"sent 100", "ok 98", "failed 2",
		"0.9", "49.0%", "http 503", "2.0%",
		"p99 3ms", "p99.9 4ms", "max 5ms",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// TestRunStop: closing Stop ends the sending, in both loops, and the
// requests in flight finish and count: none is cancelled or failed.
func TestRunStop(t *testing.T) {
	for _, rps := range []int{0, 200} {
		t.Run(fmt.Sprintf("rps=%d", rps), func(t *testing.T) {
			stop := make(chan struct{})
			release := make(chan struct{})
			var n atomic.Int64
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 10 {
					close(stop)
					close(release)
				}
				<-release // the first nine wait for the stop: they are in flight
				reply(w, "1.0")
			})
			res, err := Run(testContext(t), Config{URL: s.URL, RPS: rps, Concurrency: 16, Duration: time.Hour, Stop: stop})
			if err != nil {
				t.Fatalf("Run: %v, want no error: Stop is not an interruption", err)
			}
			if res.Interrupted || res.Canceled != 0 || res.Failed != 0 {
				t.Errorf("interrupted %v, canceled %d, failed %d %v; want the in-flight requests to finish", res.Interrupted, res.Canceled, res.Failed, res.Failures)
			}
			if res.Sent < 10 || res.OK != res.Sent || res.ByVersion["1.0"] != res.OK {
				t.Errorf("sent %d, OK %d, by version %v; want every sent request answered by 1.0", res.Sent, res.OK, res.ByVersion)
			}
			if res.Duration >= time.Hour {
				t.Errorf("duration %s, want the time until Stop", res.Duration)
			}
		})
	}
}
