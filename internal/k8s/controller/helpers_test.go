package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

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

// The fake cluster (client-go's fake clientsets standing in for the API
// server) and its helpers are shared with the other Kubernetes packages'
// tests.
type fakeCluster = k8sfake.Cluster

const watchesPerSource = k8sfake.WatchesPerSource

var (
	newFakeCluster = k8sfake.New
	pollUntil      = k8sfake.PollUntil
	appmeshObjects = k8sfake.Objects
	appmeshObject  = k8sfake.Object
	namespace      = k8sfake.Namespace
	pod            = k8sfake.Pod
)

// running is a control plane running in-process on the fake cluster.
type running struct {
	*controller.ControlPlane
	stop func() error // stops Run and returns its error; idempotent
}

// startCP starts a control plane on 127.0.0.1:0; it is stopped at the end
// of the test unless stopped earlier.
func startCP(t testing.TB, c *fakeCluster, cfg controller.Config) *running {
	t.Helper()
	cfg.Kube, cfg.Dynamic = c.Kube, c.Dyn
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cp, err := controller.New(cfg)
	if err != nil {
		t.Fatalf("controller.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = fmt.Errorf("control plane Run did not return within 30s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("control plane Run: %v", err)
		}
	})
	return &running{ControlPlane: cp, stop: stop}
}

// echoTask is a real echo server on a loopback address.
type echoTask struct {
	srv  *echo.Server
	ip   string
	port int
}

// startEcho serves an echo server of version on ip:port (port 0 picks
// one) until the test ends.
func startEcho(t testing.TB, ip string, port int, version string) *echoTask {
	t.Helper()
	srv, err := echo.NewServer(echo.ServerConfig{
		Addr:            net.JoinHostPort(ip, fmt.Sprint(port)),
		Version:         version,
		ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("echo.NewServer(%s:%d): %v", ip, port, err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		select {
		case <-served:
		case <-ctx.Done():
			t.Errorf("echo server %s did not stop", ip)
		}
	})
	return &echoTask{srv: srv, ip: ip, port: srv.Addr().(*net.TCPAddr).Port}
}

// dialXDS returns an echo client of target through its own grpc-go xDS
// client with node id nodeID.
func dialXDS(t testing.TB, cpAddr, nodeID, target string) echov1.EchoServiceClient {
	t.Helper()
	bs, err := bootstrap.JSON(cpAddr, nodeID, nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatalf("xDS resolver: %v", err)
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatalf("NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { cc.Close() })
	return echov1.NewEchoServiceClient(cc)
}

// said makes one Echo call and returns the IP that answered.
func said(ctx context.Context, c echov1.EchoServiceClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"}, grpc.WaitForReady(true))
	if err != nil {
		return "", err
	}
	msg := resp.GetMessage()
	i, j := strings.Index(msg, "(Said "), strings.LastIndex(msg, ", Version ")
	if i < 0 || j < i {
		return "", fmt.Errorf("unexpected reply %q", msg)
	}
	return msg[i+len("(Said ") : j], nil
}
