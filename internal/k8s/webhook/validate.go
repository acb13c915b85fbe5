package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Objects is the cluster state the validator checks references against:
// every App Mesh object and the namespaces' labels, from the informers'
// caches (*controller.Source is one). It fails while the caches have not
// synced.
type Objects interface {
	AppMeshObjects() (appmesh.Input, error)
}

// ValidatorOptions configure a Validator.
type ValidatorOptions struct {
	// Settle is how long a request that would be refused waits for the
	// caches to catch up before it is: an object created a moment ago
	// (the router of `kubectl apply -f` whose service comes next) may not
	// be in them yet. Default 1s; negative: no wait.
	Settle time.Duration
	// WarnOnly admits what would be refused, with the refusal as a
	// warning.
	WarnOnly bool
	// Reads reads the Deployments and Rollouts that a Rollout's checks
	// need (APIReads); nil admits Rollouts unchecked, with a warning.
	Reads  RolloutReads
	Clock  clock.Clock
	Logger *slog.Logger
}

// Validator is the validating webhook for the six App Mesh kinds and
// gmesh's Rollouts (reviewRollout). For the App Mesh kinds it
// converts the cluster with and without the change (appmesh.Convert, the
// rules that status reports) and
//
//   - refuses a create or update that leaves the object itself with a
//     reference problem: a referent missing, in another mesh or refused
//     (reason DanglingReference), or no mesh, several or a refused one
//     (reason NoMesh). An update is refused only for a problem it brings:
//     an object whose referent went away can still be edited;
//   - admits every delete, and every change that leaves other objects with
//     such a problem (a VirtualNode deleted while a route still sends to
//     it), with a warning naming each of them. Refusing those would make
//     reference cycles undeletable and hold namespace deletion up; the
//     objects left dangling are reported in their status and the rest of
//     the mesh is still served.
//
// Other refusals (an unsupported field, an invalid value) are left to the
// status: App Mesh manifests apply, and the Accepted condition says what
// gmesh does not serve.
type Validator struct {
	objs Objects
	opts ValidatorOptions
	log  *slog.Logger
}

// NewValidator returns a validator over objs.
func NewValidator(objs Objects, opts ValidatorOptions) *Validator {
	if opts.Settle == 0 {
		opts.Settle = time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Validator{objs: objs, opts: opts, log: opts.Logger}
}

var _ Reviewer = (*Validator)(nil)

// kindOf maps the App Mesh kinds to gmesh's.
var kindOf = map[string]mesh.Kind{
	"Mesh":           mesh.KindMesh,
	"VirtualNode":    mesh.KindVirtualNode,
	"VirtualRouter":  mesh.KindVirtualRouter,
	"VirtualService": mesh.KindVirtualService,
	"VirtualGateway": mesh.KindVirtualGateway,
	"GatewayRoute":   mesh.KindGatewayRoute,
}

// referenceReason reports whether a refusal is about references between
// objects, which is what admission checks.
func referenceReason(reason string) bool {
	return reason == v1beta2.ReasonDanglingRef || reason == v1beta2.ReasonNoMesh
}

// maxWarnings bounds the warnings of one response.
const maxWarnings = 10

// Review validates one App Mesh or Rollout request.
func (v *Validator) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Group == v1alpha1.GroupName && req.Kind.Kind == "Rollout" && req.SubResource == "" {
		return v.reviewRollout(ctx, req)
	}
	kind, ok := kindOf[req.Kind.Kind]
	if req.Kind.Group != v1beta2.GroupName || !ok || req.SubResource != "" {
		return allow()
	}
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
	case admissionv1.Delete:
		return v.reviewDelete(req, kind)
	default:
		return allow()
	}
	obj, om, err := decodeObject(kind, req.Object.Raw)
	if err != nil {
		return deny(400, metav1.StatusReasonBadRequest, fmt.Sprintf("gmesh validator: decode %s: %v", req.Kind.Kind, err))
	}
	if om.GetDeletionTimestamp() != nil {
		return allow() // being deleted: its finalizers must be able to go
	}
	ns, name := om.GetNamespace(), om.GetName()
	if ns == "" && kind != mesh.KindMesh {
		ns = req.Namespace
	}
	if name == "" {
		name = req.Name
	}
	var old any
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		if old, _, err = decodeObject(kind, req.OldObject.Raw); err != nil {
			return deny(400, metav1.StatusReasonBadRequest, fmt.Sprintf("gmesh validator: decode the old %s: %v", req.Kind.Kind, err))
		}
	}
	self := appmesh.Object{Kind: kind, Namespace: ns, Name: name}
	var refusals []*appmesh.FieldError
	var warnings []string
	deadline := v.opts.Clock.Now().Add(v.opts.Settle)
	for {
		in, err := v.objs.AppMeshObjects()
		if err != nil {
			return deny(503, metav1.StatusReasonServiceUnavailable, "gmesh validator: "+err.Error()+": retry")
		}
		refusals, warnings = check(in, self, old, obj)
		if len(refusals) == 0 || !v.opts.Clock.Now().Before(deadline) {
			break
		}
		// The caches may not have the referent yet: look again.
		select {
		case <-ctx.Done():
			return deny(503, metav1.StatusReasonServiceUnavailable, "gmesh validator: "+ctx.Err().Error())
		case <-v.opts.Clock.After(100 * time.Millisecond):
		}
	}
	if len(refusals) == 0 {
		return allow(warnings...)
	}
	msg := refusalMessage(req.Kind.Kind, self, refusals)
	if v.opts.WarnOnly {
		v.log.Info("admitted despite reference problems (warn only)", "object", self.String(), "problems", msg)
		return allow(append([]string{msg}, warnings...)...)
	}
	v.log.Info("refused", "object", self.String(), "problems", msg)
	resp := deny(422, metav1.StatusReasonInvalid, msg)
	resp.Result.Details = &metav1.StatusDetails{Group: v1beta2.GroupName, Kind: req.Kind.Kind, Name: name}
	for _, e := range refusals {
		resp.Result.Details.Causes = append(resp.Result.Details.Causes, metav1.StatusCause{
			Type: metav1.CauseTypeFieldValueNotFound, Field: e.Field, Message: e.Message,
		})
	}
	resp.Warnings = warnings
	return resp
}

func refusalMessage(kind string, o appmesh.Object, errs []*appmesh.FieldError) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Field + ": " + e.Message
	}
	id := o.Name
	if o.Namespace != "" {
		id = o.Namespace + "/" + o.Name
	}
	return fmt.Sprintf("%s %q refused by gmesh: %s", kind, id, strings.Join(parts, "; "))
}

// reviewDelete admits a delete with a warning for each object it leaves
// with a reference problem.
func (v *Validator) reviewDelete(req *admissionv1.AdmissionRequest, kind mesh.Kind) *admissionv1.AdmissionResponse {
	in, err := v.objs.AppMeshObjects()
	if err != nil {
		return allow() // deletes are never refused
	}
	self := appmesh.Object{Kind: kind, Namespace: req.Namespace, Name: req.Name}
	before := appmesh.Convert(in)
	after := appmesh.Convert(edit(in, self, nil))
	return allow(newProblems(before, after, self)...)
}

// check converts in with obj in place of self (old in place of it
// before) and returns self's reference refusals that the change brings and
// the warnings for other objects.
func check(in appmesh.Input, self appmesh.Object, old, obj any) ([]*appmesh.FieldError, []string) {
	beforeIn := in
	if old != nil {
		beforeIn = edit(in, self, old)
	}
	before := appmesh.Convert(beforeIn)
	after := appmesh.Convert(edit(in, self, obj))
	r := after.Find(self.Kind, self.Namespace, self.Name)
	if r == nil {
		return nil, nil
	}
	had := map[string]bool{}
	if old != nil {
		if b := before.Find(self.Kind, self.Namespace, self.Name); b != nil {
			for _, e := range b.Errors {
				had[e.Field+"\x00"+e.Message] = true
			}
		}
	}
	var refusals []*appmesh.FieldError
	for _, e := range r.Errors {
		if referenceReason(e.Reason) && !had[e.Field+"\x00"+e.Message] {
			refusals = append(refusals, e)
		}
	}
	return refusals, newProblems(before, after, self)
}

// newProblems are the reference problems of objects other than self that
// after has and before had not, as warnings.
func newProblems(before, after appmesh.Results, self appmesh.Object) []string {
	var out []string
	n := 0
	for _, r := range after {
		if r.Object == self {
			continue
		}
		had := map[string]bool{}
		if b := before.Find(r.Object.Kind, r.Object.Namespace, r.Object.Name); b != nil {
			for _, e := range b.Errors {
				had[e.Field+"\x00"+e.Message] = true
			}
		}
		for _, e := range r.Errors {
			if !referenceReason(e.Reason) || had[e.Field+"\x00"+e.Message] {
				continue
			}
			n++
			if len(out) < maxWarnings {
				out = append(out, fmt.Sprintf("%s: %s: %s", r.Object, e.Field, e.Message))
			}
		}
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more reference problems", n-len(out)))
	}
	return out
}

// decodeObject decodes an App Mesh object of kind.
func decodeObject(kind mesh.Kind, raw []byte) (any, metav1.Object, error) {
	var obj interface {
		metav1.Object
	}
	switch kind {
	case mesh.KindMesh:
		obj = &v1beta2.Mesh{}
	case mesh.KindVirtualNode:
		obj = &v1beta2.VirtualNode{}
	case mesh.KindVirtualRouter:
		obj = &v1beta2.VirtualRouter{}
	case mesh.KindVirtualService:
		obj = &v1beta2.VirtualService{}
	case mesh.KindVirtualGateway:
		obj = &v1beta2.VirtualGateway{}
	case mesh.KindGatewayRoute:
		obj = &v1beta2.GatewayRoute{}
	default:
		return nil, nil, fmt.Errorf("unknown kind %s", kind)
	}
	if len(raw) == 0 {
		return nil, nil, fmt.Errorf("no object in the request")
	}
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil, nil, err
	}
	return obj, obj, nil
}

// edit returns in with self replaced by obj (a pointer to its type), or
// removed when obj is nil. The slices of in are not changed.
func edit(in appmesh.Input, self appmesh.Object, obj any) appmesh.Input {
	out := in
	switch self.Kind {
	case mesh.KindMesh:
		out.Meshes = put(in.Meshes, self, obj)
	case mesh.KindVirtualNode:
		out.VirtualNodes = put(in.VirtualNodes, self, obj)
	case mesh.KindVirtualRouter:
		out.VirtualRouters = put(in.VirtualRouters, self, obj)
	case mesh.KindVirtualService:
		out.VirtualServices = put(in.VirtualServices, self, obj)
	case mesh.KindVirtualGateway:
		out.VirtualGateways = put(in.VirtualGateways, self, obj)
	case mesh.KindGatewayRoute:
		out.GatewayRoutes = put(in.GatewayRoutes, self, obj)
	}
	return out
}

func put[T any, PT interface {
	*T
	metav1.Object
}](items []T, self appmesh.Object, obj any) []T {
	out := make([]T, 0, len(items)+1)
	for i := range items {
		p := PT(&items[i])
		if p.GetNamespace() == self.Namespace && p.GetName() == self.Name {
			continue
		}
		out = append(out, items[i])
	}
	if o, ok := obj.(*T); ok && o != nil {
		c := *o
		// The object as admitted may lack what the API server fills in
		// later: identify it as self.
		PT(&c).SetNamespace(self.Namespace)
		PT(&c).SetName(self.Name)
		out = append(out, c)
	}
	return out
}
