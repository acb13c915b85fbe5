package rolloutctl

import (
	"net"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/rollout"
)

// MetricsPortName is the name of the container port a pod serves
// Prometheus /metrics on; the analysis scrapes it.
const MetricsPortName = "metrics"

// Endpoints lists the pods of Deployments as the engine's endpoints: a
// task set is a Deployment, a task one of the pods its selector selects.
type Endpoints struct {
	deps appslisters.DeploymentLister
	pods corelisters.PodLister
}

var (
	_ rollout.Endpoints       = (*Endpoints)(nil)
	_ analysis.EndpointLister = (*Endpoints)(nil)
)

// NewEndpoints lists the pods of pods (the Source's slim pods will do)
// for the Deployments of deps.
func NewEndpoints(deps appslisters.DeploymentLister, pods corelisters.PodLister) *Endpoints {
	return &Endpoints{deps: deps, pods: pods}
}

// List returns the pods of every Deployment of the namespace meshName
// (the engine and the scraper pick a task set's by
// Attributes[mesh.AttrTaskSet], the Deployment's name), each with its
// version label: RUNNING while the pod runs (STOPPING once it is being
// deleted, STOPPED when it ended, PENDING before), HEALTHY when it is
// Ready and serving (controller.Serving: in EDS), its address the pod IP
// on the port of its first container, MetricsAddr the pod IP on the
// container port named "metrics" of the Deployment's pod template.
func (e *Endpoints) List(meshName, service string) []*mesh.Endpoint {
	deps, err := e.deps.Deployments(meshName).List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*mesh.Endpoint
	for _, d := range deps {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() {
			continue
		}
		pods, err := e.pods.Pods(meshName).List(sel)
		if err != nil {
			continue
		}
		port, metrics := ports(d)
		for _, p := range pods {
			out = append(out, endpoint(meshName, service, d.Name, p, port, metrics))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ports returns the first container port of d's pod template and the one
// named "metrics" (0 when none).
func ports(d *appsv1.Deployment) (port, metrics int) {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if port == 0 {
				port = int(p.ContainerPort)
			}
			if p.Name == MetricsPortName && metrics == 0 {
				metrics = int(p.ContainerPort)
			}
		}
	}
	return port, metrics
}

func endpoint(ns, service, taskSet string, p *corev1.Pod, port, metrics int) *mesh.Endpoint {
	ep := &mesh.Endpoint{
		ID: p.Name, Mesh: ns, Service: service, Address: p.Status.PodIP, Port: port,
		Attributes: map[string]string{mesh.AttrTaskSet: taskSet, mesh.AttrVersion: p.Labels[rollouts.VersionLabel]},
		Health:     mesh.HealthUnknown,
	}
	switch {
	case p.DeletionTimestamp != nil:
		ep.State, ep.Draining = mesh.TaskStopping, true
	case p.Status.Phase == corev1.PodRunning:
		ep.State = mesh.TaskRunning
	case p.Status.Phase == corev1.PodSucceeded, p.Status.Phase == corev1.PodFailed:
		ep.State = mesh.TaskStopped
	default:
		ep.State = mesh.TaskPending
	}
	if ep.State == mesh.TaskRunning {
		ep.Health = mesh.HealthUnhealthy
		if controller.Serving(p) {
			ep.Health = mesh.HealthHealthy
		}
	}
	if metrics > 0 && p.Status.PodIP != "" {
		ep.MetricsAddr = net.JoinHostPort(p.Status.PodIP, strconv.Itoa(metrics))
	}
	return ep
}

var everything = labels.Everything()
