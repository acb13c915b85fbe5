package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	grpcxds "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/echo"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/stack"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// Target is the mesh name of the echo service.
const Target = "xds:///echo-server.echo.local"

// PayloadName is the fixed request payload: the name every call sends
// (64 bytes; the reply is about 110 bytes).
var PayloadName = strings.Repeat("Yusuke-", 9) + "Yusuke-0"

// TCPPayload is the raw rung's request and reply: the size of an echo
// request on the wire, to mirror its round trip.
var TCPPayload = make([]byte, 64)

// Echoes are real echo servers (internal/echo), one per version, on
// 127.0.0.1 and a free port.
type Echoes struct {
	Servers  []*echo.Server
	Addrs    []string
	Versions []string
}

// StartEchoes starts one echo server per version.
func StartEchoes(versions ...string) (*Echoes, error) {
	e := &Echoes{}
	for _, v := range versions {
		s, err := echo.NewServer(echo.ServerConfig{Addr: "127.0.0.1:0", Version: v, ShutdownTimeout: time.Second})
		if err != nil {
			e.Close()
			return nil, err
		}
		go s.Serve()
		e.Servers = append(e.Servers, s)
		e.Addrs = append(e.Addrs, s.Addr().String())
		e.Versions = append(e.Versions, v)
	}
	return e, nil
}

// Close stops the servers at once.
func (e *Echoes) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, s := range e.Servers {
		s.Shutdown(ctx)
	}
}

// Endpoint is server i as the registry sees it.
func (e *Echoes) Endpoint(i int) *mesh.Endpoint {
	return endpointOf(e.Addrs[i], "echo-server", e.Versions[i], fmt.Sprintf("bench-echo-%d", i))
}

// EchoCall returns a CallFunc making one Echo call on the client of its
// worker (clients[worker % len]).
func EchoCall(clients ...echov1.EchoServiceClient) CallFunc {
	req := &echov1.EchoRequest{Name: PayloadName}
	return func(ctx context.Context, w int) error {
		_, err := clients[w%len(clients)].Echo(ctx, req)
		return err
	}
}

// DialPassthrough dials one server directly.
func DialPassthrough(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// DialRoundRobin dials the servers with a manual resolver and round_robin.
func DialRoundRobin(addrs []string) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("benchrr")
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	return grpc.NewClient(r.Scheme()+":///echo",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
}

// Ready makes calls until one succeeds (or ctx ends).
func Ready(ctx context.Context, c echov1.EchoServiceClient) error {
	_, err := c.Echo(ctx, &echov1.EchoRequest{Name: PayloadName}, grpc.WaitForReady(true))
	return err
}

// TCPEcho is a loopback TCP server that writes back what it reads.
type TCPEcho struct {
	ln net.Listener
	wg sync.WaitGroup
}

// StartTCPEcho serves on 127.0.0.1:0.
func StartTCPEcho() (*TCPEcho, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &TCPEcho{ln: ln}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return t, nil
}

// Addr is the server's address.
func (t *TCPEcho) Addr() string { return t.ln.Addr().String() }

// Close stops accepting (open connections end with their clients).
func (t *TCPEcho) Close() { t.ln.Close(); t.wg.Wait() }

// TCPCall returns a CallFunc over c connections (one per worker) that
// writes TCPPayload and reads it back; close releases them.
func TCPCall(addr string, c int) (call CallFunc, close func(), err error) {
	conns := make([]net.Conn, c)
	bufs := make([][]byte, c)
	closeAll := func() {
		for _, cn := range conns {
			if cn != nil {
				cn.Close()
			}
		}
	}
	for i := range c {
		conns[i], err = net.Dial("tcp", addr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		bufs[i] = make([]byte, len(TCPPayload))
	}
	return func(_ context.Context, w int) error {
		if _, err := conns[w].Write(TCPPayload); err != nil {
			return err
		}
		_, err := io.ReadFull(conns[w], bufs[w])
		return err
	}, closeAll, nil
}

// Mesh is gmesh's real control plane in-process, with the echo stack
// applied (plus a second version, echo-server-1-0, and the route split
// between them) and the echo servers registered as endpoints. Clients reach
// it through a byte-counting TCP proxy, so the bytes it sends are measured.
type Mesh struct {
	CP    *controlplane.ControlPlane
	Admin *controlplane.Client
	Proxy *CountingProxy
	// Rev is the store revision of the last Apply.
	Rev    uint64
	cancel context.CancelFunc
	done   chan error
	nodes  atomic.Int64
}

// StackResources is the built-in echo stack with echo-server-1-0 (version
// 1.0) beside echo-server-0-9 and the route weighted w09/w10.
func StackResources(w09, w10 int) ([]*mesh.Resource, error) {
	rs, err := mesh.Decode("echo.yaml", stack.Echo)
	if err != nil {
		return nil, err
	}
	var out []*mesh.Resource
	for _, r := range rs {
		out = append(out, r)
		if r.Kind == mesh.KindVirtualNode && r.Metadata.Name == "echo-server-0-9" {
			v := r.Clone()
			v.Metadata.Name = "echo-server-1-0"
			v.VirtualNode().ServiceDiscovery.Registry.Attributes = []mesh.Attribute{{Key: mesh.AttrVersion, Value: "1.0"}}
			out = append(out, v)
		}
	}
	if RouteOf(out) == nil {
		return nil, errors.New("echo stack has no route echo-server-route")
	}
	SetWeights(RouteOf(out), w09, w10)
	return out, nil
}

// RouteOf returns the echo stack's route.
func RouteOf(rs []*mesh.Resource) *mesh.Resource {
	for _, r := range rs {
		if r.Kind == mesh.KindRoute && r.Metadata.Name == "echo-server-route" {
			return r
		}
	}
	return nil
}

// SetWeights sets the route's split.
func SetWeights(route *mesh.Resource, w09, w10 int) {
	route.Route().GRPCRoute.Action.WeightedTargets = []mesh.WeightedTarget{
		{VirtualNode: "echo-server-0-9", Weight: w09},
		{VirtualNode: "echo-server-1-0", Weight: w10},
	}
}

// StartMesh starts the control plane, applies StackResources(w09, w10),
// registers the echo servers, and waits until they are healthy in the
// published snapshot (the stack's health check: 2 passes, 1 s apart).
func StartMesh(ctx context.Context, echoes *Echoes, w09, w10 int) (*Mesh, error) {
	m, err := startControlPlane(controlplane.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	if err := m.SetWeights(ctx, w09, w10); err != nil {
		m.Close()
		return nil, err
	}
	var eps []*mesh.Endpoint
	for i := range echoes.Servers {
		if err := m.Admin.Register(ctx, echoes.Endpoint(i)); err != nil {
			m.Close()
			return nil, fmt.Errorf("register %s: %w", echoes.Addrs[i], err)
		}
		eps = append(eps, echoes.Endpoint(i))
	}
	if err := waitHealthy(ctx, m.CP, eps); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// startControlPlane runs a control plane with cfg, the counting proxy in
// front of it and an admin client; nothing applied yet.
func startControlPlane(cfg controlplane.Config) (*Mesh, error) {
	cp, err := controlplane.New(cfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	m := &Mesh{CP: cp, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- cp.Run(rctx) }()
	m.Proxy, err = StartCountingProxy(cp.Addr())
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Admin, err = controlplane.Dial(cp.Addr(), "")
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// waitHealthy polls the registry until every endpoint of eps is healthy
// (the stack's health check: 2 passes, 1 s apart).
func waitHealthy(ctx context.Context, cp *controlplane.ControlPlane, eps []*mesh.Endpoint) error {
	for {
		healthy := 0
		for _, e := range eps {
			if ep, ok := cp.Registry().Get(e.ID); ok && ep.Health == mesh.HealthHealthy {
				healthy++
			}
		}
		if healthy == len(eps) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("echo servers not healthy in the registry (%d of %d): %w", healthy, len(eps), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// endpointOf is a running echo server at addr as the registry sees it.
func endpointOf(addr, service, version, id string) *mesh.Endpoint {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return &mesh.Endpoint{
		ID: id, Mesh: "echo", Service: service, Address: host, Port: p,
		Attributes: map[string]string{mesh.AttrVersion: version},
		State:      mesh.TaskRunning,
	}
}

func (m *Mesh) apply(ctx context.Context, rs []*mesh.Resource) error {
	resp, _, err := m.Admin.Apply(ctx, "bench", rs, false)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	m.Rev = resp.GetRevision()
	return nil
}

// SetWeights applies the route with a new split (the whole stack the first
// time) and returns once the store has it; see WaitRoutes for the clients.
func (m *Mesh) SetWeights(ctx context.Context, w09, w10 int) error {
	rs, err := StackResources(w09, w10)
	if err != nil {
		return err
	}
	if m.Rev == 0 {
		return m.apply(ctx, rs)
	}
	return m.apply(ctx, []*mesh.Resource{RouteOf(rs)})
}

// WaitRoutes waits until every connected client has ACKed the routes of
// the last Apply's revision.
func (m *Mesh) WaitRoutes(ctx context.Context) error {
	return m.CP.XDS().WaitConverged(ctx, xds.RouteType, m.Rev)
}

// NodeID returns a fresh node id.
func (m *Mesh) NodeID() string { return fmt.Sprintf("bench-%d", m.nodes.Add(1)) }

// Resolver returns a dial option with an xDS resolver of its own (its own
// xDS client, ADS stream and node id), bootstrapped to the control plane.
func (m *Mesh) Resolver(nodeID string) (grpc.DialOption, error) {
	return resolverVia(m.CP.Addr(), nodeID)
}

// DialCounted is Dial through the byte-counting proxy.
func (m *Mesh) DialCounted() (*grpc.ClientConn, error) {
	opt, err := resolverVia(m.Proxy.Addr(), m.NodeID())
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(Target, grpc.WithTransportCredentials(insecure.NewCredentials()), opt)
}

func resolverVia(addr, nodeID string) (grpc.DialOption, error) {
	bs, err := bootstrap.JSON(addr, nodeID, nil)
	if err != nil {
		return nil, err
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		return nil, err
	}
	return grpc.WithResolvers(rb), nil
}

// Dial returns a ClientConn to xds:///echo-server.echo.local with its own
// xDS client.
func (m *Mesh) Dial() (*grpc.ClientConn, error) {
	opt, err := m.Resolver(m.NodeID())
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(Target, grpc.WithTransportCredentials(insecure.NewCredentials()), opt)
}

// Close stops the control plane.
func (m *Mesh) Close() {
	if m.Admin != nil {
		m.Admin.Close()
	}
	if m.Proxy != nil {
		m.Proxy.Close()
	}
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
	}
}

// CountingProxy forwards TCP connections to a target and counts the bytes
// in each direction.
type CountingProxy struct {
	ln       net.Listener
	target   string
	Down, Up atomic.Int64 // Down: target -> clients; Up: clients -> target
	mu       sync.Mutex
	conns    []net.Conn
}

// StartCountingProxy listens on 127.0.0.1:0.
func StartCountingProxy(target string) (*CountingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &CountingProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, t)
			p.mu.Unlock()
			go p.pipe(t, c, &p.Up)
			go p.pipe(c, t, &p.Down)
		}
	}()
	return p, nil
}

func (p *CountingProxy) pipe(dst, src net.Conn, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

// Addr is the proxy's address.
func (p *CountingProxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and its connections.
func (p *CountingProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// HTTPStack is rung 4: one echo-client (the HTTP front end) calling the
// echo servers through the mesh, and the gateway in front of it; plus a
// second echo-client calling one server directly.
type HTTPStack struct {
	MeshClient   *echo.Client // Target xds:///echo-server.echo.local
	DirectClient *echo.Client // Target passthrough to server 0
	Gateway      *gateway.Gateway
	GatewayAddr  string
}

// StartHTTPStack starts the two echo-clients and the gateway.
func StartHTTPStack(ctx context.Context, m *Mesh, echoes *Echoes) (*HTTPStack, error) {
	opt, err := m.Resolver(m.NodeID())
	if err != nil {
		return nil, err
	}
	h := &HTTPStack{}
	h.MeshClient, err = echo.NewClient(echo.ClientConfig{Addr: "127.0.0.1:0", Target: Target, DialOptions: []grpc.DialOption{opt}})
	if err != nil {
		return nil, err
	}
	go h.MeshClient.Serve()
	h.DirectClient, err = echo.NewClient(echo.ClientConfig{Addr: "127.0.0.1:0", Target: "passthrough:///" + echoes.Addrs[0]})
	if err != nil {
		h.Close()
		return nil, err
	}
	go h.DirectClient.Serve()
	h.Gateway, err = gateway.New(gateway.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		h.Close()
		return nil, err
	}
	ln, err := h.Gateway.Listen()
	if err != nil {
		h.Close()
		return nil, err
	}
	h.GatewayAddr = ln.Addr().String()
	// The gateway routes as in gmesh up: the built-in stack's gateway route
	// and echo-client route (a weighted pick over one node).
	if err := h.routeGateway(); err != nil {
		h.Close()
		return nil, err
	}
	go h.Gateway.Serve(ln)
	// Ready: one good answer from each path.
	for _, u := range []string{h.URL("gateway"), h.URL("mesh"), h.URL("direct")} {
		for {
			err := HTTPGet(ctx, http.DefaultClient, u)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				h.Close()
				return nil, fmt.Errorf("%s not ready: %v", u, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return h, nil
}

// routeGateway gives the gateway the built-in echo stack's routing table
// with the mesh echo-client as echo-client-0-1's one endpoint.
func (h *HTTPStack) routeGateway() error {
	rs, err := mesh.Decode("echo.yaml", stack.Echo)
	if err != nil {
		return err
	}
	st := mesh.NewState()
	for _, r := range rs {
		st.Put(r)
	}
	host, port, err := net.SplitHostPort(h.MeshClient.Addr().String())
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	ep := &mesh.Endpoint{ID: "echo-client-1", Mesh: "echo", Service: "echo-client", Address: host, Port: p,
		Attributes: map[string]string{mesh.AttrVersion: "0.1"}, State: mesh.TaskRunning, Health: mesh.HealthHealthy}
	rt, _, errs := gateway.RoutesFromMesh(st, "echo", "echo-gateway", []*mesh.Endpoint{ep})
	if len(errs) > 0 {
		return fmt.Errorf("gateway routes: %v", errs)
	}
	if len(rt.Nodes["echo-client-0-1"]) != 1 {
		return fmt.Errorf("gateway routes: echo-client-0-1 has backends %v, want the mesh echo-client", rt.Nodes)
	}
	h.Gateway.SetRoutes(rt)
	return nil
}

// URL is the echo URL of a path: "gateway", "mesh" (echo-client through
// the mesh) or "direct" (echo-client straight to one server).
func (h *HTTPStack) URL(path string) string {
	var addr string
	switch path {
	case "gateway":
		addr = h.GatewayAddr
	case "mesh":
		addr = h.MeshClient.Addr().String()
	default:
		addr = h.DirectClient.Addr().String()
	}
	return "http://" + addr + "/?name=" + PayloadName
}

// Close stops everything.
func (h *HTTPStack) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if h.Gateway != nil {
		h.Gateway.Shutdown(ctx)
	}
	if h.MeshClient != nil {
		h.MeshClient.Shutdown(ctx)
	}
	if h.DirectClient != nil {
		h.DirectClient.Shutdown(ctx)
	}
}

// NewHTTPClient is a keep-alive client for up to conns connections.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: time.Minute, DisableCompression: true,
	}, Timeout: 10 * time.Second}
}

// HTTPGet GETs u and fails on a non-200 answer.
func HTTPGet(ctx context.Context, c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return err
}

// HTTPCall returns a CallFunc that GETs u.
func HTTPCall(c *http.Client, u string) CallFunc {
	return func(ctx context.Context, _ int) error { return HTTPGet(ctx, c, u) }
}

// Apply stores resources through the admin API (as `gmesh apply` does).
func (m *Mesh) Apply(ctx context.Context, rs []*mesh.Resource) error { return m.apply(ctx, rs) }

// WaitAll waits until every connected client has ACKed every type of the
// last Apply's revision.
func (m *Mesh) WaitAll(ctx context.Context) error {
	for _, t := range xds.TypeURLs {
		if err := m.CP.XDS().WaitConverged(ctx, t, m.Rev); err != nil {
			return err
		}
	}
	return nil
}

// PublishWithoutPinRoutes is an experiment, not a gmesh feature: it
// translates the current store and registry as the control plane does,
// strips the pin routes (xds.PinHeader matchers ahead of the weighted
// route), publishes that at the same revision, and waits until every client
// ACKed it. The next Apply restores the real translation.
func (m *Mesh) PublishWithoutPinRoutes(ctx context.Context) error {
	_, err := m.publishEdited(ctx, func(res *xds.Resources) error {
		for _, rc := range res.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				vh.Routes = slices.DeleteFunc(vh.Routes, func(r *routepb.Route) bool { return strings.HasPrefix(r.GetName(), "pin/") })
			}
		}
		return nil
	})
	return err
}

// translateCurrent translates the current store and registry as the
// control plane does.
func (m *Mesh) translateCurrent(ctx context.Context) (*xds.Resources, error) {
	st, err := m.CP.Store().State(ctx)
	if err != nil {
		return nil, err
	}
	all := make([]*mesh.Resource, 0, len(st.Resources))
	for _, r := range st.Resources {
		all = append(all, r)
	}
	mesh.SortResources(all)
	return xds.Translate(xds.Input{Revision: st.Revision, Resources: all, Endpoints: m.CP.Registry().List(registry.Filter{})})
}

// publishEdited is for experiments: it translates the current store and
// registry as the control plane does, lets edit change the result,
// publishes that at the same revision, and waits until every connected
// client ACKed every type of it. The control plane's next publish
// restores the real translation. It returns what it published.
func (m *Mesh) publishEdited(ctx context.Context, edit func(*xds.Resources) error) (*xds.Resources, error) {
	res, err := m.translateCurrent(ctx)
	if err != nil {
		return nil, err
	}
	if err := edit(res); err != nil {
		return nil, err
	}
	if err := m.CP.XDS().Publish(res, res.Revision); err != nil {
		return nil, err
	}
	_, want := m.CP.XDS().Published()
	for {
		done := true
		for _, c := range m.CP.XDS().Clients() {
			for typ, ts := range c.Types {
				if ts.ACKedVersion != want[typ] {
					done = false
				}
			}
		}
		if done {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
