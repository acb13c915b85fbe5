package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gmesh-dev/gmesh/internal/xds"
)

// TestBehindCountsARevisionsLastPublish: a revision published twice (as
// the subscribe-first step does) is reached only when the client ACKed the
// second publish; a NACK of it is reported with its detail; a client of
// other route configurations does not count.
func TestBehindCountsARevisionsLastPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp := startControlPlane(t)
	publish(t, cp, 1, 100, 0)
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	open := func(node, name string) discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
		st, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.RouteType, ResourceNames: []string{name}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	routes := []string{"echo/echo-server.echo.local"}
	st := open("raw", routes[0])
	open("other", "echo/other.echo.local") // never answers
	recv := func() *discoverypb.DiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	send := func(version, nonce, nack string) {
		t.Helper()
		req := &discoverypb.DiscoveryRequest{TypeUrl: xds.RouteType, ResourceNames: routes, VersionInfo: version, ResponseNonce: nonce}
		if nack != "" {
			req.ErrorDetail = &statuspb.Status{Message: nack}
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	behind := func(rev uint64) (bool, []string) {
		ok, ls := cp.Behind(xds.RouteType, rev, routes)
		var out []string
		for _, l := range ls {
			s := l.Node + "@" + l.ACKed
			if l.NACK != nil {
				s += " NACK " + l.NACK.Version + ": " + l.NACK.Detail
			}
			out = append(out, s)
		}
		return ok, out
	}
	r1 := recv()
	send(r1.GetVersionInfo(), r1.GetNonce(), "")
	pollUntil(ctx, t, "revision 1 ACKed", func() (bool, error) {
		ok, b := behind(1)
		return ok && len(b) == 0, nil
	})
	if ok, _ := behind(2); ok {
		t.Fatal("Behind(2) ok before revision 2 was published")
	}

	// Revision 2 twice: held (80/20), then final (50/50).
	publish(t, cp, 2, 80, 20)
	held := recv()
	send(held.GetVersionInfo(), held.GetNonce(), "")
	publish(t, cp, 2, 50, 50)
	final := recv()
	pollUntil(ctx, t, "the client is behind revision 2's last publish", func() (bool, error) {
		ok, b := behind(2)
		return ok && len(b) == 1 && b[0] == "raw@"+held.GetVersionInfo(), nil
	})
	if done, pending := cp.ConvergedFor(xds.RouteType, 2, routes); !done {
		t.Fatalf("ConvergedFor(2) = false %v: want true (it counts the first publish)", pending)
	}
	send(held.GetVersionInfo(), final.GetNonce(), "bad routes")
	pollUntil(ctx, t, "the NACK is reported", func() (bool, error) {
		_, b := behind(2)
		return len(b) == 1 && strings.HasSuffix(b[0], " NACK "+final.GetVersionInfo()+": bad routes"), nil
	})
	send(final.GetVersionInfo(), final.GetNonce(), "")
	pollUntil(ctx, t, "revision 2 ACKed", func() (bool, error) {
		ok, b := behind(2)
		return ok && len(b) == 0, nil
	})
}
