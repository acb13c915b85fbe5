package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// jitterFraction is how much shorter than the interval a wait may be. Waits
// are only ever shortened, so interval × threshold stays an upper bound.
const jitterFraction = 0.1

// userAgent names gmesh's checks in backends' logs.
const userAgent = "gmesh-healthcheck"

// prober runs one check against one endpoint. A prober keeps its connection
// between checks and releases it on close.
type prober interface {
	probe(ctx context.Context) error
	close()
}

// checker is the goroutine that checks one endpoint under one policy.
type checker struct {
	r      *Registry
	id     string
	gen    uint64
	delay  time.Duration // before the first check
	policy mesh.HealthCheck
	prober prober
}

func newProber(addr string, hc *mesh.HealthCheck, creds credentials.TransportCredentials) prober {
	switch hc.Protocol {
	case mesh.ProtocolGRPC:
		return &grpcProber{addr: addr, timeout: timeout(hc), creds: creds}
	case mesh.ProtocolHTTP, mesh.ProtocolHTTP2:
		return newHTTPProber(addr, hc)
	case mesh.ProtocolTCP:
		return tcpProber{addr: addr}
	}
	return badProber{protocol: hc.Protocol}
}

// run checks at once, then every interval (slightly jittered, counted from
// the end of the previous check) until ctx ends.
func (c *checker) run(ctx context.Context) {
	defer c.prober.close()
	iv, to := interval(&c.policy), timeout(&c.policy)
	if c.delay > 0 && !c.wait(ctx, c.delay) {
		return
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, to)
		err := c.prober.probe(cctx)
		if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", to, err)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.r.report(ctx, c.id, c.gen, err)

		if !c.wait(ctx, iv-time.Duration(rand.Float64()*jitterFraction*float64(iv))) {
			return
		}
	}
}

// wait waits d on the registry's clock; false means ctx ended first.
func (c *checker) wait(ctx context.Context, d time.Duration) bool {
	t := c.r.clock.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-t.C():
		return true
	}
}

// grpcProber calls grpc.health.v1.Health/Check for service "" on one
// ClientConn kept for the endpoint's life.
type grpcProber struct {
	addr    string
	timeout time.Duration
	creds   credentials.TransportCredentials // nil: plaintext
	conn    *grpc.ClientConn
	client  healthpb.HealthClient
}

func (p *grpcProber) probe(ctx context.Context) error {
	if p.conn == nil {
		creds := p.creds
		if creds == nil {
			creds = insecure.NewCredentials()
		}
		conn, err := grpc.NewClient("passthrough:///"+p.addr,
			grpc.WithTransportCredentials(creds),
			grpc.WithUserAgent(userAgent),
			grpc.WithDisableServiceConfig(),
			grpc.WithConnectParams(grpc.ConnectParams{
				// Reconnect soon after a failure: a check must see a
				// backend that came back, not a conn still backing off.
				Backoff: backoff.Config{
					BaseDelay:  50 * time.Millisecond,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   time.Second,
				},
				MinConnectTimeout: max(p.timeout, time.Second),
			}),
		)
		if err != nil {
			return fmt.Errorf("grpc health check: %w", err)
		}
		p.conn, p.client = conn, healthpb.NewHealthClient(conn)
	}
	if p.conn.GetState() == connectivity.TransientFailure {
		p.conn.ResetConnectBackoff()
	}
	resp, err := p.client.Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		return fmt.Errorf("grpc health check: %w", err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health status %s", s)
	}
	return nil
}

func (p *grpcProber) close() {
	if p.conn != nil {
		p.conn.Close()
	}
}

// httpProber GETs a path; 200-399 passes. Redirects are not followed. For
// http2 it speaks HTTP/2 with prior knowledge (h2c).
type httpProber struct {
	url       string
	transport *http.Transport
	client    *http.Client
}

func newHTTPProber(addr string, hc *mesh.HealthCheck) *httpProber {
	tr := &http.Transport{
		Proxy:               nil, // never send loopback checks through a proxy
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	if hc.Protocol == mesh.ProtocolHTTP2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &httpProber{
		url:       "http://" + addr + hc.Path,
		transport: tr,
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

func (p *httpProber) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("http health check: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("http health check: %w", err)
	}
	// Drain a little so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("http health check: GET %s: status %d", p.url, resp.StatusCode)
	}
	return nil
}

func (p *httpProber) close() { p.transport.CloseIdleConnections() }

// tcpProber passes when a TCP connection opens.
type tcpProber struct{ addr string }

func (p tcpProber) probe(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return fmt.Errorf("tcp health check: %w", err)
	}
	return conn.Close()
}

func (tcpProber) close() {}

// badProber fails every check of a protocol gmesh cannot check.
type badProber struct{ protocol string }

func (p badProber) probe(context.Context) error {
	return fmt.Errorf("unsupported health check protocol %q (want grpc, http, http2 or tcp)", p.protocol)
}

func (badProber) close() {}

func hostPort(addr string, port int) string {
	return net.JoinHostPort(addr, strconv.Itoa(port))
}
