package controlplane_test

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestApplyGetListDelete applies the built-in stack and walks it through
// Get, List, a second Apply and Delete.
func TestApplyGetListDelete(t *testing.T) {
	ctx := testContext(t, testTimeout)
	cp := startCP(t, "")
	c := cp.client

	stackRes := echoStack(t, true)
	resp, applied, err := c.Apply(ctx, "echo.yaml", stackRes, false)
	if err != nil {
		t.Fatalf("Apply(echo stack): %v", err)
	}
	if got, want := len(applied), len(stackRes); got != want {
		t.Fatalf("Apply returned %d resources, want %d", got, want)
	}
	for i, r := range resp.Results {
		if r != "created" {
			t.Errorf("Apply result %d (%s) = %q, want created", i, applied[i].Ref(), r)
		}
	}
	if resp.Revision == 0 {
		t.Errorf("Apply revision = 0, want > 0")
	}

	t.Run("get", func(t *testing.T) {
		for _, want := range applied {
			// Get without a mesh finds the only one that has the name.
			got, err := c.Get(ctx, mesh.Ref{Kind: want.Kind, Name: want.Metadata.Name})
			if err != nil {
				t.Errorf("Get(%s): %v", want.Ref(), err)
				continue
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Get(%s) differs from what Apply returned (-want +got):\n%s", want.Ref(), diff)
			}
			if got.Metadata.ResourceVersion == "" {
				t.Errorf("Get(%s).resourceVersion is empty, want the store revision", want.Ref())
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		wantCount := map[mesh.Kind]int{}
		for _, r := range stackRes {
			wantCount[r.Kind]++
		}
		for _, k := range mesh.Kinds {
			for _, meshName := range []string{"", "echo"} {
				rs, err := c.List(ctx, k, meshName)
				if err != nil {
					t.Fatalf("List(%s, %q): %v", k, meshName, err)
				}
				// List(Mesh, "echo") is the echo mesh itself.
				want := wantCount[k]
				if len(rs) != want {
					t.Errorf("List(%s, %q) = %d resources, want %d", k, meshName, len(rs), want)
				}
			}
		}
		if rs, err := c.List(ctx, mesh.KindRoute, "other"); err != nil || len(rs) != 0 {
			t.Errorf("List(Route, other) = %d resources, %v; want 0, nil", len(rs), err)
		}
	})

	t.Run("reapply is unchanged", func(t *testing.T) {
		resp2, _, err := c.Apply(ctx, "echo.yaml", echoStack(t, true), false)
		if err != nil {
			t.Fatalf("second Apply: %v", err)
		}
		for i, r := range resp2.Results {
			if r != "unchanged" {
				t.Errorf("second Apply result %d = %q, want unchanged", i, r)
			}
		}
	})

	t.Run("update is configured", func(t *testing.T) {
		svc := decodeOne(t, `
apiVersion: gmesh.dev/v1
kind: Service
metadata: {name: echo-client, mesh: echo}
spec:
  virtualNode: echo-client-0-1
  program: {package: ./cmd/echo-client}
  version: "0.1"
  desiredCount: 3
  port: 8080
`)
		resp, out, err := c.Apply(ctx, "svc.yaml", []*mesh.Resource{svc}, false)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got := resp.Results; !slices.Equal(got, []string{"configured"}) {
			t.Errorf("Apply results = %q, want [configured]", got)
		}
		if got := out[0].Service().DesiredCount; got != 3 {
			t.Errorf("desiredCount after update = %d, want 3", got)
		}
	})

	t.Run("delete", func(t *testing.T) {
		for _, ref := range []mesh.Ref{
			{Kind: mesh.KindService, Mesh: "echo", Name: "echo-client"},
			{Kind: mesh.KindGatewayRoute, Name: "echo-gateway-route"}, // mesh found by name
		} {
			if err := c.Delete(ctx, ref, ""); err != nil {
				t.Fatalf("Delete(%s): %v", ref, err)
			}
			_, err := c.Get(ctx, mesh.Ref{Kind: ref.Kind, Mesh: "echo", Name: ref.Name})
			if !mesh.IsNotFound(err) {
				t.Errorf("Get(%s) after Delete: got error %v (code %q), want not_found", ref, err, mesh.ErrorCode(err))
			}
		}
		err := c.Delete(ctx, mesh.Ref{Kind: mesh.KindService, Mesh: "echo", Name: "echo-client"}, "")
		if !mesh.IsNotFound(err) {
			t.Errorf("second Delete: got %v (code %q), want not_found", err, mesh.ErrorCode(err))
		}
	})
}

// TestApplyErrors checks that a batch with any bad document stores
// nothing, and that the error names the source, the document and the
// field.
func TestApplyErrors(t *testing.T) {
	ctx := testContext(t, testTimeout)
	cp := startCP(t, "")
	c := cp.client
	if _, _, err := c.Apply(ctx, "echo.yaml", echoStack(t, false), false); err != nil {
		t.Fatalf("Apply(echo stack): %v", err)
	}
	base := cp.Store().Revision()

	newNode := `
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: echo-server-1-0, mesh: echo}
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
  serviceDiscovery:
    registry:
      serviceName: echo-server
      attributes: [{key: version, value: "1.0"}]
`
	routeTo := func(node string, weight int) string {
		return `
apiVersion: gmesh.dev/v1
kind: Route
metadata: {name: echo-server-route, mesh: echo}
spec:
  virtualRouterName: echo-server
  grpcRoute:
    match: {serviceName: proto.echo.EchoService}
    action:
      weightedTargets:
        - {virtualNode: echo-server-0-9, weight: ` + itoa(100-weight) + `}
        - {virtualNode: ` + node + `, weight: ` + itoa(weight) + `}
`
	}
	tests := []struct {
		name string
		// docs are applied as one batch from source "batch.yaml".
		docs     []string
		wantCode codes.Code
		// wantInErr must all appear in the error message.
		wantInErr []string
	}{
		{
			name:      "route to a missing node",
			docs:      []string{newNode, routeTo("echo-server-2-0", 50)},
			wantCode:  codes.InvalidArgument,
			wantInErr: []string{"batch.yaml", "document 2", "spec.grpcRoute.action.weightedTargets[1].virtualNode", "echo-server-2-0"},
		},
		{
			name:      "weight over 100",
			docs:      []string{newNode, strings.Replace(routeTo("echo-server-1-0", 50), "weight: 50}\n        - {virtualNode: echo-server-1-0, weight: 50", "weight: 150}\n        - {virtualNode: echo-server-1-0, weight: 50", 1)},
			wantCode:  codes.InvalidArgument,
			wantInErr: []string{"batch.yaml", "document 2", "spec.grpcRoute.action.weightedTargets[0].weight"},
		},
		{
			name: "virtual service without provider",
			docs: []string{newNode, `
apiVersion: gmesh.dev/v1
kind: VirtualService
metadata: {name: other.echo.local, mesh: echo}
spec: {}
`},
			wantCode:  codes.InvalidArgument,
			wantInErr: []string{"batch.yaml", "document 2", "spec.provider"},
		},
		{
			name:      "rollout is refused",
			docs:      []string{newNode, `{"apiVersion":"gmesh.dev/v1","kind":"Rollout","metadata":{"name":"echo-server","mesh":"echo"},"spec":{}}`},
			wantCode:  codes.InvalidArgument,
			wantInErr: []string{"batch.yaml", "document 2", "kind", "gmesh deploy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &meshv1.ApplyRequest{Source: "batch.yaml"}
			for i, d := range tt.docs {
				var b []byte
				if strings.HasPrefix(strings.TrimSpace(d), "{") {
					b = []byte(d) // raw JSON, not decoded here
				} else {
					r := decodeOne(t, d)
					var err error
					if b, err = json.Marshal(r); err != nil {
						t.Fatalf("encode doc %d: %v", i+1, err)
					}
				}
				req.Resources = append(req.Resources, &meshv1.Resource{Json: b})
			}
			_, err := c.API().Apply(ctx, req)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Apply: got code %v (%v), want %v", got, err, tt.wantCode)
			}
			msg := status.Convert(err).Message()
			for _, w := range tt.wantInErr {
				if !strings.Contains(msg, w) {
					t.Errorf("Apply error %q does not name %q", msg, w)
				}
			}
			if got := cp.Store().Revision(); got != base {
				t.Errorf("store revision after a failed Apply = %d, want %d (nothing stored)", got, base)
			}
			if _, err := c.Get(ctx, mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: "echo", Name: "echo-server-1-0"}); !mesh.IsNotFound(err) {
				t.Errorf("Get(the batch's valid node) = %v, want not_found: the batch must be all or nothing", err)
			}
		})
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestConflictsAndInUse checks optimistic concurrency and delete
// preconditions.
func TestConflictsAndInUse(t *testing.T) {
	ctx := testContext(t, testTimeout)
	cp := startCP(t, "")
	c := cp.client
	if _, _, err := c.Apply(ctx, "echo.yaml", echoStack(t, false), false); err != nil {
		t.Fatalf("Apply(echo stack): %v", err)
	}
	routeRef := mesh.Ref{Kind: mesh.KindRoute, Mesh: "echo", Name: "echo-server-route"}
	stale, err := c.Get(ctx, routeRef)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}

	// Someone else updates the route.
	fresh := stale.Clone()
	fresh.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 90
	if _, _, err := c.Apply(ctx, "a.yaml", []*mesh.Resource{fresh}, false); err != nil {
		t.Fatalf("Apply(fresh): %v", err)
	}

	t.Run("stale apply", func(t *testing.T) {
		mine := stale.Clone()
		mine.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 80
		b, _ := json.Marshal(mine)
		_, err := c.API().Apply(ctx, &meshv1.ApplyRequest{Source: "b.yaml", Resources: []*meshv1.Resource{{Json: b}}})
		if got := status.Code(err); got != codes.Aborted {
			t.Errorf("raw Apply with a stale resourceVersion: got code %v (%v), want Aborted", got, err)
		}
		_, _, err = c.Apply(ctx, "b.yaml", []*mesh.Resource{mine}, false)
		if !mesh.IsConflict(err) {
			t.Errorf("client Apply with a stale resourceVersion: got %v (code %q), want conflict", err, mesh.ErrorCode(err))
		}
		got, err := c.Get(ctx, routeRef)
		if err != nil {
			t.Fatal(err)
		}
		if w := got.Route().GRPCRoute.Action.WeightedTargets[0].Weight; w != 90 {
			t.Errorf("weight after the refused update = %d, want 90 (the winner's)", w)
		}
	})

	t.Run("stale delete", func(t *testing.T) {
		err := c.Delete(ctx, routeRef, stale.Metadata.ResourceVersion)
		if !mesh.IsConflict(err) {
			t.Errorf("Delete with a stale resourceVersion: got %v (code %q), want conflict", err, mesh.ErrorCode(err))
		}
	})

	t.Run("delete a targeted node", func(t *testing.T) {
		ref := mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: "echo", Name: "echo-server-0-9"}
		_, err := c.API().Delete(ctx, &meshv1.DeleteRequest{Kind: "vn", Mesh: "echo", Name: ref.Name})
		if got := status.Code(err); got != codes.FailedPrecondition {
			t.Fatalf("Delete(targeted node): got code %v (%v), want FailedPrecondition", got, err)
		}
		msg := status.Convert(err).Message()
		for _, w := range []string{"echo-server-0-9", "route", "echo-server-route"} {
			if !strings.Contains(msg, w) {
				t.Errorf("Delete error %q does not name %q", msg, w)
			}
		}
		if err := c.Delete(ctx, ref, ""); mesh.ErrorCode(err) != mesh.EInUse {
			t.Errorf("client Delete(targeted node): got %v (code %q), want in_use", err, mesh.ErrorCode(err))
		}
		if _, err := c.Get(ctx, ref); err != nil {
			t.Errorf("Get(node) after the refused delete: %v, want it still there", err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			call func() error
			want codes.Code
		}{
			{"unknown kind", func() error {
				_, err := c.API().Get(ctx, &meshv1.GetRequest{Kind: "widget", Name: "x"})
				return err
			}, codes.InvalidArgument},
			{"no name", func() error {
				_, err := c.API().Get(ctx, &meshv1.GetRequest{Kind: "route"})
				return err
			}, codes.InvalidArgument},
			{"missing", func() error {
				_, err := c.API().Get(ctx, &meshv1.GetRequest{Kind: "routes", Mesh: "echo", Name: "nope"})
				return err
			}, codes.NotFound},
			{"delete a rollout", func() error {
				_, err := c.API().Delete(ctx, &meshv1.DeleteRequest{Kind: "rollout", Mesh: "echo", Name: "echo-server"})
				return err
			}, codes.InvalidArgument},
			{"WaitACK bad version", func() error {
				_, err := c.API().WaitACK(ctx, &meshv1.WaitACKRequest{Version: "latest"})
				return err
			}, codes.InvalidArgument},
		} {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("%s: got code %v, want %v", tt.name, got, tt.want)
			}
		}
	})
}

// TestWatch checks that Watch sends the state, then SYNCED, then changes.
func TestWatch(t *testing.T) {
	ctx := testContext(t, testTimeout)
	cp := startCP(t, "")
	c := cp.client
	if _, _, err := c.Apply(ctx, "echo.yaml", echoStack(t, false), false); err != nil {
		t.Fatalf("Apply(echo stack): %v", err)
	}
	nodes := 0
	for _, r := range echoStack(t, false) {
		if r.Kind == mesh.KindVirtualNode {
			nodes++
		}
	}

	for _, tt := range []struct {
		kind     string
		wantPuts int
	}{
		{"", len(echoStack(t, false))},
		{"vn", nodes},
	} {
		t.Run("kind="+tt.kind, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			rev := cp.Store().Revision()
			stream, err := c.API().Watch(wctx, &meshv1.WatchRequest{Kind: tt.kind})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			recv := func() *meshv1.WatchEvent {
				t.Helper()
				ev, err := stream.Recv()
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				return ev
			}
			puts := 0
			for ev := recv(); ev.Type != "SYNCED"; ev = recv() {
				if ev.Type != "PUT" {
					t.Fatalf("event before SYNCED has type %q, want PUT", ev.Type)
				}
				if ev.Revision != rev {
					t.Errorf("initial event revision = %d, want %d", ev.Revision, rev)
				}
				puts++
				if puts > 1000 {
					t.Fatal("no SYNCED after 1000 events")
				}
			}
			if puts != tt.wantPuts {
				t.Errorf("initial PUT events = %d, want %d", puts, tt.wantPuts)
			}

			// A change to a node arrives as one PUT; a delete as a DELETE.
			node := decodeOne(t, `
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata: {name: spare, mesh: echo}
spec:
  listeners: [{portMapping: {port: 9000, protocol: grpc}}]
`)
			// A route change first: filtered out when watching nodes only.
			route, err := c.Get(ctx, mesh.Ref{Kind: mesh.KindRoute, Mesh: "echo", Name: "echo-server-route"})
			if err != nil {
				t.Fatal(err)
			}
			route.Metadata.ResourceVersion = ""
			route.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 99
			if _, _, err := c.Apply(ctx, "r.yaml", []*mesh.Resource{route}, false); err != nil {
				t.Fatalf("Apply(route): %v", err)
			}
			if tt.kind == "" {
				ev := recv()
				if ev.Type != "PUT" || !strings.Contains(string(ev.Resource.GetJson()), `"echo-server-route"`) {
					t.Errorf("event after a route update = %s %s, want PUT of the route", ev.Type, ev.Resource.GetJson())
				}
			}
			ar, _, err := c.Apply(ctx, "n.yaml", []*mesh.Resource{node}, false)
			if err != nil {
				t.Fatalf("Apply(node): %v", err)
			}
			ev := recv()
			if ev.Type != "PUT" || ev.Revision != ar.Revision || !strings.Contains(string(ev.Resource.GetJson()), node.Metadata.Name) {
				t.Errorf("event after a node apply = %s rev %d %s, want PUT rev %d of %s", ev.Type, ev.Revision, ev.Resource.GetJson(), ar.Revision, node.Metadata.Name)
			}
			if err := c.Delete(ctx, node.Ref(), ""); err != nil {
				t.Fatalf("Delete(node): %v", err)
			}
			ev = recv()
			if ev.Type != "DELETE" || !strings.Contains(string(ev.Resource.GetJson()), node.Metadata.Name) {
				t.Errorf("event after a node delete = %s %s, want DELETE of %s", ev.Type, ev.Resource.GetJson(), node.Metadata.Name)
			}
			cancel()
			for range 100 {
				if _, err := stream.Recv(); err != nil {
					if err != io.EOF && status.Code(err) != codes.Canceled {
						t.Errorf("Recv after cancel: %v, want EOF or Canceled", err)
					}
					return
				}
			}
			t.Error("stream still open after cancel")
		})
	}
}
