package dashboard

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// State is the dashboard's document: GET /api/state returns it with its
// history, and every SSE event carries one (the first with history, the
// next ones with the poll's Point instead).
type State struct {
	// Seq counts polls; Time is the poll's time.
	Seq            uint64    `json:"seq"`
	Time           time.Time `json:"time"`
	IntervalMillis int64     `json:"intervalMillis"`
	HistoryMillis  int64     `json:"historyMillis"`
	// Connected is false while the control plane cannot be read; Error says
	// why (the rest is the last good poll's).
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`

	Meshes            []string          `json:"meshes"`
	Revision          uint64            `json:"revision"`
	PublishedRevision uint64            `json:"publishedRevision"`
	PublishedVersions map[string]string `json:"publishedVersions,omitempty"`
	TranslateError    string            `json:"translateError,omitempty"`
	// CA is the mesh CA's certificate while a mesh has TLS on.
	CA *controlplane.CAStatus `json:"ca,omitempty"`

	Gateways []*GatewayView `json:"gateways"`
	Services []*ServiceView `json:"services"`
	Clients  []*ClientView  `json:"clients"`

	// History is the chart's points, oldest first (GET /api/state and the
	// first SSE event only).
	History []*Point `json:"history,omitempty"`
	// Point is this poll's point (SSE update events only).
	Point *Point `json:"point,omitempty"`
}

// GatewayView is a virtual gateway and where its routes lead.
type GatewayView struct {
	Mesh string `json:"mesh"`
	Name string `json:"name"`
	// Address and Ports are the spec's; Listen is where the gateway really
	// listens (host:port; Config.GatewayListen), when known: `gmesh up
	// --listen` moves it off the spec's port.
	Address string          `json:"address,omitempty"`
	Ports   []int           `json:"ports,omitempty"`
	Listen  string          `json:"listen,omitempty"`
	Routes  []*GatewayRoute `json:"routes"`
}

// GatewayRoute is one gateway route: its match and target.
type GatewayRoute struct {
	Name           string `json:"name"`
	Match          string `json:"match"`
	VirtualService string `json:"virtualService"`
	// Service is the gmesh service the virtual service leads to, if known.
	Service string `json:"service,omitempty"`
}

// ServiceView is one service: its virtual service, router and route, and
// its versions with their traffic and tasks.
type ServiceView struct {
	// Key is "mesh/name", the key of the service in history points.
	Key          string `json:"key"`
	Mesh         string `json:"mesh"`
	Name         string `json:"name"`
	VirtualNode  string `json:"virtualNode,omitempty"`
	DesiredCount int    `json:"desiredCount,omitempty"`
	// Backends are the virtual services the service's current virtual node
	// calls.
	Backends       []string `json:"backends,omitempty"`
	VirtualService string   `json:"virtualService,omitempty"`
	Router         string   `json:"router,omitempty"`
	Route          string   `json:"route,omitempty"`
	// RPS is the service's request rate over the last poll.
	RPS      float64        `json:"rps"`
	Versions []*VersionView `json:"versions"`
	Rollout  *RolloutView   `json:"rollout,omitempty"`
}

// VersionView is one version of a service.
type VersionView struct {
	Version     string `json:"version"`
	VirtualNode string `json:"virtualNode,omitempty"`
	TaskSet     string `json:"taskSet,omitempty"`
	Revision    int    `json:"revision,omitempty"`
	Draining    bool   `json:"draining,omitempty"`
	// Weight is the route's weight for the version, 0..1 (nil: no route).
	Weight *float64 `json:"weight"`
	// Share is the fraction of the service's requests the version handled
	// in the last poll (nil: no requests).
	Share *float64 `json:"share"`
	RPS   float64  `json:"rps"`
	// SuccessRate is 1 - errors/requests over the last poll (nil: no
	// requests).
	SuccessRate *float64    `json:"successRate"`
	Requests    int64       `json:"requests"`
	Errors      int64       `json:"errors"`
	Tasks       []*TaskView `json:"tasks"`
}

// TaskView is one registered task.
type TaskView struct {
	ID              string  `json:"id"`
	Address         string  `json:"address"`
	Port            int     `json:"port"`
	MetricsAddr     string  `json:"metricsAddr,omitempty"`
	PID             int     `json:"pid,omitempty"`
	Restarts        int     `json:"restarts"`
	State           string  `json:"state"`
	Health          string  `json:"health"`
	Draining        bool    `json:"draining,omitempty"`
	LastHealthError string  `json:"lastHealthError,omitempty"`
	ScrapeError     string  `json:"scrapeError,omitempty"`
	RPS             float64 `json:"rps"`
	// Certificate is the task's workload certificate (a mesh with TLS
	// on): its expiry and renewals, a failing renewal's error.
	Certificate *mesh.CertificateStatus `json:"certificate,omitempty"`
}

// RolloutView is a service's rollout with the actions its phase allows.
type RolloutView struct {
	Name   string              `json:"name"`
	Spec   *mesh.RolloutSpec   `json:"spec"`
	Status *mesh.RolloutStatus `json:"status"`
	// Active is false once the rollout has ended.
	Active bool `json:"active"`
	// Step is 1-based (0 before the first); Steps is len(Spec.Steps).
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Actions says which of pause, resume, promote, abort the control plane
	// would accept now.
	Actions map[string]bool `json:"actions"`
}

// ClientView is one xDS client's convergence.
type ClientView struct {
	NodeID         string    `json:"nodeId"`
	ConnectedSince time.Time `json:"connectedSince"`
	Streams        int       `json:"streams"`
	// Types is keyed by LDS, RDS, CDS, EDS (or the type URL for others).
	Types map[string]*TypeView `json:"types"`
	// Converged: every subscribed type has ACKed the published version.
	Converged bool      `json:"converged"`
	LastNACK  *NACKView `json:"lastNack,omitempty"`
}

// TypeView is a client's state for one resource type.
type TypeView struct {
	ACKed     string    `json:"acked"`
	ACKedAt   time.Time `json:"ackedAt,omitzero"`
	Sent      string    `json:"sent,omitempty"`
	Published string    `json:"published,omitempty"`
	Current   bool      `json:"current"`
}

// NACKView is a client's last rejection.
type NACKView struct {
	Type    string    `json:"type"`
	Version string    `json:"version"`
	Detail  string    `json:"detail"`
	At      time.Time `json:"at"`
}

// Point is one poll's traffic: service key -> version -> values.
type Point struct {
	// T is the poll's time in Unix milliseconds.
	T int64                              `json:"t"`
	S map[string]map[string]PointVersion `json:"s"`
}

// PointVersion is one version's values in a Point.
type PointVersion struct {
	RPS     float64  `json:"rps"`
	Share   *float64 `json:"share"`
	Weight  *float64 `json:"weight"`
	Success *float64 `json:"success"`
}

// topology holds the kinds the status document leaves out.
type topology struct {
	services, gateways, gatewayRoutes []*mesh.Resource
}

// Rollout actions, as the admin API spells them.
var actions = mesh.RolloutActions

func ptr(f float64) *float64 { return &f }

// build derives the state and the history point of one poll.
func build(st *controlplane.Status, topo topology, tr *traffic, samples map[string]scrapeResult, now time.Time, elapsed time.Duration) (*State, *Point) {
	s := &State{
		Time:              now,
		Connected:         true,
		Revision:          st.Revision,
		PublishedRevision: st.PublishedRevision,
		PublishedVersions: st.PublishedVersions,
		TranslateError:    st.TranslateError,
		CA:                st.CA,
		Gateways:          []*GatewayView{},
		Services:          []*ServiceView{},
		Clients:           clientViews(st),
	}
	point := &Point{T: now.UnixMilli(), S: map[string]map[string]PointVersion{}}

	// Services, from their specs, task sets and endpoints.
	byKey := map[string]*ServiceView{}
	svc := func(meshName, name string) *ServiceView {
		k := meshName + "/" + name
		if v := byKey[k]; v != nil {
			return v
		}
		v := &ServiceView{Key: k, Mesh: meshName, Name: name, Versions: []*VersionView{}}
		byKey[k] = v
		s.Services = append(s.Services, v)
		return v
	}
	version := func(sv *ServiceView, ver string) *VersionView {
		for _, v := range sv.Versions {
			if v.Version == ver {
				return v
			}
		}
		v := &VersionView{Version: ver, Tasks: []*TaskView{}}
		sv.Versions = append(sv.Versions, v)
		return v
	}
	nodeService := map[string]*ServiceView{} // mesh/node -> service
	nodeVersion := map[string]string{}       // mesh/node -> version
	for _, r := range st.Services {
		sp := r.Service()
		if sp == nil {
			continue
		}
		sv := svc(r.Metadata.Mesh, r.Metadata.Name)
		sv.VirtualNode, sv.DesiredCount = sp.VirtualNode, sp.DesiredCount
		nodeService[r.Metadata.Mesh+"/"+sp.VirtualNode] = sv
	}
	taskSets := slices.Clone(st.TaskSets)
	slices.SortStableFunc(taskSets, func(a, b *mesh.Resource) int {
		ta, tb := a.TaskSet(), b.TaskSet()
		if ta == nil || tb == nil {
			return 0
		}
		return cmp.Compare(ta.Revision, tb.Revision)
	})
	for _, r := range taskSets {
		ts := r.TaskSet()
		if ts == nil {
			continue
		}
		sv := svc(r.Metadata.Mesh, ts.Service)
		v := version(sv, ts.Version)
		v.VirtualNode, v.TaskSet, v.Revision, v.Draining = ts.VirtualNode, r.Metadata.Name, ts.Revision, ts.Draining
		nodeService[r.Metadata.Mesh+"/"+ts.VirtualNode] = sv
		nodeVersion[r.Metadata.Mesh+"/"+ts.VirtualNode] = ts.Version
	}

	// Backends of each service's current virtual node.
	for _, r := range st.Nodes {
		vn := r.VirtualNode()
		sv := byKey[r.Metadata.Mesh+"/"+serviceOfNode(st.Services, r)]
		if vn == nil || sv == nil {
			continue
		}
		for _, b := range vn.Backends {
			if b.VirtualService != nil && !slices.Contains(sv.Backends, b.VirtualService.VirtualServiceName) {
				sv.Backends = append(sv.Backends, b.VirtualService.VirtualServiceName)
			}
		}
	}

	// Tasks and their traffic.
	tr.begin(st.Endpoints)
	perVersion := map[*VersionView]*counts{}
	perService := map[*ServiceView]*counts{}
	secs := elapsed.Seconds()
	for _, ep := range st.Endpoints {
		sv := svc(ep.Mesh, ep.Service)
		ver := ep.Attributes[mesh.AttrVersion]
		if ver == "" {
			ver = "-"
		}
		v := version(sv, ver)
		t := &TaskView{ID: ep.ID, Address: ep.Address, Port: ep.Port, MetricsAddr: ep.MetricsAddr, PID: ep.Proc().PID,
			Restarts: ep.Proc().Restarts, State: string(ep.State), Health: string(ep.Health), Draining: ep.Draining,
			LastHealthError: ep.LastHealthError}
		if c := ep.Proc().Certificate; c.ID != "" {
			t.Certificate = &c
		}
		v.Tasks = append(v.Tasks, t)
		res, ok := samples[analysis.TaskKey(ep.ID, ep.Proc().PID)]
		if !ok {
			continue
		}
		if res.err != nil {
			t.ScrapeError = res.err.Error()
			continue
		}
		d := tr.observe(ep, res.sample)
		if secs > 0 {
			t.RPS = float64(d.requests) / secs
		}
		for _, c := range []*counts{get(perVersion, v), get(perService, sv)} {
			c.requests += d.requests
			c.errors += d.errors
		}
	}
	tr.gc(st.Endpoints)

	// Routes: which route shifts each service's traffic, and its weights.
	rollouts := map[string]*mesh.Resource{}
	for _, r := range st.Rollouts {
		if sp := r.Rollout(); sp != nil {
			rollouts[r.Metadata.Mesh+"/"+sp.Service] = r
		}
	}
	for _, sv := range s.Services {
		route := serviceRoute(st.Routes, sv, nodeService, rollouts[sv.Key])
		if route != nil {
			rs := route.Route()
			sv.Route, sv.Router = route.Metadata.Name, rs.VirtualRouterName
			targets := routeTargets(rs)
			total := 0
			for _, t := range targets {
				total += t.Weight
			}
			for _, v := range sv.Versions {
				w := 0
				for _, t := range targets {
					if nodeVersion[sv.Mesh+"/"+t.VirtualNode] == v.Version || (v.VirtualNode != "" && t.VirtualNode == v.VirtualNode) {
						w += t.Weight
					}
				}
				if total > 0 {
					v.Weight = ptr(float64(w) / float64(total))
				}
			}
		}
		if r := rollouts[sv.Key]; r != nil {
			sv.Rollout = rolloutView(r)
		}
	}

	// Rates, shares and success rates.
	for _, sv := range s.Services {
		tot := perService[sv]
		if tot != nil && secs > 0 {
			sv.RPS = float64(tot.requests) / secs
		}
		pv := map[string]PointVersion{}
		for _, v := range sv.Versions {
			if c := perVersion[v]; c != nil {
				v.Requests, v.Errors = c.requests, c.errors
				if secs > 0 {
					v.RPS = float64(c.requests) / secs
				}
				if c.requests > 0 {
					v.SuccessRate = ptr(1 - float64(c.errors)/float64(c.requests))
				}
				if tot != nil && tot.requests > 0 {
					v.Share = ptr(float64(c.requests) / float64(tot.requests))
				}
			}
			if tot != nil && tot.requests > 0 && v.Share == nil {
				v.Share = ptr(0)
			}
			pv[v.Version] = PointVersion{RPS: v.RPS, Share: v.Share, Weight: v.Weight, Success: v.SuccessRate}
		}
		point.S[sv.Key] = pv
	}

	// Virtual services and gateways, when listed.
	vsService := map[string]*ServiceView{} // mesh/virtual service -> service
	for _, r := range topo.services {
		vs, _ := r.Spec.(*mesh.VirtualServiceSpec)
		if vs == nil || vs.Provider == nil {
			continue
		}
		var sv *ServiceView
		if p := vs.Provider.VirtualNode; p != nil {
			sv = nodeService[r.Metadata.Mesh+"/"+p.VirtualNodeName]
		}
		if p := vs.Provider.VirtualRouter; p != nil {
			for _, c := range s.Services {
				if c.Mesh == r.Metadata.Mesh && c.Router == p.VirtualRouterName {
					sv = c
				}
			}
		}
		if sv != nil {
			sv.VirtualService = r.Metadata.Name
			vsService[r.Metadata.Mesh+"/"+r.Metadata.Name] = sv
		}
	}
	gws := map[string]*GatewayView{}
	for _, r := range topo.gateways {
		g := &GatewayView{Mesh: r.Metadata.Mesh, Name: r.Metadata.Name, Routes: []*GatewayRoute{}}
		if sp, _ := r.Spec.(*mesh.VirtualGatewaySpec); sp != nil {
			g.Address = sp.Address
			for _, l := range sp.Listeners {
				g.Ports = append(g.Ports, l.PortMapping.Port)
			}
		}
		gws[g.Mesh+"/"+g.Name] = g
		s.Gateways = append(s.Gateways, g)
	}
	for _, r := range topo.gatewayRoutes {
		sp, _ := r.Spec.(*mesh.GatewayRouteSpec)
		if sp == nil {
			continue
		}
		g := gws[r.Metadata.Mesh+"/"+sp.VirtualGatewayName]
		if g == nil {
			continue
		}
		gr := &GatewayRoute{Name: r.Metadata.Name, Match: sp.MatchSummary(), VirtualService: sp.Target()}
		if sv := vsService[r.Metadata.Mesh+"/"+gr.VirtualService]; sv != nil {
			gr.Service = sv.Name
		}
		g.Routes = append(g.Routes, gr)
	}

	meshes := map[string]bool{}
	for _, sv := range s.Services {
		meshes[sv.Mesh] = true
	}
	s.Meshes = slices.Sorted(func(yield func(string) bool) {
		for m := range meshes {
			if !yield(m) {
				return
			}
		}
	})
	if s.Meshes == nil {
		s.Meshes = []string{}
	}
	return s, point
}

// serviceOfNode names the service whose current virtual node is node.
func serviceOfNode(services []*mesh.Resource, node *mesh.Resource) string {
	for _, r := range services {
		if sp := r.Service(); sp != nil && r.Metadata.Mesh == node.Metadata.Mesh && sp.VirtualNode == node.Metadata.Name {
			return r.Metadata.Name
		}
	}
	return ""
}

func get[K comparable](m map[K]*counts, k K) *counts {
	c := m[k]
	if c == nil {
		c = &counts{}
		m[k] = c
	}
	return c
}

// serviceRoute picks the route that shifts sv's traffic: the rollout's, else
// the first (by name) whose targets include one of sv's virtual nodes.
func serviceRoute(routes []*mesh.Resource, sv *ServiceView, nodeService map[string]*ServiceView, ro *mesh.Resource) *mesh.Resource {
	want := ""
	if ro != nil {
		if st := ro.RolloutStatus(); st != nil && st.Route != "" {
			want = st.Route
		} else if sp := ro.Rollout(); sp != nil {
			want = sp.Route
		}
	}
	var found *mesh.Resource
	for _, r := range routes {
		rs := r.Route()
		if rs == nil || r.Metadata.Mesh != sv.Mesh {
			continue
		}
		if want != "" && r.Metadata.Name == want {
			return r
		}
		for _, t := range routeTargets(rs) {
			if nodeService[sv.Mesh+"/"+t.VirtualNode] == sv && (found == nil || r.Metadata.Name < found.Metadata.Name) {
				found = r
			}
		}
	}
	return found
}

func routeTargets(rs *mesh.RouteSpec) []mesh.WeightedTarget { return rs.Targets() }

// rolloutView adds what the page needs to a rollout: its step and the
// actions its phase allows (mesh.RolloutStatus.Controls, the rules the
// rollout engine's Control enforces).
func rolloutView(r *mesh.Resource) *RolloutView {
	sp, st := r.Rollout(), r.RolloutStatus()
	if st == nil {
		st = &mesh.RolloutStatus{Phase: mesh.PhasePending, StepIndex: -1}
	}
	v := &RolloutView{Name: r.Metadata.Name, Spec: sp, Status: st, Step: st.StepIndex + 1, Actions: map[string]bool{}}
	if sp != nil {
		v.Steps = len(sp.Steps)
	}
	for _, a := range actions {
		v.Actions[a] = false
	}
	if st.Phase.Terminal() {
		return v
	}
	v.Active = true
	v.Actions = st.Controls()
	return v
}

// clientViews summarises the xDS clients against the published versions.
func clientViews(st *controlplane.Status) []*ClientView {
	out := make([]*ClientView, 0, len(st.Clients))
	for _, c := range st.Clients {
		cv := &ClientView{NodeID: c.NodeID, ConnectedSince: c.ConnectedSince, Streams: c.Streams, Types: map[string]*TypeView{}, Converged: true}
		for url, ts := range c.Types {
			pub := st.PublishedVersions[url]
			tv := &TypeView{ACKed: ts.ACKedVersion, ACKedAt: ts.ACKedAt, Sent: ts.SentVersion, Published: pub,
				Current: pub == "" || ts.ACKedVersion == pub}
			if !tv.Current {
				cv.Converged = false
			}
			cv.Types[shortType(url)] = tv
		}
		if n := c.LastNACK; n != nil {
			cv.LastNACK = &NACKView{Type: shortType(n.TypeURL), Version: n.Version, Detail: n.Detail, At: n.At}
		}
		out = append(out, cv)
	}
	slices.SortFunc(out, func(a, b *ClientView) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// shortType names an xDS type URL by its discovery service.
func shortType(url string) string {
	switch {
	case strings.HasSuffix(url, ".Listener"):
		return "LDS"
	case strings.HasSuffix(url, ".RouteConfiguration"):
		return "RDS"
	case strings.HasSuffix(url, ".ClusterLoadAssignment"):
		return "EDS"
	case strings.HasSuffix(url, ".Cluster"):
		return "CDS"
	}
	return url
}
