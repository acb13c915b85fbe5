package cli

// gmesh deploy --image, gmesh rollout and gmesh rollback against a
// Kubernetes cluster: they read and write Rollout objects
// (rollouts.gmesh.dev); the control plane's leader carries them out with
// the rollout engine, and its status is what they print.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// kubeTarget are the flags that point a deploy, rollout or rollback
// command at a cluster.
type kubeTarget struct {
	on         bool
	kubeconfig string
	namespace  string
}

func (k *kubeTarget) flags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&k.on, "kubernetes", false, "act on a Rollout object (rollouts.gmesh.dev) of a Kubernetes cluster, found by client-go's usual rules: $KUBECONFIG, ~/.kube/config, else in-cluster")
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "act on the cluster of this kubeconfig file (implies --kubernetes)")
	cmd.Flags().StringVarP(&k.namespace, "namespace", "n", "", "with --kubernetes: the Rollout's namespace, the router's (default: the kubeconfig context's, else default)")
}

func (k *kubeTarget) enabled() bool { return k.on || k.kubeconfig != "" }

// check refuses the cluster-only flags of cmd without --kubernetes.
func (k *kubeTarget) check(cmd *cobra.Command, clusterOnly ...string) error {
	if k.enabled() {
		return nil
	}
	for _, f := range append([]string{"namespace"}, clusterOnly...) {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("--%s applies on a Kubernetes cluster: add --kubernetes (or --kubeconfig FILE)", f)
		}
	}
	return nil
}

// hint is what a printed command must carry to reach the same Rollout.
func (k *kubeTarget) hint(namespace string) string {
	s := " --kubernetes"
	if k.kubeconfig != "" {
		s = " --kubeconfig " + shellQuote(k.kubeconfig)
	}
	return s + " -n " + shellQuote(namespace)
}

// kubeRollouts is a command's view of the Rollouts of one namespace.
type kubeRollouts struct {
	kc     *kubeClients
	ns     string
	target *kubeTarget
}

func (g *globals) kubeRollouts(stdio IO, k *kubeTarget) (*kubeRollouts, error) {
	newClients := g.kubeClients
	if newClients == nil {
		newClients = func(kubeconfig string) (*kubeClients, error) {
			return newKubeClients(slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: slog.LevelWarn})), kubeconfig, "gmesh-cli")
		}
	}
	kc, err := newClients(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	ns := k.namespace
	if ns == "" {
		ns = kc.namespace
	}
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return &kubeRollouts{kc: kc, ns: ns, target: k}, nil
}

func (r *kubeRollouts) res() dynamic.ResourceInterface {
	return r.kc.dyn.Resource(rollouts.GVR).Namespace(r.ns)
}

func (r *kubeRollouts) hint() string { return r.target.hint(r.ns) }

// get returns the Rollout named name, nil if there is none.
func (r *kubeRollouts) get(ctx context.Context, name string) (*v1alpha1.Rollout, error) {
	u, err := r.res().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get Rollout %s/%s: %w", r.ns, name, err)
	}
	return decodeRollout(u)
}

func decodeRollout(u *unstructured.Unstructured) (*v1alpha1.Rollout, error) {
	ro := &v1alpha1.Rollout{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ro); err != nil {
		return nil, fmt.Errorf("Rollout %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return ro, nil
}

func encodeRollout(ro *v1alpha1.Rollout) (*unstructured.Unstructured, error) {
	ro.APIVersion, ro.Kind = v1alpha1.SchemeGroupVersion.String(), "Rollout"
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ro)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// checkNamespace refuses a namespace that does not exist (a user who may
// not read namespaces learns it from the next read instead).
func (r *kubeRollouts) checkNamespace(ctx context.Context) error {
	_, err := r.kc.kube.CoreV1().Namespaces().Get(ctx, r.ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("namespace %s does not exist: give the namespace of the service's VirtualRouter with -n", r.ns)
	case err != nil && !apierrors.IsForbidden(err):
		return fmt.Errorf("get namespace %s: %w", r.ns, err)
	}
	return nil
}

// unfinished returns why ro's rollout is not finished ("" when it is): it
// runs, or its spec changed since its last revision ended and the
// control plane has not begun the new one.
func unfinished(ro *v1alpha1.Rollout) string {
	st := &ro.Status
	version := st.NewVersion
	if version == "" {
		version = ro.Spec.Version
	}
	switch {
	case st.Phase == "":
		return fmt.Sprintf("%s, version %s", mesh.PhasePending, ro.Spec.Version)
	case !mesh.Phase(st.Phase).Terminal():
		if st.Step != "" {
			return fmt.Sprintf("%s, step %s, version %s", st.Phase, st.Step, version)
		}
		return fmt.Sprintf("%s, version %s", st.Phase, version)
	case ro.Generation > 0 && st.ObservedGeneration > 0 && ro.Generation > st.ObservedGeneration && ro.Spec.Version != st.NewVersion:
		return fmt.Sprintf("%s, version %s", mesh.PhasePending, ro.Spec.Version)
	}
	return ""
}

func (r *kubeRollouts) refuseUnfinished(ro *v1alpha1.Rollout) error {
	if why := unfinished(ro); why != "" {
		return fmt.Errorf("a rollout of %s is already in progress (%s): wait for it, or gmesh rollout abort %s%s", ro.Name, why, ro.Name, r.hint())
	}
	return nil
}

// engineView returns ro as the local CLI's printers take a rollout: the
// engine's spec with its defaults and status.
func engineView(ro *v1alpha1.Rollout) *mesh.Resource {
	spec, err := rollouts.Spec(ro)
	if err != nil { // print what there is; the control plane reports the error
		spec = &mesh.RolloutSpec{Service: ro.Name, Target: mesh.TaskSetSpec{Service: ro.Name, Version: ro.Spec.Version}}
	}
	r := mesh.New(mesh.KindRollout, ro.Namespace, ro.Name, spec)
	mesh.Default(r)
	st := rollouts.Status(&ro.Status, ro.Name)
	if st.NewVersion == "" {
		st.NewVersion = ro.Spec.Version
	}
	r.Status = st
	return r
}

// ---- gmesh deploy --kubernetes ----

// kubeDeployOptions are deploy's flags that only a cluster has.
type kubeDeployOptions struct {
	kubeTarget
	images           []string
	replicas         int32
	router           string
	route            string
	stableDeployment string
}

func (k *kubeDeployOptions) flags(cmd *cobra.Command) {
	k.kubeTarget.flags(cmd)
	cmd.Flags().StringArrayVar(&k.images, "image", nil, "with --kubernetes: the new version's image, [CONTAINER=]IMAGE (repeatable; CONTAINER defaults to the stable Deployment's only container); the version defaults to its tag")
	cmd.Flags().Int32Var(&k.replicas, "replicas", 0, "with --kubernetes: the new version's replicas (default: the stable Deployment's)")
	cmd.Flags().StringVar(&k.router, "router", "", "with --kubernetes: the VirtualRouter whose route shifts (default: SERVICE)")
	cmd.Flags().StringVar(&k.route, "route", "", "with --kubernetes: the router's route to shift (default: the one that targets the stable VirtualNode)")
	cmd.Flags().StringVar(&k.stableDeployment, "stable-deployment", "", "with --kubernetes: the Deployment that runs the serving version (default: the one the previous revision left, else the one whose pods the route's VirtualNode selects)")
}

var kubeOnlyDeployFlags = []string{"image", "replicas", "router", "route", "stable-deployment"}

// imageVersion is the tag of an image reference ("" when it has none).
func imageVersion(image string) string {
	image, _, _ = strings.Cut(image, "@")
	last := image[strings.LastIndex(image, "/")+1:]
	if _, tag, ok := strings.Cut(last, ":"); ok {
		return tag
	}
	return ""
}

// parseImages parses --image's [CONTAINER=]IMAGE values; a container left
// out is "".
func parseImages(vals []string) ([]v1alpha1.ContainerImage, error) {
	var out []v1alpha1.ContainerImage
	for _, v := range vals {
		c, im := "", v
		if k, rest, ok := strings.Cut(v, "="); ok && len(validation.IsDNS1123Label(k)) == 0 {
			c, im = k, rest
		}
		if im == "" {
			return nil, fmt.Errorf("--image %q: want [CONTAINER=]IMAGE", v)
		}
		out = append(out, v1alpha1.ContainerImage{Container: c, Image: im})
	}
	return out, nil
}

func runKubeDeploy(cmd *cobra.Command, g *globals, o *deployOptions, k *kubeDeployOptions, service string, stdio IO) error {
	ctx := cmd.Context()
	if o.binary != "" {
		return errors.New("--binary deploys a local build; on a cluster give the new version's image with --image")
	}
	if len(k.images) == 0 {
		return errors.New("a deploy on a cluster needs the new version's image: --image [CONTAINER=]IMAGE")
	}
	steps, err := parseSteps(o.steps)
	if err != nil {
		return err
	}
	env, err := parseEnv(o.env)
	if err != nil {
		return err
	}
	images, err := parseImages(k.images)
	if err != nil {
		return err
	}
	version := o.version
	if version == "" {
		version = imageVersion(images[0].Image)
		if version == "" {
			return fmt.Errorf("--image %s has no tag to take the version from: give --version", images[0].Image)
		}
	}
	if errs := validation.IsValidLabelValue(version); len(errs) > 0 || version == "" {
		return fmt.Errorf("version %q is not a Kubernetes label value (the new pods' version label): %s; give --version", version, strings.Join(errs, "; "))
	}
	if cmd.Flags().Changed("replicas") && k.replicas < 1 {
		return fmt.Errorf("--replicas %d: want at least 1", k.replicas)
	}
	rs, err := g.kubeRollouts(stdio, &k.kubeTarget)
	if err != nil {
		return err
	}
	if err := rs.checkNamespace(ctx); err != nil {
		return err
	}
	prev, err := rs.get(ctx, service)
	if err != nil {
		return err
	}
	if prev != nil {
		if err := rs.refuseUnfinished(prev); err != nil {
			return err
		}
	}

	// The spec: the local deploy's options, then what only a cluster has.
	es := o.engineSpec(service, steps, mesh.TaskSetSpec{Service: service, Version: version, DesiredCount: int(k.replicas)})
	es.Route = k.route
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: service, Namespace: rs.ns}}
	if prev != nil {
		ro.ObjectMeta = prev.ObjectMeta
		ro.Spec.VirtualRouterRef = prev.Spec.VirtualRouterRef
		ro.Spec.StableDeployment = prev.Spec.StableDeployment
		if d := rollouts.RunningDeployment(&prev.Status); d != "" {
			ro.Spec.StableDeployment = d
		}
		if k.route == "" {
			es.Route = prev.Spec.Route
		}
	}
	rollouts.FromSpec(es, &ro.Spec)
	if k.router != "" || ro.Spec.VirtualRouterRef.Name == "" {
		ro.Spec.VirtualRouterRef.Name = orDefault(k.router, service)
	}
	if k.stableDeployment != "" {
		ro.Spec.StableDeployment = k.stableDeployment
	}
	vr, err := rs.router(ctx, ro.Spec.VirtualRouterRef.Name)
	if err != nil {
		return err
	}
	if ro.Spec.Route != "" {
		if _, err := rollouts.RouteTargets(vr, ro.Spec.Route); err != nil {
			return fmt.Errorf("--route %s: %w", ro.Spec.Route, err)
		}
	}
	if err := rs.setTarget(ctx, ro, vr, images, env); err != nil {
		return err
	}

	o.printDeploying(stdio.Out, service, version)
	written, err := rs.write(ctx, ro, prev)
	if err != nil {
		return err
	}
	if o.detach {
		fmt.Fprintf(stdio.Out, "Rollout started; follow it with: gmesh rollout status %s --watch%s\n", service, rs.hint())
		return nil
	}
	return rs.follow(ctx, stdio.Out, written, 0)
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// router returns the VirtualRouter the Rollout shifts.
func (r *kubeRollouts) router(ctx context.Context, name string) (*v1beta2.VirtualRouter, error) {
	u, err := r.kc.dyn.Resource(controller.GVRVirtualRouters).Namespace(r.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("VirtualRouter %s/%s does not exist: a Rollout shifts the route of the service's router; name it with --router (and its namespace with -n)", r.ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get VirtualRouter %s/%s: %w", r.ns, name, err)
	}
	vr := &v1beta2.VirtualRouter{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, vr); err != nil {
		return nil, fmt.Errorf("VirtualRouter %s/%s: %w", r.ns, name, err)
	}
	return vr, nil
}

// setTarget sets ro's new version: images, or with env a templatePatch
// that sets the images and the env of their containers. A container left
// out of --image is the stable Deployment's only one.
func (r *kubeRollouts) setTarget(ctx context.Context, ro *v1alpha1.Rollout, vr *v1beta2.VirtualRouter, images []v1alpha1.ContainerImage, env map[string]string) error {
	named := true
	for _, im := range images {
		named = named && im.Container != ""
	}
	stable, err := r.stable(ctx, ro, vr)
	if err != nil && (ro.Spec.StableDeployment != "" || !named) {
		return err
	}
	// Without a stable Deployment found here (the control plane may still
	// find it), named containers are checked when the rollout begins.
	if err == nil {
		var names []string
		for _, c := range stable.Spec.Template.Spec.Containers {
			names = append(names, c.Name)
		}
		for i := range images {
			im := &images[i]
			switch {
			case im.Container == "" && len(names) == 1:
				im.Container = names[0]
			case im.Container == "":
				return fmt.Errorf("--image %s: Deployment %s has containers %s: say which with --image CONTAINER=IMAGE", im.Image, stable.Name, strings.Join(names, ", "))
			case !slices.Contains(names, im.Container):
				return fmt.Errorf("--image %s=%s: Deployment %s has no container %s (it has %s)", im.Container, im.Image, stable.Name, im.Container, strings.Join(names, ", "))
			}
		}
	}
	seen := map[string]bool{}
	for _, im := range images {
		if seen[im.Container] {
			return fmt.Errorf("--image: container %s is given twice", im.Container)
		}
		seen[im.Container] = true
	}
	ro.Spec.Images, ro.Spec.TemplatePatch = nil, nil
	if len(env) == 0 {
		ro.Spec.Images = images
		return nil
	}
	// One way to say the new version (the CRD's rule): the images and the
	// env together as a strategic merge patch of the pod template; env is
	// merged by name into each named container's.
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var envList []map[string]string
	for _, k := range keys {
		envList = append(envList, map[string]string{"name": k, "value": env[k]})
	}
	var containers []map[string]any
	for _, im := range images {
		containers = append(containers, map[string]any{"name": im.Container, "image": im.Image, "env": envList})
	}
	raw, err := json.Marshal(map[string]any{"spec": map[string]any{"containers": containers}})
	if err != nil {
		return err
	}
	ro.Spec.TemplatePatch = &runtime.RawExtension{Raw: raw}
	return nil
}

// stable finds the stable Deployment as the control plane will: the one
// the spec names, else the one whose pods the VirtualNode taking all of
// the route's traffic selects.
func (r *kubeRollouts) stable(ctx context.Context, ro *v1alpha1.Rollout, vr *v1beta2.VirtualRouter) (*appsv1.Deployment, error) {
	deps := r.kc.kube.AppsV1().Deployments(r.ns)
	if name := ro.Spec.StableDeployment; name != "" {
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("Deployment %s/%s does not exist: name the Deployment that runs the serving version with --stable-deployment", r.ns, name)
		}
		if err != nil {
			return nil, fmt.Errorf("get Deployment %s/%s: %w", r.ns, name, err)
		}
		return d, nil
	}
	why := func(err error) error {
		return fmt.Errorf("--image names no container, so it is the stable Deployment's only one, and the stable Deployment was not found: %w; give --image CONTAINER=IMAGE or --stable-deployment", err)
	}
	route := ro.Spec.Route
	if route == "" {
		if len(vr.Spec.Routes) != 1 {
			return nil, why(fmt.Errorf("VirtualRouter %s has %d routes: say which with --route", vr.Name, len(vr.Spec.Routes)))
		}
		route = vr.Spec.Routes[0].Name
	}
	ts, err := rollouts.RouteTargets(vr, route)
	if err != nil {
		return nil, why(err)
	}
	nodeName, err := rollouts.StableNode(route, ts)
	if err != nil {
		return nil, why(err)
	}
	u, err := r.kc.dyn.Resource(controller.GVRVirtualNodes).Namespace(r.ns).Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return nil, why(fmt.Errorf("VirtualNode %s/%s: %w", r.ns, nodeName, err))
	}
	node := &v1beta2.VirtualNode{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, node); err != nil {
		return nil, why(err)
	}
	list, err := deps.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, why(err)
	}
	ptrs := make([]*appsv1.Deployment, len(list.Items))
	for i := range list.Items {
		ptrs[i] = &list.Items[i]
	}
	d, err := rollouts.AdoptDeployment(node, ptrs)
	if err != nil {
		return nil, why(err)
	}
	return d, nil
}

// written is what a deploy or rollback wrote: the status it follows must
// describe this revision, not the one that ended before it.
type written struct {
	name string
	// prevRevision is the status' revision before the write;
	// generation the object's generation after it.
	prevRevision int32
	generation   int64
}

// ours reports whether ro's status describes the revision written.
func (w written) ours(ro *v1alpha1.Rollout) bool {
	st := &ro.Status
	if st.Revision > w.prevRevision {
		return true
	}
	return w.generation > 0 && st.ObservedGeneration >= w.generation
}

// write creates ro, or replaces the spec of prev, the existing (finished)
// one, with its resourceVersion, so that a change made since it was read is
// not overwritten.
func (r *kubeRollouts) write(ctx context.Context, ro, prev *v1alpha1.Rollout) (written, error) {
	w := written{name: ro.Name}
	exists := prev != nil
	if exists {
		w.prevRevision = prev.Status.Revision
	}
	ro.Status = v1alpha1.RolloutStatus{}
	u, err := encodeRollout(ro)
	if err != nil {
		return w, err
	}
	delete(u.Object, "status")
	var out *unstructured.Unstructured
	if exists {
		out, err = r.res().Update(ctx, u, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			return w, fmt.Errorf("Rollout %s/%s changed while this command ran; run it again", r.ns, ro.Name)
		}
	} else {
		out, err = r.res().Create(ctx, u, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return w, fmt.Errorf("Rollout %s/%s was created while this command ran; run it again", r.ns, ro.Name)
		}
		if apierrors.IsNotFound(err) {
			return w, fmt.Errorf("create Rollout %s/%s: %w (is the Rollout CRD installed? kubectl apply -k deploy/kubernetes)", r.ns, ro.Name, err)
		}
	}
	if err != nil {
		return w, fmt.Errorf("write Rollout %s/%s: %w", r.ns, ro.Name, err)
	}
	w.generation = out.GetGeneration()
	return w, nil
}

// follow prints the Rollout's progress until it ends, from a watch that
// lists again when it breaks. skip is how many of its events were already
// printed. Like followRollout: nil on success, an exitError 1 when it
// ended otherwise, nil when ctx ends (the rollout goes on).
func (r *kubeRollouts) follow(ctx context.Context, out io.Writer, w written, skip int) error {
	p := &rolloutPrinter{w: out, printed: skip}
	sel := fields.OneTermEqualSelector("metadata.name", w.name).String()
	lw := &cache.ListWatch{
		ListFunc: func(opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = sel
			return r.res().List(ctx, opts)
		},
		WatchFunc: func(opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = sel
			return r.res().Watch(ctx, opts)
		},
	}
	var result error
	_, err := watchtools.UntilWithSync(ctx, lw, &unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok || u.GetName() != w.name {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			return true, fmt.Errorf("Rollout %s/%s was deleted", r.ns, w.name)
		}
		ro, err := decodeRollout(u)
		if err != nil {
			return false, err
		}
		if !w.ours(ro) {
			return false, nil
		}
		done, err := p.print(rollouts.Status(&ro.Status, ro.Name))
		result = err
		return done, nil
	})
	if ctx.Err() != nil {
		fmt.Fprintf(out, "Stopped following; the rollout goes on. Follow it again with: gmesh rollout status %s --watch%s\n", w.name, r.hint())
		return nil
	}
	if err != nil {
		return err
	}
	return result
}

// ---- gmesh rollout ... --kubernetes ----

func kubeRolloutStatus(ctx context.Context, g *globals, k *kubeTarget, name string, follow bool, stdio IO) error {
	rs, err := g.kubeRollouts(stdio, k)
	if err != nil {
		return err
	}
	ro, err := rs.get(ctx, name)
	if err != nil {
		return err
	}
	if ro == nil {
		if err := rs.checkNamespace(ctx); err != nil {
			return err
		}
		return fmt.Errorf("service %s has no rollout yet (no Rollout %s in namespace %s)", name, name, rs.ns)
	}
	printRollout(stdio.Out, engineView(ro))
	if !follow || mesh.Phase(ro.Status.Phase).Terminal() {
		return nil
	}
	w := written{name: name, prevRevision: ro.Status.Revision - 1}
	if ro.Status.Phase == "" {
		w.prevRevision = -1
	}
	return rs.follow(ctx, stdio.Out, w, len(ro.Status.Events))
}

// controlPatch is the merge patch of a control: the spec field the
// control plane applies (rollouts.ApplyControls).
func controlPatch(action string, resourceVersion string, paused *bool) ([]byte, error) {
	spec := map[string]any{}
	switch action {
	case mesh.ActionPause:
		spec["paused"] = true
	case mesh.ActionResume:
		spec["paused"] = false
	case mesh.ActionPromote:
		spec["promote"] = true
	case mesh.ActionAbort:
		spec["abort"] = true
	}
	if paused != nil {
		spec["paused"] = *paused
	}
	patch := map[string]any{"spec": spec}
	if resourceVersion != "" { // a precondition: refused if the Rollout changed since it was read
		patch["metadata"] = map[string]any{"resourceVersion": resourceVersion}
	}
	return json.Marshal(patch)
}

func kubeRolloutControl(ctx context.Context, g *globals, k *kubeTarget, name, action string, stdio IO) error {
	rs, err := g.kubeRollouts(stdio, k)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		ro, err := rs.get(ctx, name)
		if err != nil {
			return err
		}
		if ro == nil {
			if err := rs.checkNamespace(ctx); err != nil {
				return err
			}
			return fmt.Errorf("service %s has no rollout (no Rollout %s in namespace %s)", name, name, rs.ns)
		}
		// The engine's rule, so a refused control says what the local CLI
		// says and writes nothing.
		if err := rollouts.Status(&ro.Status, name).CheckControl(name, action); err != nil {
			return err
		}
		var patches [][]byte
		if action == mesh.ActionResume && !ro.Spec.Paused {
			// Paused by the engine (stalled clients) before the control
			// plane mirrored it into spec.paused: a resume is a change
			// of spec.paused, so set it and clear it.
			on := true
			p, err := controlPatch(action, ro.ResourceVersion, &on)
			if err != nil {
				return err
			}
			patches = append(patches, p)
		}
		p, err := controlPatch(action, "", nil)
		if err != nil {
			return err
		}
		if len(patches) == 0 {
			if p, err = controlPatch(action, ro.ResourceVersion, nil); err != nil {
				return err
			}
		}
		patches = append(patches, p)
		var out *unstructured.Unstructured
		for _, p := range patches {
			out, err = rs.res().Patch(ctx, name, types.MergePatchType, p, metav1.PatchOptions{})
			if err != nil {
				break
			}
		}
		if apierrors.IsConflict(err) && attempt < 3 {
			continue // the status moved on since it was read: check again
		}
		if err != nil {
			return fmt.Errorf("patch Rollout %s/%s: %w", rs.ns, name, err)
		}
		if ro, err = decodeRollout(out); err != nil {
			return err
		}
		fmt.Fprintf(stdio.Out, "rollout of %s: %s requested\n", name, action)
		printRollout(stdio.Out, engineView(ro))
		return nil
	}
}

// ---- gmesh rollback --kubernetes ----

func kubeRollback(cmd *cobra.Command, g *globals, o *deployOptions, k *kubeTarget, name string, stdio IO) error {
	ctx := cmd.Context()
	rs, err := g.kubeRollouts(stdio, k)
	if err != nil {
		return err
	}
	ro, err := rs.get(ctx, name)
	if err != nil {
		return err
	}
	if ro == nil {
		if err := rs.checkNamespace(ctx); err != nil {
			return err
		}
		return fmt.Errorf("%s has never been deployed with gmesh deploy, so there is no earlier revision to roll back to (no Rollout %s in namespace %s)", name, name, rs.ns)
	}
	if err := rs.refuseUnfinished(ro); err != nil {
		return err
	}
	spec, prev, err := rollouts.RollbackSpec(ro)
	if err != nil {
		return err
	}
	// The local rollback's overrides: steps, interval and timeout when
	// given, the ACK timeout and the stalled-client policy always.
	es, err := rollouts.Spec(&v1alpha1.Rollout{ObjectMeta: ro.ObjectMeta, Spec: *spec})
	if err != nil {
		return err
	}
	if cmd.Flags().Changed("steps") {
		if es.Steps, err = parseSteps(o.steps); err != nil {
			return err
		}
	}
	if cmd.Flags().Changed("interval") {
		es.IntervalMillis = o.interval.Milliseconds()
	}
	if cmd.Flags().Changed("timeout") {
		es.TimeoutMillis = o.timeout.Milliseconds()
	}
	timeout := time.Duration(es.TimeoutMillis) * time.Millisecond
	if es.TimeoutMillis == 0 {
		timeout = mesh.DefaultRolloutTimeoutMillis * time.Millisecond
	}
	es.AckTimeoutMillis = min(o.ackTimeout, timeout).Milliseconds()
	es.OnStalledClient = o.onStalled
	rollouts.FromSpec(es, spec)
	fmt.Fprintf(stdio.Out, "Rolling %s back to version %s (revision %d's pod template)\n", name, prev.Version, prev.Revision)
	next := ro.DeepCopy()
	next.Spec = *spec
	written, err := rs.write(ctx, next, ro)
	if err != nil {
		return err
	}
	if o.detach {
		fmt.Fprintf(stdio.Out, "Rollback started; follow it with: gmesh rollout status %s --watch%s\n", name, rs.hint())
		return nil
	}
	return rs.follow(ctx, stdio.Out, written, 0)
}
