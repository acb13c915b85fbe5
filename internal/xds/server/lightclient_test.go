package server_test

import (
	"context"
	"fmt"
	"testing"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// lightClient is a minimal state-of-the-world ADS client: it subscribes to
// the echo service's four resources and ACKs every response at once. It
// stands in for grpc-go where a thousand real clients do not fit one process
// on two cores, so the figure isolates the control plane's cost.
func lightClient(ctx context.Context, tb testing.TB, conn *grpc.ClientConn, nodeID string) {
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		tb.Fatalf("ads stream: %v", err)
	}
	subs := map[string][]string{
		xds.ListenerType: {"echo-server.echo.local"},
		xds.RouteType:    {"echo/echo-server.echo.local"},
		xds.ClusterType:  {"echo/echo-server-0-9", "echo/echo-server-1-0"},
		xds.EndpointType: {"echo/echo-server-0-9", "echo/echo-server-1-0"},
	}
	node := &corepb.Node{Id: nodeID}
	for _, typeURL := range xds.TypeURLs {
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: subs[typeURL]}); err != nil {
			tb.Fatalf("ads send: %v", err)
		}
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ack := &discoverypb.DiscoveryRequest{
				TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
				ResponseNonce: resp.GetNonce(), ResourceNames: subs[resp.GetTypeUrl()],
			}
			if err := stream.Send(ack); err != nil {
				return
			}
		}
	}()
}

// BenchmarkWeightChangeToLastACKLight is BenchmarkWeightChangeToLastACK with
// lightweight ADS clients (see lightClient), up to 1,000.
func BenchmarkWeightChangeToLastACKLight(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			benchWeightChange(b, n, func(ctx context.Context, cp *controlPlane, _ []*mesh.Endpoint) {
				cctx, cancel := context.WithCancel(context.Background())
				b.Cleanup(cancel)
				// One connection per 50 clients, as many streams share
				// little; each client has its own ADS stream and node id.
				var conn *grpc.ClientConn
				for i := range n {
					if i%50 == 0 {
						c, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { c.Close() })
						conn = c
					}
					lightClient(cctx, b, conn, fmt.Sprintf("light-%d", i))
				}
				pollUntil(ctx, b, "light clients connect", func() (bool, error) {
					return len(cp.Clients()) == n, nil
				})
			})
		})
	}
}
