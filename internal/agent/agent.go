// Package agent is the data-plane side of `gmesh up`: it follows the
// control plane's desired task sets and endpoints, runs the tasks through
// the local supervisor, and feeds the gateway its healthy backends. When the
// control plane is unreachable it keeps the last state it had, so tasks and
// the gateway keep serving, and reconnects with backoff.
package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Supervisor runs task sets (internal/runtime/local implements it).
type Supervisor interface {
	Apply(sets []*mesh.Resource)
}

// Backends receives the gateway's backends (internal/gateway implements it).
type Backends interface {
	SetBackends(bs []gateway.Backend)
}

// Config configures an agent.
type Config struct {
	API        meshv1.MeshAdminClient
	Supervisor Supervisor
	// Gateway and GatewayName: the virtual gateway whose backends to feed;
	// nil Gateway: none.
	Gateway     Backends
	GatewayName string
	Logger      *slog.Logger
}

// Agent follows the control plane.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	resources map[mesh.Ref]*mesh.Resource
	endpoints []*mesh.Endpoint
	synced    bool

	pushMu   sync.Mutex // serialises update's pushes (two streams call it)
	lastSets string
	lastBack string
}

// New returns an agent.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: cfg.Logger, resources: map[mesh.Ref]*mesh.Resource{}}
}

// Run follows the control plane until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.retry(ctx, "watch resources", a.watchResources) }()
	go func() { defer wg.Done(); a.retry(ctx, "watch endpoints", a.watchEndpoints) }()
	wg.Wait()
}

// retry runs f until ctx ends, with exponential backoff between failures.
func (a *Agent) retry(ctx context.Context, what string, f func(context.Context) error) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := f(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		a.log.Debug("control plane stream ended; retrying", "stream", what, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (a *Agent) watchResources(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.cfg.API.Watch(ctx, &meshv1.WatchRequest{})
	if err != nil {
		return err
	}
	pending := map[mesh.Ref]*mesh.Resource{} // the state being (re)synced
	syncing := true
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch ev.Type {
		case "RESYNC":
			pending = map[mesh.Ref]*mesh.Resource{}
			syncing = true
			continue
		case "SYNCED":
			a.mu.Lock()
			a.resources = pending
			a.synced = true
			a.mu.Unlock()
			pending = nil
			syncing = false
			a.update()
			continue
		}
		var r mesh.Resource
		if ev.Resource == nil {
			continue
		}
		if err := json.Unmarshal(ev.Resource.Json, &r); err != nil {
			a.log.Warn("undecodable resource from control plane", "err", err)
			continue
		}
		if syncing {
			if ev.Type == "PUT" {
				pending[r.Ref()] = &r
			}
			continue
		}
		a.mu.Lock()
		if ev.Type == "DELETE" {
			delete(a.resources, r.Ref())
		} else {
			a.resources[r.Ref()] = &r
		}
		a.mu.Unlock()
		a.update()
	}
}

func (a *Agent) watchEndpoints(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.cfg.API.WatchEndpoints(ctx, &meshv1.ListEndpointsRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var eps []*mesh.Endpoint
		if err := json.Unmarshal(resp.EndpointsJson, &eps); err != nil {
			a.log.Warn("undecodable endpoints from control plane", "err", err)
			continue
		}
		a.mu.Lock()
		a.endpoints = eps
		a.mu.Unlock()
		a.update()
	}
}

// update pushes the desired task sets to the supervisor and the backends to
// the gateway, each only when it changed.
func (a *Agent) update() {
	a.pushMu.Lock()
	defer a.pushMu.Unlock()
	a.mu.Lock()
	if !a.synced {
		a.mu.Unlock()
		return
	}
	var sets []*mesh.Resource
	for _, r := range a.resources {
		if r.Kind == mesh.KindTaskSet {
			sets = append(sets, r)
		}
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].Ref().String() < sets[j].Ref().String() })
	backends := a.gatewayBackendsLocked()
	a.mu.Unlock()

	key, _ := json.Marshal(setKeys(sets))
	if string(key) != a.lastSets {
		a.lastSets = string(key)
		a.cfg.Supervisor.Apply(sets)
	}
	if a.cfg.Gateway != nil {
		bkey, _ := json.Marshal(backends)
		if string(bkey) != a.lastBack {
			a.lastBack = string(bkey)
			a.cfg.Gateway.SetBackends(backends)
		}
	}
}

type setKey struct {
	Ref  string
	Spec any
}

func setKeys(sets []*mesh.Resource) []setKey {
	out := make([]setKey, len(sets))
	for i, s := range sets {
		out[i] = setKey{Ref: s.Ref().String(), Spec: s.Spec}
	}
	return out
}

// gatewayBackendsLocked resolves the gateway's routes to the serving
// endpoints of the virtual nodes behind their target virtual services.
func (a *Agent) gatewayBackendsLocked() []gateway.Backend {
	if a.cfg.GatewayName == "" {
		return nil
	}
	var backends []gateway.Backend
	seen := map[string]bool{}
	for _, r := range a.resources {
		gr := r.GatewayRoute()
		if gr == nil || gr.VirtualGatewayName != a.cfg.GatewayName {
			continue
		}
		var vsName string
		switch {
		case gr.HTTPRoute != nil:
			vsName = gr.HTTPRoute.Action.Target.VirtualService.VirtualServiceName
		case gr.HTTP2Route != nil:
			vsName = gr.HTTP2Route.Action.Target.VirtualService.VirtualServiceName
		case gr.GRPCRoute != nil:
			vsName = gr.GRPCRoute.Action.Target.VirtualService.VirtualServiceName
		}
		for _, node := range a.nodesOfServiceLocked(r.Metadata.Mesh, vsName) {
			sel := node.ServiceDiscovery.Selector()
			for _, ep := range a.endpoints {
				if ep.Mesh == r.Metadata.Mesh && ep.Serving() && ep.Matches(sel) && !seen[ep.ID] {
					seen[ep.ID] = true
					backends = append(backends, gateway.Backend{ID: ep.ID, Addr: joinHostPort(ep.Address, ep.Port)})
				}
			}
		}
	}
	sort.Slice(backends, func(i, j int) bool { return backends[i].ID < backends[j].ID })
	return backends
}

// nodesOfServiceLocked returns the virtual nodes that serve a virtual
// service: its provider node, or its router's weighted targets above 0.
func (a *Agent) nodesOfServiceLocked(meshName, vsName string) []*mesh.VirtualNodeSpec {
	vsRes := a.resources[mesh.Ref{Kind: mesh.KindVirtualService, Mesh: meshName, Name: vsName}]
	if vsRes == nil {
		return nil
	}
	vs := vsRes.VirtualService()
	if vs == nil || vs.Provider == nil {
		return nil
	}
	node := func(name string) *mesh.VirtualNodeSpec {
		r := a.resources[mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: meshName, Name: name}]
		if r == nil {
			return nil
		}
		return r.VirtualNode()
	}
	if p := vs.Provider.VirtualNode; p != nil {
		if n := node(p.VirtualNodeName); n != nil {
			return []*mesh.VirtualNodeSpec{n}
		}
		return nil
	}
	if vs.Provider.VirtualRouter == nil {
		return nil
	}
	var out []*mesh.VirtualNodeSpec
	for _, r := range a.resources {
		rt := r.Route()
		if rt == nil || r.Metadata.Mesh != meshName || rt.VirtualRouterName != vs.Provider.VirtualRouter.VirtualRouterName {
			continue
		}
		var ts []mesh.WeightedTarget
		switch {
		case rt.HTTPRoute != nil:
			ts = rt.HTTPRoute.Action.WeightedTargets
		case rt.HTTP2Route != nil:
			ts = rt.HTTP2Route.Action.WeightedTargets
		case rt.GRPCRoute != nil:
			ts = rt.GRPCRoute.Action.WeightedTargets
		}
		for _, t := range ts {
			if t.Weight > 0 {
				if n := node(t.VirtualNode); n != nil {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
