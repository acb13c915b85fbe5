package dashboard

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// startEcho runs a real echo server and a real echo client (HTTP, with its
// Prometheus metrics) calling it, on loopback, until the test ends.
func startEcho(t *testing.T) *echo.Client {
	t.Helper()
	srv, err := echo.NewServer(echo.ServerConfig{Addr: "127.0.0.1:0", Version: "0.9"})
	if err != nil {
		t.Fatalf("echo.NewServer: %v", err)
	}
	serr := make(chan error, 1)
	go func() { serr <- srv.Serve() }()
	cli, err := echo.NewClient(echo.ClientConfig{Addr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Target: srv.Addr().String()})
	if err != nil {
		t.Fatalf("echo.NewClient: %v", err)
	}
	cerr := make(chan error, 1)
	go func() { cerr <- cli.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cli.Shutdown(ctx)
		_ = srv.Shutdown(ctx)
		for _, c := range []chan error{cerr, serr} {
			if err := <-c; err != nil {
				t.Errorf("echo Serve: %v", err)
			}
		}
	})
	return cli
}

// TestHTTPServiceRateAndGatewayListen: an HTTP service (the real echo
// client) has a request rate, read from its HTTP metrics (echo-client showed
// 0.0 rps while carrying all traffic), and a gateway shows where it really
// listens rather than its spec's port.
func TestHTTPServiceRateAndGatewayListen(t *testing.T) {
	ctx := testContext(t)
	cli := startEcho(t)
	base := "http://" + cli.Addr().String()

	st := demoStatus(100, 0, "", "")
	st.Endpoints = []*mesh.Endpoint{{ID: "echo-client-1-a", Mesh: "echo", Service: "echo-client",
		Address: "127.0.0.1", Port: cli.Addr().(*net.TCPAddr).Port,
		Attributes:  map[string]string{mesh.AttrVersion: "1.0", mesh.AttrTaskSet: "echo-client-1"},
		MetricsAddr: cli.MetricsAddr().String(), Process: &mesh.ProcessStatus{PID: 2000}, State: mesh.TaskRunning, Health: mesh.HealthHealthy}}
	src := &listingSource{fakeSource: &fakeSource{}, lists: echoLists()}
	src.set(st, nil)
	d, fc, srv := newTest(t, src, Config{GatewayListen: map[string]string{"echo/echo-gateway": "127.0.0.1:18181"}})

	d.poll(ctx) // the baseline
	const n = 30
	for i := range n {
		resp, err := http.Get(fmt.Sprintf("%s/?name=n%d", base, i))
		if err != nil {
			t.Fatalf("GET echo client: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET echo client: status %d, want 200", resp.StatusCode)
		}
	}
	// Probes are not traffic.
	for _, p := range []string{"/readyz", "/healthz"} {
		if resp, err := http.Get(base + p); err == nil {
			resp.Body.Close()
		}
	}
	fc.Advance(2 * time.Second)
	d.poll(ctx)
	s := getState(t, srv)

	sv := service(t, s, "echo/echo-client")
	if sv.RPS != n/2 {
		t.Errorf("echo-client rps: got %v, want %v (%d requests in 2s)", sv.RPS, n/2, n)
	}
	v := version(t, sv, "1.0")
	if v.Requests != n || v.Errors != 0 || !approx(v.SuccessRate, 1) {
		t.Errorf("echo-client 1.0: got requests %d errors %d success %s, want %d 0 1", v.Requests, v.Errors, fmtp(v.SuccessRate), n)
	}
	if len(v.Tasks) != 1 || v.Tasks[0].ScrapeError != "" || v.Tasks[0].RPS != n/2 {
		t.Errorf("echo-client task: got %+v, want one task scraped at %v rps", v.Tasks, n/2)
	}

	if len(s.Gateways) != 1 {
		t.Fatalf("got %d gateways, want 1", len(s.Gateways))
	}
	g := s.Gateways[0]
	if g.Listen != "127.0.0.1:18181" {
		t.Errorf("gateway listen: got %q, want the real address 127.0.0.1:18181", g.Listen)
	}
	if len(g.Ports) != 1 || g.Ports[0] != 8080 {
		t.Errorf("gateway spec ports: got %v, want [8080]", g.Ports)
	}
}
