package controlplane_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// TestRestart stops a control plane on a bolt store and starts another on
// the same file and address: the resources and the registered endpoints
// (with their health) are still there, and a connected xDS client re-syncs
// and keeps getting replies.
func TestRestart(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	path := filepath.Join(t.TempDir(), "state.db")

	cp1 := startCP(t, path)
	addr := cp1.Addr()
	rs := echoStack(t, true)
	for i, r := range rs {
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-0-9" {
			rs[i] = fastNode(t, "echo-server-0-9", "0.9")
		}
	}
	if _, _, err := cp1.client.Apply(ctx, "stack.yaml", rs, false); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	task := startEchoTask(t, "127.0.0.5", "0.9")
	if err := cp1.client.Register(ctx, task.endpoint("task-a")); err != nil {
		t.Fatalf("Register: %v", err)
	}
	waitHealth(ctx, t, cp1.client, "task-a", mesh.HealthHealthy)
	before, err := cp1.client.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}

	const nodeID = "restart-client"
	client := dialXDS(t, addr, nodeID)
	want := task.ip + " 0.9"
	if who, err := said(ctx, client); err != nil || who != want {
		t.Fatalf("call before the restart: got %q, %v; want %q", who, err, want)
	}

	stopped := time.Now()
	if err := cp1.stop(); err != nil {
		t.Fatalf("stop the first control plane: %v", err)
	}
	// Run ends the ADS streams instead of waiting out GracefulStop's 5s.
	if d := time.Since(stopped); d > 4*time.Second {
		t.Errorf("stopping a control plane with a connected xDS client took %v, want well under the 5s hard-stop timeout", d.Round(time.Millisecond))
	}

	// The client keeps its last config while the control plane is away.
	if who, err := said(ctx, client); err != nil || who != want {
		t.Errorf("call with the control plane down: got %q, %v; want %q", who, err, want)
	}

	cp2 := startCPAt(t, path, addr)
	c := cp2.client

	t.Run("resources", func(t *testing.T) {
		for _, r := range before.Routes {
			got, err := c.Get(ctx, r.Ref())
			if err != nil {
				t.Errorf("Get(%s) after restart: %v", r.Ref(), err)
				continue
			}
			if diff := cmp.Diff(r, got); diff != "" {
				t.Errorf("Get(%s) after restart differs (-before +after):\n%s", r.Ref(), diff)
			}
		}
		for _, k := range mesh.Kinds {
			got, err := c.List(ctx, k, "")
			if err != nil {
				t.Fatalf("List(%s): %v", k, err)
			}
			wantN := 0
			for _, r := range rs {
				if r.Kind == k {
					wantN++
				}
			}
			if len(got) != wantN {
				t.Errorf("List(%s) after restart = %d resources, want %d", k, len(got), wantN)
			}
		}
		if got := cp2.Store().Revision(); got != before.Revision {
			t.Errorf("store revision after restart = %d, want %d", got, before.Revision)
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		eps, err := c.Endpoints(ctx, "echo", "")
		if err != nil {
			t.Fatalf("Endpoints: %v", err)
		}
		if len(eps) != 1 || eps[0].ID != "task-a" {
			t.Fatalf("endpoints after restart = %+v, want task-a only", eps)
		}
		// Restore keeps the persisted health: EDS is never empty.
		if eps[0].Health != mesh.HealthHealthy {
			t.Errorf("task-a health right after restart = %s, want HEALTHY", eps[0].Health)
		}
	})

	t.Run("client re-syncs", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rev := cp2.Store().Revision()
		if _, err := c.API().WaitACK(wctx, &meshv1.WaitACKRequest{Version: itoa(int(rev))}); err != nil {
			t.Fatalf("WaitACK(%d) after restart: %v", rev, err)
		}
		pollUntil(wctx, t, "client "+nodeID+" ACKs the new control plane's versions", func() (bool, error) {
			st, err := c.Status(wctx)
			if err != nil {
				return false, err
			}
			for _, cl := range st.Clients {
				if cl.NodeID != nodeID {
					continue
				}
				for _, typ := range xds.TypeURLs {
					if cl.Types[typ].ACKedVersion != st.PublishedVersions[typ] {
						return false, nil
					}
				}
				return true, nil
			}
			return false, nil
		})
		for i := range 20 {
			if who, err := said(ctx, client); err != nil || who != want {
				t.Fatalf("call %d after the restart: got %q, %v; want %q", i+1, who, err, want)
			}
		}
	})
}
