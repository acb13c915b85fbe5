package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// RolloutReads is what the Rollout checks read besides the App Mesh
// objects: the stable Deployment and the other Rollouts of the namespace.
type RolloutReads interface {
	// Deployment returns a Deployment, or an error for which
	// apierrors.IsNotFound holds when there is none.
	Deployment(ctx context.Context, namespace, name string) (*appsv1.Deployment, error)
	// Rollouts returns the Rollouts of a namespace.
	Rollouts(ctx context.Context, namespace string) ([]v1alpha1.Rollout, error)
}

// APIReads reads them from the API server at admission time: a GET of the
// stable Deployment and a LIST of the namespace's Rollouts, only for a
// Rollout's create or a change of its target. Those are rare, and a
// Deployment informer would hold every Deployment of the cluster in every
// replica for them; a LIST also sees a Rollout created a moment ago,
// which a cache may not yet.
type APIReads struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
}

var _ RolloutReads = APIReads{}

// Deployment GETs the Deployment.
func (a APIReads) Deployment(ctx context.Context, namespace, name string) (*appsv1.Deployment, error) {
	return a.Kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
}

// Rollouts LISTs the namespace's Rollouts.
func (a APIReads) Rollouts(ctx context.Context, namespace string) ([]v1alpha1.Rollout, error) {
	l, err := a.Dynamic.Resource(rollouts.GVR).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]v1alpha1.Rollout, 0, len(l.Items))
	for i := range l.Items {
		var ro v1alpha1.Rollout
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(l.Items[i].Object, &ro); err != nil {
			return nil, fmt.Errorf("rollout %s/%s: %w", namespace, l.Items[i].GetName(), err)
		}
		out = append(out, ro)
	}
	return out, nil
}

// problem is one refusal of a Rollout: the fields it is about and why.
type problem struct {
	fields []string
	msg    string
	cause  metav1.CauseType
}

func (p problem) String() string { return strings.Join(p.fields, ", ") + ": " + p.msg }

// reviewRollout validates a Rollout's create or update:
//
//   - an update of a Rollout whose rollout has begun and not ended
//     (status.phase set and not terminal) that changes its target
//     (targetChanges) is refused: the engine carries out the target it
//     began with. The controls (paused, promote, abort), the other
//     options, the metadata and the status always pass;
//   - a create, or an update that changes the target of a Rollout whose
//     rollout ended or has not begun, is checked like a new rollout: the
//     VirtualRouter exists in the namespace (from the informers' caches,
//     with the settle wait), the route is one of its routes, the stable
//     Deployment exists and has the containers spec.images names (a GET),
//     and no other unfinished Rollout of the namespace shifts the same
//     route of the router (a LIST).
//
// Deletes are not validated.
func (v *Validator) reviewRollout(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
	default:
		return allow()
	}
	ro, err := decodeRollout(req.Object.Raw)
	if err != nil {
		return deny(400, metav1.StatusReasonBadRequest, "gmesh validator: decode Rollout: "+err.Error())
	}
	if ro.DeletionTimestamp != nil {
		return allow() // being deleted: its finalizers must be able to go
	}
	if ro.Namespace == "" {
		ro.Namespace = req.Namespace
	}
	if ro.Name == "" {
		ro.Name = req.Name
	}
	var problems []problem
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old, err := decodeRollout(req.OldObject.Raw)
		if err != nil {
			return deny(400, metav1.StatusReasonBadRequest, "gmesh validator: decode the old Rollout: "+err.Error())
		}
		changed := targetChanges(old, ro)
		if len(changed) == 0 {
			return allow()
		}
		if p, ok := inProgress(ro.Namespace, old, changed); ok {
			problems = append(problems, p)
		}
	}
	if len(problems) == 0 {
		if v.opts.Reads == nil {
			return allow("gmesh validator: Rollout " + ro.Namespace + "/" + ro.Name + " admitted unchecked: this control plane cannot read Deployments and Rollouts")
		}
		var resp *admissionv1.AdmissionResponse
		if problems, resp = v.checkRollout(ctx, ro); resp != nil {
			return resp
		}
	}
	if len(problems) == 0 {
		return allow()
	}
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.String()
	}
	msg := fmt.Sprintf("Rollout %q refused by gmesh: %s", ro.Namespace+"/"+ro.Name, strings.Join(parts, "; "))
	if v.opts.WarnOnly {
		v.log.Info("admitted despite refusals (warn only)", "rollout", ro.Namespace+"/"+ro.Name, "problems", msg)
		return allow(msg)
	}
	v.log.Info("refused", "rollout", ro.Namespace+"/"+ro.Name, "problems", msg)
	resp := deny(422, metav1.StatusReasonInvalid, msg)
	resp.Result.Details = &metav1.StatusDetails{Group: v1alpha1.GroupName, Kind: "Rollout", Name: ro.Name}
	for _, p := range problems {
		for _, f := range p.fields {
			resp.Result.Details.Causes = append(resp.Result.Details.Causes, metav1.StatusCause{Type: p.cause, Field: f, Message: p.msg})
		}
	}
	return resp
}

func decodeRollout(raw []byte) (*v1alpha1.Rollout, error) {
	if len(raw) == 0 {
		return nil, errors.New("no object in the request")
	}
	var ro v1alpha1.Rollout
	if err := json.Unmarshal(raw, &ro); err != nil {
		return nil, err
	}
	return &ro, nil
}

// targetChanges lists the fields of the target (what the rollout moves
// to, and from where) that differ between old and cur. A route set to the
// one the rollout resolved (status.route) is no change.
func targetChanges(old, cur *v1alpha1.Rollout) []string {
	o, n := &old.Spec, &cur.Spec
	var out []string
	if o.VirtualRouterRef.Name != n.VirtualRouterRef.Name {
		out = append(out, "spec.virtualRouterRef.name")
	}
	if o.Route != n.Route && !sameRoute(o.Route, n.Route, old.Status.Route) {
		out = append(out, "spec.route")
	}
	if o.StableDeployment != n.StableDeployment {
		out = append(out, "spec.stableDeployment")
	}
	if o.Version != n.Version {
		out = append(out, "spec.version")
	}
	if !maps.Equal(images(o.Images), images(n.Images)) {
		out = append(out, "spec.images")
	}
	if !samePatch(o.TemplatePatch, n.TemplatePatch) {
		out = append(out, "spec.templatePatch")
	}
	if (o.Replicas == nil) != (n.Replicas == nil) || o.Replicas != nil && *o.Replicas != *n.Replicas {
		out = append(out, "spec.replicas")
	}
	return out
}

// sameRoute reports whether a route set or unset is the one the rollout
// resolved: setting spec.route to it, or unsetting it, changes nothing.
func sameRoute(a, b, resolved string) bool {
	return resolved != "" && (a == "" && b == resolved || b == "" && a == resolved)
}

// images maps container to image (spec.images is a list keyed by
// container: its order means nothing).
func images(in []v1alpha1.ContainerImage) map[string]string {
	out := make(map[string]string, len(in))
	for _, im := range in {
		out[im.Container] = im.Image
	}
	return out
}

// samePatch compares two template patches as JSON values.
func samePatch(a, b *runtime.RawExtension) bool {
	raw := func(r *runtime.RawExtension) []byte {
		if r == nil {
			return nil
		}
		return bytes.TrimSpace(r.Raw)
	}
	ra, rb := raw(a), raw(b)
	if len(ra) == 0 || len(rb) == 0 {
		return len(ra) == len(rb)
	}
	var va, vb any
	if json.Unmarshal(ra, &va) != nil || json.Unmarshal(rb, &vb) != nil {
		return bytes.Equal(ra, rb)
	}
	return reflect.DeepEqual(va, vb)
}

// begun reports whether the engine has begun ro's rollout: it wrote a
// phase. Until then the Rollout is only a request, and editing it is
// safe (the engine's first status write carries the resourceVersion it
// read, so it cannot begin a target edited meanwhile).
func begun(ro *v1alpha1.Rollout) bool { return ro.Status.Phase != "" }

// unfinished reports whether ro's rollout has not ended: not begun yet,
// or begun and in a phase that is not terminal.
func unfinished(ro *v1alpha1.Rollout) bool {
	return !rollouts.Status(&ro.Status, ro.Name).Phase.Terminal()
}

// describe says where a rollout stands: "Baking, step 1/3, version 1.0".
func describe(ro *v1alpha1.Rollout) string {
	st := rollouts.Status(&ro.Status, ro.Name)
	parts := []string{string(st.Phase)}
	if ro.Status.Step != "" {
		parts = append(parts, "step "+ro.Status.Step)
	}
	version := ro.Status.NewVersion
	if version == "" {
		version = ro.Spec.Version
	}
	if version != "" {
		parts = append(parts, "version "+version)
	}
	return strings.Join(parts, ", ")
}

// abortHint says whether and how a running rollout can be aborted: "" if
// it can, else why not.
func abortHint(ro *v1alpha1.Rollout) string {
	st := rollouts.Status(&ro.Status, ro.Name)
	if ro.Spec.Abort || st.Abort {
		return "it is being aborted"
	}
	if err := st.CheckControl(ro.Name, mesh.ActionAbort); err != nil {
		var me *mesh.Error
		if errors.As(err, &me) {
			return me.Message
		}
		return err.Error()
	}
	return ""
}

// inProgress is the refusal of a change of the target of old's rollout
// while it runs.
func inProgress(ns string, old *v1alpha1.Rollout, changed []string) (problem, bool) {
	if !begun(old) || !unfinished(old) {
		return problem{}, false
	}
	msg := fmt.Sprintf("rollout %s/%s is in progress (%s): ", ns, old.Name, describe(old))
	if why := abortHint(old); why != "" {
		msg += "change its target once it ends (" + why + ")"
	} else {
		msg += "change its target once it ends, or abort it (spec.abort: true)"
	}
	return problem{fields: changed, msg: msg, cause: metav1.CauseTypeForbidden}, true
}

// checkRollout checks ro as a new rollout; a response when it cannot.
func (v *Validator) checkRollout(ctx context.Context, ro *v1alpha1.Rollout) ([]problem, *admissionv1.AdmissionResponse) {
	unavailable := func(what string, err error) *admissionv1.AdmissionResponse {
		return deny(503, metav1.StatusReasonServiceUnavailable, fmt.Sprintf("gmesh validator: %s: %v: retry", what, err))
	}
	var problems []problem
	// The API server's: read once.
	if name := ro.Spec.StableDeployment; name != "" {
		d, err := v.opts.Reads.Deployment(ctx, ro.Namespace, name)
		switch {
		case apierrors.IsNotFound(err):
			problems = append(problems, problem{fields: []string{"spec.stableDeployment"},
				msg: fmt.Sprintf("deployment %q not found in namespace %s", name, ro.Namespace), cause: metav1.CauseTypeFieldValueNotFound})
		case err != nil:
			return nil, unavailable("read deployment "+ro.Namespace+"/"+name, err)
		default:
			problems = append(problems, containers(ro, d)...)
		}
	}
	others, err := v.opts.Reads.Rollouts(ctx, ro.Namespace)
	if err != nil {
		return nil, unavailable("list the rollouts of namespace "+ro.Namespace, err)
	}
	slices.SortFunc(others, func(a, b v1alpha1.Rollout) int { return strings.Compare(a.Name, b.Name) })
	// The caches': a router created a moment ago may not be in them yet.
	var router *v1beta2.VirtualRouter
	var refs []problem
	deadline := v.opts.Clock.Now().Add(v.opts.Settle)
	for {
		in, err := v.objs.AppMeshObjects()
		if err != nil {
			return nil, deny(503, metav1.StatusReasonServiceUnavailable, "gmesh validator: "+err.Error()+": retry")
		}
		router, refs = routerProblems(in, ro)
		if len(refs) == 0 || !v.opts.Clock.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, deny(503, metav1.StatusReasonServiceUnavailable, "gmesh validator: "+ctx.Err().Error())
		case <-v.opts.Clock.After(100 * time.Millisecond):
		}
	}
	problems = append(refs, problems...)
	for i := range others {
		if p, ok := conflict(ro, &others[i], router); ok {
			problems = append(problems, p)
		}
	}
	return problems, nil
}

// routerProblems finds ro's VirtualRouter in in and checks spec.route
// against its routes.
func routerProblems(in appmesh.Input, ro *v1alpha1.Rollout) (*v1beta2.VirtualRouter, []problem) {
	name := ro.Spec.VirtualRouterRef.Name
	var router *v1beta2.VirtualRouter
	for i := range in.VirtualRouters {
		if r := &in.VirtualRouters[i]; r.Namespace == ro.Namespace && r.Name == name {
			router = r
			break
		}
	}
	if router == nil {
		return nil, []problem{{fields: []string{"spec.virtualRouterRef.name"},
			msg: fmt.Sprintf("virtualrouter %s/%s not found", ro.Namespace, name), cause: metav1.CauseTypeFieldValueNotFound}}
	}
	if ro.Spec.Route == "" {
		return router, nil
	}
	var names []string
	for _, r := range router.Spec.Routes {
		if r.Name == ro.Spec.Route {
			return router, nil
		}
		names = append(names, r.Name)
	}
	msg := fmt.Sprintf("virtualrouter %s/%s has no route %q", ro.Namespace, name, ro.Spec.Route)
	if len(names) == 0 {
		msg += "; it has no routes"
	} else {
		msg += "; its routes: " + strings.Join(names, ", ")
	}
	return router, []problem{{fields: []string{"spec.route"}, msg: msg, cause: metav1.CauseTypeFieldValueNotFound}}
}

// containers checks that each container spec.images names is one of the
// stable Deployment's pod template.
func containers(ro *v1alpha1.Rollout, d *appsv1.Deployment) []problem {
	var have []string
	for _, c := range d.Spec.Template.Spec.Containers {
		have = append(have, c.Name)
	}
	var out []problem
	for i, im := range ro.Spec.Images {
		if slices.Contains(have, im.Container) {
			continue
		}
		msg := fmt.Sprintf("deployment %s/%s has no container %q", ro.Namespace, d.Name, im.Container)
		if len(have) == 0 {
			msg += "; its pod template has no containers"
		} else {
			msg += "; its containers: " + strings.Join(have, ", ")
		}
		out = append(out, problem{fields: []string{fmt.Sprintf("spec.images[%d].container", i)}, msg: msg, cause: metav1.CauseTypeFieldValueNotFound})
	}
	return out
}

// resolvedRoute is the route a Rollout shifts: spec.route, else the one
// its rollout resolved (status.route), else the router's only route; ""
// when it cannot be told yet.
func resolvedRoute(ro *v1alpha1.Rollout, router *v1beta2.VirtualRouter) string {
	switch {
	case ro.Spec.Route != "":
		return ro.Spec.Route
	case ro.Status.Route != "":
		return ro.Status.Route
	case router != nil && len(router.Spec.Routes) == 1:
		return router.Spec.Routes[0].Name
	}
	return ""
}

// conflict is the refusal of ro when other, another unfinished Rollout,
// shifts the same route of the same router, or may (a route neither names
// nor resolved yet).
func conflict(ro, other *v1alpha1.Rollout, router *v1beta2.VirtualRouter) (problem, bool) {
	if other.Name == ro.Name || other.Spec.VirtualRouterRef.Name != ro.Spec.VirtualRouterRef.Name || !unfinished(other) {
		return problem{}, false
	}
	mine, theirs := resolvedRoute(ro, router), resolvedRoute(other, router)
	if mine != "" && theirs != "" && mine != theirs {
		return problem{}, false
	}
	ns := ro.Namespace
	field := "spec.route"
	if ro.Spec.Route == "" {
		field = "spec.virtualRouterRef.name"
	}
	var msg string
	switch {
	case mine != "" && theirs != "":
		msg = fmt.Sprintf("route %s of virtualrouter %s/%s is already being shifted by rollout %s/%s (%s)",
			mine, ns, ro.Spec.VirtualRouterRef.Name, ns, other.Name, describe(other))
	default:
		msg = fmt.Sprintf("rollout %s/%s (%s) is already shifting a route of virtualrouter %s/%s, maybe the same (set spec.route to tell them apart)",
			ns, other.Name, describe(other), ns, ro.Spec.VirtualRouterRef.Name)
	}
	if other.DeletionTimestamp != nil {
		msg += ", which is being deleted"
	}
	if why := abortHint(other); why != "" {
		msg += fmt.Sprintf(": wait for it to end (%s)", why)
	} else {
		msg += fmt.Sprintf(": wait for it to end, or abort it (kubectl -n %s patch rollout %s --type merge -p '{\"spec\":{\"abort\":true}}')", ns, other.Name)
	}
	return problem{fields: []string{field}, msg: msg, cause: metav1.CauseTypeForbidden}, true
}
