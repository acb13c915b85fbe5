package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	listerscorev1 "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	xdsserver "github.com/gmesh-dev/gmesh/internal/xds/server"
)

// RouterConvergence answers the rollout engine's question at each traffic
// step: has every xDS client that uses a VirtualRouter (it subscribes to
// the route configuration of a virtual service the router provides) ACKed
// config built from the router at metadata.generation generation or
// later? pending says what is missing: clients as "namespace/pod@version"
// (the node id and the route configuration version it ACKed last, "none"
// before any), a client that rejected the config with its reason, and
// replicas that have not seen the generation yet or did not answer.
// *ControlPlane answers for its own clients, *ClusterConvergence for every
// replica's.
type RouterConvergence interface {
	ConvergedRouter(namespace, router string, generation int64) (done bool, pending []string)
}

var (
	_ RouterConvergence = (*ControlPlane)(nil)
	_ RouterConvergence = (*ClusterConvergence)(nil)
)

// PathConvergedRouter is where every replica's health listener answers
// ControlPlane.ConvergedRouter:
// GET /converged/router?namespace=NS&name=ROUTER&generation=N.
const PathConvergedRouter = "/converged/router"

// DefaultPeerSelector selects the control plane's pods (the labels of
// deploy/kubernetes/controlplane.yaml's Deployment).
const DefaultPeerSelector = "app.kubernetes.io/name=gmesh,app.kubernetes.io/component=controlplane"

// DefaultPeerPort is the peers' health port: --health-addr's default.
const DefaultPeerPort = 8081

// DefaultPeerTimeout bounds each peer's answer.
const DefaultPeerTimeout = 2 * time.Second

// ConvergedRouter answers for the xDS clients of this replica. It resolves
// the VirtualRouter namespace/router to this replica's publishes: the
// earliest publish generation whose snapshot held the router at
// metadata.generation generation or later (publish generations are this
// process's own; Source.Seen). Until there is one, it is not done, with
// "replica NAME has not yet seen generation N of virtualrouter NS/NAME".
// A router that snapshot holds but gmesh refused or could not translate is
// not done either, with why (its status's Accepted or Translated message):
// nothing of that generation is served. Otherwise it is done when every
// client that uses the router (the StatusWriter's ACKed condition's
// clients: xdsNames) ACKed that publish's route configuration version or a
// later one (xdsserver.Server.Behind: of a publish repeated by the
// subscribe-first step, the last). A client that uses none of the router's
// route configurations does not count; a router that provides no virtual
// service has no clients and is done. A client that rejected the version
// is pending as "namespace/pod@version NACKed VERSION: REASON".
func (cp *ControlPlane) ConvergedRouter(namespace, router string, generation int64) (bool, []string) {
	return convergedRouter(cp.replica, cp.source, cp.xds, namespace, router, generation)
}

// behindClients is what ConvergedRouter asks the xDS server;
// *xdsserver.Server is one.
type behindClients interface {
	Behind(typeURL string, rev uint64, names []string) (ok bool, behind []xdsserver.Lagging)
}

func convergedRouter(replica string, source *Source, clients behindClients, namespace, router string, generation int64) (bool, []string) {
	obj := appmesh.Object{Kind: mesh.KindVirtualRouter, Namespace: namespace, Name: router}
	what := fmt.Sprintf("virtualrouter %s/%s", namespace, router)
	pub, snap, ok := source.Seen(obj, generation)
	if !ok || snap == nil {
		return false, []string{fmt.Sprintf("replica %s has not yet seen generation %d of %s", replica, generation, what)}
	}
	r := snap.Results.Find(mesh.KindVirtualRouter, namespace, router)
	om, held := snap.Objects[obj]
	if r == nil || !held {
		return false, []string{fmt.Sprintf("replica %s has not yet seen generation %d of %s", replica, generation, what)}
	}
	// The router's own Accepted and Translated conditions, as the status
	// writer reports them.
	st := DesiredStatus(snap, r, om.Generation, nil)
	for _, t := range []string{v1beta2.ConditionAccepted, v1beta2.ConditionTranslated} {
		if c := meta.FindStatusCondition(st.Conditions, t); c != nil && c.Status != metav1.ConditionTrue {
			return false, []string{fmt.Sprintf("replica %s: %s at generation %d is not served: %s: %s", replica, what, om.Generation, c.Reason, c.Message)}
		}
	}
	typeURL, names := xdsNames(snap, r)
	if len(names) == 0 {
		return true, nil // no virtual service on it: no client uses it
	}
	ok, behind := clients.Behind(typeURL, pub, names)
	if !ok {
		// Not reached: Seen's publish was published.
		return false, []string{fmt.Sprintf("replica %s has not yet published generation %d of %s", replica, generation, what)}
	}
	var pending []string
	for _, l := range behind {
		s := l.Node + "@" + l.ACKed
		if l.NACK != nil {
			s += fmt.Sprintf(" NACKed %s: %s", l.NACK.Version, l.NACK.Detail)
		}
		pending = append(pending, s)
	}
	return len(pending) == 0, pending
}

// ConvergedRouterHandler serves c.ConvergedRouter as JSON
// ({"done": bool, "pending": [...]}) on
// GET PathConvergedRouter?namespace=NS&name=ROUTER&generation=N. A missing
// or invalid parameter is a 400 whose message names it.
func ConvergedRouterHandler(c RouterConvergence) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns, name, genText := q.Get("namespace"), q.Get("name"), q.Get("generation")
		var problems []string
		switch {
		case ns == "":
			problems = append(problems, "namespace: required")
		default:
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				problems = append(problems, fmt.Sprintf("namespace %q: %s", ns, strings.Join(errs, "; ")))
			}
		}
		switch {
		case name == "":
			problems = append(problems, "name: required")
		default:
			if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
				problems = append(problems, fmt.Sprintf("name %q: %s", name, strings.Join(errs, "; ")))
			}
		}
		gen, err := strconv.ParseInt(genText, 10, 64)
		switch {
		case genText == "":
			problems = append(problems, "generation: required")
		case err != nil || gen < 1:
			problems = append(problems, fmt.Sprintf("generation %q: must be a positive integer (the router's metadata.generation)", genText))
		}
		if len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusBadRequest)
			return
		}
		done, pending := c.ConvergedRouter(ns, name, gen)
		if pending == nil {
			pending = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(convergedAnswer{Done: done, Pending: pending}) //nolint:errcheck // the client went away
	})
}

// convergedAnswer is PathConvergedRouter's JSON.
type convergedAnswer struct {
	Done    bool     `json:"done"`
	Pending []string `json:"pending"`
}

// PeersConfig says how the leader finds the control plane's replicas.
type PeersConfig struct {
	// Namespace of the control plane's pods; required.
	Namespace string
	// Selector is a label selector of the control plane's pods; default
	// DefaultPeerSelector.
	Selector string
	// Port is the replicas' health port (--health-addr's), where they
	// serve PathConvergedRouter; default DefaultPeerPort.
	Port int
	// Self is this replica's pod name: that pod is answered in-process,
	// never over HTTP. Default the control plane's Config.Replica.
	Self string
	// Timeout bounds each replica's answer; default DefaultPeerTimeout.
	Timeout time.Duration
	// Client makes the requests; default a client without keep-alives.
	Client *http.Client
}

// ClusterConvergence answers RouterConvergence for every replica of the
// control plane: the Lease leader runs rollouts, but each xDS client is
// connected to one replica (the Service spreads them), and only that
// replica knows what the client ACKed. ConvergedRouter asks its own
// replica in-process and every other Ready replica (the pods of
// PeersConfig.Namespace that PeersConfig.Selector selects, read from the
// Source's pod informer) over HTTP on PathConvergedRouter, all at once,
// each within PeersConfig.Timeout; it is done only when every one of them
// says done. Each replica resolves the router's metadata.generation (the
// API server's, the same for every replica) to its own publish
// generations, which is why the question is asked by object generation
// and not by publish generation.
//
//   - A Ready replica that does not answer (or answers with an error) is
//     pending: "replica NAME did not answer: ...". Its clients may not
//     have the config, so the step waits (or times out) rather than
//     guess; a replica that is wedged but still Ready holds rollouts until
//     its readiness probe fails.
//   - A replica that is not Ready or is terminating (deletionTimestamp)
//     is skipped. A terminating replica ends its ADS streams (on SIGTERM
//     the control plane ends them before it stops), and its clients
//     reconnect through the Service to a Ready replica, which sends them
//     its current snapshot on connect: from then on they are that
//     replica's clients and counted there; in between, grpc-go keeps
//     the config it had and asks again on the new stream. A replica that
//     is not Ready yet has no clients (the Service sends it none, and it
//     has published nothing before /readyz passes).
//   - What skipping cannot see: a replica that turns NotReady while
//     running (its last publish failed, or its webhook certificate is
//     gone) keeps the streams it has, and those clients are not counted
//     until they reconnect elsewhere. A failed publish is the cluster
//     state's, which every replica, this one included, builds alike, so
//     this replica's own answer is not done then either.
//
// The pending lists of all replicas are merged, sorted and deduplicated
// (a client that moved between replicas may show on both for a moment).
type ClusterConvergence struct {
	self RouterConvergence
	pods listerscorev1.PodLister
	sel  labels.Selector
	cfg  PeersConfig
	log  *slog.Logger
}

// NewClusterConvergence returns the cluster-wide answer: self answers for
// this replica (a *ControlPlane), pods lists the control plane's pods
// (Source.Pods).
func NewClusterConvergence(self RouterConvergence, pods listerscorev1.PodLister, cfg PeersConfig, logger *slog.Logger) (*ClusterConvergence, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("cluster convergence: the control plane's namespace is required")
	}
	if cfg.Selector == "" {
		cfg.Selector = DefaultPeerSelector
	}
	sel, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("cluster convergence: selector %q: %w", cfg.Selector, err)
	}
	if cfg.Port <= 0 {
		cfg.Port = DefaultPeerPort
	}
	if cfg.Port > 65535 {
		return nil, fmt.Errorf("cluster convergence: port %d out of range", cfg.Port)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultPeerTimeout
	}
	if cfg.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableKeepAlives = true // nothing idles between a rollout's polls
		tr.Proxy = nil
		cfg.Client = &http.Client{Transport: tr}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ClusterConvergence{self: self, pods: pods, sel: sel, cfg: cfg, log: logger}, nil
}

// ConvergedRouter is done when this replica and every other Ready replica
// say done (see ClusterConvergence).
func (c *ClusterConvergence) ConvergedRouter(namespace, router string, generation int64) (bool, []string) {
	pods, err := c.pods.Pods(c.cfg.Namespace).List(c.sel)
	if err != nil {
		return false, []string{fmt.Sprintf("control-plane replicas: list pods of %s (%s): %v", c.cfg.Namespace, c.sel, err)}
	}
	type answer struct {
		done    bool
		pending []string
	}
	var peers []*corev1.Pod
	for _, p := range pods {
		if p.Name != c.cfg.Self && Serving(p) {
			peers = append(peers, p)
		}
	}
	answers := make([]answer, len(peers)+1)
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, pending, err := c.ask(p, namespace, router, generation)
			if err != nil {
				c.log.Debug("replica did not answer", "replica", p.Name, "err", err)
				answers[i] = answer{pending: []string{fmt.Sprintf("replica %s did not answer: %v", p.Name, err)}}
				return
			}
			answers[i] = answer{done: done, pending: pending}
		}()
	}
	d, p := c.self.ConvergedRouter(namespace, router, generation)
	answers[len(peers)] = answer{done: d, pending: p}
	wg.Wait()
	done := true
	var pending []string
	for _, a := range answers {
		done = done && a.done
		pending = append(pending, a.pending...)
	}
	slices.Sort(pending)
	return done, slices.Compact(pending)
}

// ask asks one replica over HTTP.
func (c *ClusterConvergence) ask(p *corev1.Pod, namespace, router string, generation int64) (bool, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	q := url.Values{"namespace": {namespace}, "name": {router}, "generation": {strconv.FormatInt(generation, 10)}}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(c.cfg.Port)), Path: PathConvergedRouter, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, nil, err
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return false, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return false, nil, fmt.Errorf("GET %s: %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(string(body)))
	}
	var a convergedAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return false, nil, fmt.Errorf("GET %s: decode: %w", u.Redacted(), err)
	}
	if !a.Done && len(a.Pending) == 0 {
		a.Pending = []string{fmt.Sprintf("replica %s: not done, nothing pending named", p.Name)}
	}
	return a.Done, a.Pending, nil
}
