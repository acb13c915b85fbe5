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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
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
// server. It counts the informers' watches: the fake tracker has no
// resource versions, so a change made between an informer's list and its
// watch would be lost; tests wait for every watch before changing anything.
type fakeCluster struct {
	kube *kubefake.Clientset
	dyn  *dynamicfake.FakeDynamicClient

	mu      sync.Mutex
	watches int
}

// watchesPerSource: six App Mesh kinds, Namespaces and Pods.
const watchesPerSource = 8

func newFakeCluster(t testing.TB, appmeshYAML string, core ...runtime.Object) *fakeCluster {
	t.Helper()
	c := &fakeCluster{
		kube: kubefake.NewClientset(core...),
		dyn:  dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), controller.ListKinds()),
	}
	for _, obj := range appmeshObjects(t, appmeshYAML) {
		c.create(t, obj)
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

// create adds an App Mesh object by resource (the fake client's guess from
// the kind would file a Mesh under "meshs").
func (c *fakeCluster) create(t testing.TB, obj *unstructured.Unstructured) {
	t.Helper()
	for _, k := range controller.Kinds {
		if string(k.Kind) == obj.GetKind() {
			if err := c.dyn.Tracker().Create(k.GVR, obj, obj.GetNamespace()); err != nil {
				t.Fatalf("add %s %s: %v", obj.GetKind(), obj.GetName(), err)
			}
			return
		}
	}
	t.Fatalf("%s %s: not an App Mesh kind", obj.GetKind(), obj.GetName())
}

func (c *fakeCluster) countWatch() {
	c.mu.Lock()
	c.watches++
	c.mu.Unlock()
}

func (c *fakeCluster) waitWatches(ctx context.Context, t testing.TB) {
	t.Helper()
	pollUntil(ctx, t, "informers' watches open", func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.watches >= watchesPerSource, nil
	})
}

func appmeshObjects(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(doc) != "" {
			out = append(out, appmeshObject(t, doc))
		}
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
func startPod(t testing.TB, c *fakeCluster, vg string, cfg gatewaypod.Config) *runningPod {
	t.Helper()
	cfg.Kube, cfg.Dynamic = c.kube, c.dyn
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
