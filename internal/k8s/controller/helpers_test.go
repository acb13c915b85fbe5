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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
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

// pollUntil calls cond every few milliseconds until it returns true or ctx
// ends.
func pollUntil(ctx context.Context, t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached after %d tries: %v", what, i+1, ctx.Err())
		case <-tick.C:
		}
	}
}

// fakeCluster is client-go's fake clientsets standing in for the API
// server (the one part a unit test cannot have). It counts the watches the
// informers opened: the fake tracker has no resource versions, so a change
// made between an informer's list and its watch would be lost; tests wait
// for every watch before they change anything.
type fakeCluster struct {
	kube *kubefake.Clientset
	dyn  *dynamicfake.FakeDynamicClient

	mu      sync.Mutex
	watches int
}

// watchesPerSource is how many watches a Source opens: six App Mesh
// kinds, Namespaces and Pods.
const watchesPerSource = 8

func newFakeCluster(t testing.TB, appmeshYAML string, core ...runtime.Object) *fakeCluster {
	t.Helper()
	c := &fakeCluster{
		kube: kubefake.NewClientset(core...),
		dyn:  dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), controller.ListKinds()),
	}
	// Added by resource: the fake client's guess from the kind would file
	// a Mesh under "meshs".
	for _, obj := range appmeshObjects(t, appmeshYAML) {
		gvr, ok := gvrOf[obj.GetKind()]
		if !ok {
			t.Fatalf("%s %s: not an App Mesh kind", obj.GetKind(), obj.GetName())
		}
		if err := c.dyn.Tracker().Create(gvr, obj, obj.GetNamespace()); err != nil {
			t.Fatalf("add %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	c.kube.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.kube.Tracker().Watch(a.GetResource(), a.GetNamespace())
		c.countWatch()
		return true, w, err
	})
	c.dyn.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.dyn.Tracker().Watch(a.GetResource(), a.GetNamespace())
		c.countWatch()
		return true, w, err
	})
	return c
}

func (c *fakeCluster) countWatch() {
	c.mu.Lock()
	c.watches++
	c.mu.Unlock()
}

// waitWatches waits until n watches are open.
func (c *fakeCluster) waitWatches(ctx context.Context, t testing.TB, n int) {
	t.Helper()
	pollUntil(ctx, t, fmt.Sprintf("%d watches open", n), func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.watches >= n, nil
	})
}

// gvrOf maps App Mesh kinds to their resources.
var gvrOf = func() map[string]schema.GroupVersionResource {
	out := map[string]schema.GroupVersionResource{}
	for _, k := range controller.Kinds {
		out[string(k.Kind)] = k.GVR
	}
	return out
}()

// appmeshObjects decodes App Mesh manifests into unstructured objects.
func appmeshObjects(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		out = append(out, appmeshObject(t, doc))
	}
	return out
}

func appmeshObject(t testing.TB, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return u
}

// namespace is a namespace with labels.
func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// pod is a running pod at ip, Ready or not.
func pod(ns, name, ip string, ready bool, labels map[string]string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}},
		},
	}
}

// running is a control plane running in-process on the fake cluster.
type running struct {
	*controller.ControlPlane
	stop func() error // stops Run and returns its error; idempotent
}

// startCP starts a control plane on 127.0.0.1:0; it is stopped at the end
// of the test unless stopped earlier.
func startCP(t testing.TB, c *fakeCluster, cfg controller.Config) *running {
	t.Helper()
	cfg.Kube, cfg.Dynamic = c.kube, c.dyn
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
