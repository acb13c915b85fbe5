package rolloutctl_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/klog/v2"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

const ns = "echo"

var gvrDeployments = appsv1.SchemeGroupVersion.WithResource("deployments")

// cluster is the echo example's echo-server on a fake cluster that
// behaves as the API server where the runtime depends on it
// (k8sfake.APIServer), with a kubelet that keeps each Deployment's pods
// (Ready at once, on 127.0.0.1), a metrics endpoint every pod shares, and
// a convergence whose clients ACK at once unless held.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	c       *k8sfake.Cluster
	conv    *fakeConv
	metrics *metricsServer
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	k := &cluster{t: t, ctx: ctx, c: k8sfake.New(t, ""), metrics: newMetricsServer(t)}
	k.c.APIServer(controller.GVRVirtualRouters, controller.GVRVirtualNodes, rollouts.GVR, gvrDeployments)
	k.conv = &fakeConv{c: k.c}
	b, err := os.ReadFile("../../../examples/kubernetes/echo/echo-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range k8sfake.Objects(t, string(b)) {
		obj.SetResourceVersion("1")
		obj.SetGeneration(1)
		if obj.GetKind() != "Deployment" {
			k.c.Create(t, obj)
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
			t.Fatal(err)
		}
		found := false
		for i := range d.Spec.Template.Spec.Containers[0].Ports {
			if p := &d.Spec.Template.Spec.Containers[0].Ports[i]; p.Name == rolloutctl.MetricsPortName {
				p.ContainerPort, found = int32(k.metrics.port), true
			}
		}
		if !found {
			t.Fatalf("the echo example's echo-server has no container port named %q", rolloutctl.MetricsPortName)
		}
		if err := k.c.Kube.Tracker().Create(gvrDeployments, &d, ns); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// replica is one control-plane replica's rollout runtime.
type replica struct {
	rt      *rolloutctl.Runtime
	kf      informers.SharedInformerFactory
	df      dynamicinformer.DynamicSharedInformerFactory
	watches int
}

func (k *cluster) replica(name string) *replica {
	k.t.Helper()
	kf := informers.NewSharedInformerFactory(k.c.Kube, 0)
	df := dynamicinformer.NewDynamicSharedInformerFactory(k.c.Dyn, 0)
	rt, err := rolloutctl.New(rolloutctl.Config{
		Kube: k.c.Kube, Dynamic: k.c.Dyn, KubeInformers: kf, DynamicInformers: df,
		// Resync an hour: every step must follow from an event or the
		// engine's own requeue (a begun rollout waited 30 s for the resync).
		Convergence: k.conv, Poll: 20 * time.Millisecond, Resync: time.Hour, AnalysisInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{k.t, name}, nil)),
	})
	if err != nil {
		k.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(k.ctx)
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	k.t.Cleanup(func() { cancel(); kf.Shutdown(); df.Shutdown() })
	// Rollouts, VirtualRouters, VirtualNodes; Deployments, Pods.
	return &replica{rt: rt, kf: kf, df: df, watches: 5}
}

// lead runs r's Lead until the test ends or stop is called.
func (k *cluster) lead(r *replica) (stop func()) {
	ctx, cancel := context.WithCancel(k.ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.rt.Lead(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	k.t.Cleanup(stop)
	return stop
}

// start waits for n watches, then starts the kubelet.
func (k *cluster) start(n int) {
	k.c.WaitWatches(k.ctx, k.t, n)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(k.ctx)
	go func() { defer close(done); k.kubelet(ctx) }()
	k.t.Cleanup(func() { cancel(); <-done })
}

// kubelet keeps each Deployment's replicas as Ready pods, and deletes the
// pods of Deployments scaled down or gone.
func (k *cluster) kubelet(ctx context.Context) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		deps, err := k.c.Kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		pods, err2 := k.c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && err2 == nil {
			want := map[string]int{}
			for _, d := range deps.Items {
				n := 1
				if d.Spec.Replicas != nil {
					n = int(*d.Spec.Replicas)
				}
				want[d.Name] = n
				for i := range n {
					name := fmt.Sprintf("%s-%d", d.Name, i)
					if slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Name == name }) {
						continue
					}
					lbls := map[string]string{"pod-of": d.Name}
					for k, v := range d.Spec.Template.Labels {
						lbls[k] = v
					}
					_, _ = k.c.Kube.CoreV1().Pods(ns).Create(ctx, k8sfake.Pod(ns, name, "127.0.0.1", true, lbls), metav1.CreateOptions{})
				}
			}
			for _, p := range pods.Items {
				i, _ := strconv.Atoi(p.Name[strings.LastIndex(p.Name, "-")+1:])
				if n, ok := want[p.Labels["pod-of"]]; !ok || i >= n {
					_ = k.c.Kube.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{})
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (k *cluster) applyRollout(name string, mutate func(*v1alpha1.Rollout)) {
	k.t.Helper()
	ro := &v1alpha1.Rollout{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Rollout"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.RolloutSpec{
			VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"},
			Route:            "echo-server-route",
			StableDeployment: "echo-server-0-9",
			Version:          "1.0",
			Images:           []v1alpha1.ContainerImage{{Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}},
			Steps:            []int32{10, 50, 100},
			Interval:         &metav1.Duration{Duration: 150 * time.Millisecond},
			Timeout:          &metav1.Duration{Duration: 10 * time.Second},
			AckTimeout:       &metav1.Duration{Duration: 2 * time.Second},
		},
	}
	if mutate != nil {
		mutate(ro)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
	if err != nil {
		k.t.Fatal(err)
	}
	if _, err := k.c.Dyn.Resource(rollouts.GVR).Namespace(ns).Create(k.ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// patch changes a Rollout's spec as kubectl patch would (retrying a
// conflict with the runtime's writes).
func (k *cluster) patch(name string, mutate func(*v1alpha1.RolloutSpec)) {
	k.t.Helper()
	for {
		ro := k.rollout(name)
		mutate(&ro.Spec)
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
		if err != nil {
			k.t.Fatal(err)
		}
		_, err = k.c.Dyn.Resource(rollouts.GVR).Namespace(ns).Update(k.ctx, &unstructured.Unstructured{Object: m}, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			k.t.Fatal(err)
		}
		return
	}
}

func (k *cluster) rollout(name string) *v1alpha1.Rollout {
	k.t.Helper()
	u, err := k.c.Dyn.Resource(rollouts.GVR).Namespace(ns).Get(k.ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	var ro v1alpha1.Rollout
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ro); err != nil {
		k.t.Fatal(err)
	}
	return &ro
}

// waitPhase waits until the Rollout's phase is one of phases.
func (k *cluster) waitPhase(name string, phases ...mesh.Phase) *v1alpha1.Rollout {
	k.t.Helper()
	var ro *v1alpha1.Rollout
	k8sfake.PollUntil(k.ctx, k.t, fmt.Sprintf("rollout %s in phase %v", name, phases), func() (bool, error) {
		ro = k.rollout(name)
		return slices.Contains(phases, mesh.Phase(ro.Status.Phase)), nil
	})
	return ro
}

// waitRollout polls the Rollout until cond holds.
func (k *cluster) waitRollout(name, what string, cond func(*v1alpha1.Rollout) bool) *v1alpha1.Rollout {
	k.t.Helper()
	var ro *v1alpha1.Rollout
	k8sfake.PollUntil(k.ctx, k.t, "rollout "+name+": "+what, func() (bool, error) {
		ro = k.rollout(name)
		return cond(ro), nil
	})
	return ro
}

func (k *cluster) routeTargets() string {
	k.t.Helper()
	u, err := k.c.Dyn.Resource(controller.GVRVirtualRouters).Namespace(ns).Get(k.ctx, "echo-server", metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	var vr v1beta2.VirtualRouter
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &vr); err != nil {
		k.t.Fatal(err)
	}
	ts, err := rollouts.RouteTargets(&vr, "echo-server-route")
	if err != nil {
		k.t.Fatal(err)
	}
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s=%d", t.VirtualNode, t.Weight))
	}
	return strings.Join(out, ",")
}

func (k *cluster) exists(what string) bool {
	k.t.Helper()
	kind, name, _ := strings.Cut(what, "/")
	var err error
	switch kind {
	case "deployment":
		_, err = k.c.Kube.AppsV1().Deployments(ns).Get(k.ctx, name, metav1.GetOptions{})
	case "virtualnode":
		_, err = k.c.Dyn.Resource(controller.GVRVirtualNodes).Namespace(ns).Get(k.ctx, name, metav1.GetOptions{})
	default:
		k.t.Fatalf("exists %s", what)
	}
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		k.t.Fatal(err)
	}
	return true
}

func events(ro *v1alpha1.Rollout) string {
	var b strings.Builder
	for _, e := range ro.Status.Events {
		fmt.Fprintf(&b, "  %s %s\n", e.Phase, e.Message)
	}
	return b.String()
}

func hasEvent(ro *v1alpha1.Rollout, msg string) bool {
	return slices.ContainsFunc(ro.Status.Events, func(e v1alpha1.RolloutEvent) bool { return strings.Contains(e.Message, msg) })
}

// fakeConv is the xDS clients of every replica: they ACK every generation
// of a router at once, unless held. It checks that the engine only ever
// waits on generations the router had.
type fakeConv struct {
	c    *k8sfake.Cluster
	hold atomic.Bool
	mu   sync.Mutex
	gens []int64
	bad  []string
}

func (f *fakeConv) ConvergedRouter(namespace, router string, gen int64) (bool, []string) {
	u, err := f.c.Dyn.Tracker().Get(controller.GVRVirtualRouters, namespace, router)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err != nil:
		f.bad = append(f.bad, fmt.Sprintf("router %s/%s: %v", namespace, router, err))
	case gen <= 0 || gen > u.(*unstructured.Unstructured).GetGeneration():
		f.bad = append(f.bad, fmt.Sprintf("generation %d of router %s/%s asked about, which is at %d", gen, namespace, router, u.(*unstructured.Unstructured).GetGeneration()))
	}
	if len(f.gens) == 0 || f.gens[len(f.gens)-1] != gen {
		f.gens = append(f.gens, gen)
	}
	if f.hold.Load() {
		return false, []string{"echo/echo-client-0@" + strconv.FormatInt(gen-1, 10)}
	}
	return true, nil
}

func (f *fakeConv) check(t *testing.T) []int64 {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		t.Error(b)
	}
	return slices.Clone(f.gens)
}

// metricsServer is the pods' /metrics: every scrape finds 25 more calls,
// all fast, failing ones (Unavailable) half of them while bad.
type metricsServer struct {
	port     int
	bad      atomic.Bool
	ok, errs atomic.Int64
	scrapes  atomic.Int64
}

func newMetricsServer(t *testing.T) *metricsServer {
	m := &metricsServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		m.scrapes.Add(1)
		if m.bad.Load() {
			m.ok.Add(13)
			m.errs.Add(12)
		} else {
			m.ok.Add(25)
		}
		ok, errs := m.ok.Load(), m.errs.Load()
		lbl := `grpc_method="Echo",grpc_service="proto.echo.EchoService",grpc_type="unary"`
		fmt.Fprintf(w, "# TYPE grpc_server_handled_total counter\n")
		fmt.Fprintf(w, "grpc_server_handled_total{grpc_code=\"OK\",%s} %d\n", lbl, ok)
		fmt.Fprintf(w, "grpc_server_handled_total{grpc_code=\"Unavailable\",%s} %d\n", lbl, errs)
		fmt.Fprintf(w, "# TYPE grpc_server_handling_seconds histogram\n")
		fmt.Fprintf(w, "grpc_server_handling_seconds_bucket{%s,le=\"0.005\"} %d\n", lbl, ok+errs)
		fmt.Fprintf(w, "grpc_server_handling_seconds_bucket{%s,le=\"+Inf\"} %d\n", lbl, ok+errs)
		fmt.Fprintf(w, "grpc_server_handling_seconds_sum{%s} %g\n", lbl, float64(ok+errs)*0.001)
		fmt.Fprintf(w, "grpc_server_handling_seconds_count{%s} %d\n", lbl, ok+errs)
	}))
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	m.port, _ = strconv.Atoi(p)
	return m
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimSpace(string(p)))
	return len(p), nil
}
