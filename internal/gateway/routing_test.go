package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/mesh/meshtest"
)

// TestRoutingCases asks the shared routing table of the real gateway: each
// case's mesh becomes the gateway's table (RoutesFromMesh, as the agent
// builds it), one real backend per serving node answers with its node's
// name, and requests through the gateway land on the nodes the case wants,
// in its proportions.
func TestRoutingCases(t *testing.T) {
	const n = 400
	for _, c := range meshtest.RoutingCases() {
		t.Run(c.Name, func(t *testing.T) {
			var eps []*mesh.Endpoint
			for _, node := range meshtest.Nodes {
				if !c.IsServing(node) {
					continue
				}
				b := startBackend(t, node, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-Path", r.URL.Path)
					io.WriteString(w, node)
				})
				host, port, _ := net.SplitHostPort(strings.TrimPrefix(b.URL, "http://"))
				p, _ := strconv.Atoi(port)
				eps = append(eps, meshtest.Endpoint(node, node+"-1", host, p))
			}
			rs := c.Resources
			if !c.GatewayOnly {
				rs = append(rs, meshtest.AllGatewayRoute())
			}
			st := mesh.NewState()
			for _, r := range rs {
				st.Put(r)
			}
			rt, _, errs := RoutesFromMesh(st, meshtest.Mesh, meshtest.Gateway, eps)
			if len(errs) > 0 {
				t.Fatalf("RoutesFromMesh: %v", errs)
			}
			g, url := startGateway(t, Config{DisableHealthCheck: true})
			g.SetRoutes(rt)

			// When no node the route weighs has an endpoint, the request
			// fails where the route says it goes.
			wantCode := http.StatusOK
			if c.Want == nil {
				wantCode = http.StatusNotFound
			} else {
				wantCode = http.StatusServiceUnavailable
				for node := range c.Want {
					if c.IsServing(node) {
						wantCode = http.StatusOK
					}
				}
			}
			client := newClient()
			counts := map[string]int{}
			for range n {
				req, _ := http.NewRequest(c.Request.Method, url+c.Request.Path, strings.NewReader(""))
				req.Header = c.Request.Header.Clone()
				req.Host = c.Request.Host
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", req.Method, req.URL, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != wantCode {
					t.Fatalf("got %d %q, want %d", resp.StatusCode, body, wantCode)
				}
				if wantCode != http.StatusOK {
					return
				}
				counts[string(body)]++
			}
			total := 0
			for _, w := range c.Want {
				total += w
			}
			for node, got := range counts {
				if c.Want[node] == 0 {
					t.Errorf("node %s got %d of %d requests, want none (want %v)", node, got, n, c.Want)
				}
			}
			for node, w := range c.Want {
				want := float64(w) / float64(total)
				got := float64(counts[node]) / n
				if got < want-0.08 || got > want+0.08 {
					t.Errorf("node %s: got %.1f%% of requests, want %.0f%% ±8 (counts %v)", node, 100*got, 100*want, counts)
				}
			}
		})
	}
}

// TestRewriteReachesBackend: the backend sees the path as the gateway route
// rewrote it, the target service's name as the host, and the client's host
// in X-Forwarded-Host.
func TestRewriteReachesBackend(t *testing.T) {
	var seen atomic.Value
	b := startBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Host + " " + r.URL.Path + " forwarded-host=" + r.Header.Get("X-Forwarded-Host"))
	})
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(b.URL, "http://"))
	p, _ := strconv.Atoi(port)
	st := mesh.NewState()
	for _, r := range meshtest.RoutingCases()[0].Resources {
		st.Put(r)
	}
	st.Put(mesh.New(mesh.KindGatewayRoute, meshtest.Mesh, "api", &mesh.GatewayRouteSpec{VirtualGatewayName: meshtest.Gateway,
		HTTPRoute: &mesh.GatewayHTTPRoute{Match: mesh.GatewayHTTPMatch{Prefix: "/api/"}, Action: mesh.GatewayHTTPRouteAction{
			Target: mesh.GatewayTarget{VirtualService: mesh.VirtualServiceBackend{VirtualServiceName: meshtest.Service}}}}}))
	rt, _, errs := RoutesFromMesh(st, meshtest.Mesh, meshtest.Gateway, []*mesh.Endpoint{meshtest.Endpoint("a", "a-1", host, p)})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	g, url := startGateway(t, Config{DisableHealthCheck: true})
	g.SetRoutes(rt)
	req, _ := http.NewRequest("GET", url+"/api/items/1", nil)
	req.Host = "shop.example"
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d", resp.StatusCode)
	}
	if want := fmt.Sprintf("%s /items/1 forwarded-host=shop.example", meshtest.Service); seen.Load() != want {
		t.Errorf("backend saw %q, want %q", seen.Load(), want)
	}
}
