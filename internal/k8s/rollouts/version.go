package rollouts

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// VersionLabel is the pod label that tells versions apart: the new
// Deployment's pods carry spec.version under it, and the new VirtualNode's
// podSelector selects on it (mesh.AttrVersion, the attribute a local
// virtual node selects tasks by).
const VersionLabel = mesh.AttrVersion

// NewDeployment returns the new version's Deployment, named name: the
// stable Deployment's, with the Rollout's images or pod template patch,
// its replicas (else the stable's), and VersionLabel set to spec.version
// on the pods and in the selector. extraLabels go on the Deployment object
// (the engine's labels that mark what a rollout created). The error names
// the Rollout's field that cannot be applied.
func NewDeployment(stable *appsv1.Deployment, ro *v1alpha1.Rollout, name string, extraLabels map[string]string) (*appsv1.Deployment, error) {
	if _, ok := stable.Spec.Template.Labels[VersionLabel]; !ok {
		return nil, mesh.FieldError("spec.stableDeployment", "the pods of Deployment %s have no %q label: the new version's pods are told apart by it", stable.Name, VersionLabel)
	}
	tmpl := stable.Spec.Template.DeepCopy()
	switch {
	case ro.Spec.TemplatePatch != nil:
		patched, err := patchTemplate(tmpl, ro.Spec.TemplatePatch.Raw)
		if err != nil {
			return nil, mesh.FieldError("spec.templatePatch", "does not apply to the pod template of Deployment %s: %v", stable.Name, err)
		}
		tmpl = patched
	default:
		for i, im := range ro.Spec.Images {
			c := container(tmpl.Spec.Containers, im.Container)
			if c == nil {
				return nil, mesh.FieldError(fmt.Sprintf("spec.images[%d].container", i), "Deployment %s has no container %q", stable.Name, im.Container)
			}
			c.Image = im.Image
		}
	}
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[VersionLabel] = ro.Spec.Version
	sel := stable.Spec.Selector.DeepCopy()
	if sel == nil {
		sel = &metav1.LabelSelector{}
	}
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[VersionLabel] = ro.Spec.Version
	if s, err := metav1.LabelSelectorAsSelector(sel); err != nil || !s.Matches(labels.Set(tmpl.Labels)) {
		return nil, mesh.FieldError("spec.templatePatch", "the new pod template's labels %v do not match the selector of Deployment %s with %s=%s", tmpl.Labels, stable.Name, VersionLabel, ro.Spec.Version)
	}
	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: stable.Namespace,
			Labels:      merge(stable.Labels, extraLabels),
			Annotations: nil,
		},
		Spec: *stable.Spec.DeepCopy(),
	}
	d.Spec.Selector = sel
	d.Spec.Template = *tmpl
	if ro.Spec.Replicas != nil {
		n := *ro.Spec.Replicas
		d.Spec.Replicas = &n
	}
	return d, nil
}

// NewVirtualNode returns the new version's VirtualNode, named name: the
// stable node's spec with VersionLabel in its podSelector set to version.
// It refuses a stable node whose podSelector does not select on
// VersionLabel: that node would also select the new version's pods, and
// send them its traffic before the first step.
func NewVirtualNode(stable *v1beta2.VirtualNode, name, version string, extraLabels map[string]string) (*v1beta2.VirtualNode, error) {
	ps := stable.Spec.PodSelector
	if ps == nil || ps.MatchLabels[VersionLabel] == "" {
		return nil, mesh.FieldError("spec.podSelector.matchLabels", "VirtualNode %s does not select its pods by the %q label, so it would also select the new version's pods; add %s: <its version> to its podSelector and its Deployment's pods", stable.Name, VersionLabel, VersionLabel)
	}
	out := &v1beta2.VirtualNode{
		TypeMeta: metav1.TypeMeta{APIVersion: v1beta2.SchemeGroupVersion.String(), Kind: "VirtualNode"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: stable.Namespace,
			Labels: merge(stable.Labels, extraLabels),
		},
		Spec: *stable.Spec.DeepCopy(),
	}
	// App Mesh names: the stable node's awsName is its own.
	out.Spec.AWSName = nil
	out.Spec.PodSelector.MatchLabels[VersionLabel] = version
	return out, nil
}

func patchTemplate(tmpl *corev1.PodTemplateSpec, patch []byte) (*corev1.PodTemplateSpec, error) {
	orig, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	b, err := strategicpatch.StrategicMergePatch(orig, patch, corev1.PodTemplateSpec{})
	if err != nil {
		return nil, err
	}
	var out corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func merge(a, b map[string]string) map[string]string {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// StableNode returns the VirtualNode that takes all of a route's traffic
// (the only target with a weight above 0), which a Rollout without
// spec.stableDeployment starts from. A route already split between nodes
// has no stable version to adopt.
func StableNode(route string, ts []mesh.WeightedTarget) (string, error) {
	var serving []string
	for _, t := range ts {
		if t.Weight > 0 {
			serving = append(serving, t.VirtualNode)
		}
	}
	if len(serving) != 1 {
		return "", mesh.FieldError("spec.stableDeployment", "route %s sends traffic to %d virtual nodes %v, so there is no one stable version to adopt: name it in spec.stableDeployment, or finish the split first", route, len(serving), serving)
	}
	return serving[0], nil
}

// AdoptDeployment returns the one Deployment of deps (in node's namespace)
// whose pods node's podSelector selects: the stable Deployment of a
// Rollout that names none.
func AdoptDeployment(node *v1beta2.VirtualNode, deps []*appsv1.Deployment) (*appsv1.Deployment, error) {
	if node.Spec.PodSelector == nil {
		return nil, mesh.FieldError("spec.stableDeployment", "VirtualNode %s has no podSelector, so no Deployment runs its pods: name the stable Deployment", node.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(node.Spec.PodSelector)
	if err != nil {
		return nil, mesh.FieldError("spec.stableDeployment", "VirtualNode %s: podSelector: %v", node.Name, err)
	}
	var found []*appsv1.Deployment
	var names []string
	for _, d := range deps {
		if d.Namespace == node.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			found = append(found, d)
			names = append(names, d.Name)
		}
	}
	if len(found) != 1 {
		return nil, mesh.FieldError("spec.stableDeployment", "%d Deployments %v run pods that VirtualNode %s selects; name the stable one", len(found), names, node.Name)
	}
	return found[0], nil
}
