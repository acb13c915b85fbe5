// Package rolloutctl is the Kubernetes runtime of gmesh's rollout engine
// (internal/rollout): a Rollout object (rollouts.gmesh.dev) is carried out
// by the same engine as `gmesh deploy` on one machine, over a Store that
// is a view of the cluster (Store), the pods of Deployments as endpoints
// (Endpoints), their /metrics scraped for the analysis, and the ACKs of
// the xDS clients as told by a RouterConvergence. Runtime drives it on
// the leader only (Runtime.Lead, for controller.StatusWriter's
// AlsoWhileLeading).
//
// The engine's kinds map to objects of the Rollout's namespace
// (docs/kubernetes-rollouts.md has the table):
//
//   - Mesh: a namespace that holds Rollouts (Ref.Mesh is the namespace).
//   - Rollout: the Rollout, presented as rollouts.Spec with mesh.Default,
//     the target it began with (status.target) and its revision, the
//     spec's controls applied (rollouts.ApplyControls); its status is
//     written through the status subresource with the resourceVersion.
//   - Route: one route of a VirtualRouter, named "ROUTER/ROUTE"; a Put
//     updates the router object (rollouts.SetRouteTargets) with its
//     resourceVersion and returns the router's new metadata.generation.
//   - VirtualNode: a VirtualNode; the engine creates one
//     (rollouts.NewVirtualNode from the rollout's stable node) and deletes
//     them.
//   - TaskSet: a Deployment; created by rollouts.NewDeployment from the
//     stable Deployment and the rollout's target, drained by scaling it to
//     0 (annotated gmesh.dev/draining), deleted.
//   - Service: the Rollout and its stable Deployment; the service's
//     virtual node follows from the Rollout's status, so its Put writes
//     nothing.
//
// Revisions: only a Route's Put returns a revision the engine waits on,
// the VirtualRouter's metadata.generation after the update (the current
// one when the update changed nothing). It is the API server's, so the
// same on every replica and across leaders: a revision an earlier leader
// recorded in the Rollout's status stays valid. Every other write returns
// 0: the engine waits on none of them (it waits for pods through
// Endpoints instead).
package rolloutctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/rollout"
)

// AnnotationDraining marks a Deployment the engine drained (scaled to 0):
// its task set reads as draining, not as a set whose user scaled it down.
const AnnotationDraining = "gmesh.dev/draining"

// Store is the engine's rollout.Store over informer caches of Rollouts,
// VirtualRouters, VirtualNodes and Deployments; writes go to the API
// server, one object each.
type Store struct {
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	rollouts cache.GenericLister
	routers  cache.GenericLister
	nodes    cache.GenericLister
	deps     appslisters.DeploymentLister
	now      func() time.Time
	// beginning is the view of Engine.Begin: a Rollout not begun reads as
	// one to begin (revision 0). In the view of the engine that reconciles
	// (the default) it does not exist: a Rollout whose target was edited
	// after its rollout ended, read in the middle of a pass, is not taken
	// for a rollout "not started by the rollout engine".
	beginning bool
	answers   *answers
}

// answers are the Rollouts as the last writes returned them: the engine's
// next write carries their resourceVersion, which the cache may not hold
// yet.
type answers struct {
	mu sync.Mutex
	m  map[string]*v1alpha1.Rollout
}

// forBegin returns the view of s for Engine.Begin.
func (s *Store) forBegin() *Store {
	c := *s
	c.beginning = true
	return &c
}

var _ rollout.Store = (*Store)(nil)

// ---- reads ----

func decode[T any](obj runtime.Object) (*T, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the cache", obj)
	}
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, fmt.Errorf("decode %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return &out, nil
}

// cached reads ns/name from lister; ENotFound names it as what.
func cached(lister cache.GenericLister, what, ns, name string) (runtime.Object, error) {
	obj, err := lister.ByNamespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, mesh.Errorf(mesh.ENotFound, "%s %s/%s not found", what, ns, name)
	}
	return obj, err
}

func (s *Store) rollout(ns, name string) (*v1alpha1.Rollout, error) {
	obj, err := cached(s.rollouts, "rollout", ns, name)
	if err != nil {
		return nil, err
	}
	return decode[v1alpha1.Rollout](obj)
}

// rolloutsIn lists the Rollouts of ns ("": every namespace), by name.
func (s *Store) rolloutsIn(ns string) ([]*v1alpha1.Rollout, error) {
	var objs []runtime.Object
	var err error
	if ns == "" {
		objs, err = s.rollouts.List(labels.Everything())
	} else {
		objs, err = s.rollouts.ByNamespace(ns).List(labels.Everything())
	}
	if err != nil {
		return nil, err
	}
	out := make([]*v1alpha1.Rollout, 0, len(objs))
	for _, o := range objs {
		ro, err := decode[v1alpha1.Rollout](o)
		if err != nil {
			continue
		}
		out = append(out, ro)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func (s *Store) router(ns, name string) (*v1beta2.VirtualRouter, *unstructured.Unstructured, error) {
	obj, err := cached(s.routers, "virtual router", ns, name)
	if err != nil {
		return nil, nil, err
	}
	vr, err := decode[v1beta2.VirtualRouter](obj)
	if err != nil {
		return nil, nil, err
	}
	return vr, obj.(*unstructured.Unstructured), nil
}

func (s *Store) node(ns, name string) (*v1beta2.VirtualNode, error) {
	obj, err := cached(s.nodes, "virtual node", ns, name)
	if err != nil {
		return nil, err
	}
	return decode[v1beta2.VirtualNode](obj)
}

func (s *Store) nodesIn(ns string) ([]*v1beta2.VirtualNode, error) {
	objs, err := s.nodes.ByNamespace(ns).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*v1beta2.VirtualNode
	for _, o := range objs {
		if vn, err := decode[v1beta2.VirtualNode](o); err == nil {
			out = append(out, vn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Store) deployment(ns, name string) (*appsv1.Deployment, error) {
	d, err := s.deps.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, mesh.Errorf(mesh.ENotFound, "deployment %s/%s not found", ns, name)
	}
	return d, err
}

// ---- the Rollout's target ----

type state int

const (
	notBegun state = iota // no rollout of the spec's target has begun
	running               // a rollout is unfinished (of the recorded target)
	ended                 // the rollout of the spec's target ended
)

// targetOf is the part of spec that says the new version.
func targetOf(spec *v1alpha1.RolloutSpec) *v1alpha1.RolloutTarget {
	t := &v1alpha1.RolloutTarget{Version: spec.Version, Images: slices.Clone(spec.Images)}
	if spec.TemplatePatch != nil {
		t.TemplatePatch = spec.TemplatePatch.DeepCopy()
	}
	if spec.Replicas != nil {
		n := *spec.Replicas
		t.Replicas = &n
	}
	return t
}

func sameTarget(a, b *v1alpha1.RolloutTarget) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func stateOf(ro *v1alpha1.Rollout) state {
	st := &ro.Status
	switch {
	case st.Phase == "":
		return notBegun
	case !mesh.Phase(st.Phase).Terminal():
		return running
	case st.Target != nil && sameTarget(st.Target, targetOf(&ro.Spec)) && !retried(ro):
		return ended
	}
	return notBegun
}

// retried reports whether the user asks again for a target whose rollout
// ended without taking over (aborted, rolled back or failed): the spec was
// changed since the status last described it (kubectl apply of the same
// manifest with the abort taken back, gmesh deploy of the same image), and
// abort is not set. An unchanged object stays ended, so re-applying the
// same manifest does not run a failed version again.
func retried(ro *v1alpha1.Rollout) bool {
	return ro.Status.Phase != string(mesh.PhaseSucceeded) && !ro.Spec.Abort && ro.Generation > ro.Status.ObservedGeneration
}

// withTarget returns ro with the target it carries out in its spec: the
// recorded one once begun, else the spec's own.
func withTarget(ro *v1alpha1.Rollout) *v1alpha1.Rollout {
	out := ro.DeepCopy()
	t := ro.Status.Target
	if stateOf(ro) == notBegun || t == nil {
		return out
	}
	out.Spec.Version = t.Version
	out.Spec.Images = slices.Clone(t.Images)
	out.Spec.TemplatePatch = nil
	if t.TemplatePatch != nil {
		out.Spec.TemplatePatch = t.TemplatePatch.DeepCopy()
	}
	out.Spec.Replicas = nil
	if t.Replicas != nil {
		n := *t.Replicas
		out.Spec.Replicas = &n
	}
	return out
}

// stableDeployment names the Deployment that runs the serving version of
// ro: while a rollout runs the one it started from, after a success the
// one it created, else spec.stableDeployment, else the one whose pods the
// route's only serving node selects (adoption).
func (s *Store) stableDeployment(ro *v1alpha1.Rollout) (string, error) {
	st := &ro.Status
	ph := mesh.Phase(st.Phase)
	switch {
	case st.Phase == "":
	case ph == mesh.PhaseSucceeded && st.NewTaskSet != "":
		return st.NewTaskSet, nil
	case st.OldTaskSet != "":
		return st.OldTaskSet, nil
	}
	if ro.Spec.StableDeployment != "" {
		return ro.Spec.StableDeployment, nil
	}
	vr, _, err := s.router(ro.Namespace, ro.Spec.VirtualRouterRef.Name)
	if err != nil {
		return "", err
	}
	route := ro.Spec.Route
	if route == "" {
		if len(vr.Spec.Routes) != 1 {
			return "", mesh.FieldError("spec.stableDeployment", "virtual router %s has %d routes: name the one to shift in spec.route, or the stable Deployment", vr.Name, len(vr.Spec.Routes))
		}
		route = vr.Spec.Routes[0].Name
	}
	ts, err := rollouts.RouteTargets(vr, route)
	if err != nil {
		return "", err
	}
	nodeName, err := rollouts.StableNode(route, ts)
	if err != nil {
		return "", err
	}
	node, err := s.node(ro.Namespace, nodeName)
	if err != nil {
		return "", err
	}
	deps, err := s.deps.Deployments(ro.Namespace).List(labels.Everything())
	if err != nil {
		return "", err
	}
	d, err := rollouts.AdoptDeployment(node, deps)
	if err != nil {
		return "", err
	}
	return d.Name, nil
}

// nodeOf names the VirtualNode of ns whose podSelector selects pods
// labelled lbls ("" if none): the most specific one when several do.
func (s *Store) nodeOf(ns string, lbls map[string]string) string {
	nodes, err := s.nodesIn(ns)
	if err != nil {
		return ""
	}
	best, bestN := "", -1
	for _, vn := range nodes {
		if vn.Spec.PodSelector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(lbls)) {
			continue
		}
		if n := len(vn.Spec.PodSelector.MatchLabels) + len(vn.Spec.PodSelector.MatchExpressions); n > bestN {
			best, bestN = vn.Name, n
		}
	}
	return best
}

// routeName is the engine's name of ro's route: "ROUTER/ROUTE", with the
// route of spec.route, else the router's only route; "" (the engine then
// looks for the one route that targets the stable node) when the router
// has several and the spec names none.
func (s *Store) routeName(ro *v1alpha1.Rollout) string {
	router := ro.Spec.VirtualRouterRef.Name
	if ro.Spec.Route != "" {
		return router + "/" + ro.Spec.Route
	}
	if vr, _, err := s.router(ro.Namespace, router); err == nil && len(vr.Spec.Routes) == 1 {
		return router + "/" + vr.Spec.Routes[0].Name
	}
	return ""
}

// SplitRoute splits the engine's route name into router and route.
func SplitRoute(name string) (router, route string, ok bool) {
	return strings.Cut(name, "/")
}

// desired is the new version's replicas: the target's, else the stable
// Deployment's.
func (s *Store) desired(ro *v1alpha1.Rollout) int {
	if r := withTarget(ro).Spec.Replicas; r != nil {
		return int(*r)
	}
	name, err := s.stableDeployment(ro)
	if err != nil {
		return 0
	}
	d, err := s.deployment(ro.Namespace, name)
	if err != nil || d.Annotations[AnnotationDraining] == "true" {
		return 0
	}
	return replicas(d)
}

func replicas(d *appsv1.Deployment) int {
	if d.Spec.Replicas == nil {
		return 1
	}
	return int(*d.Spec.Replicas)
}

// rolloutView is the engine's Rollout of ro.
func (s *Store) rolloutView(ro *v1alpha1.Rollout) (*mesh.Resource, error) {
	eff := withTarget(ro)
	spec, err := rollouts.Spec(eff)
	if err != nil {
		return nil, err
	}
	stt := stateOf(ro)
	if stt != notBegun {
		spec.Target.Revision = int(ro.Status.Revision)
	}
	spec.Route = s.routeName(ro)
	spec.Target.DesiredCount = s.desired(ro)
	r := &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindRollout,
		Metadata: mesh.Metadata{Name: ro.Name, Mesh: ro.Namespace, ResourceVersion: ro.ResourceVersion, Labels: ro.Labels},
		Spec:     spec,
	}
	mesh.Default(r)
	if ro.Status.Phase != "" {
		st := rollouts.Status(&ro.Status, ro.Name)
		if stt == running {
			rollouts.ApplyControls(&ro.Spec, ro.Generation != ro.Status.ObservedGeneration, ro.Name, st)
		}
		r.Status = st
	}
	return r, nil
}

func (s *Store) routeView(ns string, vr *v1beta2.VirtualRouter, route string) (*mesh.Resource, error) {
	ts, err := rollouts.RouteTargets(vr, route)
	if err != nil {
		return nil, err
	}
	return &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindRoute,
		Metadata: mesh.Metadata{Name: vr.Name + "/" + route, Mesh: ns, ResourceVersion: vr.ResourceVersion, Labels: vr.Labels},
		Spec: &mesh.RouteSpec{VirtualRouterName: vr.Name,
			GRPCRoute: &mesh.GRPCRoute{Action: mesh.RouteAction{WeightedTargets: ts}}},
	}, nil
}

func nodeView(vn *v1beta2.VirtualNode) *mesh.Resource {
	var attrs []mesh.Attribute
	if ps := vn.Spec.PodSelector; ps != nil {
		for k, v := range ps.MatchLabels {
			attrs = append(attrs, mesh.Attribute{Key: k, Value: v})
		}
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Key < attrs[j].Key })
	// The registry service is left empty: the engine then lists the
	// endpoints under the rollout's name, and Endpoints lists the pods of
	// every Deployment of the namespace.
	return &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindVirtualNode,
		Metadata: mesh.Metadata{Name: vn.Name, Mesh: vn.Namespace, ResourceVersion: vn.ResourceVersion, Labels: vn.Labels},
		Spec: &mesh.VirtualNodeSpec{ServiceDiscovery: &mesh.ServiceDiscovery{
			Registry: &mesh.RegistryDiscovery{Attributes: attrs}}},
	}
}

// stables maps each Deployment of ns that is a Rollout's stable one to
// that Rollout's name.
func (s *Store) stables(ns string) map[string]string {
	out := map[string]string{}
	ros, err := s.rolloutsIn(ns)
	if err != nil {
		return out
	}
	for _, ro := range ros {
		if name, err := s.stableDeployment(ro); err == nil {
			if _, ok := out[name]; !ok {
				out[name] = ro.Name
			}
		}
	}
	return out
}

func (s *Store) taskSetView(d *appsv1.Deployment, stables map[string]string) *mesh.Resource {
	svc := d.Labels[rollout.LabelService]
	if svc == "" {
		svc = stables[d.Name]
	}
	rev, _ := strconv.Atoi(d.Labels[rollout.LabelRevision])
	var images []string
	for _, c := range d.Spec.Template.Spec.Containers {
		images = append(images, c.Name+"="+c.Image)
	}
	return &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindTaskSet,
		Metadata: mesh.Metadata{Name: d.Name, Mesh: d.Namespace, ResourceVersion: d.ResourceVersion, Labels: d.Labels},
		Spec: &mesh.TaskSetSpec{
			Service: svc, VirtualNode: s.nodeOf(d.Namespace, d.Spec.Template.Labels),
			Version: d.Spec.Template.Labels[rollouts.VersionLabel], Revision: rev,
			Artifact: strings.Join(images, ","), DesiredCount: replicas(d),
			Draining: d.Annotations[AnnotationDraining] == "true",
		},
	}
}

// serviceView is the engine's Service of ro: its virtual node is the one
// serving now (from the status once a rollout began, else the node whose
// pods the stable Deployment runs).
func (s *Store) serviceView(ro *v1alpha1.Rollout) (*mesh.Resource, error) {
	st := &ro.Status
	name, err := s.stableDeployment(ro)
	if err != nil {
		return nil, err
	}
	node, count := "", 0
	if d, err := s.deployment(ro.Namespace, name); err == nil {
		node, count = s.nodeOf(ro.Namespace, d.Spec.Template.Labels), replicas(d)
	}
	if st.Phase != "" && st.OldVirtualNode != "" {
		node = st.OldVirtualNode
		if mesh.Phase(st.Phase) == mesh.PhaseSucceeded && st.NewVirtualNode != "" {
			node = st.NewVirtualNode
		}
	}
	if node == "" {
		return nil, mesh.Errorf(mesh.ENotFound, "no VirtualNode of namespace %s selects the pods of Deployment %s", ro.Namespace, name)
	}
	return &mesh.Resource{
		APIVersion: mesh.APIVersion, Kind: mesh.KindService,
		Metadata: mesh.Metadata{Name: ro.Name, Mesh: ro.Namespace, ResourceVersion: ro.ResourceVersion},
		Spec:     &mesh.ServiceSpec{VirtualNode: node, DesiredCount: max(count, 1)},
	}, nil
}

// Get reads one resource from the caches.
func (s *Store) Get(_ context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	ns := ref.Mesh
	switch ref.Kind {
	case mesh.KindMesh:
		ros, err := s.rolloutsIn(ref.Name)
		if err != nil {
			return nil, err
		}
		if len(ros) == 0 {
			return nil, mesh.Errorf(mesh.ENotFound, "no rollouts in namespace %s", ref.Name)
		}
		return meshView(ref.Name), nil
	case mesh.KindRollout:
		ro, err := s.rollout(ns, ref.Name)
		if err != nil {
			return nil, err
		}
		if !s.beginning && stateOf(ro) == notBegun {
			return nil, mesh.Errorf(mesh.ENotFound, "rollout %s/%s has not begun", ns, ref.Name)
		}
		return s.rolloutView(ro)
	case mesh.KindRoute:
		router, route, ok := SplitRoute(ref.Name)
		if !ok {
			return nil, mesh.Errorf(mesh.ENotFound, "route %s not found: routes are named ROUTER/ROUTE", ref.Name)
		}
		vr, _, err := s.router(ns, router)
		if err != nil {
			return nil, err
		}
		return s.routeView(ns, vr, route)
	case mesh.KindVirtualNode:
		vn, err := s.node(ns, ref.Name)
		if err != nil {
			return nil, err
		}
		return nodeView(vn), nil
	case mesh.KindTaskSet:
		d, err := s.deployment(ns, ref.Name)
		if err != nil {
			return nil, err
		}
		return s.taskSetView(d, s.stables(ns)), nil
	case mesh.KindService:
		ro, err := s.rollout(ns, ref.Name)
		if err != nil {
			return nil, mesh.Errorf(mesh.ENotFound, "service %s not found in namespace %s (no Rollout of that name)", ref.Name, ns)
		}
		return s.serviceView(ro)
	}
	return nil, mesh.Errorf(mesh.ENotFound, "%s not found: the Kubernetes rollout store has no %s", ref, ref.Kind)
}

func meshView(ns string) *mesh.Resource {
	return &mesh.Resource{APIVersion: mesh.APIVersion, Kind: mesh.KindMesh, Metadata: mesh.Metadata{Name: ns}, Spec: &mesh.MeshSpec{}}
}

// List lists the resources of kind in the namespace meshName. Rollouts
// not begun are listed in the view of Begin only (it counts their
// revisions and history).
func (s *Store) List(_ context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	var out []*mesh.Resource
	switch kind {
	case mesh.KindMesh:
		ros, err := s.rolloutsIn("")
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, ro := range ros {
			if !seen[ro.Namespace] {
				seen[ro.Namespace] = true
				out = append(out, meshView(ro.Namespace))
			}
		}
	case mesh.KindRollout, mesh.KindService:
		ros, err := s.rolloutsIn(meshName)
		if err != nil {
			return nil, err
		}
		for _, ro := range ros {
			var r *mesh.Resource
			if kind == mesh.KindRollout {
				if !s.beginning && stateOf(ro) == notBegun {
					continue
				}
				r, err = s.rolloutView(ro)
			} else {
				r, err = s.serviceView(ro)
			}
			if err == nil {
				out = append(out, r)
			}
		}
	case mesh.KindRoute:
		objs, err := s.routers.ByNamespace(meshName).List(labels.Everything())
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			vr, err := decode[v1beta2.VirtualRouter](o)
			if err != nil {
				continue
			}
			for _, rt := range vr.Spec.Routes {
				if r, err := s.routeView(meshName, vr, rt.Name); err == nil {
					out = append(out, r)
				}
			}
		}
	case mesh.KindVirtualNode:
		nodes, err := s.nodesIn(meshName)
		if err != nil {
			return nil, err
		}
		for _, vn := range nodes {
			out = append(out, nodeView(vn))
		}
	case mesh.KindTaskSet:
		deps, err := s.deps.Deployments(meshName).List(labels.Everything())
		if err != nil {
			return nil, err
		}
		stables := s.stables(meshName)
		for _, d := range deps {
			out = append(out, s.taskSetView(d, stables))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out, nil
}

// ---- writes ----

// apiError maps an API server error to the engine's codes.
func apiError(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return mesh.Errorf(mesh.EConflict, "%s: %s", what, apiMessage(err))
	case apierrors.IsNotFound(err):
		return mesh.Errorf(mesh.ENotFound, "%s: %s", what, apiMessage(err))
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return mesh.Errorf(mesh.EInvalid, "%s: %s", what, apiMessage(err))
	}
	var me *mesh.Error
	if errors.As(err, &me) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}

// Put writes one object: a Route (an update of its VirtualRouter), a new
// VirtualNode or Deployment, a Deployment's drain. Only a Route's Put
// returns a revision, the router's metadata.generation; the others 0.
func (s *Store) Put(ctx context.Context, r *mesh.Resource) (uint64, error) {
	switch r.Kind {
	case mesh.KindRoute:
		return s.putRoute(ctx, r)
	case mesh.KindVirtualNode:
		if r.Metadata.ResourceVersion != "" {
			return 0, mesh.Errorf(mesh.EInvalid, "virtual node %s: the rollout runtime creates and deletes VirtualNodes, it does not update them", r.Metadata.Name)
		}
		return 0, s.createNode(ctx, r)
	case mesh.KindTaskSet:
		if r.Metadata.ResourceVersion == "" {
			return 0, s.createDeployment(ctx, r)
		}
		return 0, s.updateDeployment(ctx, r)
	case mesh.KindService:
		// The service's node is the Rollout's status (serviceView): the
		// engine's write of it lands with the status.
		return 0, nil
	}
	return 0, mesh.Errorf(mesh.EInvalid, "%s %s: the Kubernetes rollout store does not write %ss", r.Kind, r.Metadata.Name, r.Kind)
}

var weightedTargetsOf = map[string]string{"grpcRoute": "", "httpRoute": "", "http2Route": "", "tcpRoute": ""}

func (s *Store) putRoute(ctx context.Context, r *mesh.Resource) (uint64, error) {
	ns := r.Metadata.Mesh
	routerName, route, ok := SplitRoute(r.Metadata.Name)
	if !ok {
		return 0, mesh.Errorf(mesh.ENotFound, "route %s not found: routes are named ROUTER/ROUTE", r.Metadata.Name)
	}
	what := fmt.Sprintf("update virtual router %s/%s (route %s)", ns, routerName, route)
	vr, u, err := s.router(ns, routerName)
	if err != nil {
		return 0, err
	}
	if rv := r.Metadata.ResourceVersion; rv == "" || rv != vr.ResourceVersion {
		return 0, mesh.Errorf(mesh.EConflict, "%s: read at resourceVersion %q, the cache holds %q", what, rv, vr.ResourceVersion)
	}
	spec := r.Route()
	if spec == nil || spec.Action() == nil {
		return 0, mesh.Errorf(mesh.EInvalid, "%s: no weighted targets", what)
	}
	next, err := rollouts.SetRouteTargets(vr, route, spec.Action().WeightedTargets)
	if err != nil {
		return 0, err
	}
	// Only the route's weightedTargets change: the rest of the object is
	// written back as read, fields gmesh does not model included.
	out := u.DeepCopy()
	routes, _, _ := unstructured.NestedSlice(out.Object, "spec", "routes")
	done := false
	for i, rt := range next.Spec.Routes {
		if rt.Name != route || i >= len(routes) {
			continue
		}
		m, ok := routes[i].(map[string]any)
		if !ok {
			break
		}
		for key := range weightedTargetsOf {
			if _, ok := m[key].(map[string]any); !ok {
				continue
			}
			var ts any
			switch {
			case rt.GRPCRoute != nil:
				ts = rt.GRPCRoute.Action.WeightedTargets
			case rt.HTTPRoute != nil:
				ts = rt.HTTPRoute.Action.WeightedTargets
			case rt.HTTP2Route != nil:
				ts = rt.HTTP2Route.Action.WeightedTargets
			case rt.TCPRoute != nil:
				ts = rt.TCPRoute.Action.WeightedTargets
			}
			b, err := json.Marshal(ts)
			if err != nil {
				return 0, err
			}
			var list []any
			if err := json.Unmarshal(b, &list); err != nil {
				return 0, err
			}
			if err := unstructured.SetNestedSlice(m, list, key, "action", "weightedTargets"); err != nil {
				return 0, err
			}
			done = true
		}
		routes[i] = m
	}
	if !done {
		return 0, mesh.Errorf(mesh.ENotFound, "%s: no route %s", what, route)
	}
	if err := unstructured.SetNestedSlice(out.Object, routes, "spec", "routes"); err != nil {
		return 0, err
	}
	out.SetResourceVersion(r.Metadata.ResourceVersion)
	upd, err := s.dyn.Resource(controller.GVRVirtualRouters).Namespace(ns).Update(ctx, out, metav1.UpdateOptions{})
	if err != nil {
		return 0, apiError(what, err)
	}
	gen := upd.GetGeneration()
	if gen <= 0 {
		return 0, fmt.Errorf("%s: the API server answered without a metadata.generation", what)
	}
	return uint64(gen), nil
}

func (s *Store) createNode(ctx context.Context, r *mesh.Resource) error {
	ns, name := r.Metadata.Mesh, r.Metadata.Name
	ro, err := s.rollout(ns, r.Metadata.Labels[rollout.LabelService])
	if err != nil {
		return fmt.Errorf("create virtual node %s: %w", name, err)
	}
	stableName := ro.Status.OldVirtualNode
	if stableName == "" {
		return mesh.Errorf(mesh.EConflict, "create virtual node %s: rollout %s has not recorded its stable node yet", name, ro.Name)
	}
	stable, err := s.node(ns, stableName)
	if err != nil {
		return err
	}
	version := withTarget(ro).Spec.Version
	if spec, ok := r.Spec.(*mesh.VirtualNodeSpec); ok {
		if sel := spec.ServiceDiscovery.Selector(); sel != nil {
			for _, a := range sel.Attributes {
				if a.Key == rollouts.VersionLabel {
					version = a.Value
				}
			}
		}
	}
	vn, err := rollouts.NewVirtualNode(stable, name, version, r.Metadata.Labels)
	if err != nil {
		return err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(vn)
	if err != nil {
		return err
	}
	_, err = s.dyn.Resource(controller.GVRVirtualNodes).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{})
	return apiError("create virtual node "+ns+"/"+name, err)
}

func (s *Store) createDeployment(ctx context.Context, r *mesh.Resource) error {
	ns, name := r.Metadata.Mesh, r.Metadata.Name
	ts, _ := r.Spec.(*mesh.TaskSetSpec)
	if ts == nil {
		return mesh.Errorf(mesh.EInvalid, "task set %s: spec is %T", name, r.Spec)
	}
	ro, err := s.rollout(ns, ts.Service)
	if err != nil {
		return fmt.Errorf("create deployment %s: %w", name, err)
	}
	stableName := ro.Status.OldTaskSet
	if stableName == "" {
		return mesh.Errorf(mesh.EConflict, "create deployment %s: rollout %s has not recorded its stable Deployment yet", name, ro.Name)
	}
	stable, err := s.deployment(ns, stableName)
	if err != nil {
		return err
	}
	d, err := rollouts.NewDeployment(stable, withTarget(ro), name, r.Metadata.Labels)
	if err != nil {
		return err
	}
	if ts.DesiredCount > 0 {
		n := int32(ts.DesiredCount)
		d.Spec.Replicas = &n
	}
	_, err = s.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	return apiError("create deployment "+ns+"/"+name, err)
}

// updateDeployment scales a task set's Deployment: to 0, annotated, when
// it drains; else to its desired count.
func (s *Store) updateDeployment(ctx context.Context, r *mesh.Resource) error {
	ns, name := r.Metadata.Mesh, r.Metadata.Name
	ts, _ := r.Spec.(*mesh.TaskSetSpec)
	if ts == nil {
		return mesh.Errorf(mesh.EInvalid, "task set %s: spec is %T", name, r.Spec)
	}
	cur, err := s.deployment(ns, name)
	if err != nil {
		return err
	}
	if cur.ResourceVersion != r.Metadata.ResourceVersion {
		return mesh.Errorf(mesh.EConflict, "update deployment %s/%s: read at resourceVersion %q, the cache holds %q", ns, name, r.Metadata.ResourceVersion, cur.ResourceVersion)
	}
	d := cur.DeepCopy()
	n := int32(ts.DesiredCount)
	if ts.Draining {
		n = 0
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[AnnotationDraining] = "true"
	} else {
		delete(d.Annotations, AnnotationDraining)
	}
	d.Spec.Replicas = &n
	_, err = s.kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
	return apiError("update deployment "+ns+"/"+name, err)
}

// Delete deletes a VirtualNode or a Deployment (its pods go by the
// garbage collector, each with its grace period).
func (s *Store) Delete(ctx context.Context, ref mesh.Ref) (uint64, error) {
	ns := ref.Mesh
	switch ref.Kind {
	case mesh.KindVirtualNode:
		err := s.dyn.Resource(controller.GVRVirtualNodes).Namespace(ns).Delete(ctx, ref.Name, metav1.DeleteOptions{})
		return 0, apiError("delete virtual node "+ns+"/"+ref.Name, err)
	case mesh.KindTaskSet:
		bg := metav1.DeletePropagationBackground
		err := s.kube.AppsV1().Deployments(ns).Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
		return 0, apiError("delete deployment "+ns+"/"+ref.Name, err)
	}
	return 0, mesh.Errorf(mesh.EInvalid, "%s: the Kubernetes rollout store does not delete %ss", ref, ref.Kind)
}

// objectAt returns the Rollout at resourceVersion rv (the cached one when
// rv is ""): from the cache, or the last write's answer. rv comes from one
// of them, and both only move forward: when neither holds it any more,
// the Rollout changed since, and a write at rv is a conflict.
func (s *Store) objectAt(ns, name, rv string) (*v1alpha1.Rollout, error) {
	ro, err := s.rollout(ns, name)
	if err == nil && (rv == "" || ro.ResourceVersion == rv) {
		return ro, nil
	}
	s.answers.mu.Lock()
	a := s.answers.m[ns+"/"+name]
	s.answers.mu.Unlock()
	if a != nil && a.ResourceVersion == rv {
		return a.DeepCopy(), nil
	}
	if err != nil {
		return nil, err
	}
	return nil, mesh.Errorf(mesh.EConflict, "rollout %s/%s was changed since resourceVersion %s", ns, name, rv)
}

// UpdateStatus writes a Rollout's status (the engine's, converted by
// rollouts.FromStatus) through the status subresource, with the
// resourceVersion rv. The status of a Rollout not begun yet (Begin's
// write) records the spec's target in status.target.
func (s *Store) UpdateStatus(ctx context.Context, ref mesh.Ref, status any, rv string) (*mesh.Resource, error) {
	st, ok := status.(*mesh.RolloutStatus)
	if ref.Kind != mesh.KindRollout || !ok {
		return nil, mesh.Errorf(mesh.EInvalid, "%s: only a Rollout's status is written, got %T", ref, status)
	}
	ro, err := s.objectAt(ref.Mesh, ref.Name, rv)
	if err != nil {
		return nil, err
	}
	out, err := s.writeStatus(ctx, ro, st)
	if err != nil {
		return nil, err
	}
	return s.rolloutView(out)
}

// writeStatus writes st as ro's status with ro's resourceVersion and
// returns the API server's answer.
func (s *Store) writeStatus(ctx context.Context, ro *v1alpha1.Rollout, st *mesh.RolloutStatus) (*v1alpha1.Rollout, error) {
	next := ro.DeepCopy()
	if stateOf(ro) == notBegun {
		next.Status.Target = targetOf(&ro.Spec)
	}
	steps := len(ro.Spec.Steps)
	if steps == 0 {
		steps = len(mesh.DefaultRolloutSteps)
	}
	rollouts.FromStatus(st, ro.Generation, steps, s.now(), &next.Status)
	s.recordTemplates(ro.Namespace, st, &next.Status)
	return s.updateStatus(ctx, next)
}

// recordTemplates gives each history entry that has none the pod template
// of the Deployment that runs its version (the rollout's old or new task
// set), so that `gmesh rollback` can deploy it again
// (rollouts.RollbackSpec). A Deployment already gone leaves its entry
// without one: a rollback to it is then refused, saying so.
func (s *Store) recordTemplates(ns string, st *mesh.RolloutStatus, out *v1alpha1.RolloutStatus) {
	for _, h := range out.History {
		if h.Template != nil {
			continue
		}
		var dep string
		switch h.Version {
		case st.NewVersion:
			dep = st.NewTaskSet
		case st.OldVersion:
			dep = st.OldTaskSet
		}
		if dep == "" {
			continue
		}
		d, err := s.deployment(ns, dep)
		if err != nil {
			continue
		}
		// The only error is a pod template that does not marshal to JSON,
		// which one read from the API server always does.
		_, _ = rollouts.SetRevisionTemplate(out, h.Revision, h.Version, &d.Spec.Template)
	}
}

func (s *Store) updateStatus(ctx context.Context, ro *v1alpha1.Rollout) (*v1alpha1.Rollout, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	u.SetKind("Rollout")
	ans, err := s.dyn.Resource(rollouts.GVR).Namespace(ro.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, apiError("update status of rollout "+ro.Namespace+"/"+ro.Name, err)
	}
	return s.remember(ans)
}

func (s *Store) remember(u *unstructured.Unstructured) (*v1alpha1.Rollout, error) {
	out, err := decode[v1alpha1.Rollout](u)
	if err != nil {
		return nil, err
	}
	s.answers.mu.Lock()
	s.answers.m[out.Namespace+"/"+out.Name] = out.DeepCopy()
	s.answers.mu.Unlock()
	return out, nil
}

// updateSpec writes ro (its spec) with its resourceVersion.
func (s *Store) updateSpec(ctx context.Context, ro *v1alpha1.Rollout) (*v1alpha1.Rollout, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	u.SetKind("Rollout")
	ans, err := s.dyn.Resource(rollouts.GVR).Namespace(ro.Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, apiError("update rollout "+ro.Namespace+"/"+ro.Name, err)
	}
	return s.remember(ans)
}
