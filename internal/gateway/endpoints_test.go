package gateway

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

func TestBackendsFromEndpoints(t *testing.T) {
	ep := func(id, addr string, port int, state mesh.TaskState, h mesh.HealthStatus, draining bool) *mesh.Endpoint {
		return &mesh.Endpoint{ID: id, Address: addr, Port: port, State: state, Health: h, Draining: draining}
	}
	got := BackendsFromEndpoints([]*mesh.Endpoint{
		ep("c-2", "127.0.0.3", 8080, mesh.TaskRunning, mesh.HealthHealthy, false),
		ep("c-1", "127.0.0.2", 8080, mesh.TaskRunning, mesh.HealthHealthy, false),
		ep("c-3", "127.0.0.4", 8080, mesh.TaskRunning, mesh.HealthUnhealthy, false),
		ep("c-4", "127.0.0.5", 8080, mesh.TaskStopping, mesh.HealthHealthy, true),
		ep("c-5", "127.0.0.6", 8080, mesh.TaskPending, mesh.HealthUnknown, false),
		nil,
	})
	want := []Backend{{ID: "c-1", Addr: "127.0.0.2:8080"}, {ID: "c-2", Addr: "127.0.0.3:8080"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BackendsFromEndpoints mismatch (-want +got):\n%s", diff)
	}
}
