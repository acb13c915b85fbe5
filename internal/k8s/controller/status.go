package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// StatusConfig configures the leader-elected status writer.
type StatusConfig struct {
	// Namespace and LeaseName name the coordination.k8s.io Lease; default
	// name "gmesh-controlplane". Namespace is required.
	Namespace, LeaseName string
	// Identity is this replica's name in the Lease; default the host name.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's leader
	// election timings; defaults 15s, 10s, 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Clients is what the status writer asks the xDS server about its
// clients; *xdsserver.Server is one.
type Clients interface {
	Usage(typeURL string, names []string, rev uint64) xdsserver.Usage
	Changed() <-chan struct{}
}

var _ Clients = (*xdsserver.Server)(nil)

// ackBatch is how long the status writer gathers ACKs before it writes:
// they come in bursts (every client, every type).
const ackBatch = 500 * time.Millisecond

// StatusWriter writes each App Mesh object's status (conditions Accepted,
// Translated and ACKed, with observedGeneration; the xDS clients that use
// it; the gmesh mesh and name; the fields accepted but not honoured) while
// this replica holds the Lease. It writes an object only when its status
// changed.
type StatusWriter struct {
	log     *slog.Logger
	dyn     dynamic.Interface
	source  *Source
	clients Clients // nil: no ACKed condition
	cfg     StatusConfig
	lock    resourcelock.Interface
	now     func() time.Time
	// alsoLeading run beside the status writing while this replica
	// leads (the webhook's certificates).
	alsoLeading []func(ctx context.Context)
	// others, when set, counts the other replicas' clients, asked every
	// othersEvery (see CountOtherReplicas).
	others      func(ctx context.Context) map[appmesh.Object][]ObjectUsage
	othersEvery time.Duration

	writes atomic.Int64 // status updates sent
}

// NewStatusWriter returns a writer of source's results; Run elects and
// writes.
func NewStatusWriter(kube kubernetes.Interface, dyn dynamic.Interface, source *Source, clients Clients, cfg StatusConfig, logger *slog.Logger) (*StatusWriter, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("status writer: the lease namespace is required")
	}
	if cfg.LeaseName == "" {
		cfg.LeaseName = "gmesh-controlplane"
	}
	if cfg.Identity == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("status writer: identity: %w", err)
		}
		cfg.Identity = h
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = 15 * time.Second
	}
	if cfg.RenewDeadline <= 0 {
		cfg.RenewDeadline = 10 * time.Second
	}
	if cfg.RetryPeriod <= 0 {
		cfg.RetryPeriod = 2 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, cfg.LeaseName,
		kube.CoreV1(), kube.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: cfg.Identity})
	if err != nil {
		return nil, fmt.Errorf("status writer: lease %s/%s: %w", cfg.Namespace, cfg.LeaseName, err)
	}
	return &StatusWriter{log: logger, dyn: dyn, source: source, clients: clients, cfg: cfg, lock: lock, now: time.Now}, nil
}

// AlsoWhileLeading adds a task that runs, with a context that ends when
// the replica stops leading, beside the status writing. Call it before
// Run.
func (w *StatusWriter) AlsoWhileLeading(f func(ctx context.Context)) {
	w.alsoLeading = append(w.alsoLeading, f)
}

// CountOtherReplicas makes the ACKed conditions count the xDS clients of
// every replica, not only this one's: others returns the other replicas'
// counts per object (ClusterConvergence.Usage), asked before every write
// pass and, as ACKs on other replicas wake nothing here, every interval
// while leading. Call it before Run.
func (w *StatusWriter) CountOtherReplicas(others func(ctx context.Context) map[appmesh.Object][]ObjectUsage, every time.Duration) {
	w.others, w.othersEvery = others, every
}

// Run takes part in the leader election until ctx ends; while it leads, it
// writes status after every rebuild and runs the AlsoWhileLeading tasks. Losing the Lease stops the writing,
// and the replica stands for election again.
func (w *StatusWriter) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            w.lock,
			LeaseDuration:   w.cfg.LeaseDuration,
			RenewDeadline:   w.cfg.RenewDeadline,
			RetryPeriod:     w.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            w.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					w.log.Info("leading: writing status", "identity", w.cfg.Identity)
					var wg sync.WaitGroup
					for _, f := range w.alsoLeading {
						wg.Add(1)
						go func() { defer wg.Done(); f(lctx) }()
					}
					w.lead(lctx)
					wg.Wait()
				},
				OnStoppedLeading: func() {
					w.log.Info("not leading: status left to the leader", "identity", w.cfg.Identity)
				},
			},
		})
		if err != nil {
			return fmt.Errorf("status writer: leader election: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}

// lead writes status after every rebuild until ctx ends.
func (w *StatusWriter) lead(ctx context.Context) {
	for {
		changed := w.source.Changed()
		var acks <-chan struct{}
		if w.clients != nil {
			acks = w.clients.Changed()
		}
		if snap := w.source.Last(); snap != nil {
			w.WriteAll(ctx, snap)
		}
		var poll <-chan time.Time
		if w.others != nil {
			// Unstopped timers are collected (Go 1.23).
			poll = time.After(w.othersEvery)
		}
		select {
		case <-ctx.Done():
			return
		case <-poll:
		case <-changed:
		case <-acks:
			select {
			case <-ctx.Done():
				return
			case <-time.After(ackBatch):
			}
		}
	}
}

// WriteAll writes the status of every object of snap whose status
// differs, and returns how many it wrote. An object that changed since (a
// newer generation in the cache, or a conflict) is left for the rebuild
// that change causes.
func (w *StatusWriter) WriteAll(ctx context.Context, snap *Snapshot) int {
	var others map[appmesh.Object][]ObjectUsage
	if w.others != nil && w.clients != nil {
		others = w.others(ctx)
	}
	n := 0
	for _, r := range snap.Results {
		if ctx.Err() != nil {
			return n
		}
		om, ok := snap.Objects[r.Object]
		if !ok {
			continue
		}
		wrote, err := w.write(ctx, snap, r, om, others[r.Object])
		if err != nil {
			w.log.Warn("status not written", "object", r.Object.String(), "err", err)
		}
		if wrote {
			n++
		}
	}
	return n
}

// write writes one object's status if it differs, and says whether it did.
func (w *StatusWriter) write(ctx context.Context, snap *Snapshot, r *appmesh.Result, om ObjectMeta, others []ObjectUsage) (bool, error) {
	cached, err := w.source.cached(om.GVR, r.Object.Namespace, r.Object.Name)
	if err != nil || cached == nil {
		return false, err
	}
	if cached.GetUID() != om.UID || cached.GetGeneration() != om.Generation {
		return false, nil // changed since the snapshot: the next rebuild covers it
	}
	want := DesiredStatus(snap, r, om.Generation, w.clients)
	addUsage(&want, om.Generation, others)
	obj := cached.DeepCopy()
	old, _, _ := unstructured.NestedMap(obj.Object, "status")
	if old == nil {
		old = map[string]any{}
	}
	var have v1beta2.GmeshStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(old, &have); err != nil {
		have = v1beta2.GmeshStatus{}
	}
	now := metav1.NewTime(w.now())
	conds := have.Conditions
	for _, c := range want.Conditions {
		c.LastTransitionTime = now
		meta.SetStatusCondition(&conds, c)
	}
	for _, c := range have.Conditions {
		if meta.FindStatusCondition(want.Conditions, c.Type) == nil {
			meta.RemoveStatusCondition(&conds, c.Type)
		}
	}
	want.Conditions = conds
	// Counts that did not change keep the generation they were first
	// seen at: every rebuild would otherwise rewrite every object.
	if hc, wc := have.Clients, want.Clients; hc != nil && wc != nil && hc.Total == wc.Total && hc.ACKed == wc.ACKed &&
		equality.Semantic.DeepEqual(hc.LastNACK, wc.LastNACK) {
		wc.PublishGeneration = hc.PublishGeneration
	}
	wantMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		return false, fmt.Errorf("encode status: %w", err)
	}
	next := make(map[string]any, len(old)+len(wantMap))
	for k, v := range old {
		next[k] = v
	}
	for _, k := range []string{"observedGeneration", "conditions", "mesh", "gmeshName", "clients", "unhonouredFields"} {
		delete(next, k)
		if v, ok := wantMap[k]; ok {
			next[k] = v
		}
	}
	if equality.Semantic.DeepEqual(old, next) {
		return false, nil
	}
	obj.Object["status"] = next
	_, err = w.dyn.Resource(om.GVR).Namespace(r.Object.Namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return false, nil // the object changed: its event brings a new rebuild
	case err != nil:
		return false, fmt.Errorf("update status: %w", err)
	}
	w.writes.Add(1)
	w.log.Debug("status written", "object", r.Object.String(), "generation", om.Generation)
	return true, nil
}

// DesiredStatus is the status gmesh reports for one object of snap, with
// conditions that carry no LastTransitionTime yet.
func DesiredStatus(snap *Snapshot, r *appmesh.Result, generation int64, clients Clients) v1beta2.GmeshStatus {
	gen := generation
	st := v1beta2.GmeshStatus{ObservedGeneration: &gen, Mesh: r.Mesh, GmeshName: r.Name, UnhonouredFields: r.Unhonoured}
	accepted := metav1.Condition{Type: v1beta2.ConditionAccepted, ObservedGeneration: generation}
	translated := metav1.Condition{Type: v1beta2.ConditionTranslated, ObservedGeneration: generation}
	var msgs []string
	reason := v1beta2.ReasonRefused
	for _, e := range r.Errors {
		msgs = append(msgs, e.Field+": "+e.Message)
		reason = e.Reason
	}
	switch {
	case r.Refused():
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, reason, strings.Join(msgs, "; ")
		translated.Status, translated.Reason, translated.Message = metav1.ConditionFalse, v1beta2.ReasonRefused, "not translated: the object was refused"
		st.Conditions = []metav1.Condition{accepted, translated}
		return st
	case len(r.Errors) > 0:
		// A router some of whose routes were refused.
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionTrue, v1beta2.ReasonConverted, "accepted except: "+strings.Join(msgs, "; ")
	default:
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionTrue, v1beta2.ReasonConverted, "converted to gmesh "+describe(r)
	}
	var left []string
	for _, p := range snap.Problems {
		for _, res := range r.Resources {
			if p.Ref == res.Ref() {
				left = append(left, p.Err.Error())
			}
		}
	}
	switch {
	case len(left) > 0:
		translated.Status, translated.Reason, translated.Message = metav1.ConditionFalse, v1beta2.ReasonSkipped, strings.Join(left, "; ")
	case snap.Err != nil:
		translated.Status, translated.Reason, translated.Message = metav1.ConditionFalse, v1beta2.ReasonSkipped, "publish failed: "+snap.Err.Error()
	default:
		translated.Status, translated.Reason, translated.Message = metav1.ConditionTrue, v1beta2.ReasonPublished, "translated and published to xDS"
	}
	st.Conditions = []metav1.Condition{accepted, translated}
	typeURL, names := xdsNames(snap, r)
	if clients == nil || translated.Status != metav1.ConditionTrue || len(names) == 0 {
		return st
	}
	u := clients.Usage(typeURL, names, snap.Generation)
	st.Clients = &v1beta2.ClientsStatus{PublishGeneration: int64(snap.Generation), Total: int32(u.Total), ACKed: int32(u.ACKed)}
	if u.LastNACK != nil {
		st.Clients.LastNACK = &v1beta2.NACK{Client: u.NACKNode, Version: u.LastNACK.Version, TypeURL: u.LastNACK.TypeURL,
			Reason: u.LastNACK.Detail, Time: metav1.NewTime(u.LastNACK.At)}
	}
	st.Conditions = append(st.Conditions, ackedCondition(st.Clients, generation))
	return st
}

// ackedCondition is the ACKed condition of an object's client counts.
func ackedCondition(c *v1beta2.ClientsStatus, generation int64) metav1.Condition {
	acked := metav1.Condition{Type: v1beta2.ConditionACKed, ObservedGeneration: generation}
	switch {
	case c.LastNACK != nil:
		acked.Status, acked.Reason = metav1.ConditionFalse, v1beta2.ReasonNACKed
		acked.Message = fmt.Sprintf("client %s rejected version %s: %s", c.LastNACK.Client, c.LastNACK.Version, c.LastNACK.Reason)
	case c.ACKed < c.Total:
		acked.Status, acked.Reason = metav1.ConditionUnknown, v1beta2.ReasonWaitingACKs
		acked.Message = fmt.Sprintf("%d of %d xDS clients ACKed", c.ACKed, c.Total)
	default:
		acked.Status, acked.Reason = metav1.ConditionTrue, v1beta2.ReasonAllACKed
		acked.Message = fmt.Sprintf("%d of %d xDS clients ACKed", c.ACKed, c.Total)
	}
	return acked
}

// addUsage adds other replicas' counts of one object to st's (the
// leader's own): a replica that measured the object at another
// metadata.generation than st's counts its clients as not ACKed (it has
// not built this generation yet, or the leader is behind and rebuilds
// next); the newest NACK wins. It rewrites the ACKed condition.
func addUsage(st *v1beta2.GmeshStatus, generation int64, others []ObjectUsage) {
	if st.Clients == nil || len(others) == 0 {
		return
	}
	c := st.Clients
	for _, u := range others {
		c.Total += int32(u.Total)
		if u.Generation == generation {
			c.ACKed += int32(u.ACKed)
		}
		if n := u.LastNACK; n != nil && (c.LastNACK == nil || n.Time.After(c.LastNACK.Time.Time)) {
			nc := *n
			c.LastNACK = &nc
		}
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == v1beta2.ConditionACKed {
			st.Conditions[i] = ackedCondition(c, generation)
		}
	}
}

// xdsNames are the xDS resources through which clients use an object: a
// virtual node's cluster, a virtual service's route configuration, the
// route configurations of the virtual services a router provides. Other
// kinds have none.
func xdsNames(snap *Snapshot, r *appmesh.Result) (typeURL string, names []string) {
	for _, res := range r.Resources {
		switch res.Kind {
		case mesh.KindVirtualNode:
			return xds.ClusterType, []string{xds.ClusterName(res.Metadata.Mesh, res.Metadata.Name)}
		case mesh.KindVirtualService:
			return xds.RouteType, []string{xds.RouteConfigName(res.Metadata.Mesh, res.Metadata.Name)}
		case mesh.KindVirtualRouter:
			for _, vs := range snap.Results.Resources() {
				spec := vs.VirtualService()
				if vs.Kind != mesh.KindVirtualService || vs.Metadata.Mesh != res.Metadata.Mesh || spec == nil ||
					spec.Provider == nil || spec.Provider.VirtualRouter == nil || spec.Provider.VirtualRouter.VirtualRouterName != res.Metadata.Name {
					continue
				}
				names = append(names, xds.RouteConfigName(vs.Metadata.Mesh, vs.Metadata.Name))
			}
			return xds.RouteType, names
		}
	}
	return "", nil
}

func describe(r *appmesh.Result) string {
	if r.Mesh == "" || r.Object.Kind == mesh.KindMesh {
		return fmt.Sprintf("%s %q", strings.ToLower(string(r.Object.Kind)), r.Name)
	}
	return fmt.Sprintf("%s %q in mesh %q", strings.ToLower(string(r.Object.Kind)), r.Name, r.Mesh)
}

// Writes counts the status updates sent.
func (w *StatusWriter) Writes() int64 { return w.writes.Load() }
