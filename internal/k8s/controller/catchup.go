package controller

import (
	"context"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// catchUpWait bounds CatchUp: past it the webhook goes on with the cache
// as it is.
const catchUpWait = 3 * time.Second

// catchUpPoll is how often CatchUp looks at the cache again.
const catchUpPoll = 20 * time.Millisecond

// CatchUp waits, up to catchUpWait, until the informers hold every Mesh
// and every VirtualNode of namespace that the API server holds, at least
// at the resourceVersion it has them. The admission webhook calls it
// before PodIdentity: a pod applied together with its VirtualNode (one
// `kubectl apply` of both) is admitted moments after the node is created,
// often before this replica's informer has seen it, and judged on that
// cache it would get no identity, and a plaintext xDS bootstrap that the
// control plane then refuses. Two LISTs per pod admitted, one of them
// namespaced. It returns an error only when the API cannot be read; a
// cache still behind after catchUpWait is reported in the error too, so
// the caller can decide (the webhook logs it and goes on).
func (s *Source) CatchUp(ctx context.Context, namespace string) error {
	type key struct {
		gvr       schema.GroupVersionResource
		namespace string
		name      string
	}
	want := map[key]string{}
	for _, q := range []struct {
		gvr schema.GroupVersionResource
		ns  string
	}{{GVRMeshes, ""}, {GVRVirtualNodes, namespace}} {
		list, err := s.dyn.Resource(q.gvr).Namespace(q.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", q.gvr.Resource, err)
		}
		for _, u := range list.Items {
			want[key{q.gvr, u.GetNamespace(), u.GetName()}] = u.GetResourceVersion()
		}
	}
	behind := func() string {
		for k, rv := range want {
			u, err := s.cached(k.gvr, k.namespace, k.name)
			if err != nil || u == nil || !atLeast(u.GetResourceVersion(), rv) {
				return fmt.Sprintf("%s %s/%s at resourceVersion %s", k.gvr.Resource, k.namespace, k.name, rv)
			}
		}
		return ""
	}
	// Real time, not the Source's clock: this bounds a wait on other
	// goroutines (the informers), which a test's fake clock does not move.
	deadline := time.Now().Add(catchUpWait)
	for {
		missing := behind()
		if missing == "" {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("the control plane's cache has not seen %s after %s", missing, catchUpWait)
		}
		t := time.NewTimer(catchUpPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// atLeast reports whether resourceVersion have is as new as want: equal,
// or, as the API server's etcd revisions are, a larger number. (The API
// calls them opaque; an unequal pair that is not two numbers counts as
// not caught up.)
func atLeast(have, want string) bool {
	if have == want {
		return true
	}
	h, err1 := strconv.ParseUint(have, 10, 64)
	w, err2 := strconv.ParseUint(want, 10, 64)
	return err1 == nil && err2 == nil && h >= w
}
