package server_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/server"
)

// TestWeightedSplit drives one ClientConn, never re-dialed, through 100/0,
// 50/50 and 0/100 and checks each split over 2,000 calls.
func TestWeightedSplit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	v09 := startEcho(t, "127.0.0.2", "0.9")
	v10 := startEcho(t, "127.0.0.3", "1.0")
	eps := []*mesh.Endpoint{v09.endpoint("t1"), v10.endpoint("t2")}

	cc := dial(t, cp, "client-1")
	client := echov1.NewEchoServiceClient(cc)
	phases := []struct{ w09, w10 int }{{100, 0}, {50, 50}, {0, 100}}
	prev := phases[0]
	for i, ph := range phases {
		rev := uint64(i + 1)
		t.Run(fmt.Sprintf("%d-%d", ph.w09, ph.w10), func(t *testing.T) {
			publish(t, cp, rev, ph.w09, ph.w10, eps...)
			if i > 0 {
				if err := cp.WaitConverged(ctx, xds.RouteType, rev); err != nil {
					t.Fatalf("WaitConverged: %v", err)
				}
			}
			// grpc-go ACKs slightly before its picker switches: wait
			// until traffic shows the new weights before counting.
			waitForSplit(ctx, t, client, prev.w09, prev.w10, ph.w09, ph.w10)
			if i == 0 {
				if err := cp.WaitConverged(ctx, xds.RouteType, rev); err != nil {
					t.Fatalf("WaitConverged: %v", err)
				}
			}
			// The pin header reaches a version whatever its weight.
			for _, v := range []string{"0.9", "1.0"} {
				pctx := metadata.AppendToOutgoingContext(ctx, xds.PinHeader, "echo-server-"+strings.ReplaceAll(v, ".", "-"))
				if got, err := call(pctx, client); err != nil || got != v {
					t.Errorf("call pinned to %s answered by %q, %v", v, got, err)
				}
			}
			const n = 2000
			got := map[string]int{}
			for range n {
				v, err := call(ctx, client)
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				got[v]++
			}
			share := float64(got["1.0"]) / n * 100
			if want := float64(ph.w10); math.Abs(share-want) > 5 {
				t.Errorf("version 1.0 got %.1f%% of %d calls (%v), want %v%% ±5", share, n, got, want)
			}
			if got["0.9"]+got["1.0"] != n {
				t.Errorf("calls by version = %v, want only 0.9 and 1.0", got)
			}
		})
		prev = ph
	}
	if s := cc.GetState().String(); s != "READY" && s != "IDLE" {
		t.Errorf("ClientConn state = %s at the end, want READY", s)
	}
}

// waitForSplit calls until traffic is consistent with the new weights: a
// side of weight 0 gets nothing over 50 calls in a row, and a side whose
// weight grew has been reached.
func waitForSplit(ctx context.Context, t *testing.T, c echov1.EchoServiceClient, old09, old10, w09, w10 int) {
	t.Helper()
	grew := ""
	switch {
	case w09 > old09 && w09 > 0:
		grew = "0.9"
	case w10 > old10 && w10 > 0:
		grew = "1.0"
	}
	zero := map[string]bool{"0.9": w09 == 0, "1.0": w10 == 0}
	clean, reached := 0, grew == ""
	pollUntil(ctx, t, fmt.Sprintf("traffic follows %d/%d", w09, w10), func() (bool, error) {
		v, err := call(ctx, c)
		if err != nil {
			return false, err
		}
		if v == grew {
			reached = true
		}
		if zero[v] {
			clean = 0
		} else {
			clean++
		}
		return reached && clean >= 50, nil
	})
}

// TestUnhealthyEndpointStopsTraffic: an endpoint republished as unhealthy
// leaves EDS and gets no more calls, on the same connection.
func TestUnhealthyEndpointStopsTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	a := startEcho(t, "127.0.0.2", "0.9")
	b := startEcho(t, "127.0.0.4", "0.9")
	v10 := startEcho(t, "127.0.0.3", "1.0")
	epA, epB := a.endpoint("a"), b.endpoint("b")
	publish(t, cp, 1, 100, 0, epA, epB, v10.endpoint("c"))
	client := echov1.NewEchoServiceClient(dial(t, cp, "client-1"))

	reached := map[string]bool{}
	pollUntil(ctx, t, "both endpoints serve", func() (bool, error) {
		addr, err := callAddr(ctx, client)
		reached[addr] = true
		return reached[a.addr] && reached[b.addr], err
	})

	// The registry's health check failed b: it becomes UNHEALTHY (and its
	// server NOT_SERVING) and the control plane republishes.
	b.health.Shutdown()
	epB.Health = "UNHEALTHY"
	publish(t, cp, 1, 100, 0, epA, epB, v10.endpoint("c"))
	if err := cp.WaitConverged(ctx, xds.EndpointType, 1); err != nil {
		t.Fatalf("WaitConverged: %v", err)
	}
	clean := 0
	pollUntil(ctx, t, "traffic leaves the unhealthy endpoint", func() (bool, error) {
		addr, err := callAddr(ctx, client)
		if addr == b.addr {
			clean = 0
		} else {
			clean++
		}
		return clean >= 50, err
	})
	for range 500 {
		addr, err := callAddr(ctx, client)
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		if addr != a.addr {
			t.Fatalf("call answered by %s, want only %s (unhealthy: %s)", addr, a.addr, b.addr)
		}
	}
}

// TestNACKKeepsOldConfig publishes a cluster grpc-go rejects (MAGLEV, which
// go-control-plane's Validate accepts): the NACK shows in Clients() with its
// detail, WaitConverged fails fast with ErrRejected, and calls keep flowing
// on the old config.
func TestNACKKeepsOldConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	v09 := startEcho(t, "127.0.0.2", "0.9")
	v10 := startEcho(t, "127.0.0.3", "1.0")
	eps := []*mesh.Endpoint{v09.endpoint("t1"), v10.endpoint("t2")}
	good := publish(t, cp, 1, 100, 0, eps...)
	client := echov1.NewEchoServiceClient(dial(t, cp, "client-1"))
	if _, err := call(ctx, client); err != nil {
		t.Fatalf("call: %v", err)
	}
	if err := cp.WaitConverged(ctx, xds.ClusterType, 1); err != nil {
		t.Fatalf("WaitConverged: %v", err)
	}

	bad := &xds.Resources{
		Listeners: good.Listeners, Routes: good.Routes, Endpoints: good.Endpoints,
	}
	for _, c := range good.Clusters {
		c = proto.Clone(c).(*clusterpb.Cluster)
		c.LbPolicy = clusterpb.Cluster_MAGLEV
		bad.Clusters = append(bad.Clusters, c)
	}
	if err := cp.Publish(bad, 2); err != nil {
		t.Fatalf("Publish(bad): %v", err)
	}
	_, versions := cp.Published()
	err := cp.WaitConverged(ctx, xds.ClusterType, 2)
	if !errors.Is(err, server.ErrRejected) {
		t.Fatalf("WaitConverged = %v, want ErrRejected", err)
	}
	cs := cp.Clients()
	if len(cs) != 1 || cs[0].LastNACK == nil {
		t.Fatalf("Clients() = %+v, want one client with a NACK", cs)
	}
	n := cs[0].LastNACK
	if n.TypeURL != xds.ClusterType || n.Version != versions[xds.ClusterType] || !strings.Contains(n.Detail, "MAGLEV") {
		t.Errorf("LastNACK = %+v, want type %s version %s detail about MAGLEV", n, xds.ClusterType, versions[xds.ClusterType])
	}
	var clusters []string
	for _, c := range good.Clusters {
		clusters = append(clusters, c.GetName())
	}
	if u := cp.Usage(xds.ClusterType, clusters, 2); u.Total != 1 || u.ACKed != 0 || u.LastNACK == nil || u.NACKNode != "client-1" {
		t.Errorf("Usage at revision 2 = %+v, want 1 client, none ACKed, client-1's NACK", u)
	}
	if u := cp.Usage(xds.ClusterType, clusters, 1); u.Total != 1 || u.ACKed != 1 || u.LastNACK != nil {
		t.Errorf("Usage at revision 1 = %+v, want 1 client that ACKed, no NACK", u)
	}
	if u := cp.Usage(xds.ClusterType, []string{"nosuch/cluster"}, 1); u.Total != 0 {
		t.Errorf("Usage of an unused cluster = %+v, want no client", u)
	}
	if done, pending := cp.Converged(xds.ClusterType, 2); done || len(pending) != 1 || !strings.HasPrefix(pending[0], "client-1@") {
		t.Errorf("Converged = %v, %v, want false, [client-1@<old version>]", done, pending)
	}
	for range 200 {
		v, err := call(ctx, client)
		if err != nil {
			t.Fatalf("call under the rejected config: %v", err)
		}
		if v != "0.9" {
			t.Fatalf("call answered by %s, want 0.9 (old config)", v)
		}
	}
	// A good config at a newer revision is accepted again.
	publish(t, cp, 3, 100, 0, eps...)
	if err := cp.WaitConverged(ctx, xds.ClusterType, 3); err != nil {
		t.Fatalf("WaitConverged after the fix: %v", err)
	}
	if u := cp.Usage(xds.ClusterType, clusters, 3); u.Total != 1 || u.ACKed != 1 || u.LastNACK != nil {
		t.Errorf("Usage after the fix = %+v, want 1 client that ACKed, no NACK", u)
	}
}

// TestConverged: with 1 and several clients, a weight change converges for
// routes, Clients() reports each node's ACKed versions, and a closed client
// leaves the status.
func TestConverged(t *testing.T) {
	for _, n := range []int{1, 5} {
		t.Run(fmt.Sprintf("clients=%d", n), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cp := startControlPlane(t)
			if done, _ := cp.Converged(xds.RouteType, 1); done {
				t.Errorf("Converged before any publish = true, want false")
			}
			v09 := startEcho(t, "127.0.0.2", "0.9")
			v10 := startEcho(t, "127.0.0.3", "1.0")
			eps := []*mesh.Endpoint{v09.endpoint("t1"), v10.endpoint("t2")}
			publish(t, cp, 1, 100, 0, eps...)
			var ccs []*grpc.ClientConn
			for i := range n {
				cc := dial(t, cp, fmt.Sprintf("node-%d", i))
				ccs = append(ccs, cc)
				if _, err := call(ctx, echov1.NewEchoServiceClient(cc)); err != nil {
					t.Fatalf("call: %v", err)
				}
			}
			if err := cp.WaitConverged(ctx, xds.RouteType, 1); err != nil {
				t.Fatal(err)
			}
			_, v1 := cp.Published()

			publish(t, cp, 5, 50, 50, eps...)
			if done, _ := cp.Converged(xds.RouteType, 6); done {
				t.Errorf("Converged(rev 6) with rev 5 published = true, want false")
			}
			if err := cp.WaitConverged(ctx, xds.RouteType, 5); err != nil {
				t.Fatal(err)
			}
			for _, rev := range []uint64{1, 2, 5} {
				if done, pending := cp.Converged(xds.RouteType, rev); !done {
					t.Errorf("Converged(route, %d) = false, %v, want true", rev, pending)
				}
			}
			rev, v5 := cp.Published()
			if rev != 5 {
				t.Errorf("Published rev = %d, want 5", rev)
			}
			for _, typeURL := range []string{xds.ListenerType, xds.ClusterType, xds.EndpointType} {
				if v5[typeURL] != v1[typeURL] {
					t.Errorf("%s version %s -> %s on a weight change, want unchanged", typeURL, v1[typeURL], v5[typeURL])
				}
			}
			if v5[xds.RouteType] == v1[xds.RouteType] {
				t.Errorf("route version unchanged (%s) on a weight change", v5[xds.RouteType])
			}
			cs := cp.Clients()
			if len(cs) != n {
				t.Fatalf("Clients() has %d nodes, want %d", len(cs), n)
			}
			for i, c := range cs {
				if want := fmt.Sprintf("node-%d", i); c.NodeID != want || c.Streams != 1 || c.ConnectedSince.IsZero() {
					t.Errorf("client %d = %s streams %d since %v, want %s with 1 stream", i, c.NodeID, c.Streams, c.ConnectedSince, want)
				}
				for _, typeURL := range xds.TypeURLs {
					if got := c.Types[typeURL].ACKedVersion; got != v5[typeURL] {
						t.Errorf("%s %s ACKed %q, want %q", c.NodeID, typeURL, got, v5[typeURL])
					}
				}
				if c.LastNACK != nil {
					t.Errorf("%s LastNACK = %+v, want none", c.NodeID, c.LastNACK)
				}
			}
			// A publish with nothing changed keeps every version.
			publish(t, cp, 6, 50, 50, eps...)
			if _, v6 := cp.Published(); !mapsEqual(v5, v6) {
				t.Errorf("versions %v -> %v on an unchanged publish", v5, v6)
			}
			if err := cp.WaitConverged(ctx, xds.RouteType, 6); err != nil {
				t.Errorf("WaitConverged(unchanged rev 6): %v", err)
			}
			if err := cp.Publish(&xds.Resources{}, 2); err == nil {
				t.Errorf("Publish of an older revision succeeded, want an error")
			}

			ccs[0].Close()
			pollUntil(ctx, t, "closed client leaves Clients()", func() (bool, error) {
				return len(cp.Clients()) == n-1, nil
			})
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestWaitConvergedContext: WaitConverged returns when its context ends
// while a published revision is not yet reached.
func TestWaitConvergedContext(t *testing.T) {
	cp := startControlPlane(t)
	publish(t, cp, 1, 100, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := cp.WaitConverged(ctx, xds.RouteType, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConverged(unpublished rev) = %v, want DeadlineExceeded", err)
	}
}
