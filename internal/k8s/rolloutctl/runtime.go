package rolloutctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/rollout"
)

// Config wires a Runtime.
type Config struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// KubeInformers and DynamicInformers are the factories whose caches
	// the runtime reads (controller.Source's: KubeInformers,
	// DynamicInformers), so that it shares the Source's watches of pods
	// and App Mesh objects; the runtime adds Deployments and Rollouts to
	// them. Whoever starts the factories (Source.Run) starts these.
	KubeInformers    informers.SharedInformerFactory
	DynamicInformers dynamicinformer.DynamicSharedInformerFactory
	// Convergence answers whether the xDS clients of a router ACKed a
	// generation of it: required.
	Convergence RouterConvergence
	// Metrics samples a task set's counters; default analysis.NewScraper
	// over the pods (their container port named "metrics").
	Metrics rollout.Metrics
	Clock   clock.Clock
	Logger  *slog.Logger
	// Poll, Resync and AnalysisInterval tune the engine (rollout.Config).
	Poll, Resync, AnalysisInterval time.Duration
	// MinInterval is the least time between two passes woken by events
	// (default 50ms).
	MinInterval time.Duration
	// Wake are more channels that wake Lead while a Rollout waits for
	// ACKs (Shifting, Retiring, RollingBack), each asked again after it
	// fired (the xDS server's ACKs: xdsserver.Server.Changed; the
	// Source's publishes: controller.Source.Changed), so that a step sees
	// its ACKs without waiting for Poll.
	Wake []func() <-chan struct{}
}

// Runtime carries out Rollouts with the rollout engine, on the leader:
// Lead runs it until its context ends.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	store  *Store
	eps    *Endpoints
	engine *rollout.Engine
	// beginner begins Rollouts (Engine.Begin) over the Store's view for
	// Begin.
	beginner *rollout.Engine
	synced   []cache.InformerSynced
	kick     chan struct{}

	leading atomic.Bool
	passes  atomic.Int64
}

// New registers the runtime's informers on the factories and builds the
// engine; Lead drives it.
func New(cfg Config) (*Runtime, error) {
	if cfg.Kube == nil || cfg.Dynamic == nil || cfg.KubeInformers == nil || cfg.DynamicInformers == nil {
		return nil, errors.New("rollout runtime: clients and informer factories are required")
	}
	if cfg.Convergence == nil {
		return nil, errors.New("rollout runtime: a RouterConvergence is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 50 * time.Millisecond
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
	ros := cfg.DynamicInformers.ForResource(rollouts.GVR)
	routers := cfg.DynamicInformers.ForResource(controller.GVRVirtualRouters)
	nodes := cfg.DynamicInformers.ForResource(controller.GVRVirtualNodes)
	deps := cfg.KubeInformers.Apps().V1().Deployments()
	pods := cfg.KubeInformers.Core().V1().Pods()
	r.store = &Store{
		kube: cfg.Kube, dyn: cfg.Dynamic,
		rollouts: ros.Lister(), routers: routers.Lister(), nodes: nodes.Lister(), deps: deps.Lister(),
		now: cfg.Clock.Now, answers: &answers{m: map[string]*v1alpha1.Rollout{}},
	}
	r.eps = NewEndpoints(deps.Lister(), pods.Lister())
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.Notify() },
		UpdateFunc: func(any, any) { r.Notify() },
		DeleteFunc: func(any) { r.Notify() },
	}
	// Pods: only those of namespaces that hold Rollouts concern a rollout.
	inRolloutNS := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			if l, err := ros.Lister().ByNamespace(p.Namespace).List(everything); err == nil && len(l) == 0 {
				return
			}
		}
		r.Notify()
	}
	podEvents := cache.ResourceEventHandlerFuncs{
		AddFunc:    inRolloutNS,
		UpdateFunc: func(_, n any) { inRolloutNS(n) },
		DeleteFunc: inRolloutNS,
	}
	// A Rollout's status is written by the runtime itself (and by an
	// earlier leader): a change of its spec (its generation) or existence
	// is news, and so is a new phase (a begun rollout's first pass, each
	// transition's next step: a dozen per rollout). Waking on every status
	// write would run a pass per write, each writing again (a bake's
	// analysis).
	if _, err := ros.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { r.Notify() },
		UpdateFunc: func(o, n any) {
			ou, ok1 := o.(*unstructured.Unstructured)
			nu, ok2 := n.(*unstructured.Unstructured)
			if ok1 && ok2 && ou.GetGeneration() == nu.GetGeneration() && ou.GetGeneration() != 0 && phase(ou) == phase(nu) {
				return
			}
			r.Notify()
		},
		DeleteFunc: func(any) { r.Notify() },
	}); err != nil {
		return nil, fmt.Errorf("rollout runtime: %w", err)
	}
	r.synced = append(r.synced, ros.Informer().HasSynced)
	for _, inf := range []cache.SharedIndexInformer{routers.Informer(), nodes.Informer(), deps.Informer()} {
		if _, err := inf.AddEventHandler(notify); err != nil {
			return nil, fmt.Errorf("rollout runtime: %w", err)
		}
		r.synced = append(r.synced, inf.HasSynced)
	}
	if _, err := pods.Informer().AddEventHandler(podEvents); err != nil {
		return nil, fmt.Errorf("rollout runtime: %w", err)
	}
	r.synced = append(r.synced, pods.Informer().HasSynced)
	metrics := cfg.Metrics
	if metrics == nil {
		metrics = analysis.NewScraper(r.eps, analysis.ScraperOptions{Logger: cfg.Logger.With("component", "scraper")})
	}
	ecfg := rollout.Config{
		Store: r.store, Endpoints: r.eps, Convergence: convergence{cfg.Convergence}, Metrics: metrics,
		Clock: cfg.Clock, Logger: cfg.Logger,
		Poll: cfg.Poll, Resync: cfg.Resync, AnalysisInterval: cfg.AnalysisInterval,
		// A Kubernetes target is checked against the stable Deployment
		// before Begin (checkTarget): it has no command.
		CheckTarget: func(*mesh.TaskSetSpec) error { return nil },
	}
	r.engine = rollout.NewEngine(ecfg)
	// Begin sees the Rollouts not begun, which the reconciling engine
	// does not (Store.beginning). Both run on Lead's goroutine only.
	ecfg.Store = r.store.forBegin()
	r.beginner = rollout.NewEngine(ecfg)
	return r, nil
}

// Store is the runtime's view of the cluster.
func (r *Runtime) Store() *Store { return r.store }

// Endpoints lists the pods as the engine sees them.
func (r *Runtime) Endpoints() *Endpoints { return r.eps }

// Leading reports whether Lead is running.
func (r *Runtime) Leading() bool { return r.leading.Load() }

// Passes counts the passes Lead made over the Rollouts.
func (r *Runtime) Passes() int64 { return r.passes.Load() }

// waitingForACKs reports whether a Rollout is in a phase that waits for
// the xDS clients' ACKs: only then do publishes and ACKs (Config.Wake)
// concern the engine. Waking a bake on each of them would scrape the new
// version's pods at their pace.
func (r *Runtime) waitingForACKs() bool {
	objs, err := r.store.rollouts.List(everything)
	if err != nil {
		return true
	}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		switch ph, _, _ := unstructured.NestedString(u.Object, "status", "phase"); mesh.Phase(ph) {
		case mesh.PhaseShifting, mesh.PhaseRetiring, mesh.PhaseRollingBack:
			return true
		}
	}
	return false
}

// phase is a Rollout object's status.phase.
func phase(u *unstructured.Unstructured) string {
	ph, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	return ph
}

// Notify wakes Lead: a Rollout, a Deployment, a router, a node or a pod
// changed, or clients ACKed. It never blocks.
func (r *Runtime) Notify() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Lead drives the Rollouts until ctx ends (controller.StatusWriter's
// AlsoWhileLeading: when the replica stops leading): it waits for the
// caches, then, on every notification and at the latest when the engine
// wants to look again, begins the Rollouts not begun, applies their
// controls, and runs the engine over those that have begun (pass: what
// Engine.Run does, over begun rollouts only). It returns
// when ctx ends, once the goroutines it started for Wake have. A new leader resumes each
// rollout from its status: the revisions it waits on are router
// generations, the same for every replica.
func (r *Runtime) Lead(ctx context.Context) {
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		synced := cache.WaitForCacheSync(wctx.Done(), r.synced...)
		cancel()
		if synced {
			break
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("leading, but the rollout runtime's caches have not synced after a minute: is the Rollout CRD (rollouts.gmesh.dev) installed, and may the control plane list Rollouts and Deployments?")
	}
	r.leading.Store(true)
	defer r.leading.Store(false)
	r.log.Info("leading: driving rollouts")
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, wake := range r.cfg.Wake {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-wake():
					if r.waitingForACKs() {
						r.Notify()
					}
				}
			}
		}()
	}
	resync := r.cfg.Resync
	if resync <= 0 {
		resync = 30 * time.Second
	}
	t := r.cfg.Clock.NewTimer(resync)
	defer t.Stop()
	for ctx.Err() == nil {
		r.passes.Add(1)
		next := r.pass(ctx)
		if next <= 0 || next > resync {
			next = resync
		}
		t.Stop()
		select {
		case <-t.C():
		default:
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
		case <-r.kick:
			// A burst of events is one pass, and passes are MinInterval
			// apart however many events come.
			gap := r.cfg.Clock.NewTimer(r.cfg.MinInterval)
			select {
			case <-ctx.Done():
			case <-gap.C():
			}
			gap.Stop()
		case <-t.C():
		}
	}
	r.log.Info("not leading: rollouts left to the leader")
}

// pass begins the Rollouts that have not begun, keeps the controls of
// those running in step with their specs and runs the engine over them
// (rollout.Engine.Reconcile, as Engine.ReconcileAll does); it returns when the engine wants to look again (0:
// not waiting on time).
func (r *Runtime) pass(ctx context.Context) time.Duration {
	ros, err := r.store.rolloutsIn("")
	if err != nil {
		r.log.Error("list rollouts failed", "err", err)
		return time.Second
	}
	var next time.Duration
	for _, ro := range ros {
		if ctx.Err() != nil {
			return 0
		}
		var err error
		switch stateOf(ro) {
		case notBegun:
			err = r.begin(ctx, ro)
		case running:
			if err = r.controls(ctx, ro); err != nil {
				break
			}
			var d time.Duration
			d, err = r.engine.Reconcile(ctx, mesh.Ref{Kind: mesh.KindRollout, Mesh: ro.Namespace, Name: ro.Name})
			if err != nil {
				d = time.Second
			}
			if d > 0 && (next == 0 || d < next) {
				next = d
			}
		}
		if err != nil && !mesh.IsConflict(err) && ctx.Err() == nil {
			r.log.Warn("rollout pass failed", "rollout", ro.Namespace+"/"+ro.Name, "err", err)
		}
	}
	return next
}

// begin checks a Rollout's target against its stable Deployment and
// begins it (rollout.Engine.Begin); one that cannot begin is Failed with
// the reason in its status.
func (r *Runtime) begin(ctx context.Context, ro *v1alpha1.Rollout) error {
	if reason := r.checkTarget(ro); reason != "" {
		return r.fail(ctx, ro, reason)
	}
	if other := r.otherRollout(ro); other != "" {
		return r.fail(ctx, ro, other)
	}
	_, err := r.beginner.Begin(ctx, mesh.Ref{Kind: mesh.KindRollout, Mesh: ro.Namespace, Name: ro.Name})
	switch code := mesh.ErrorCode(err); {
	case err == nil:
		r.log.Info("rollout begun", "rollout", ro.Namespace+"/"+ro.Name, "version", ro.Spec.Version)
		return nil
	case code == mesh.EInvalid || code == mesh.ENotFound:
		return r.fail(ctx, ro, err.Error())
	}
	return err
}

// checkTarget is the Kubernetes runtime's check of a Rollout's target:
// its stable Deployment exists and the new Deployment and VirtualNode can
// be made from it (images name its containers, the patch applies, the
// pods and the node select on the version label). "" when it can.
func (r *Runtime) checkTarget(ro *v1alpha1.Rollout) string {
	if _, err := rollouts.Spec(ro); err != nil {
		return err.Error()
	}
	name, err := r.store.stableDeployment(ro)
	if err != nil {
		return fmt.Sprintf("no stable Deployment: %v", err)
	}
	stable, err := r.store.deployment(ro.Namespace, name)
	if mesh.IsNotFound(err) {
		return fmt.Sprintf("the stable Deployment %s does not exist in namespace %s", name, ro.Namespace)
	}
	if err != nil {
		return err.Error()
	}
	if _, err := rollouts.NewDeployment(stable, ro, name+"-check", nil); err != nil {
		return err.Error()
	}
	node := r.store.nodeOf(ro.Namespace, stable.Spec.Template.Labels)
	if st := ro.Status; mesh.Phase(st.Phase) == mesh.PhaseSucceeded && st.NewVirtualNode != "" {
		node = st.NewVirtualNode
	}
	if node == "" {
		return fmt.Sprintf("no VirtualNode of namespace %s selects the pods of the stable Deployment %s", ro.Namespace, name)
	}
	vn, err := r.store.node(ro.Namespace, node)
	if err != nil {
		return err.Error()
	}
	if _, err := rollouts.NewVirtualNode(vn, node+"-check", ro.Spec.Version, nil); err != nil {
		return err.Error()
	}
	return ""
}

// otherRollout says why ro cannot begin while another Rollout of the
// namespace runs on the same router ("" if none does).
func (r *Runtime) otherRollout(ro *v1alpha1.Rollout) string {
	ros, err := r.store.rolloutsIn(ro.Namespace)
	if err != nil {
		return ""
	}
	for _, o := range ros {
		if o.Name != ro.Name && stateOf(o) == running && o.Spec.VirtualRouterRef.Name == ro.Spec.VirtualRouterRef.Name {
			return fmt.Sprintf("rollout %s of virtual router %s is in progress (phase %s); wait for it to end, or abort it", o.Name, o.Spec.VirtualRouterRef.Name, o.Status.Phase)
		}
	}
	return ""
}

// fail ends a Rollout that cannot begin: status Failed with the reason,
// recording the target, so that only an edit of the target retries.
func (r *Runtime) fail(ctx context.Context, ro *v1alpha1.Rollout, reason string) error {
	now := r.cfg.Clock.Now().UTC().Format(time.RFC3339Nano)
	st := &mesh.RolloutStatus{
		Phase: mesh.PhaseFailed, StepIndex: -1, Reason: reason, Message: "Failed: " + reason,
		NewVersion: ro.Spec.Version, StartedAt: now, PhaseSince: now, WaitSince: now, FinishedAt: now,
	}
	if ro.Status.Phase != "" {
		old := rollouts.Status(&ro.Status, ro.Name)
		st.Events, st.History = old.Events, old.History
	}
	st.Events = append(st.Events, mesh.RolloutEvent{Time: now, Phase: mesh.PhaseFailed, Message: st.Message})
	if n := len(st.Events) - 100; n > 0 {
		st.Events = st.Events[n:]
	}
	r.log.Warn("rollout refused", "rollout", ro.Namespace+"/"+ro.Name, "reason", reason)
	_, err := r.store.writeStatus(ctx, ro, st)
	return err
}

// controls mirrors a pause the engine made itself into spec.paused and
// keeps the ControlRefused condition up to date.
func (r *Runtime) controls(ctx context.Context, ro *v1alpha1.Rollout) error {
	st := rollouts.Status(&ro.Status, ro.Name)
	selfPaused, refused := rollouts.ApplyControls(&ro.Spec, ro.Generation != ro.Status.ObservedGeneration, ro.Name, st)
	if selfPaused {
		next := ro.DeepCopy()
		next.Spec.Paused = true
		_, err := r.store.updateSpec(ctx, next)
		if err == nil {
			r.log.Info("rollout paused itself: spec.paused mirrored", "rollout", ro.Namespace+"/"+ro.Name)
		}
		return err
	}
	c := meta.FindStatusCondition(ro.Status.Conditions, v1alpha1.ConditionControlRefused)
	switch {
	case refused == "" && (c == nil || c.Status != metav1.ConditionTrue):
		return nil
	case refused != "" && c != nil && c.Status == metav1.ConditionTrue && c.Message == refused:
		return nil
	}
	next := ro.DeepCopy()
	rollouts.SetControlRefused(&next.Status.Conditions, refused, ro.Generation, r.cfg.Clock.Now())
	_, err := r.store.updateStatus(ctx, next)
	return err
}

// Attach adds a rollout runtime to a Kubernetes control plane (on the
// clients it was made with), sharing its
// Source's informers and woken by its publishes and its xDS clients'
// ACKs, and returns it; call it before cp.Run. With a status writer
// (leader election) it drives while cp leads (AlsoWhileLeading); without,
// run Lead beside cp.Run. conv says when a router's change is ACKed:
// controller.ClusterConvergence counts every replica's clients, a
// controller.ControlPlane its own.
func Attach(cp *controller.ControlPlane, kube kubernetes.Interface, dyn dynamic.Interface, conv RouterConvergence, logger *slog.Logger) (*Runtime, error) {
	rt, err := New(Config{
		Kube: kube, Dynamic: dyn,
		KubeInformers: cp.Source().KubeInformers(), DynamicInformers: cp.Source().DynamicInformers(),
		Convergence: conv, Logger: logger,
		Wake: []func() <-chan struct{}{cp.Source().Changed, cp.XDS().Changed},
	})
	if err != nil {
		return nil, err
	}
	if sw := cp.Status(); sw != nil {
		sw.AlsoWhileLeading(rt.Lead)
	}
	return rt, nil
}
