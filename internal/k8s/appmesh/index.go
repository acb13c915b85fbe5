package appmesh

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// entry is what the conversion knows of one object before converting it:
// its App Mesh identity, its gmesh identity and why either failed.
type entry struct {
	obj Object
	// meshObj is the object's Mesh (nil when membership failed, or for a
	// Mesh); meshErr says why.
	meshObj *v1beta2.Mesh
	meshErr *FieldError
	// awsName is the App Mesh name (spec.awsName, else App Mesh's
	// default), name the gmesh name ("" when invalid); nameErr says why.
	awsName string
	name    string
	nameErr *FieldError
}

// converter holds the indexes of one conversion.
type converter struct {
	in      Input
	entries map[Object]*entry
	meshes  []*v1beta2.Mesh
	// byAWSName finds an object by kind, its mesh's App Mesh name and its
	// own App Mesh name (for ARN references).
	byAWSName map[awsKey]*entry
	gateways  []*v1beta2.VirtualGateway
}

type awsKey struct {
	kind       mesh.Kind
	mesh, name string
}

func newConverter(in Input) *converter {
	c := &converter{in: in, entries: map[Object]*entry{}, byAWSName: map[awsKey]*entry{}}
	for i := range in.Meshes {
		m := &in.Meshes[i]
		c.meshes = append(c.meshes, m)
		e := &entry{obj: Object{Kind: mesh.KindMesh, Name: m.Name}, awsName: deref(m.Spec.AWSName, m.Name)}
		e.name, e.nameErr = gmeshName(e.obj, mesh.KindMesh, m.Spec.AWSName, e.awsName, false)
		c.entries[e.obj] = e
	}
	slices.SortFunc(c.meshes, func(a, b *v1beta2.Mesh) int { return strings.Compare(a.Name, b.Name) })
	add := func(kind mesh.Kind, om metav1.ObjectMeta, awsName *string, meshRef *v1beta2.MeshReference, sep string) *entry {
		e := &entry{obj: Object{Kind: kind, Namespace: om.Namespace, Name: om.Name}}
		e.awsName = deref(awsName, om.Name+sep+om.Namespace)
		e.name, e.nameErr = gmeshName(e.obj, kind, awsName, e.awsName, kind != mesh.KindVirtualService)
		e.meshObj, e.meshErr = c.membership(e.obj, meshRef)
		c.entries[e.obj] = e
		return e
	}
	for i := range in.VirtualNodes {
		o := &in.VirtualNodes[i]
		add(mesh.KindVirtualNode, o.ObjectMeta, o.Spec.AWSName, o.Spec.MeshRef, "_")
	}
	for i := range in.VirtualRouters {
		o := &in.VirtualRouters[i]
		add(mesh.KindVirtualRouter, o.ObjectMeta, o.Spec.AWSName, o.Spec.MeshRef, "_")
	}
	for i := range in.VirtualServices {
		o := &in.VirtualServices[i]
		add(mesh.KindVirtualService, o.ObjectMeta, o.Spec.AWSName, o.Spec.MeshRef, ".")
	}
	for i := range in.VirtualGateways {
		o := &in.VirtualGateways[i]
		add(mesh.KindVirtualGateway, o.ObjectMeta, o.Spec.AWSName, o.Spec.MeshRef, "_")
		c.gateways = append(c.gateways, o)
	}
	slices.SortFunc(c.gateways, func(a, b *v1beta2.VirtualGateway) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for i := range in.GatewayRoutes {
		o := &in.GatewayRoutes[i]
		// A gateway route's mesh is its gateway's: worked out when it
		// converts.
		e := &entry{obj: Object{Kind: mesh.KindGatewayRoute, Namespace: o.Namespace, Name: o.Name}}
		e.awsName = deref(o.Spec.AWSName, o.Name+"_"+o.Namespace)
		e.name, e.nameErr = gmeshName(e.obj, mesh.KindGatewayRoute, o.Spec.AWSName, e.awsName, true)
		c.entries[e.obj] = e
	}
	c.claimNames()
	for _, e := range c.entries {
		if e.meshObj != nil {
			k := awsKey{e.obj.Kind, deref(e.meshObj.Spec.AWSName, e.meshObj.Name), e.awsName}
			if _, dup := c.byAWSName[k]; !dup {
				c.byAWSName[k] = e
			}
		}
	}
	return c
}

// claimNames refuses every object whose gmesh name another object of the
// same kind and mesh already has (the first by namespace and name keeps
// it).
func (c *converter) claimNames() {
	objs := make([]Object, 0, len(c.entries))
	for o := range c.entries {
		objs = append(objs, o)
	}
	slices.SortFunc(objs, func(a, b Object) int {
		return strings.Compare(string(a.Kind)+"/"+a.Namespace+"/"+a.Name, string(b.Kind)+"/"+b.Namespace+"/"+b.Name)
	})
	type key struct {
		kind       mesh.Kind
		mesh, name string
	}
	taken := map[key]Object{}
	for _, o := range objs {
		e := c.entries[o]
		if e.name == "" || o.Kind == mesh.KindGatewayRoute {
			continue
		}
		k := key{o.Kind, "", e.name}
		if e.meshObj != nil {
			k.mesh = e.meshObj.Name
		}
		if prev, ok := taken[k]; ok {
			e.nameErr = &FieldError{Object: o, Field: nameField(o, e), Reason: v1beta2.ReasonInvalidValue,
				Message: fmt.Sprintf("gmesh name %q is already %s's: set spec.awsName to another name", e.name, prev)}
			e.name = ""
			continue
		}
		taken[k] = o
	}
}

func nameField(o Object, e *entry) string {
	if e.awsName != "" && e.awsName != defaultAWSName(o) {
		return "spec.awsName"
	}
	return "metadata.name"
}

func defaultAWSName(o Object) string {
	switch o.Kind {
	case mesh.KindMesh:
		return o.Name
	case mesh.KindVirtualService:
		return o.Name + "." + o.Namespace
	}
	return o.Name + "_" + o.Namespace
}

func deref(s *string, def string) string {
	if s == nil || *s == "" {
		return def
	}
	return *s
}

// gmeshName turns an App Mesh name into a gmesh name: '_' spelled '.'
// when underscores is set, then gmesh's name rules.
func gmeshName(o Object, kind mesh.Kind, awsName *string, name string, underscores bool) (string, *FieldError) {
	field := "metadata.name"
	if awsName != nil && *awsName != "" {
		field = "spec.awsName"
	}
	g := name
	if underscores {
		g = strings.ReplaceAll(g, "_", ".")
	}
	if why := mesh.ValidName(kind, g); why != "" {
		limit := mesh.MaxNameLen
		if kind == mesh.KindVirtualService {
			limit = mesh.MaxVirtualServiceNameLen
		}
		return "", &FieldError{Object: o, Field: field, Reason: v1beta2.ReasonInvalidValue,
			Message: fmt.Sprintf("gmesh name %q is not valid (%s): set spec.awsName to at most %d lower-case letters, digits, '-' and '.'", g, why, limit)}
	}
	return g, nil
}

// membership finds the Mesh of a namespaced object: the one its meshRef
// names, else the one whose namespace selector selects its namespace.
func (c *converter) membership(o Object, ref *v1beta2.MeshReference) (*v1beta2.Mesh, *FieldError) {
	if ref != nil {
		for _, m := range c.meshes {
			if m.Name == ref.Name {
				return m, nil
			}
		}
		return nil, &FieldError{Object: o, Field: "spec.meshRef.name", Reason: v1beta2.ReasonNoMesh,
			Message: fmt.Sprintf("mesh %q not found", ref.Name)}
	}
	var found []*v1beta2.Mesh
	nsLabels := labels.Set(c.in.NamespaceLabels[o.Namespace])
	for _, m := range c.meshes {
		if m.Spec.NamespaceSelector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(m.Spec.NamespaceSelector)
		if err != nil {
			continue // the Mesh itself is refused for it
		}
		if sel.Matches(nsLabels) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, &FieldError{Object: o, Field: "metadata.namespace", Reason: v1beta2.ReasonNoMesh,
			Message: fmt.Sprintf("no mesh's namespaceSelector selects namespace %q: label the namespace as a Mesh's spec.namespaceSelector asks, or set spec.meshRef", o.Namespace)}
	}
	names := make([]string, len(found))
	for i, m := range found {
		names[i] = m.Name
	}
	return nil, &FieldError{Object: o, Field: "metadata.namespace", Reason: v1beta2.ReasonNoMesh,
		Message: fmt.Sprintf("namespace %q is selected by several meshes (%s): narrow their namespaceSelectors, or set spec.meshRef", o.Namespace, strings.Join(names, ", "))}
}

// start begins an object's result with its identity: its gmesh mesh and
// name, or the errors that make them unknown.
func (c *converter) start(o Object, finalizers []string) (result, *entry) {
	r := newResult(o)
	for i, f := range finalizers {
		if strings.HasPrefix(f, appMeshFinalizerPrefix) {
			r.report(fmt.Sprintf("metadata.finalizers[%d]", i), "%s", whyFinalizer)
		}
	}
	e := c.entries[o]
	if e.nameErr != nil {
		r.Errors = append(r.Errors, e.nameErr)
	}
	r.Name = e.name
	if o.Kind != mesh.KindMesh && o.Kind != mesh.KindGatewayRoute {
		if e.meshErr != nil {
			r.Errors = append(r.Errors, e.meshErr)
		} else if me := c.entries[Object{Kind: mesh.KindMesh, Name: e.meshObj.Name}]; me.name == "" {
			r.fail("metadata.namespace", v1beta2.ReasonNoMesh, "its mesh %q is refused", e.meshObj.Name)
		} else {
			r.Mesh = me.name
		}
	}
	return r, e
}

// appMeshFinalizerPrefix begins the finalizers App Mesh's controller put on
// its objects; manifests exported from its cluster carry them.
const appMeshFinalizerPrefix = "finalizers.appmesh.k8s.aws/"

const whyFinalizer = "App Mesh's controller removed this finalizer, and nothing does on gmesh: deleting the object waits until it is removed (drop it from the manifest, or kubectl patch the object's metadata.finalizers)"

// meshName is the gmesh name of a Mesh object ("" if refused).
func (c *converter) meshName(m *v1beta2.Mesh) string {
	return c.entries[Object{Kind: mesh.KindMesh, Name: m.Name}].name
}

// resolveRef resolves a reference by object name to the referent's gmesh
// name; it fails the result, naming field, when the referent is missing,
// in another mesh, or has no valid gmesh name.
func (c *converter) resolveRef(r result, field string, kind mesh.Kind, from *entry, namespace *string, name string) string {
	ns := deref(namespace, from.obj.Namespace)
	o := Object{Kind: kind, Namespace: ns, Name: name}
	e, ok := c.entries[o]
	if !ok {
		r.fail(field, v1beta2.ReasonDanglingRef, "%s not found", o)
		return ""
	}
	return c.checkReferent(r, field, from, e)
}

func (c *converter) checkReferent(r result, field string, from, to *entry) string {
	if from.meshObj != nil && to.meshObj != nil && from.meshObj != to.meshObj {
		r.fail(field, v1beta2.ReasonDanglingRef, "%s is in mesh %q, not %q", to.obj, to.meshObj.Name, from.meshObj.Name)
		return ""
	}
	if to.name == "" {
		r.fail(field, v1beta2.ReasonDanglingRef, "%s has no valid gmesh name (it is refused)", to.obj)
		return ""
	}
	return to.name
}

// resolveARN resolves an App Mesh ARN
// (arn:PARTITION:appmesh:REGION:ACCOUNT:mesh/MESH/KIND/NAME) to the gmesh
// name of the object of that App Mesh name in that mesh.
func (c *converter) resolveARN(r result, field string, kind mesh.Kind, from *entry, arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "appmesh" {
		r.fail(field, v1beta2.ReasonInvalidValue, "%q is not an App Mesh ARN (arn:aws:appmesh:REGION:ACCOUNT:mesh/MESH/%s/NAME)", arn, lowerFirst(kind))
		return ""
	}
	res := strings.Split(parts[5], "/")
	if len(res) != 4 || res[0] != "mesh" || res[2] != lowerFirst(kind) {
		r.fail(field, v1beta2.ReasonInvalidValue, "%q does not name a %s (want mesh/MESH/%s/NAME after the account)", arn, lowerFirst(kind), lowerFirst(kind))
		return ""
	}
	meshAWS, name := res[1], res[3]
	if from.meshObj != nil {
		if own := deref(from.meshObj.Spec.AWSName, from.meshObj.Name); own != meshAWS {
			r.fail(field, v1beta2.ReasonDanglingRef, "%q is in mesh %q, not this object's mesh %q: gmesh does not route across meshes", arn, meshAWS, own)
			return ""
		}
	}
	e, ok := c.byAWSName[awsKey{kind, meshAWS, name}]
	if !ok {
		r.fail(field, v1beta2.ReasonDanglingRef, "no %s has App Mesh name %q in mesh %q (an App Mesh name is spec.awsName, else NAME_NAMESPACE)", lowerFirst(kind), name, meshAWS)
		return ""
	}
	return c.checkReferent(r, field, from, e)
}

func lowerFirst(k mesh.Kind) string {
	s := string(k)
	return strings.ToLower(s[:1]) + s[1:]
}

// selects reports whether sel selects set; nil selects nothing unless
// nilSelectsAll.
func selects(sel *metav1.LabelSelector, set map[string]string, nilSelectsAll bool) (bool, error) {
	if sel == nil {
		return nilSelectsAll, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(set)), nil
}
