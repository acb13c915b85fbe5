package gateway

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one target of the gateway: a healthy task of the gateway
// route's virtual service.
type Backend struct {
	ID   string
	Addr string // host:port
}

// BackendStats is one backend's counters and state.
type BackendStats struct {
	Addr        string
	Requests    uint64 // attempts sent to it, retries included
	Failures    uint64 // attempts that failed: connection errors, timeouts, 5xx
	Outstanding int64  // requests in flight now
	Healthy     bool   // per the active health check
	Ejected     bool   // by passive outlier detection, now
	Ejections   int    // recent ejections (grows the ejection time; decays while well)
}

// backend is a Backend plus its connection pool and health.
type backend struct {
	id, addr string
	tr       *http.Transport

	outstanding atomic.Int64
	requests    atomic.Uint64
	failures    atomic.Uint64

	mu           sync.Mutex
	healthy      bool
	checkFails   int
	checkPasses  int
	consecFails  int // passive: consecutive failed attempts
	ejectedUntil time.Time
	ejections    int
}

func newBackend(b Backend) *backend {
	d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	return &backend{
		id:      b.ID,
		addr:    b.Addr,
		healthy: true, // backends arrive from the control plane already healthy
		tr: &http.Transport{
			Proxy: nil, // never an environment proxy between gateway and tasks
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &countConn{Conn: c}, nil
			},
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       30 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		},
	}
}

// available reports whether b takes traffic outside panic mode.
func (b *backend) available(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.healthy && !now.Before(b.ejectedUntil)
}

// countConn counts bytes written so the gateway knows whether any byte of a
// request reached a backend before its connection failed.
type countConn struct {
	net.Conn
	written atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}
