package server_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// TestAuthorization runs a real grpc-go xDS server for the STRICT node
// echo-server-1-0 and real xDS clients with workload certificates from the
// mesh CA, against the real xDS server, and checks App Mesh's backends as
// authorization as the server enforces it (RBAC from xDS, gRFC A41):
//   - echo-client, which lists echo-server.echo.local, is served;
//   - intruder, a node of the mesh that does not list it, gets
//     PERMISSION_DENIED naming the policy, and the server never sees it;
//   - once intruder lists echo-server.echo.local it is served, and denied
//     again once it stops;
//   - the control plane's health checker, with its own certificate, may
//     call grpc.health.v1.Health/Check and nothing else;
//   - Kubernetes pods, whose IDs carry a namespace and service account
//     (spiffe://echo.gmesh.local/ns/NS/sa/SA/vn/NODE): a pod of echo-client
//     is served, a pod of intruder is denied, and a pod serving
//     echo-server-1-0 passes the callers' check of the server's identity.
func TestAuthorization(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlane(t)
	server := startXDSEcho(t, cp, newWorkload(t, ca, "echo-server-1-0"), "127.0.0.6", "server-1")
	ep := server.endpoint("t1")
	publishResources(t, cp, 1, strictTopology(callerNode("intruder")), ep)

	client := dialTLS(t, cp, newWorkload(t, ca, "echo-client"), "client-1")
	intruder := dialTLS(t, cp, newWorkload(t, ca, "intruder"), "intruder-1")
	policy := xds.BackendsPolicy("echo-server-1-0", []string{"echo-server.echo.local"})
	intruderCall := func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err := intruder.Echo(cctx, &echov1.EchoRequest{Name: "intruder"}, grpc.WaitForReady(true))
		return err
	}
	served := func() int {
		server.mu.Lock()
		defer server.mu.Unlock()
		n := 0
		for _, s := range server.seen {
			if strings.Contains(s, "/vn/intruder") {
				n++
			}
		}
		return n
	}

	t.Run("a caller listing the service is served", func(t *testing.T) {
		if addr, err := callAddr(ctx, client); err != nil || addr != server.addr {
			t.Fatalf("echo-client: got %q, %v; want an answer from %s", addr, err, server.addr)
		}
	})

	t.Run("a caller not listing it is denied", func(t *testing.T) {
		err := intruderCall()
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("intruder: got %v, want PermissionDenied", err)
		}
		// grpc-go's message names the deny policy, which names the
		// service and the node.
		if want := `incoming RPC matched a deny policy "` + policy + `"`; status.Convert(err).Message() != want {
			t.Errorf("message %q, want %q", status.Convert(err).Message(), want)
		}
		if n := served(); n != 0 {
			t.Errorf("the server answered the intruder %d times", n)
		}
		// echo-client keeps working.
		if _, err := callAddr(ctx, client); err != nil {
			t.Errorf("echo-client after the denial: %v", err)
		}
	})

	t.Run("a pod of a listing node is served, whatever its namespace and service account", func(t *testing.T) {
		id := pki.ID{Mesh: "echo", Namespace: "shop", ServiceAccount: "checkout", VirtualNode: "echo-client"}
		pod := dialTLS(t, cp, newWorkloadID(t, ca, id), "echo-client-pod")
		if addr, err := callAddr(ctx, pod); err != nil || addr != server.addr {
			t.Fatalf("echo-client's pod: got %q, %v; want an answer from %s", addr, err, server.addr)
		}
		server.mu.Lock()
		defer server.mu.Unlock()
		if want := "[" + id.String() + "]"; !slices.Contains(server.seen, want) {
			t.Errorf("the server saw callers %v, want %s among them", server.seen, want)
		}
	})

	t.Run("a pod of a node not listing the service is denied", func(t *testing.T) {
		id := pki.ID{Mesh: "echo", Namespace: "shop", ServiceAccount: "echo-client", VirtualNode: "intruder"}
		pod := dialTLS(t, cp, newWorkloadID(t, ca, id), "intruder-pod")
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err := pod.Echo(cctx, &echov1.EchoRequest{Name: "intruder-pod"}, grpc.WaitForReady(true))
		if want := `incoming RPC matched a deny policy "` + policy + `"`; status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
			t.Errorf("intruder's pod: got %v, want PermissionDenied %q", err, want)
		}
		if n := served(); n != 0 {
			t.Errorf("the server answered the intruder %d times", n)
		}
	})

	t.Run("listing the service admits it", func(t *testing.T) {
		publishResources(t, cp, 2, strictTopology(callerNode("intruder", "echo-server.echo.local")), ep)
		pollUntil(ctx, t, "the intruder served once it lists echo-server", func() (bool, error) {
			err := intruderCall()
			if err != nil && status.Code(err) != codes.PermissionDenied {
				return false, err
			}
			return err == nil, nil
		})
		publishResources(t, cp, 3, strictTopology(callerNode("intruder")), ep)
		pollUntil(ctx, t, "the intruder denied again once it drops echo-server", func() (bool, error) {
			err := intruderCall()
			if err != nil && status.Code(err) != codes.PermissionDenied {
				return false, err
			}
			return err != nil, nil
		})
	})

	t.Run("listener validation narrows the callers", func(t *testing.T) {
		// intruder lists echo-server, but the listener's tls.validation
		// admits only echo-client's ID.
		rs := strictTopology(callerNode("intruder", "echo-server.echo.local"))
		sans := []string{xds.NodeID("echo", "echo-client").String()}
		for _, r := range rs {
			if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-1-0" {
				r.VirtualNode().Listeners[0].TLS.Validation = &mesh.TLSValidation{SubjectAlternativeNames: &mesh.SubjectAlternativeNames{
					Match: mesh.SubjectAlternativeNameMatch{Exact: sans}}}
			}
		}
		publishResources(t, cp, 4, rs, ep)
		want := `incoming RPC matched a deny policy "` + xds.ValidationPolicy("echo-server-1-0", sans) + `"`
		var last error
		pollUntil(ctx, t, "the intruder denied by the listener's validation", func() (bool, error) {
			last = intruderCall()
			if last != nil && status.Code(last) != codes.PermissionDenied {
				return false, last
			}
			return last != nil && status.Convert(last).Message() == want, nil
		})
		if _, err := callAddr(ctx, client); err != nil {
			t.Errorf("echo-client under the validation: %v", err)
		}
		publishResources(t, cp, 5, strictTopology(callerNode("intruder")), ep)
	})

	t.Run("the health checker may check health only", func(t *testing.T) {
		// As the control plane's checker calls a STRICT node
		// (internal/controlplane healthtls.go).
		src := pki.NewSource(ca, pki.HealthChecker("echo"), 0, nil)
		cc, err := grpc.NewClient(server.addr, grpc.WithTransportCredentials(credentials.NewTLS(src.ClientTLS(xds.NodeID("echo", "echo-server-1-0")))))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		resp, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check: got %v, %v; want SERVING", resp, err)
		}
		_, err = echov1.NewEchoServiceClient(cc).Echo(cctx, &echov1.EchoRequest{Name: "checker"})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "health checker may call only grpc.health.v1.Health") {
			t.Errorf("health checker calling Echo: got %v, want PermissionDenied naming the health policy", err)
		}
	})

	t.Run("another caller's health check is denied", func(t *testing.T) {
		// The health service is no way around the policy: only the
		// health checker is admitted to it without a backend.
		src := pki.NewSource(ca, xds.NodeID("echo", "intruder"), 0, nil)
		cc, err := grpc.NewClient(server.addr, grpc.WithTransportCredentials(credentials.NewTLS(src.ClientTLS(xds.NodeID("echo", "echo-server-1-0")))))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err = healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("intruder's health check: got %v, want PermissionDenied", err)
		}
	})

	t.Run("a pod serving the node passes the caller's server check", func(t *testing.T) {
		// A second server of echo-server-1-0 with a pod's ID: echo-client
		// (whose cluster checks the server's SPIFFE ID) reaches it too.
		id := pki.ID{Mesh: "echo", Namespace: "echo", ServiceAccount: "default", VirtualNode: "echo-server-1-0"}
		pod := startXDSEcho(t, cp, newWorkloadID(t, ca, id), "127.0.0.7", "server-pod")
		publishResources(t, cp, 6, strictTopology(callerNode("intruder")), ep, pod.endpoint("t2"))
		pollUntil(ctx, t, "echo-client answered by the pod", func() (bool, error) {
			addr, err := callAddr(ctx, client)
			return addr == pod.addr, err
		})
	})
}
