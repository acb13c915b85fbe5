package controller

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// objectError is an App Mesh object the informers hold that does not
// decode into its type.
type objectError struct {
	obj appmesh.Object
	err error
}

func (e *objectError) Error() string { return fmt.Sprintf("%s: %v", e.obj, e.err) }
func (e *objectError) Unwrap() error { return e.err }

// meshTLS says whether a mesh has TLS on; a variable so that tests can
// turn TLS on before the conversion carries App Mesh's TLS settings.
var meshTLS = mesh.MeshTLS

// identityNode is what the identities need of one VirtualNode.
type identityNode struct {
	vn  *v1beta2.VirtualNode
	sel labels.Selector // nil: it selects no pod
	// meshName and name are its gmesh names ("" when the conversion could
	// not work them out); tls is whether its mesh has TLS on.
	meshName, name string
	tls            bool
}

// identityNodes reads the VirtualNodes from the informers' caches and
// converts the whole mesh (appmesh.Convert, as a rebuild does) for their
// gmesh names and their meshes' TLS. It fails until the informers have
// synced, and when a Mesh or VirtualNode does not decode or the
// namespaces cannot be listed: a partial answer would make the keeper
// delete Secrets that pods still use.
func (s *Source) identityNodes() ([]identityNode, error) {
	for _, synced := range s.synced {
		if !synced() {
			return nil, errors.New("the control plane's informers have not synced yet")
		}
	}
	in, _, errs := s.objects()
	for _, err := range errs {
		var oe *objectError
		if errors.As(err, &oe) && oe.obj.Kind != mesh.KindMesh && oe.obj.Kind != mesh.KindVirtualNode {
			continue // does not change any node's mesh or name
		}
		return nil, err
	}
	results := appmesh.Convert(in)
	resources := results.Resources()
	byObj := make(map[appmesh.Object]*appmesh.Result, len(in.VirtualNodes))
	tls := map[string]bool{}
	for _, r := range results {
		if r.Object.Kind != mesh.KindVirtualNode {
			continue
		}
		byObj[r.Object] = r
		if _, done := tls[r.Mesh]; r.Mesh != "" && !done {
			tls[r.Mesh] = meshTLS(resources, r.Mesh)
		}
	}
	out := make([]identityNode, 0, len(in.VirtualNodes))
	for i := range in.VirtualNodes {
		vn := &in.VirtualNodes[i]
		n := identityNode{vn: vn}
		if r := byObj[appmesh.Object{Kind: mesh.KindVirtualNode, Namespace: vn.Namespace, Name: vn.Name}]; r != nil && r.Mesh != "" && r.Name != "" {
			n.meshName, n.name, n.tls = r.Mesh, r.Name, tls[r.Mesh]
		}
		if vn.Spec.PodSelector != nil {
			// A bad selector selects nothing; the node's status says why.
			if sel, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector); err == nil {
				n.sel = sel
			}
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b identityNode) int {
		return strings.Compare(a.vn.Namespace+"/"+a.vn.Name, b.vn.Namespace+"/"+b.vn.Name)
	})
	return out, nil
}

// IdentityWants are the identity Secrets the cluster needs
// (identity.Keeper's wants): one per VirtualNode that has a podSelector
// and whose mesh has TLS on (mesh.MeshTLS over the converted nodes), with
// the service accounts of the pods it selects in its namespace, in any
// phase but Succeeded and Failed (pending and not-yet-ready pods too, so
// their identity is there when they start; "default" for a pod naming
// none). A node that the conversion refuses keeps its Want while its mesh
// and name are known, so a passing mistake in it does not take its pods'
// identities away. It fails until the informers have synced.
func (s *Source) IdentityWants() ([]identity.Want, error) {
	nodes, err := s.identityNodes()
	if err != nil {
		return nil, err
	}
	var out []identity.Want
	for _, n := range nodes {
		if !n.tls || n.sel == nil {
			continue
		}
		w, err := s.want(n)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// PodIdentity is the Want of the VirtualNode whose podSelector selects a
// pod with podLabels in namespace, for the admission webhook to mount its
// Secret into a pod being created: ok is false when no node selects it or
// its node's mesh has TLS off. Two nodes selecting it, one of them in a
// mesh with TLS on, is an error naming both (App Mesh's injector refuses
// such a pod too). The Want's
// ServiceAccounts are those of the node's existing pods (the pod being
// created is not one yet).
func (s *Source) PodIdentity(namespace string, podLabels map[string]string) (identity.Want, bool, error) {
	nodes, err := s.identityNodes()
	if err != nil {
		return identity.Want{}, false, err
	}
	var found []identityNode
	set := labels.Set(podLabels)
	for _, n := range nodes {
		if n.vn.Namespace == namespace && n.sel != nil && n.sel.Matches(set) {
			found = append(found, n)
		}
	}
	anyTLS := slices.ContainsFunc(found, func(n identityNode) bool { return n.tls })
	switch {
	case len(found) == 0 || !anyTLS:
		// Nodes of meshes without TLS: no identity, and two of them
		// selecting one pod stays their statuses' business, as before.
		return identity.Want{}, false, nil
	case len(found) > 1:
		names := make([]string, len(found))
		for i, n := range found {
			names[i] = n.vn.Namespace + "/" + n.vn.Name
		}
		return identity.Want{}, false, fmt.Errorf("the pod's labels %v are selected by the podSelectors of several virtual nodes (%s): a pod belongs to one virtual node; narrow their podSelectors",
			podLabels, strings.Join(names, ", "))
	}
	w, err := s.want(found[0])
	return w, err == nil, err
}

// want is n's Want: its names and the service accounts of its pods.
func (s *Source) want(n identityNode) (identity.Want, error) {
	pods, err := s.pods.Pods(n.vn.Namespace).List(n.sel)
	if err != nil {
		return identity.Want{}, fmt.Errorf("virtualnode %s/%s: list its pods: %w", n.vn.Namespace, n.vn.Name, err)
	}
	var accounts []string
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		accounts = append(accounts, sa)
	}
	slices.Sort(accounts)
	return identity.Want{
		Namespace: n.vn.Namespace, VirtualNode: n.vn.Name, UID: n.vn.UID,
		Mesh: n.meshName, Node: n.name,
		ServiceAccounts: slices.Compact(accounts),
	}, nil
}

// IdentityChanges returns a channel that receives a value whenever what
// IdentityWants reads may have changed: an App Mesh object's spec or
// labels, a namespace's labels, a pod added, deleted, relabelled or
// finished. A burst of changes gives at least one value, never blocking
// an informer (the channel holds one); give it to
// identity.KeeperOptions.Changed. Each call adds event handlers to the
// informers: call it once, before or after Run.
func (s *Source) IdentityChanges() <-chan struct{} {
	ch := make(chan struct{}, 1)
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	objs := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { signal() },
		UpdateFunc: func(oldObj, newObj any) {
			if !statusOnly(oldObj, newObj) {
				signal()
			}
		},
		DeleteFunc: func(any) { signal() },
	}
	for _, inf := range s.kinds {
		inf.AddEventHandler(objs) //nolint:errcheck // never removed; fails only once stopped
	}
	s.kubeFactory.Core().V1().Namespaces().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{ //nolint:errcheck
		AddFunc: func(any) { signal() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(metav1.Object)
			n, ok2 := newObj.(metav1.Object)
			if !ok1 || !ok2 || !maps(o.GetLabels(), n.GetLabels()) {
				signal()
			}
		},
		DeleteFunc: func(any) { signal() },
	})
	finished := func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	}
	s.kubeFactory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{ //nolint:errcheck
		AddFunc: func(any) { signal() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Pod)
			n, ok2 := newObj.(*corev1.Pod)
			if !ok1 || !ok2 || !maps(o.Labels, n.Labels) || finished(o) != finished(n) {
				signal()
			}
		},
		DeleteFunc: func(any) { signal() },
	})
	return ch
}
