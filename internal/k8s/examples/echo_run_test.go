package examples_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpcxds "google.golang.org/grpc/xds"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// TestEchoExampleServes runs the echo example in-process on a fake
// cluster: the rendered App Mesh objects and namespace, one Ready pod per
// replica of echo-server and echo-client on 127.0.9.x (real echo servers
// and echo clients, on the Deployments' ports and with echo-client's
// ECHO_HOST), the control plane serving xDS, and a gateway pod run as the
// gateway's Deployment says. A curl of the gateway is answered as
// docs/kubernetes.md says, by both echo-servers through both echo-clients.
func TestEchoExampleServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	logger := testLogger(t)
	ex := render(t, "examples/kubernetes/echo")
	var ns corev1.Namespace
	ex.object(t, "Namespace echo", &ns)

	// Pods: 127.0.9.1, .2, ... in Deployment order.
	type podOf struct {
		pod  *corev1.Pod
		name string // the Deployment's
	}
	var pods []podOf
	core := []runtime.Object{&ns}
	next := 1
	for _, d := range ex.deployments {
		if d.Name == "echo-gateway" {
			continue // run below as a gateway pod on 127.0.0.1
		}
		for i := range int(*d.Spec.Replicas) {
			p := k8sfake.Pod(d.Namespace, fmt.Sprintf("%s-%d", d.Name, i), fmt.Sprintf("127.0.9.%d", next), true, d.Spec.Template.Labels)
			next++
			pods = append(pods, podOf{p, d.Name})
			core = append(core, p)
		}
	}
	c := k8sfake.New(t, strings.Join(ex.appmesh, "\n---\n"), core...)

	cp, err := controller.New(controller.Config{Kube: c.Kube, Dynamic: c.Dyn, Logger: logger.With("component", "controlplane")})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, "control plane", cp.Run)

	for _, p := range pods {
		d := deployment(t, ex, p.name)
		ctr := d.Spec.Template.Spec.Containers[0]
		addr := net.JoinHostPort(p.pod.Status.PodIP, fmt.Sprint(ctr.Ports[0].ContainerPort))
		switch p.name {
		case "echo-server-0-9":
			_, version, _ := strings.Cut(ctr.Image, ":")
			srv, err := echo.NewServer(echo.ServerConfig{Addr: addr, Version: version, ShutdownTimeout: 5 * time.Second, Logger: logger})
			if err != nil {
				t.Fatalf("echo server %s: %v", addr, err)
			}
			runUntilCleanup(t, "echo server "+addr, srv.Run)
		case "echo-client-0-1":
			bs, err := bootstrap.JSON(cp.XDSAddr(), p.pod.Namespace+"/"+p.pod.Name, nil)
			if err != nil {
				t.Fatal(err)
			}
			rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := echo.NewClient(echo.ClientConfig{
				Addr:            addr,
				Target:          containerEnv(*d, "ECHO_HOST"),
				ShutdownTimeout: 5 * time.Second,
				DialOptions:     []grpc.DialOption{grpc.WithResolvers(rb)},
				Logger:          logger,
			})
			if err != nil {
				t.Fatalf("echo client %s: %v", addr, err)
			}
			runUntilCleanup(t, "echo client "+addr, cl.Run)
		default:
			t.Fatalf("no stand-in for Deployment %s", p.name)
		}
	}

	gwDep := deployment(t, ex, "echo-gateway")
	args := gwDep.Spec.Template.Spec.Containers[0].Args
	var vg string
	for i, a := range args {
		if a == "--virtual-gateway" && i+1 < len(args) {
			vg = args[i+1]
		}
	}
	vgName, err := gatewaypod.ParseVirtualGateway(vg)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gatewaypod.New(gatewaypod.Config{Kube: c.Kube, Dynamic: c.Dyn, VirtualGateway: vgName, Addr: "127.0.0.1:0", Logger: logger.With("component", "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, "gateway pod", gw.Run)

	url := "http://" + gw.Addr() + "/?name=Yusuke"
	want := regexp.MustCompile(`^Response from the server: Hello, Yusuke-san! \(Said (127\.0\.9\.\d+), Version 0\.9\)$`)
	k8sfake.PollUntil(ctx, t, "the gateway answers 200", func() (bool, error) {
		code, _, err := get(ctx, url)
		return err == nil && code == http.StatusOK, nil
	})
	said := map[string]int{}
	k8sfake.PollUntil(ctx, t, "both echo-servers answer through both echo-clients", func() (bool, error) {
		code, body, err := get(ctx, url)
		if err != nil || code != http.StatusOK {
			return false, fmt.Errorf("GET %s: %d %q %v, want 200", url, code, body, err)
		}
		m := want.FindStringSubmatch(body)
		if m == nil {
			return false, fmt.Errorf("GET %s: %q, want %s", url, body, want)
		}
		said[m[1]]++
		used := 0
		for _, st := range gw.Gateway().Stats() {
			if st.Requests > 0 {
				used++
			}
		}
		return len(said) == 2 && used == 2, nil
	})
	for ip := range said {
		if ip != "127.0.9.1" && ip != "127.0.9.2" {
			t.Errorf("said %s, want an echo-server pod's IP (127.0.9.1 or 127.0.9.2)", ip)
		}
	}
}

// deployment returns the example's Deployment name in namespace echo.
func deployment(t *testing.T, ex rendered, name string) *appsv1.Deployment {
	t.Helper()
	for i := range ex.deployments {
		if ex.deployments[i].Name == name {
			return &ex.deployments[i]
		}
	}
	t.Fatalf("the example has no Deployment %s", name)
	return nil
}

// runUntilCleanup runs run until the test ends, and fails the test if it
// returns an error or does not return within 30s of its context's end.
func runUntilCleanup(t *testing.T, what string, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("%s: %v", what, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s", what)
			}
		})
	})
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

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}

func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
