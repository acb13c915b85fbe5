package echo

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

// startClient starts a real echo client on 127.0.0.1:0; shut down at cleanup.
func startClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Shutdown(ctx)
		if err := <-errc; err != nil {
			t.Errorf("client Serve: %v", err)
		}
	})
	return c
}

func clientURL(c *Client, pathAndQuery string) string {
	return "http://" + c.Addr().String() + pathAndQuery
}

func TestClientEcho(t *testing.T) {
	s := startServer(t, ServerConfig{})
	c := startClient(t, ClientConfig{Target: s.Addr().String()})

	code, body, h := httpDo(t, http.MethodGet, clientURL(c, "/?name=Yizumi"))
	if want := "Response from the server: Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"; code != 200 || body != want {
		t.Errorf("GET /?name=Yizumi = %d %q, want 200 %q", code, body, want)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	if v := h.Get(VersionHeader); v != ClientVersion {
		t.Errorf("%s = %q, want %q", VersionHeader, v, ClientVersion)
	}
	code, body, _ = httpDo(t, http.MethodGet, clientURL(c, "/any/path?name="+url.QueryEscape("吉住 さん")))
	if want := "Response from the server: Hello, 吉住 さん-san! (Said 127.0.0.1, Version 0.9)"; code != 200 || body != want {
		t.Errorf("GET escaped name = %d %q, want 200 %q", code, body, want)
	}
	code, body, _ = httpDo(t, http.MethodGet, clientURL(c, "/"))
	if want := "Response from the server: Hello, stranger-san! (Said 127.0.0.1, Version 0.9)"; code != 200 || body != want {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
	}
	code, body, _ = httpDo(t, http.MethodHead, clientURL(c, "/?name=Yizumi"))
	if code != 200 || body != "" {
		t.Errorf("HEAD = %d %q, want 200 and no body", code, body)
	}
}

func TestClientBadRequests(t *testing.T) {
	// A server that fails every call: a 400 here proves the client answered
	// without calling it.
	s := startServer(t, ServerConfig{FailRate: 1})
	c := startClient(t, ClientConfig{Target: s.Addr().String()})
	tests := []struct {
		name, method, path string
		wantCode           int
		wantBody           string
	}{
		{"name too long", "GET", "/?name=" + strings.Repeat("a", MaxNameBytes+1), 400, "1025 bytes"},
		{"invalid utf-8", "GET", "/?name=%ff", 400, "UTF-8"},
		{"malformed query", "GET", "/?name=%zz", 400, "malformed"},
		{"post", "POST", "/?name=x", 405, "GET or HEAD"},
		{"delete healthz", "DELETE", "/healthz", 405, "GET or HEAD"},
		{"upstream fails", "GET", "/?name=x", 503, "Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, h := httpDo(t, tt.method, clientURL(c, tt.path))
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("%s %s = %d %q, want %d and a body with %q", tt.method, tt.path, code, body, tt.wantCode, tt.wantBody)
			}
			if code == 405 && h.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want %q", h.Get("Allow"), "GET, HEAD")
			}
		})
	}
}

// codeServer is a tiny real echo server that answers with the gRPC code
// named by the request: "code:14" fails with Unavailable.
type codeServer struct {
	echov1.UnimplementedEchoServiceServer
}

func (codeServer) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(req.GetName(), "code:"))
	if err != nil || n == 0 {
		return &echov1.EchoResponse{Message: "fine"}, nil
	}
	return nil, status.Error(codes.Code(n), "the test asked for it")
}

func startGRPC(t *testing.T, srv echov1.EchoServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	echov1.RegisterEchoServiceServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestClientStatusMapping(t *testing.T) {
	addr := startGRPC(t, codeServer{})
	c := startClient(t, ClientConfig{Target: addr})
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.Unavailable, 503},
		{codes.DeadlineExceeded, 504},
		{codes.InvalidArgument, 400},
		{codes.Internal, 502},
		{codes.Unknown, 502},
		{codes.NotFound, 502},
		{codes.PermissionDenied, 502},
		{codes.ResourceExhausted, 502},
		{codes.Unimplemented, 502},
		{codes.Canceled, 502},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			code, body, h := httpDo(t, "GET", clientURL(c, "/?name=code:"+strconv.Itoa(int(tt.code))))
			if code != tt.want {
				t.Errorf("upstream %v: got HTTP %d, want %d", tt.code, code, tt.want)
			}
			if got := h.Get("X-Upstream-Status"); got != tt.code.String() {
				t.Errorf("X-Upstream-Status = %q, want %q", got, tt.code.String())
			}
			if !strings.Contains(body, tt.code.String()) || len(body) > 300 || strings.HasPrefix(body, "Response from the server") {
				t.Errorf("body %q: want a short error naming %v", body, tt.code)
			}
			if got := HTTPStatus(tt.code); got != tt.want {
				t.Errorf("HTTPStatus(%v) = %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}

// The mapping driven by the real server's fault knobs and a real deadline.
func TestClientStatusFromServerKnobs(t *testing.T) {
	tests := []struct {
		name string
		srv  ServerConfig
		cli  ClientConfig
		want int
	}{
		{"fail unavailable", ServerConfig{FailRate: 1, FailCode: codes.Unavailable}, ClientConfig{}, 503},
		{"fail internal", ServerConfig{FailRate: 1, FailCode: codes.Internal}, ClientConfig{}, 502},
		{"latency over the deadline", ServerConfig{Latency: time.Second}, ClientConfig{Timeout: 50 * time.Millisecond}, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.srv)
			tt.cli.Target = s.Addr().String()
			c := startClient(t, tt.cli)
			if code, body, _ := httpDo(t, "GET", clientURL(c, "/?name=x")); code != tt.want {
				t.Errorf("got %d %q, want %d", code, body, tt.want)
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close() // nothing listens there now
		c := startClient(t, ClientConfig{Target: addr, Timeout: 5 * time.Second})
		if code, body, _ := httpDo(t, "GET", clientURL(c, "/?name=x")); code != 503 {
			t.Errorf("got %d %q, want 503", code, body)
		}
	})
}

func TestClientLivenessAndReadiness(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := startClient(t, ClientConfig{Target: addr})
	for _, p := range []string{"/healthz", "/ping"} {
		if code, body, _ := httpDo(t, "GET", clientURL(c, p)); code != 200 || body != "ok\n" {
			t.Errorf("GET %s with no server = %d %q, want 200 ok", p, code, body)
		}
	}
	if code, body, _ := httpDo(t, "GET", clientURL(c, "/readyz")); code != 503 || !strings.Contains(body, "not ready") {
		t.Errorf("GET /readyz with no server = %d %q, want 503 not ready", code, body)
	}
	// Now a server comes up on that address: the client becomes ready
	// without any echo call.
	s := startServer(t, ServerConfig{Addr: addr})
	_ = s
	waitFor(t, "readyz to say ready", 20*time.Second, func() bool {
		code, _, _ := httpDo(t, "GET", clientURL(c, "/readyz"))
		return code == 200
	})
	if got := c.ConnState(); got != connectivity.Ready {
		t.Errorf("ConnState = %v, want READY", got)
	}
}

// blockingServer holds each call until released, to have requests in flight.
type blockingServer struct {
	echov1.UnimplementedEchoServiceServer
	entered chan struct{}
	release chan struct{}
}

func (b *blockingServer) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &echov1.EchoResponse{Message: "late " + req.GetName()}, nil
}

func TestClientShutdownFinishesInFlight(t *testing.T) {
	b := &blockingServer{entered: make(chan struct{}, 1), release: make(chan struct{})}
	addr := startGRPC(t, b)
	c, err := NewClient(ClientConfig{Addr: "127.0.0.1:0", Target: addr, Timeout: 20 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- c.Serve() }()

	type result struct {
		code int
		body string
	}
	inflight := make(chan result, 1)
	go func() {
		code, body, _ := httpDo(t, "GET", clientURL(c, "/?name=Yizumi"))
		inflight <- result{code, body}
	}()
	select {
	case <-b.entered:
	case <-time.After(15 * time.Second):
		t.Fatal("request never reached the server")
	}
	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		shutdownErr <- c.Shutdown(ctx)
	}()
	// Stop accepting: new connections are refused while one is in flight.
	waitFor(t, "the listener to close", 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", c.Addr().String(), time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned with a request in flight: %v", err)
	default:
	}
	close(b.release)
	r := <-inflight
	if want := "Response from the server: late Yizumi"; r.code != 200 || r.body != want {
		t.Errorf("in-flight request = %d %q, want 200 %q", r.code, r.body, want)
	}
	if err := <-shutdownErr; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-serveErr; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if got := c.ConnState(); got != connectivity.Shutdown {
		t.Errorf("grpc connection state after Shutdown = %v, want SHUTDOWN", got)
	}
}

func TestClientTLS(t *testing.T) {
	certFile, keyFile, pool := writeSelfSignedCert(t, t.TempDir())
	s := startServer(t, ServerConfig{TLSCertFile: certFile, TLSKeyFile: keyFile})
	c := startClient(t, ClientConfig{Target: s.Addr().String(), Creds: credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})})
	code, body, _ := httpDo(t, "GET", clientURL(c, "/?name=Yizumi"))
	if want := "Response from the server: Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"; code != 200 || body != want {
		t.Errorf("over TLS: %d %q, want 200 %q", code, body, want)
	}
	plain := startClient(t, ClientConfig{Target: s.Addr().String()})
	if code, body, _ := httpDo(t, "GET", clientURL(plain, "/?name=Yizumi")); code != 503 {
		t.Errorf("plaintext to a TLS server: %d %q, want 503", code, body)
	}
}
