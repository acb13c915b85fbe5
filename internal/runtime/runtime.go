// Package runtime names the contract between gmesh's control plane and
// whatever runs a mesh's tasks: the control plane says which task sets
// should run (TaskRunner), and the runtime reports every task it runs as a
// mesh.Endpoint (Registrar), from which the registry checks health and xDS
// serves EDS. This package holds only the contract; the implementations live
// elsewhere.
//
// # What a runtime must do
//
//   - Converge on the desired task sets it is given (TaskRunner.Apply): run
//     DesiredCount tasks of each set, replace a task whose set's command,
//     environment, port or version changed, and stop the tasks of sets that
//     are gone or Draining and those beyond DesiredCount.
//   - Report each task as an endpoint with a stable ID, the task's Mesh,
//     Service, Address and Port, the mesh.AttrVersion and mesh.AttrTaskSet
//     attributes, its MetricsAddr if it has one, and its State as it moves
//     PENDING, RUNNING, STOPPING, STOPPED. Health is the control plane's: a
//     runtime reports UNKNOWN and the registry keeps the health its checks
//     found (a new process, a new address or port start it over).
//   - Drain before stop: a task that is going away is first reported
//     STOPPING with Draining set, so it leaves EDS, and stays up for a drain
//     delay before its process is asked to stop; once it is gone for good it
//     is deregistered.
//   - Never hold the tasks up on the control plane: reports are retried in
//     the background while the control plane is down, and only a task's
//     latest state matters.
//   - Keep what only it knows in its own part of the endpoint: the local
//     runtime fills Endpoint.Process (pid, restarts, last exit, next
//     restart); any other runtime leaves it nil.
//
// # The two runtimes
//
// Locally (`gmesh up`), internal/runtime/local's Supervisor is the runtime:
// it implements Runtime, runs each task as a supervised OS process, and
// reports through the control plane's admin API client (a Registrar).
//
// On Kubernetes no Go type implements these interfaces: the kubelet runs
// the pods (of Deployments the user owns), and the control plane's Source
// (internal/k8s/controller) reports the pods with an IP a VirtualNode's
// podSelector selects as endpoints, through appmesh.Convert and
// Results.Endpoints, Process nil: a Ready pod State RUNNING, Health HEALTHY
// (the kubelet's readiness probe is the check); a pod not Ready yet RUNNING,
// UNKNOWN (listening, so it gets its server Listener in a mesh with TLS on,
// but not serving); a pod being deleted STOPPING and Draining. Drain before
// stop is the pod's: a pod that stops being Ready or gets a
// deletionTimestamp leaves EDS at once, while its preStop hook or drain
// delay keeps it serving. docs/runtime.md describes both sides.
package runtime

import (
	"context"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TaskRunner runs the tasks of a mesh's task sets.
type TaskRunner interface {
	// Apply sets the desired task sets: every resource of kind TaskSet
	// with a *mesh.TaskSetSpec, the whole desired state each time (a set
	// that is absent is to stop). It returns at once and converges in the
	// background; calling it again with the same sets changes nothing.
	Apply(sets []*mesh.Resource)
}

// Runtime is a TaskRunner that can also be stopped: what `gmesh up` runs
// its tasks with.
type Runtime interface {
	TaskRunner
	// Shutdown stops every task, draining each first, waits for them and
	// delivers their deregistrations while ctx allows. When ctx ends first,
	// the remaining tasks are killed; none is left when it returns.
	Shutdown(ctx context.Context) error
}

// Registrar is how a runtime reports its tasks to the control plane's
// registry; the admin API client (internal/controlplane.Client) implements
// it. Calls fail while the control plane is down; the runtime retries.
type Registrar interface {
	// Register reports ep, the whole latest state of task ep.ID.
	Register(ctx context.Context, ep *mesh.Endpoint) error
	// Deregister removes task id, gone for good.
	Deregister(ctx context.Context, id string) error
}
