package controller_test

import (
	"context"
	"fmt"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// scaleMesh is a mesh of n services in namespace "scale", each a virtual
// node selecting app=svc-I, a router and a virtual service.
func scaleMesh(n int) string {
	var b strings.Builder
	b.WriteString(`apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: scale}
spec:
  namespaceSelector: {matchLabels: {mesh: scale}}
`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: svc-%[1]d, namespace: scale}
spec:
  podSelector: {matchLabels: {app: svc-%[1]d}}
  listeners: [{portMapping: {port: 50051, protocol: grpc}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: svc-%[1]d, namespace: scale}
spec:
  listeners: [{portMapping: {port: 50051, protocol: grpc}}]
  routes:
  - name: r
    grpcRoute:
      match: {serviceName: proto.echo.EchoService}
      action:
        weightedTargets: [{virtualNodeRef: {name: svc-%[1]d}, weight: 1}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: svc-%[1]d, namespace: scale}
spec:
  provider: {virtualRouter: {virtualRouterRef: {name: svc-%[1]d}}}
`, i)
	}
	return b.String()
}

// BenchmarkScale measures the Kubernetes control plane with 1,000 and
// 10,000 Ready pods across 100 virtual nodes: the Source's heap once it
// has synced and published (informer caches, the last snapshot and the
// xDS server's resources; the fake API server's own copy of the objects
// is measured before and left out), and per op the time from a pod
// turning NotReady in the API to the snapshot without it being published
// (watch event, convert, translate of the whole mesh, publish). The API
// server is client-go's fake: a real one (kwok) would add its own watch
// latency, not the control plane's work measured here.
func BenchmarkScale(b *testing.B) {
	for _, pods := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nodes=100/pods=%d", pods), func(b *testing.B) {
			const nodes = 100
			core := []runtime.Object{namespace("scale", map[string]string{"mesh": "scale"})}
			for i := 0; i < pods; i++ {
				ip := fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)
				core = append(core, pod("scale", fmt.Sprintf("pod-%d", i), ip, true, map[string]string{"app": fmt.Sprintf("svc-%d", i%nodes)}))
			}
			c := newFakeCluster(b, scaleMesh(nodes), core...)
			before := heapInUse()

			srv := xdsserver.New(testLogger(b), xdsserver.Options{})
			s := controller.NewSource(c.Kube, c.Dyn, srv, controller.Options{Logger: testLogger(b)})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					b.Errorf("Source.Run: %v", err)
				}
			}()
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
			defer wcancel()
			c.WaitWatches(wctx, b, watchesPerSource)
			pollUntil(wctx, b, "the first publish", func() (bool, error) { return s.Ready(), nil })
			if snap := s.Last(); snap == nil || snap.Resources == nil || len(snap.Resources.Endpoints) != nodes {
				b.Fatalf("first snapshot: %+v, want %d endpoint assignments", snap, nodes)
			}
			heap := float64(heapInUse()-before) / (1 << 20)

			pods0 := pods
			pods := c.Kube.CoreV1().Pods("scale")
			set := func(name string, st corev1.ConditionStatus) {
				p, err := pods.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					b.Fatal(err)
				}
				p.Status.Conditions[0].Status = st
				changed := s.Changed()
				if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
					b.Fatal(err)
				}
				select {
				case <-changed:
				case <-wctx.Done():
					b.Fatalf("no rebuild after pod %s turned Ready=%s", name, st)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("pod-%d", i%pods0)
				set(name, corev1.ConditionFalse) // urgent: no debounce
				b.StopTimer()
				set(name, corev1.ConditionTrue) // debounced
				b.StartTimer()
			}
			b.ReportMetric(heap, "MiB-heap")
		})
	}
}

func heapInUse() uint64 {
	goruntime.GC()
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	return ms.HeapInuse
}
