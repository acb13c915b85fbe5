// Package clusterstatus reads what `gmesh status` shows for a mesh on
// Kubernetes: the control plane's replicas and leader, every App Mesh
// object with the conditions gmesh wrote into its status, each virtual
// node's pods, and each router's weights. It reads only through the API
// (what users' RBAC can grant), never from a control plane replica.
package clusterstatus

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Options name the control plane's objects.
type Options struct {
	// Namespace of the control plane; default "gmesh-system".
	Namespace string
	// Deployment and Lease names; default "gmesh-controlplane".
	Deployment, Lease string
	// Now defaults to time.Now.
	Now func() time.Time
}

// Report is a mesh on Kubernetes as `gmesh status` shows it.
type Report struct {
	Server       string              `json:"server"`
	ControlPlane *ControlPlaneStatus `json:"controlPlane,omitempty"`
	Objects      []Object            `json:"objects"`
	Nodes        []Node              `json:"nodes"`
	Routes       []Route             `json:"routes"`
	// Problems are what could not be read (a kind whose CRD is missing,
	// an object that does not decode), each naming what.
	Problems []string `json:"problems,omitempty"`
}

// ControlPlaneStatus is the control plane Deployment and its Lease.
type ControlPlaneStatus struct {
	Namespace string `json:"namespace"`
	// Found is false when the Deployment does not exist.
	Found    bool  `json:"found"`
	Replicas int32 `json:"replicas"`
	Ready    int32 `json:"ready"`
	// Leader is the Lease holder ("" if none); Renewed how long ago it
	// renewed.
	Leader  string        `json:"leader,omitempty"`
	Renewed time.Duration `json:"renewed,omitempty"`
}

// Object is one App Mesh object and gmesh's status of it.
type Object struct {
	Kind       mesh.Kind             `json:"kind"`
	Namespace  string                `json:"namespace,omitempty"`
	Name       string                `json:"name"`
	Generation int64                 `json:"generation"`
	Status     v1beta2.GmeshStatus   `json:"status"`
	Conditions map[string]*Condition `json:"conditions"`
}

// Condition is one of Accepted, Translated, ACKed.
type Condition struct {
	Status  metav1.ConditionStatus `json:"status"`
	Reason  string                 `json:"reason,omitempty"`
	Message string                 `json:"message,omitempty"`
	// Stale is true when the condition describes an older generation
	// than the object's.
	Stale bool `json:"stale,omitempty"`
}

// Node is a virtual node's pods: those its podSelector selects and those
// serving (Ready, not terminating), which are its endpoints.
type Node struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Selector  string   `json:"selector"`
	Port      int64    `json:"port,omitempty"`
	Selected  int      `json:"selected"`
	Serving   []string `json:"serving"`
}

// Route is one route of a virtual router with its weighted targets.
type Route struct {
	Namespace string   `json:"namespace"`
	Router    string   `json:"router"`
	Name      string   `json:"name"`
	Targets   []Target `json:"targets"`
}

// Target is a weighted target.
type Target struct {
	Node   string `json:"node"`
	Weight int64  `json:"weight"`
}

// Read reads the report.
func Read(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface, opts Options) (*Report, error) {
	if opts.Namespace == "" {
		opts.Namespace = "gmesh-system"
	}
	if opts.Deployment == "" {
		opts.Deployment = "gmesh-controlplane"
	}
	if opts.Lease == "" {
		opts.Lease = "gmesh-controlplane"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Report{}
	cp, err := readControlPlane(ctx, kube, opts)
	if err != nil {
		return nil, err
	}
	r.ControlPlane = cp
	conv := runtime.DefaultUnstructuredConverter
	for _, k := range controller.Kinds {
		list, err := dyn.Resource(k.GVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				r.Problems = append(r.Problems, fmt.Sprintf("%s: the CRD is not installed (kubectl apply -k deploy/kubernetes)", k.GVR.Resource))
				continue
			}
			return nil, fmt.Errorf("list %s: %w", k.GVR.Resource, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			o := Object{Kind: k.Kind, Namespace: u.GetNamespace(), Name: u.GetName(), Generation: u.GetGeneration(), Conditions: map[string]*Condition{}}
			if st, ok := u.Object["status"].(map[string]any); ok {
				if err := conv.FromUnstructured(st, &o.Status); err != nil {
					r.Problems = append(r.Problems, fmt.Sprintf("%s %s: status: %v", k.Kind, name(o.Namespace, o.Name), err))
				}
			}
			for _, t := range []string{"Accepted", "Translated", "ACKed"} {
				if c := meta.FindStatusCondition(o.Status.Conditions, t); c != nil {
					o.Conditions[t] = &Condition{Status: c.Status, Reason: c.Reason, Message: c.Message, Stale: c.ObservedGeneration < o.Generation}
				}
			}
			r.Objects = append(r.Objects, o)
			switch k.Kind {
			case mesh.KindVirtualNode:
				var vn v1beta2.VirtualNode
				if err := conv.FromUnstructured(u.Object, &vn); err != nil {
					r.Problems = append(r.Problems, fmt.Sprintf("VirtualNode %s: %v", name(vn.Namespace, u.GetName()), err))
					continue
				}
				n, err := readNode(ctx, kube, &vn)
				if err != nil {
					return nil, err
				}
				r.Nodes = append(r.Nodes, n)
			case mesh.KindVirtualRouter:
				var vr v1beta2.VirtualRouter
				if err := conv.FromUnstructured(u.Object, &vr); err != nil {
					r.Problems = append(r.Problems, fmt.Sprintf("VirtualRouter %s: %v", name(u.GetNamespace(), u.GetName()), err))
					continue
				}
				r.Routes = append(r.Routes, routes(&vr)...)
			}
		}
	}
	return r, nil
}

func readControlPlane(ctx context.Context, kube kubernetes.Interface, opts Options) (*ControlPlaneStatus, error) {
	cp := &ControlPlaneStatus{Namespace: opts.Namespace}
	d, err := kube.AppsV1().Deployments(opts.Namespace).Get(ctx, opts.Deployment, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read the control plane deployment %s/%s: %w", opts.Namespace, opts.Deployment, err)
	default:
		cp.Found = true
		cp.Replicas = d.Status.Replicas
		cp.Ready = d.Status.ReadyReplicas
	}
	l, err := kube.CoordinationV1().Leases(opts.Namespace).Get(ctx, opts.Lease, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read the control plane lease %s/%s: %w", opts.Namespace, opts.Lease, err)
	default:
		holder(cp, l, opts.Now())
	}
	return cp, nil
}

func holder(cp *ControlPlaneStatus, l *coordinationv1.Lease, now time.Time) {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return
	}
	cp.Leader = *l.Spec.HolderIdentity
	if l.Spec.RenewTime != nil {
		cp.Renewed = max(now.Sub(l.Spec.RenewTime.Time), 0)
	}
}

func readNode(ctx context.Context, kube kubernetes.Interface, vn *v1beta2.VirtualNode) (Node, error) {
	n := Node{Namespace: vn.Namespace, Name: vn.Name, Serving: []string{}}
	if len(vn.Spec.Listeners) > 0 {
		n.Port = int64(vn.Spec.Listeners[0].PortMapping.Port)
	}
	if vn.Spec.PodSelector == nil {
		n.Selector = "(none: no pods)"
		return n, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector)
	if err != nil {
		n.Selector = "(invalid: " + err.Error() + ")"
		return n, nil
	}
	n.Selector = sel.String()
	pods, err := kube.CoreV1().Pods(vn.Namespace).List(ctx, metav1.ListOptions{LabelSelector: n.Selector})
	if err != nil {
		return n, fmt.Errorf("list the pods of VirtualNode %s: %w", name(vn.Namespace, vn.Name), err)
	}
	n.Selected = len(pods.Items)
	for i := range pods.Items {
		if p := &pods.Items[i]; controller.Serving(p) {
			n.Serving = append(n.Serving, podName(p))
		}
	}
	slices.Sort(n.Serving)
	return n, nil
}

func podName(p *corev1.Pod) string { return p.Name + " " + p.Status.PodIP }

func routes(vr *v1beta2.VirtualRouter) []Route {
	var out []Route
	for _, rt := range vr.Spec.Routes {
		var wts []v1beta2.WeightedTarget
		switch {
		case rt.GRPCRoute != nil:
			wts = rt.GRPCRoute.Action.WeightedTargets
		case rt.HTTPRoute != nil:
			wts = rt.HTTPRoute.Action.WeightedTargets
		case rt.HTTP2Route != nil:
			wts = rt.HTTP2Route.Action.WeightedTargets
		case rt.TCPRoute != nil:
			wts = rt.TCPRoute.Action.WeightedTargets
		}
		r := Route{Namespace: vr.Namespace, Router: vr.Name, Name: rt.Name}
		for _, wt := range wts {
			t := Target{Weight: wt.Weight}
			switch {
			case wt.VirtualNodeRef != nil:
				t.Node = wt.VirtualNodeRef.Name
				if ns := wt.VirtualNodeRef.Namespace; ns != nil && *ns != vr.Namespace {
					t.Node = *ns + "/" + t.Node
				}
			case wt.VirtualNodeARN != nil:
				t.Node = *wt.VirtualNodeARN
			}
			r.Targets = append(r.Targets, t)
		}
		out = append(out, r)
	}
	return out
}

func name(ns, n string) string {
	if ns == "" {
		return n
	}
	return ns + "/" + n
}

// Print writes the report as tables.
func (r *Report) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if cp := r.ControlPlane; cp != nil {
		switch {
		case !cp.Found:
			fmt.Fprintf(tw, "Control plane: not installed in namespace %s (kubectl apply -k deploy/kubernetes)\n", cp.Namespace)
		default:
			leader := "no leader"
			if cp.Leader != "" {
				leader = fmt.Sprintf("leader %s (renewed %s ago)", cp.Leader, cp.Renewed.Round(100*time.Millisecond))
			}
			fmt.Fprintf(tw, "Control plane: %d/%d replicas ready in %s, %s\n", cp.Ready, cp.Replicas, cp.Namespace, leader)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "KIND\tNAME\tMESH\tGMESH NAME\tACCEPTED\tTRANSLATED\tACKED\tCLIENTS")
	for _, o := range r.Objects {
		clients := "-"
		if c := o.Status.Clients; c != nil {
			clients = fmt.Sprintf("%d/%d", c.ACKed, c.Total)
			if c.LastNACK != nil {
				clients += fmt.Sprintf(" (last NACK from %s: %s)", c.LastNACK.Client, truncate(c.LastNACK.Reason, 60))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Kind, name(o.Namespace, o.Name), dash(o.Status.Mesh), dash(o.Status.GmeshName),
			cond(o.Conditions["Accepted"]), cond(o.Conditions["Translated"]), cond(o.Conditions["ACKed"]), clients)
	}
	var msgs []string
	for _, o := range r.Objects {
		for _, t := range []string{"Accepted", "Translated", "ACKed"} {
			if c := o.Conditions[t]; c != nil && c.Status != metav1.ConditionTrue && c.Message != "" {
				msgs = append(msgs, fmt.Sprintf("%s %s %s: %s", o.Kind, name(o.Namespace, o.Name), t, c.Message))
			}
		}
		for _, f := range o.Status.UnhonouredFields {
			msgs = append(msgs, fmt.Sprintf("%s %s: %s not honoured: %s", o.Kind, name(o.Namespace, o.Name), f.Field, f.Reason))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "VIRTUAL NODE\tPORT\tSELECTOR\tPODS SERVING\tENDPOINTS")
	for _, n := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d/%d\t%s\n", name(n.Namespace, n.Name), n.Port, n.Selector, len(n.Serving), n.Selected, dash(strings.Join(n.Serving, ", ")))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "ROUTER\tROUTE\tWEIGHTS")
	for _, rt := range r.Routes {
		var ws []string
		for _, t := range rt.Targets {
			ws = append(ws, fmt.Sprintf("%s=%d", t.Node, t.Weight))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name(rt.Namespace, rt.Router), rt.Name, strings.Join(ws, " "))
	}
	if len(msgs) > 0 || len(r.Problems) > 0 {
		fmt.Fprintln(tw)
		sort.Strings(msgs)
		for _, m := range append(msgs, r.Problems...) {
			fmt.Fprintln(tw, m)
		}
	}
	return tw.Flush()
}

func cond(c *Condition) string {
	if c == nil {
		return "-"
	}
	s := string(c.Status)
	if c.Stale {
		s += " (stale)"
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
