// Package agent is the data-plane side of `gmesh up`: it follows the
// control plane's desired task sets and endpoints, runs the tasks through
// the local supervisor (a runtime.TaskRunner), and feeds the gateway its healthy backends. When the
// control plane is unreachable it keeps the last state it had, so tasks and
// the gateway keep serving, and reconnects with backoff.
package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/runtime"
)

// Routes receives the gateway's routing table (internal/gateway implements
// it).
type Routes interface {
	SetRoutes(rt *gateway.Routes)
}

var _ Routes = (*gateway.Gateway)(nil)

// Config configures an agent.
type Config struct {
	API meshv1.MeshAdminClient
	// Supervisor runs the task sets: the local runtime
	// (internal/runtime/local).
	Supervisor runtime.TaskRunner
	// Gateway and GatewayName: the virtual gateway whose routes to feed;
	// nil Gateway: none. GatewayMesh is its mesh; empty: the mesh that has a
	// virtual gateway of that name.
	Gateway     Routes
	GatewayName string
	GatewayMesh string
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
	// lastRouteErr holds the gateway routing errors already logged.
	lastRouteErr map[string]bool
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
	var sets, nodes []*mesh.Resource
	for _, r := range a.resources {
		switch r.Kind {
		case mesh.KindTaskSet:
			sets = append(sets, r)
		case mesh.KindVirtualNode:
			nodes = append(nodes, r)
		}
	}
	for i, r := range sets {
		if mesh.MeshTLS(nodes, r.Metadata.Mesh) {
			sets[i] = withTLS(r)
		}
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].Ref().String() < sets[j].Ref().String() })
	routes, routesKey := a.gatewayRoutesLocked()
	a.mu.Unlock()

	key, _ := json.Marshal(setKeys(sets))
	if string(key) != a.lastSets {
		a.lastSets = string(key)
		a.cfg.Supervisor.Apply(sets)
	}
	if a.cfg.Gateway != nil && routesKey != a.lastBack {
		a.lastBack = routesKey
		a.cfg.Gateway.SetRoutes(routes)
	}
}

// EnvTLS is set to "1" in the environment of the task sets of a mesh with
// TLS on (mesh.MeshTLS): their tasks get a workload certificate and a
// bootstrap that names it. Turning a mesh's TLS on or off changes the sets,
// so the supervisor restarts their tasks with the new bootstrap.
const EnvTLS = "GMESH_TLS"

func withTLS(r *mesh.Resource) *mesh.Resource {
	spec, ok := r.Spec.(*mesh.TaskSetSpec)
	if !ok || spec.Env[EnvTLS] == "1" {
		return r
	}
	c := r.Clone()
	cs := c.Spec.(*mesh.TaskSetSpec)
	if cs.Env == nil {
		cs.Env = map[string]string{}
	}
	cs.Env[EnvTLS] = "1"
	return c
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

// gatewayRoutesLocked resolves the gateway's routing table from the mesh
// (gateway.RoutesFromMesh) and a key that changes whenever the table would.
func (a *Agent) gatewayRoutesLocked() (*gateway.Routes, string) {
	if a.cfg.GatewayName == "" {
		return nil, ""
	}
	st := mesh.NewState()
	meshName := a.cfg.GatewayMesh
	for _, r := range a.resources {
		st.Put(r)
		if meshName == "" && r.Kind == mesh.KindVirtualGateway && r.Metadata.Name == a.cfg.GatewayName {
			meshName = r.Metadata.Mesh
		}
	}
	rt, key, errs := gateway.RoutesFromMesh(st, meshName, a.cfg.GatewayName, a.endpoints)
	seen := make(map[string]bool, len(errs))
	for _, err := range errs {
		if msg := err.Error(); !a.lastRouteErr[msg] {
			a.log.Warn("gateway route left out", "err", err)
		}
		seen[err.Error()] = true
	}
	a.lastRouteErr = seen
	return rt, key
}
