// Package controller is gmesh's control plane on Kubernetes: it watches
// the cluster with client-go informers (the six App Mesh kinds of
// appmesh.k8s.aws/v1beta2, Namespaces for their labels, Pods for their
// readiness and IPs), and on every change rebuilds the whole mesh from the
// informers' caches, converts it (internal/k8s/appmesh), translates it
// (internal/xds) and publishes it to the xDS server (internal/xds/server)
// with a publish generation of its own: the API server versions each object
// alone, so no store revision exists to key ACKs to.
//
// The Source (informers, debounce, conversion) hands each rebuild to a
// Consumer: the xDS publisher here, or a virtual gateway's pods
// (internal/k8s/gatewaypod), which route by the same conversion without
// being xDS clients.
//
// Every replica watches and serves xDS; only the leader (a
// coordination.k8s.io Lease) writes status back (see StatusWriter).
//
// Changes are debounced: a burst of events becomes one publish. The queue
// between the informers and the rebuild holds one pending signal, so an
// event handler never blocks. A pod that stops being Ready or starts
// terminating skips the debounce: it leaves EDS on the next rebuild.
//
// A selected pod with an IP is an endpoint from the moment it has one:
// starting (not Ready yet) it listens without serving, so that in a mesh
// with TLS on it gets its server Listener (a STRICT pod's grpc-go xDS
// server serves, and so turns Ready, only once it has it); terminating it
// drains, keeping that Listener. Only Ready pods are in EDS and in the
// gateways' backends (mesh.Endpoint.Serving).
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// The App Mesh resources the source watches.
var (
	GVRMeshes          = v1beta2.SchemeGroupVersion.WithResource("meshes")
	GVRVirtualNodes    = v1beta2.SchemeGroupVersion.WithResource("virtualnodes")
	GVRVirtualRouters  = v1beta2.SchemeGroupVersion.WithResource("virtualrouters")
	GVRVirtualServices = v1beta2.SchemeGroupVersion.WithResource("virtualservices")
	GVRVirtualGateways = v1beta2.SchemeGroupVersion.WithResource("virtualgateways")
	GVRGatewayRoutes   = v1beta2.SchemeGroupVersion.WithResource("gatewayroutes")
)

// Kinds maps each watched App Mesh resource to its kind, in conversion
// order.
var Kinds = []struct {
	GVR  schema.GroupVersionResource
	Kind mesh.Kind
}{
	{GVRMeshes, mesh.KindMesh},
	{GVRVirtualNodes, mesh.KindVirtualNode},
	{GVRVirtualRouters, mesh.KindVirtualRouter},
	{GVRVirtualServices, mesh.KindVirtualService},
	{GVRVirtualGateways, mesh.KindVirtualGateway},
	{GVRGatewayRoutes, mesh.KindGatewayRoute},
}

// ListKinds maps each watched resource to its list kind, as client-go's
// fake dynamic client needs it.
func ListKinds() map[schema.GroupVersionResource]string {
	out := map[schema.GroupVersionResource]string{}
	for _, k := range Kinds {
		out[k.GVR] = string(k.Kind) + "List"
	}
	return out
}

// Publisher takes whole, consistent snapshots; *xdsserver.Server is one.
// generation increases by one on every change of the cluster state and may
// repeat (the subscribe-first step publishes a generation twice).
type Publisher interface {
	Publish(res *xds.Resources, generation uint64) error
}

var _ Publisher = (*xdsserver.Server)(nil)

// Consumer takes each rebuild of a Source. Two implement it: the xDS
// publisher NewSource sets up (translate, the BeforePublish step, Publish)
// and a virtual gateway's pods (internal/k8s/gatewaypod: the gateway's
// routing table from the converted mesh and its endpoints).
//
// Consume runs on the rebuild goroutine with the snapshot's Generation,
// Results and Objects set; snap.Results.Resources() and
// snap.Results.Endpoints() are the converted mesh. It records in snap what
// it made (the publisher sets Resources and Problems) and returns why it
// could not use the rebuild, which becomes snap.Err. A Source is Ready only
// while its last Consume succeeded.
type Consumer interface {
	Consume(ctx context.Context, snap *Snapshot) error
}

var _ Consumer = (*publisher)(nil)

// Options configure a Source. The zero value is usable.
type Options struct {
	// Debounce is how long the source waits after a change for more
	// before it rebuilds; every further change restarts the wait.
	// Default 100ms.
	Debounce time.Duration
	// MaxDelay bounds how long a steady stream of changes can hold a
	// rebuild back. Default 1s.
	MaxDelay time.Duration
	// Clock defaults to the real clock.
	Clock clock.Clock
	// BeforePublish, when set, runs before every publish with the
	// translation input and the previous published resources (nil on the
	// first); the control plane uses it for the subscribe-first step. It
	// runs on the rebuild goroutine. Only NewSource's publisher calls it.
	BeforePublish func(ctx context.Context, in xds.Input, prev *xds.Resources)
	Logger        *slog.Logger
}

// Snapshot is the outcome of one rebuild.
type Snapshot struct {
	// Generation is the publish generation.
	Generation uint64
	// Results are the conversion's per-object results.
	Results appmesh.Results
	// Objects are the metadata of every App Mesh object the rebuild read.
	Objects map[appmesh.Object]ObjectMeta
	// Problems are the resources translation left out (the xDS
	// publisher's; nil for other consumers).
	Problems []xds.Problem
	// Resources is what was published (nil if the publish failed, and for
	// consumers other than the xDS publisher).
	Resources *xds.Resources
	// Err is why the consumer could not use the rebuild (for the xDS
	// publisher: why the publish failed), nil if it could.
	Err error
}

// ObjectMeta is what the status writer needs of an object.
type ObjectMeta struct {
	GVR        schema.GroupVersionResource
	UID        types.UID
	Generation int64
}

// Source watches the cluster and hands its mesh to a Consumer.
type Source struct {
	log      *slog.Logger
	opts     Options
	consumer Consumer

	// dyn reads the API server directly (CatchUp).
	dyn         dynamic.Interface
	dynFactory  dynamicinformer.DynamicSharedInformerFactory
	kubeFactory informers.SharedInformerFactory
	kinds       []cache.SharedIndexInformer // in Kinds order
	namespaces  listerscorev1.NamespaceLister
	pods        listerscorev1.PodLister
	podIndex    cache.Indexer // pods, with the endpointsByLabel index
	synced      []cache.InformerSynced

	kick   chan struct{} // a change: rebuild after the debounce
	urgent chan struct{} // an endpoint left: rebuild now

	mu         sync.Mutex
	generation uint64
	last       *Snapshot
	lastUsed   *Snapshot // the last snapshot the consumer used (Err nil)
	// seen records, per object of the used snapshots, the first publish
	// generation that held each of its metadata.generations (see Seen).
	seen    map[appmesh.Object]*objectSeen
	ready   bool
	changed chan struct{} // closed and replaced on every rebuild
}

// objectSeen is one object's metadata.generations as the used snapshots
// held them, oldest first: the generation and the first publish that held
// it. A new UID (the object deleted and created again) starts afresh.
type objectSeen struct {
	uid  types.UID
	gens []genSeen
}

type genSeen struct {
	generation int64
	publish    uint64
}

// seenLimit bounds how many metadata.generations Seen remembers per
// object; an older generation asked about counts from the oldest kept.
const seenLimit = 16

// NewSource sets up the informers on kube (Namespaces, Pods) and dyn (the
// App Mesh kinds) and a consumer that translates every rebuild and
// publishes it to pub; Run starts them.
func NewSource(kube kubernetes.Interface, dyn dynamic.Interface, pub Publisher, opts Options) *Source {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return NewSourceFor(kube, dyn, &publisher{pub: pub, before: opts.BeforePublish, log: log}, opts)
}

// NewSourceFor is NewSource with another consumer of the rebuilds.
// opts.BeforePublish is not called.
func NewSourceFor(kube kubernetes.Interface, dyn dynamic.Interface, c Consumer, opts Options) *Source {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		log:         opts.Logger,
		opts:        opts,
		dyn:         dyn,
		consumer:    c,
		dynFactory:  dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		kubeFactory: informers.NewSharedInformerFactory(kube, 0),
		kick:        make(chan struct{}, 1),
		urgent:      make(chan struct{}, 1),
		changed:     make(chan struct{}),
	}
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.signal(s.kick) },
		UpdateFunc: func(any, any) { s.signal(s.kick) },
		DeleteFunc: func(any) { s.signal(s.kick) },
	}
	specChanged := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.signal(s.kick) },
		UpdateFunc: func(oldObj, newObj any) {
			if statusOnly(oldObj, newObj) {
				return // our own status write: nothing to rebuild
			}
			s.signal(s.kick)
		},
		DeleteFunc: func(any) { s.signal(s.kick) },
	}
	for _, k := range Kinds {
		inf := s.dynFactory.ForResource(k.GVR).Informer()
		inf.AddEventHandler(specChanged) //nolint:errcheck // the registration is never removed
		s.kinds = append(s.kinds, inf)
		s.synced = append(s.synced, inf.HasSynced)
	}
	ns := s.kubeFactory.Core().V1().Namespaces()
	ns.Informer().AddEventHandler(changed) //nolint:errcheck
	s.namespaces = ns.Lister()
	pods := s.kubeFactory.Core().V1().Pods()
	pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{ //nolint:errcheck
		AddFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok && classify(p) == podNone {
				return // not an endpoint yet: nothing to publish
			}
			s.signal(s.kick)
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Pod)
			n, ok2 := newObj.(*corev1.Pod)
			if !ok1 || !ok2 {
				s.signal(s.kick)
				return
			}
			moved := o.Status.PodIP != n.Status.PodIP || !maps(o.Labels, n.Labels)
			switch {
			case Serving(o) && !Serving(n),
				// Still serving, but maybe no longer selected, or elsewhere.
				Serving(o) && moved:
				s.signal(s.urgent)
			case classify(o) != classify(n),
				// A starting or terminating pod: its server listener.
				classify(n) != podNone && moved:
				s.signal(s.kick)
			}
		},
		DeleteFunc: func(obj any) {
			if p, ok := obj.(*corev1.Pod); ok && p.Status.PodIP == "" {
				return // never an endpoint
			}
			s.signal(s.urgent) // a pod with an IP, or a tombstone
		},
	})
	// Only what Serving and the selectors read is kept: the cache holds
	// every pod of the cluster.
	if err := pods.Informer().SetTransform(slimPod); err != nil {
		panic(fmt.Sprintf("kubernetes source: pod transform: %v", err)) // only fails once started
	}
	if err := pods.Informer().AddIndexers(cache.Indexers{endpointsByLabel: endpointLabelKeys}); err != nil {
		panic(fmt.Sprintf("kubernetes source: pod index: %v", err)) // only fails once started
	}
	s.pods = pods.Lister()
	s.podIndex = pods.Informer().GetIndexer()
	s.synced = append(s.synced, ns.Informer().HasSynced, pods.Informer().HasSynced)
	return s
}

// slimPod keeps of a pod what the source reads: its identity, labels,
// deletion timestamp, service account (IdentityWants), IP, phase and
// conditions.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, Conditions: p.Status.Conditions},
	}, nil
}

// statusOnly reports whether an update changed neither the spec (the
// generation, which the API server bumps on spec changes of a kind with a
// status subresource) nor the labels and annotations.
func statusOnly(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	if !ok1 || !ok2 || n.GetGeneration() == 0 || o.GetGeneration() != n.GetGeneration() {
		return false
	}
	return maps(o.GetLabels(), n.GetLabels()) && maps(o.GetAnnotations(), n.GetAnnotations())
}

// cached returns an App Mesh object from the informer cache, nil if it is
// not there.
func (s *Source) cached(gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	for i, k := range Kinds {
		if k.GVR != gvr {
			continue
		}
		key := name
		if namespace != "" {
			key = namespace + "/" + name
		}
		item, ok, err := s.kinds[i].GetStore().GetByKey(key)
		if err != nil || !ok {
			return nil, err
		}
		u, _ := item.(*unstructured.Unstructured)
		return u, nil
	}
	return nil, fmt.Errorf("unknown resource %s", gvr)
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// signal queues a rebuild without ever blocking: one pending signal per
// channel is enough, as a rebuild reads the whole state.
func (s *Source) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Serving reports whether a pod is a serving endpoint (in EDS): it has an
// IP, is Running and Ready, and is not terminating.
func Serving(p *corev1.Pod) bool {
	return classify(p) == podServing
}

// podClass is what a selected pod is to its virtual node.
type podClass int

const (
	podNone        podClass = iota // no IP, or finished: not an endpoint
	podStarting                    // an IP, Running or Pending, not Ready, not terminating
	podServing                     // an IP, Running, Ready, not terminating
	podTerminating                 // an IP, Running or Pending, being deleted
)

// classify reads a pod as the conversion's input wants it: a serving
// endpoint (Input.ReadyPodIPs), a starting one (StartingPodIPs: it
// listens, so in a mesh with TLS on it needs its server Listener to become
// Ready), a terminating one (TerminatingPodIPs: draining), or none.
func classify(p *corev1.Pod) podClass {
	if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
		return podNone
	}
	if p.DeletionTimestamp != nil {
		return podTerminating
	}
	if p.Status.Phase != corev1.PodRunning {
		return podStarting
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return podServing
		}
	}
	return podStarting
}

// Run starts the informers, publishes the first snapshot once they have
// synced, and then rebuilds and publishes on every change until ctx ends.
// It returns once every informer goroutine has stopped.
func (s *Source) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.dynFactory.Shutdown()
		s.kubeFactory.Shutdown()
	}()
	s.dynFactory.Start(ctx.Done())
	s.kubeFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		if ctx.Err() != nil {
			return nil // stopped before the caches synced
		}
		return errors.New("kubernetes source: informers did not sync")
	}
	s.log.Info("kubernetes informers synced")
	// Whatever arrived during the sync is in the first rebuild.
	s.drain()
	s.rebuild(ctx)
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.urgent:
		case <-s.kick:
			if !s.debounce(ctx) {
				return nil
			}
		}
		s.drain()
		s.rebuild(ctx)
	}
}

// debounce waits until no change came for Debounce, MaxDelay has passed
// since the first, or an urgent change came. It returns false when ctx
// ended.
func (s *Source) debounce(ctx context.Context) bool {
	quiet := s.opts.Clock.NewTimer(s.opts.Debounce)
	defer quiet.Stop()
	limit := s.opts.Clock.NewTimer(s.opts.MaxDelay)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.urgent:
			return true
		case <-quiet.C():
			return true
		case <-limit.C():
			return true
		case <-s.kick:
			quiet.Stop()
			quiet.Reset(s.opts.Debounce)
		}
	}
}

// drain empties both queues: the rebuild that follows reads everything.
func (s *Source) drain() {
	for _, ch := range []chan struct{}{s.kick, s.urgent} {
		select {
		case <-ch:
		default:
		}
	}
}

// Input reads the informers' caches into a conversion input, with the
// metadata of every object read. An object that does not decode into its
// type is left out and returned as an error naming it.
func (s *Source) Input() (appmesh.Input, map[appmesh.Object]ObjectMeta, []error) {
	in, objs, errs := s.objects()
	in.ReadyPodIPs = map[types.NamespacedName][]string{}
	in.StartingPodIPs = map[types.NamespacedName][]string{}
	in.TerminatingPodIPs = map[types.NamespacedName][]string{}
	for i := range in.VirtualNodes {
		vn := &in.VirtualNodes[i]
		ips, err := s.selectedIPs(vn)
		if err != nil {
			// Convert reports a bad selector on the node itself.
			continue
		}
		key := types.NamespacedName{Namespace: vn.Namespace, Name: vn.Name}
		in.ReadyPodIPs[key] = ips[podServing]
		if v := ips[podStarting]; len(v) > 0 {
			in.StartingPodIPs[key] = v
		}
		if v := ips[podTerminating]; len(v) > 0 {
			in.TerminatingPodIPs[key] = v
		}
	}
	return in, objs, errs
}

// AppMeshObjects returns the App Mesh objects and the namespaces' labels
// in the informers' caches (no pods), for the validating webhook; an
// error until the caches have synced.
func (s *Source) AppMeshObjects() (appmesh.Input, error) {
	for _, synced := range s.synced {
		if !synced() {
			return appmesh.Input{}, errors.New("the control plane's informers have not synced yet")
		}
	}
	in, _, _ := s.objects()
	return in, nil
}

var _ webhook.Objects = (*Source)(nil)

// Namespaces is the namespace informer's lister.
func (s *Source) Namespaces() listerscorev1.NamespaceLister { return s.namespaces }

// objects reads the App Mesh objects and the namespaces' labels.
func (s *Source) objects() (appmesh.Input, map[appmesh.Object]ObjectMeta, []error) {
	var in appmesh.Input
	objs := map[appmesh.Object]ObjectMeta{}
	var errs []error
	for i, k := range Kinds {
		items := s.kinds[i].GetStore().List()
		for _, item := range items {
			u, ok := item.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			o := appmesh.Object{Kind: k.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}
			if err := addObject(&in, k.Kind, u); err != nil {
				errs = append(errs, &objectError{obj: o, err: err})
				continue
			}
			objs[o] = ObjectMeta{GVR: k.GVR, UID: u.GetUID(), Generation: u.GetGeneration()}
		}
	}
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		errs = append(errs, fmt.Errorf("list namespaces: %w", err))
	}
	in.NamespaceLabels = make(map[string]map[string]string, len(nss))
	for _, ns := range nss {
		in.NamespaceLabels[ns.Name] = ns.Labels
	}
	return in, objs, errs
}

// endpointsByLabel indexes the pods that are endpoints (serving, starting
// or terminating: classify) by namespace and label: a node's selector then
// reads the pods that carry one of its labels, not every pod of its
// namespace (100 nodes over 10,000 pods: 10,000 pods read per rebuild
// instead of 1,000,000).
const endpointsByLabel = "endpointsByLabel"

func endpointLabelKeys(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || classify(p) == podNone {
		return nil, nil
	}
	keys := make([]string, 0, len(p.Labels))
	for k, v := range p.Labels {
		keys = append(keys, labelKey(p.Namespace, k, v))
	}
	return keys, nil
}

func labelKey(ns, k, v string) string { return ns + "/" + k + "=" + v }

// selectedIPs returns the IPs of the pods a node's podSelector selects in
// its namespace, by class (podServing, podStarting, podTerminating), each
// sorted; none without a podSelector.
func (s *Source) selectedIPs(vn *v1beta2.VirtualNode) (map[podClass][]string, error) {
	if vn.Spec.PodSelector == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	if key, ok := equalityKey(vn.Namespace, sel); ok {
		objs, err := s.podIndex.ByIndex(endpointsByLabel, key)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if p, ok := o.(*corev1.Pod); ok && sel.Matches(labels.Set(p.Labels)) {
				pods = append(pods, p)
			}
		}
	} else if pods, err = s.pods.Pods(vn.Namespace).List(sel); err != nil {
		return nil, err
	}
	ips := map[podClass][]string{}
	for _, p := range pods {
		if c := classify(p); c != podNone {
			ips[c] = append(ips[c], p.Status.PodIP)
		}
	}
	for c, v := range ips {
		slices.Sort(v)
		ips[c] = slices.Compact(v)
	}
	return ips, nil
}

// equalityKey is the index key of one label=value that every pod sel
// selects must carry; false when sel has none (only set-based
// requirements, or none at all: the namespace is scanned).
func equalityKey(ns string, sel labels.Selector) (string, bool) {
	reqs, ok := sel.Requirements()
	if !ok {
		return "", false
	}
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			if vals := r.Values(); vals.Len() == 1 {
				return labelKey(ns, r.Key(), vals.UnsortedList()[0]), true
			}
		}
	}
	return "", false
}

// addObject converts an unstructured object into its typed kind and adds
// it to in.
func addObject(in *appmesh.Input, kind mesh.Kind, u *unstructured.Unstructured) error {
	conv := runtime.DefaultUnstructuredConverter
	var err error
	switch kind {
	case mesh.KindMesh:
		var o v1beta2.Mesh
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.Meshes = append(in.Meshes, o)
		}
	case mesh.KindVirtualNode:
		var o v1beta2.VirtualNode
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.VirtualNodes = append(in.VirtualNodes, o)
		}
	case mesh.KindVirtualRouter:
		var o v1beta2.VirtualRouter
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.VirtualRouters = append(in.VirtualRouters, o)
		}
	case mesh.KindVirtualService:
		var o v1beta2.VirtualService
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.VirtualServices = append(in.VirtualServices, o)
		}
	case mesh.KindVirtualGateway:
		var o v1beta2.VirtualGateway
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.VirtualGateways = append(in.VirtualGateways, o)
		}
	case mesh.KindGatewayRoute:
		var o v1beta2.GatewayRoute
		if err = conv.FromUnstructured(u.Object, &o); err == nil {
			in.GatewayRoutes = append(in.GatewayRoutes, o)
		}
	default:
		return fmt.Errorf("unknown kind %s", kind)
	}
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// rebuild converts the whole cluster state and hands it to the consumer
// under the next generation.
func (s *Source) rebuild(ctx context.Context) {
	in, objs, errs := s.Input()
	for _, err := range errs {
		s.log.Warn("object left out", "err", err)
	}
	results := appmesh.Convert(in)
	for _, fe := range results.Errors() {
		s.log.Warn("object refused", "object", fe.Object.String(), "field", fe.Field, "reason", fe.Reason, "message", fe.Message)
	}
	s.mu.Lock()
	s.generation++
	gen := s.generation
	s.mu.Unlock()

	snap := &Snapshot{Generation: gen, Results: results, Objects: objs}
	snap.Err = s.consumer.Consume(ctx, snap)
	s.mu.Lock()
	s.last = snap
	if snap.Err == nil {
		s.recordSeenLocked(snap)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// publisher is the Consumer that serves the mesh over xDS: it translates
// each rebuild and publishes it under the rebuild's generation.
type publisher struct {
	pub    Publisher
	before func(ctx context.Context, in xds.Input, prev *xds.Resources)
	log    *slog.Logger
	good   *xds.Resources // the last published resources; only the rebuild goroutine uses it
}

// Consume translates the converted mesh (a resource that cannot be
// translated is left out with whatever needs it, and listed in
// snap.Problems) and publishes it.
func (p *publisher) Consume(ctx context.Context, snap *Snapshot) error {
	gen := snap.Generation
	resources := snap.Results.Resources()
	mesh.SortResources(resources)
	xin := xds.Input{Revision: gen, Resources: resources, Endpoints: snap.Results.Endpoints()}
	res, err := xds.Translate(xin)
	var partial *xds.PartialError
	switch {
	case errors.As(err, &partial):
		snap.Problems = partial.Problems
		p.log.Warn("translation left resources out", "generation", gen, "err", err)
		err = nil
	case err != nil:
		err = fmt.Errorf("translate generation %d: %w", gen, err)
	}
	switch {
	case res == nil && err == nil:
		err = fmt.Errorf("translate generation %d: no resources", gen)
	case res != nil:
		if p.before != nil {
			p.before(ctx, xin, p.good)
		}
		if perr := p.pub.Publish(res, gen); perr != nil {
			err = perr
		} else {
			snap.Resources = res
			p.good = res
		}
	}
	if err != nil {
		p.log.Error("publish failed", "generation", gen, "err", err)
		return err
	}
	p.log.Debug("published", "generation", gen, "listeners", len(res.Listeners), "clusters", len(res.Clusters), "endpoints", len(res.Endpoints))
	return nil
}

// Ready reports whether the informers have synced and the last rebuild
// was used by the consumer (for the xDS publisher: published; see Last).
func (s *Source) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready && s.last != nil && s.last.Err == nil
}

// Last returns the last rebuild's snapshot, nil before the first. It is
// shared: do not change it.
func (s *Source) Last() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// recordSeenLocked notes, for Seen, the generation of each object of a
// used snapshot. Call with s.mu held.
func (s *Source) recordSeenLocked(snap *Snapshot) {
	s.lastUsed = snap
	if s.seen == nil {
		s.seen = make(map[appmesh.Object]*objectSeen, len(snap.Objects))
	}
	for o := range s.seen {
		if _, ok := snap.Objects[o]; !ok {
			delete(s.seen, o) // gone: a new object of that name starts afresh
		}
	}
	for o, om := range snap.Objects {
		h := s.seen[o]
		if h == nil || h.uid != om.UID {
			h = &objectSeen{uid: om.UID}
			s.seen[o] = h
		}
		if n := len(h.gens); n > 0 && h.gens[n-1].generation >= om.Generation {
			continue
		}
		h.gens = append(h.gens, genSeen{generation: om.Generation, publish: snap.Generation})
		if len(h.gens) > seenLimit {
			h.gens = append(h.gens[:0:0], h.gens[len(h.gens)-seenLimit:]...)
		}
	}
}

// Seen returns the earliest publish generation whose snapshot, and every
// used one since, held obj at metadata.generation generation or later (the
// first rebuild that read the object at that generation from the
// informers' cache, and whose consumer used it: for the xDS publisher,
// published it), and the last used snapshot. ok is false when the last
// used snapshot does not hold obj at generation or later (it has not been
// seen yet, or no longer exists). A generation older than the ones
// remembered counts from the oldest remembered (a later publish, so a
// stricter answer).
func (s *Source) Seen(obj appmesh.Object, generation int64) (publish uint64, last *Snapshot, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.seen[obj]
	if h == nil || len(h.gens) == 0 || h.gens[len(h.gens)-1].generation < generation {
		return 0, s.lastUsed, false
	}
	for _, g := range h.gens {
		if g.generation >= generation {
			return g.publish, s.lastUsed, true
		}
	}
	return 0, s.lastUsed, false // not reached: the last one qualifies
}

// LastUsed returns the last snapshot the consumer used (for the xDS
// publisher: the last published), nil before the first. It is shared: do
// not change it.
func (s *Source) LastUsed() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUsed
}

// Pods is the pod informer's lister. Its pods keep only what the source
// reads: identity, labels, deletionTimestamp, spec.serviceAccountName, IP,
// phase and conditions.
func (s *Source) Pods() listerscorev1.PodLister { return s.pods }

// Changed returns a channel closed at the next rebuild.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}
