package agent_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/agent"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/stack"
)

// recorder records what the agent pushes (it stands for the supervisor and
// the gateway, which have their own tests).
type recorder struct {
	mu       sync.Mutex
	sets     []*mesh.Resource
	backends []gateway.Backend
}

func (r *recorder) Apply(sets []*mesh.Resource) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = sets
}

func (r *recorder) SetRoutes(rt *gateway.Routes) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.backends = nil
	for _, bs := range rt.Nodes {
		r.backends = append(r.backends, bs...)
	}
}

func (r *recorder) get() ([]*mesh.Resource, []gateway.Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sets, r.backends
}

// TestAgentFollowsControlPlane: against a real control plane, the agent
// hands the supervisor the stored task sets and the gateway the healthy
// tasks behind its gateway route, and follows changes.
func TestAgentFollowsControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cp, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cpCtx, stopCP := context.WithCancel(ctx)
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(cpCtx) }()
	defer func() { stopCP(); <-cpDone }()
	c, err := controlplane.Dial(cp.Addr(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	rs, err := mesh.Decode("echo.yaml", stack.Echo)
	if err != nil {
		t.Fatal(err)
	}
	set := mesh.New(mesh.KindTaskSet, "echo", "echo-client-0-1", &mesh.TaskSetSpec{
		Service: "echo-client", VirtualNode: "echo-client-0-1", Version: "0.1", Revision: 1,
		Command: []string{"/bin/true"}, DesiredCount: 1, Port: 8080,
	})
	if _, _, err := c.Apply(ctx, "stack", append(rs, set), false); err != nil {
		t.Fatalf("apply: %v", err)
	}

	rec := &recorder{}
	a := agent.New(agent.Config{API: c.API(), Supervisor: rec, Gateway: rec, GatewayName: "echo-gateway"})
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { a.Run(agentCtx); close(agentDone) }()
	defer func() { stopAgent(); <-agentDone }()

	waitFor(t, "the task set reaches the supervisor", func() bool {
		sets, _ := rec.get()
		return len(sets) == 1 && sets[0].Metadata.Name == "echo-client-0-1"
	})

	// A healthy echo-client task (its /readyz answers) becomes a backend.
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer ready.Close()
	host, port, _ := net.SplitHostPort(ready.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ep := &mesh.Endpoint{ID: "echo-client-0-1-1", Mesh: "echo", Service: "echo-client", Address: host, Port: p,
		Attributes: map[string]string{mesh.AttrVersion: "0.1", mesh.AttrTaskSet: "echo-client-0-1"}, State: mesh.TaskRunning}
	if err := c.Register(ctx, ep); err != nil {
		t.Fatalf("register: %v", err)
	}
	want := net.JoinHostPort(host, port)
	waitFor(t, "the healthy task becomes the gateway's backend", func() bool {
		_, bs := rec.get()
		return len(bs) == 1 && bs[0].ID == ep.ID && bs[0].Addr == want
	})

	// Draining takes it out again; deleting the task set reaches the
	// supervisor.
	ep.Draining, ep.State = true, mesh.TaskStopping
	if err := c.Register(ctx, ep); err != nil {
		t.Fatalf("register draining: %v", err)
	}
	waitFor(t, "the draining task leaves the gateway", func() bool {
		_, bs := rec.get()
		return len(bs) == 0
	})
	// Turning TLS on in the mesh (a STRICT node) marks its task sets, so
	// their tasks restart with a certificate; turning it off unmarks them.
	if got := setEnv(rec, agent.EnvTLS); got != "" {
		t.Errorf("TLS off: %s=%q, want unset", agent.EnvTLS, got)
	}
	node, err := c.Get(ctx, mesh.Ref{Kind: mesh.KindVirtualNode, Mesh: "echo", Name: "echo-server-0-9"})
	if err != nil {
		t.Fatal(err)
	}
	node.Metadata.ResourceVersion = ""
	node.VirtualNode().Listeners[0].TLS = &mesh.ListenerTLS{Mode: mesh.TLSStrict}
	if _, _, err := c.Apply(ctx, "tls", []*mesh.Resource{node}, false); err != nil {
		t.Fatalf("apply STRICT: %v", err)
	}
	waitFor(t, "the task set marked for TLS", func() bool { return setEnv(rec, agent.EnvTLS) == "1" })
	node.VirtualNode().Listeners[0].TLS = nil
	if _, _, err := c.Apply(ctx, "tls", []*mesh.Resource{node}, false); err != nil {
		t.Fatalf("apply plain: %v", err)
	}
	waitFor(t, "the task set unmarked", func() bool { return setEnv(rec, agent.EnvTLS) == "" })

	if err := c.Delete(ctx, set.Ref(), ""); err != nil {
		t.Fatalf("delete task set: %v", err)
	}
	waitFor(t, "the deleted task set leaves the supervisor", func() bool {
		sets, _ := rec.get()
		return len(sets) == 0
	})
}

// setEnv is the value of key in the first recorded task set's environment.
func setEnv(rec *recorder, key string) string {
	sets, _ := rec.get()
	if len(sets) == 0 {
		return ""
	}
	return sets[0].Spec.(*mesh.TaskSetSpec).Env[key]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		<-time.After(20 * time.Millisecond) // the polling interval
	}
}
