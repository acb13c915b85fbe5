package gatewaypod_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
)

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

// Shorthands for the fake cluster's helpers.
var (
	pollUntil     = k8sfake.PollUntil
	appmeshObject = k8sfake.Object
	namespace     = k8sfake.Namespace
	pod           = k8sfake.Pod
)

// backend is a real HTTP server on a loopback IP standing in for a pod: it
// answers "NODE IP PATH". A request to /slow waits until release is closed.
type backend struct {
	node, ip string
	port     int
	inSlow   chan struct{} // one value per /slow request that arrived
	release  chan struct{}
}

// startBackend serves on ip:port (0 picks a port) until the test ends.
func startBackend(t testing.TB, node, ip string, port int) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("backend %s on %s:%d: %v", node, ip, port, err)
	}
	b := &backend{node: node, ip: ip, port: ln.Addr().(*net.TCPAddr).Port, inSlow: make(chan struct{}, 16), release: make(chan struct{})}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				b.inSlow <- struct{}{}
				select {
				case <-b.release:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "%s %s %s", b.node, b.ip, r.URL.Path)
		}),
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return b
}

// freePort returns a port free on every one of ips.
func freePort(t testing.TB, ips ...string) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, l)
		}
		ln.Close()
		for _, l := range others {
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

// runningPod is a gateway pod running in-process on the fake cluster.
type runningPod struct {
	*gatewaypod.Pod
	stop func() error // cancels Run and returns its error; idempotent
}

// startPod starts a gateway pod for vg on 127.0.0.1:0; it is stopped at the
// end of the test unless stopped earlier.
func startPod(t testing.TB, c *k8sfake.Cluster, vg string, cfg gatewaypod.Config) *runningPod {
	t.Helper()
	cfg.Kube, cfg.Dynamic = c.Kube, c.Dyn
	nn, err := gatewaypod.ParseVirtualGateway(vg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.VirtualGateway = nn
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.HealthAddr == "" {
		cfg.HealthAddr = "127.0.0.1:0"
	}
	cfg.Logger = testLogger(t)
	p, err := gatewaypod.New(cfg)
	if err != nil {
		t.Fatalf("gatewaypod.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("gateway pod Run did not return within 30s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("gateway pod Run: %v", err)
		}
	})
	return &runningPod{Pod: p, stop: stop}
}

// client is an HTTP client that opens a new connection per request, so
// that every request sees the gateway's current listener.
var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// get makes one request and returns its status and body.
func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// nn is a namespaced name.
func nn(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }
