package server_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// BenchmarkWeightChangeToLastACK measures, with N real grpc-go xDS clients
// (each its own xDS client, node id and ADS stream, all in this process),
// the time from a route weight change (translate + publish) until every
// client has ACKed the new route configuration version.
func BenchmarkWeightChangeToLastACK(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			benchWeightChange(b, n, func(ctx context.Context, cp *controlPlane, eps []*mesh.Endpoint) {
				for i := range n {
					cc := dial(b, cp, fmt.Sprintf("bench-%d", i))
					if _, err := call(ctx, echov1.NewEchoServiceClient(cc)); err != nil {
						b.Fatalf("call: %v", err)
					}
				}
			})
		})
	}
}

func benchWeightChange(b *testing.B, n int, connect func(context.Context, *controlPlane, []*mesh.Endpoint)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cp := startControlPlane(b)
	v09 := startEcho(b, "127.0.0.2", "0.9")
	v10 := startEcho(b, "127.0.0.3", "1.0")
	eps := []*mesh.Endpoint{v09.endpoint("t1"), v10.endpoint("t2")}
	publish(b, cp, 1, 50, 50, eps...)
	connect(ctx, cp, eps)
	for _, typeURL := range xds.TypeURLs {
		if err := cp.WaitConverged(ctx, typeURL, 1); err != nil {
			b.Fatal(err)
		}
	}
	if got := len(cp.Clients()); got != n {
		b.Fatalf("%d clients connected, want %d", got, n)
	}
	rev := uint64(1)
	var lat, first, lastSent, pub []time.Duration
	for b.Loop() {
		rev++
		w := 40 + int(rev%2)*20 // 60/40 and 40/60 in turn
		start := time.Now()
		publish(b, cp, rev, w, 100-w, eps...)
		pub = append(pub, time.Since(start))
		if err := cp.WaitConverged(ctx, xds.RouteType, rev); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		if os.Getenv("GMESH_BENCH_FIRST_ACK") != "" {
			f, ls := time.Duration(1<<62), time.Duration(0)
			for _, c := range cp.Clients() {
				f = min(f, c.Types[xds.RouteType].ACKedAt.Sub(start))
				ls = max(ls, c.Types[xds.RouteType].SentAt.Sub(start))
			}
			first = append(first, f)
			lastSent = append(lastSent, ls)
		}
	}
	if len(first) > 0 {
		slices.Sort(first)
		slices.Sort(lastSent)
		slices.Sort(pub)
		b.ReportMetric(float64(first[len(first)/2])/float64(time.Millisecond), "first-ack-p50-ms")
		b.ReportMetric(float64(lastSent[len(lastSent)/2])/float64(time.Millisecond), "last-sent-p50-ms")
		b.ReportMetric(float64(pub[len(pub)/2])/float64(time.Millisecond), "publish-p50-ms")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(p*float64(len(lat))+0.5) - 1
		i = max(0, min(i, len(lat)-1))
		return float64(lat[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
