package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var quiet = slog.New(slog.DiscardHandler)

// newBackendServer is a real backend on 127.0.0.1:0 answering "<id>" and
// recording what it saw.
type testBackend struct {
	*httptest.Server
	id   string
	hits atomic.Int64
	last atomic.Value // *http.Request headers+host+body as a string
}

func startBackend(t *testing.T, id string, h http.HandlerFunc) *testBackend {
	t.Helper()
	tb := &testBackend{id: id}
	tb.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		tb.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		tb.last.Store(fmt.Sprintf("host=%s xff=%s body=%s", r.Host, r.Header.Get("X-Forwarded-For"), b))
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, id)
	}))
	t.Cleanup(tb.Close)
	return tb
}

func (tb *testBackend) backend() Backend {
	return Backend{ID: tb.id, Addr: strings.TrimPrefix(tb.URL, "http://")}
}

// startGateway serves a gateway on 127.0.0.1:0 and returns its base URL.
func startGateway(t *testing.T, cfg Config, bs ...Backend) (*Gateway, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.SetBackends(bs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return g, "http://" + ln.Addr().String()
}

func newClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil},
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-time.After(10 * time.Millisecond) // the polling interval
	}
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestBalancesAcrossBackends(t *testing.T) {
	a, b := startBackend(t, "a", nil), startBackend(t, "b", nil)
	reg := prometheus.NewRegistry()
	_, url := startGateway(t, Config{Registry: reg}, a.backend(), b.backend())
	c := newClient()
	counts := map[string]int{}
	for range 100 {
		code, body := get(t, c, url+"/?name=Yusuke")
		if code != 200 {
			t.Fatalf("got status %d (%s), want 200", code, body)
		}
		counts[body]++
	}
	if counts["a"] < 30 || counts["b"] < 30 {
		t.Errorf("got split %v, want both backends used about evenly", counts)
	}
	if got, _ := a.last.Load().(string); !strings.Contains(got, "xff=127.0.0.1 ") || !strings.Contains(got, "host="+strings.TrimPrefix(url, "http://")) {
		t.Errorf("backend saw %q, want X-Forwarded-For 127.0.0.1 and the client's Host", got)
	}
	if got := testutil.ToFloat64(metricFor(t, reg, "a")); got != float64(counts["a"]) {
		t.Errorf("got gmesh_gateway_requests_total{code=200,backend=a} %v, want %d", got, counts["a"])
	}
	if n, err := testutil.GatherAndCount(reg, "gmesh_gateway_request_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration histogram: got %d series, err %v; want 1", n, err)
	}
}

func metricFor(t *testing.T, reg *prometheus.Registry, backend string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gmesh_gateway_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["code"] == "200" && labels["backend"] == backend {
				return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no gmesh_gateway_requests_total{code=200,backend=%s}", backend)
	return nil
}

func TestRefusedBackendIsRetriedWithoutFailures(t *testing.T) {
	good := startBackend(t, "good", nil)
	g, url := startGateway(t, Config{HealthInterval: 50 * time.Millisecond},
		Backend{ID: "dead", Addr: refusedAddr(t)}, good.backend())
	c := newClient()
	for i := range 500 {
		if code, body := get(t, c, url+"/"); code != 200 || body != "good" {
			t.Fatalf("request %d: got %d %q, want 200 from good", i, code, body)
		}
	}
	// A POST with a body is retried too: no byte of it reached "dead".
	g.SetBackends([]Backend{{ID: "dead2", Addr: refusedAddr(t)}, good.backend()})
	for i := range 20 {
		resp, err := c.Post(url+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %d: got %d, want 200", i, resp.StatusCode)
		}
	}
	if got, _ := good.last.Load().(string); !strings.Contains(got, "body=payload") {
		t.Errorf("good saw %q, want the POST body intact", got)
	}
	st := g.Stats()["dead2"]
	if st.Failures == 0 || (!st.Ejected && st.Healthy) {
		t.Errorf("dead2 stats %+v, want failures and ejected or unhealthy", st)
	}
}

func TestBackendKilledMidRun(t *testing.T) {
	a, b := startBackend(t, "a", nil), startBackend(t, "b", nil)
	g, url := startGateway(t, Config{HealthInterval: 50 * time.Millisecond}, a.backend(), b.backend())
	c := newClient()
	const workers, perWorker = 8, 75
	var sent, failed atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	errs := make(chan string, workers*perWorker)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				if sent.Add(1) == 150 {
					once.Do(b.Close) // kill b mid-run
				}
				resp, err := c.Get(url + "/")
				if err != nil {
					failed.Add(1)
					errs <- err.Error()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					errs <- fmt.Sprintf("%d %s", resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if n := failed.Load(); n > 3 {
		var all []string
		for e := range errs {
			all = append(all, e)
		}
		t.Errorf("got %d failed requests of %d, want at most 3: %q", n, workers*perWorker, all)
	}
	waitFor(t, "b out of rotation", 5*time.Second, func() bool {
		st := g.Stats()["b"]
		return st.Ejected || !st.Healthy
	})
	if a.hits.Load() == 0 {
		t.Error("a got no requests")
	}
}

// hungListener accepts connections and never answers.
func hungListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestHungBackendTimesOutAndIsEjected(t *testing.T) {
	good := startBackend(t, "good", nil)
	const timeout = 300 * time.Millisecond
	g, url := startGateway(t, Config{RequestTimeout: timeout, HealthInterval: 100 * time.Millisecond, HealthTimeout: 100 * time.Millisecond},
		Backend{ID: "hung", Addr: hungListener(t)}, good.backend())
	c := newClient()
	var saw504 bool
	for i := 0; i < 10 && !saw504; i++ {
		start := time.Now()
		code, _ := get(t, c, url+"/")
		took := time.Since(start)
		switch code {
		case http.StatusGatewayTimeout:
			saw504 = true
			if took > timeout+2*time.Second {
				t.Errorf("504 after %s, want about %s", took, timeout)
			}
		case http.StatusOK:
		default:
			t.Fatalf("got status %d, want 200 or 504", code)
		}
	}
	if !saw504 && g.Stats()["hung"].Healthy {
		t.Error("never got a 504 from the hung backend, and it is still healthy")
	}
	// While a request hangs on it, others go to the good backend at once.
	slow := make(chan int, 1)
	go func() {
		resp, err := newClient().Get(url + "/")
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	waitFor(t, "hung out of rotation", 5*time.Second, func() bool {
		st := g.Stats()["hung"]
		return st.Ejected || !st.Healthy
	})
	for i := range 50 {
		start := time.Now()
		if code, body := get(t, c, url+"/"); code != 200 || body != "good" {
			t.Fatalf("request %d after ejection: got %d %q, want 200 good", i, code, body)
		}
		// The body proves it went to the good backend; the bound only
		// catches a hang (a loaded -race machine is slow, never this slow).
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("request %d took %s, want no hang", i, took)
		}
	}
	<-slow
}

func TestBodyAndHeaderLimits(t *testing.T) {
	a := startBackend(t, "a", nil)
	_, url := startGateway(t, Config{MaxBodyBytes: 1024, MaxHeaderBytes: 4096}, a.backend())
	c := newClient()

	post := func(r io.Reader) int {
		t.Helper()
		resp, err := c.Post(url+"/", "text/plain", r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(bytes.NewReader(make([]byte, 1024))); code != 200 {
		t.Errorf("body at the limit: got %d, want 200", code)
	}
	if code := post(bytes.NewReader(make([]byte, 2048))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the limit with Content-Length: got %d, want 413", code)
	}
	// Without Content-Length (chunked): the limit hits while streaming.
	if code := post(io.MultiReader(bytes.NewReader(make([]byte, 4096)))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: got %d, want 413", code)
	}

	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 8192))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("big header: got %d, want 431", resp.StatusCode)
	}
}

func TestH2C(t *testing.T) {
	a := startBackend(t, "a", nil)
	_, url := startGateway(t, Config{}, a.backend())
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: p}}
	resp, err := c.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "a" {
		t.Errorf("got %s %d %q, want HTTP/2.0 200 \"a\"", resp.Proto, resp.StatusCode, body)
	}
}

func TestSetBackendsTakesEffect(t *testing.T) {
	a, b := startBackend(t, "a", nil), startBackend(t, "b", nil)
	g, url := startGateway(t, Config{}, a.backend())
	c := newClient()
	for range 10 {
		if _, body := get(t, c, url+"/"); body != "a" {
			t.Fatalf("got %q, want a", body)
		}
	}
	g.SetBackends([]Backend{b.backend()})
	for range 10 {
		if _, body := get(t, c, url+"/"); body != "b" {
			t.Fatalf("after SetBackends: got %q, want b", body)
		}
	}
	if _, ok := g.Stats()["a"]; ok {
		t.Error("a still in stats after removal")
	}
	g.SetBackends(nil)
	if code, body := get(t, c, url+"/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no healthy backend") {
		t.Errorf("no backends: got %d %q, want 503 no healthy backend", code, body)
	}
}

func TestPanicModeKeepsLastBackend(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	a := startBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "boom", 500)
			return
		}
		io.WriteString(w, "a")
	})
	g, url := startGateway(t, Config{EjectAfter: 2, BaseEjection: time.Hour, DisableHealthCheck: true}, a.backend())
	c := newClient()
	for range 3 {
		if code, _ := get(t, c, url+"/"); code != 500 {
			t.Fatalf("got %d, want the backend's 500", code)
		}
	}
	if !g.Stats()["a"].Ejected {
		t.Fatalf("a not ejected after 3 failures: %+v", g.Stats()["a"])
	}
	fail.Store(false)
	if code, body := get(t, c, url+"/"); code != 200 || body != "a" {
		t.Errorf("only backend ejected: got %d %q, want 200 a (panic mode)", code, body)
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	a := startBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	g, err := New(Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	g.SetBackends([]Backend{a.backend()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	url := "http://" + ln.Addr().String()

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := newClient().Get(url + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown(ctx) }()
	waitFor(t, "listener closed", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Errorf("in-flight request: got %d %q %v, want 200 done", r.code, r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestListenAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g, err := New(Config{Logger: quiet, Addr: ln.Addr().String(), DisableHealthCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	err = g.ListenAndServe()
	var inUse *AddrInUseError
	if !errors.As(err, &inUse) || err.Error() != ln.Addr().String()+" is already in use" {
		t.Errorf("got %v, want %q", err, ln.Addr().String()+" is already in use")
	}
	g.Shutdown(context.Background())
}

func BenchmarkGatewayHop(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Response from the server: Hello, Yusuke-san!")
	}))
	defer backend.Close()
	g, err := New(Config{Logger: quiet, DisableHealthCheck: true})
	if err != nil {
		b.Fatal(err)
	}
	g.SetBackends([]Backend{{ID: "a", Addr: strings.TrimPrefix(backend.URL, "http://")}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Shutdown(context.Background())

	run := func(b *testing.B, url string) {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, Proxy: nil}}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL+"/") })
	b.Run("gateway", func(b *testing.B) { run(b, "http://"+ln.Addr().String()+"/") })
}
