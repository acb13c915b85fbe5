package k8sfake

import (
	"errors"
	"reflect"
	"strconv"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// APIServer makes the clients' creates and updates of the resources gvrs
// behave as the API server's do where a writer depends on it, which the
// fake tracker does not: every write sets a new resourceVersion; an update
// carrying another resourceVersion than the stored one is a Conflict; a
// create sets metadata.generation to 1 and an update that changes the
// spec adds 1 to it; an update of the status subresource changes only the
// status, an update of the object everything but the status; an update
// that changes nothing is not written (resourceVersion and generation
// stay). Objects added before, or through the trackers, are left as they
// are (with no resourceVersion: an update of one carrying none is taken).
func (c *Cluster) APIServer(gvrs ...schema.GroupVersionResource) {
	APIServer(c.Kube, c.Dyn, gvrs...)
}

// APIServer is Cluster.APIServer for clientsets of one's own.
func APIServer(kube *kubefake.Clientset, dyn *dynamicfake.FakeDynamicClient, gvrs ...schema.GroupVersionResource) {
	var rv atomic.Int64
	rv.Store(1000)
	set := map[schema.GroupVersionResource]bool{}
	for _, g := range gvrs {
		set[g] = true
	}
	react := func(tracker k8stesting.ObjectTracker) k8stesting.ReactionFunc {
		return func(a k8stesting.Action) (bool, runtime.Object, error) {
			if !set[a.GetResource()] {
				return false, nil, nil
			}
			switch a := a.(type) {
			case k8stesting.CreateActionImpl:
				if a.GetSubresource() != "" {
					return false, nil, nil
				}
				obj := a.GetObject().DeepCopyObject()
				m, err := meta.Accessor(obj)
				if err != nil {
					return true, nil, err
				}
				if m.GetNamespace() == "" {
					m.SetNamespace(a.GetNamespace())
				}
				m.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
				m.SetGeneration(1)
				if m.GetUID() == "" {
					m.SetUID(types.UID("uid-" + m.GetNamespace() + "-" + m.GetName() + "-" + m.GetResourceVersion()))
				}
				if err := tracker.Create(a.GetResource(), obj, a.GetNamespace()); err != nil {
					return true, nil, err
				}
				return true, obj, nil
			case k8stesting.UpdateActionImpl:
				out, err := update(tracker, a, func() string { return strconv.FormatInt(rv.Add(1), 10) })
				return true, out, err
			}
			return false, nil, nil
		}
	}
	kube.PrependReactor("*", "*", react(kube.Tracker()))
	dyn.PrependReactor("*", "*", react(dyn.Tracker()))
}

func update(tracker k8stesting.ObjectTracker, a k8stesting.UpdateActionImpl, nextRV func() string) (runtime.Object, error) {
	gvr := a.GetResource()
	obj := a.GetObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	cur, err := tracker.Get(gvr, a.GetNamespace(), m.GetName())
	if err != nil {
		return nil, err
	}
	cm, err := meta.Accessor(cur)
	if err != nil {
		return nil, err
	}
	if rv := m.GetResourceVersion(); rv != "" && rv != cm.GetResourceVersion() {
		return nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(),
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	newU, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	curU, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err != nil {
		return nil, err
	}
	var next map[string]any
	if a.GetSubresource() == "status" {
		next = runtime.DeepCopyJSON(curU)
		if st, ok := newU["status"]; ok {
			next["status"] = st
		} else {
			delete(next, "status")
		}
	} else {
		next = runtime.DeepCopyJSON(newU)
		if st, ok := curU["status"]; ok {
			next["status"] = st
		} else {
			delete(next, "status")
		}
		nu := &unstructured.Unstructured{Object: next}
		cu := &unstructured.Unstructured{Object: curU}
		nu.SetUID(cu.GetUID())
		nu.SetGeneration(cu.GetGeneration())
		if !equality.Semantic.DeepEqual(newU["spec"], curU["spec"]) {
			nu.SetGeneration(cu.GetGeneration() + 1)
		}
	}
	nu := &unstructured.Unstructured{Object: next}
	nu.SetResourceVersion(cm.GetResourceVersion())
	if equality.Semantic.DeepEqual(next, curU) {
		return cur, nil // nothing changed: nothing written
	}
	nu.SetResourceVersion(nextRV())
	out := reflect.New(reflect.TypeOf(cur).Elem()).Interface().(runtime.Object)
	if u, ok := out.(*unstructured.Unstructured); ok {
		u.Object = next
	} else if err := runtime.DefaultUnstructuredConverter.FromUnstructured(next, out); err != nil {
		return nil, err
	}
	if err := tracker.Update(gvr, out, a.GetNamespace()); err != nil {
		return nil, err
	}
	return out.DeepCopyObject(), nil
}
