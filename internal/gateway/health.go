package gateway

import (
	"context"
	"io"
	"net/http"
	"sync"
)

// healthLoop checks every backend each HealthInterval until ctx ends.
func (g *Gateway) healthLoop(ctx context.Context) {
	for {
		t := g.clock.NewTimer(g.cfg.HealthInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		g.checkAll(ctx)
	}
}

// checkAll checks every backend concurrently and waits for the results
// (each check is bounded by HealthTimeout).
func (g *Gateway) checkAll(ctx context.Context) {
	g.mu.RLock()
	bs := g.backends
	g.mu.RUnlock()
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.recordCheck(b, g.check(ctx, b))
		}()
	}
	wg.Wait()
}

// check GETs HealthPath on b; a 2xx answer within HealthTimeout passes.
func (g *Gateway) check(ctx context.Context, b *backend) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+g.cfg.HealthPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "gmesh-gateway-health")
	resp, err := b.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{code: resp.StatusCode}
	}
	return nil
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "health check status " + http.StatusText(e.code) }

func (g *Gateway) recordCheck(b *backend, err error) {
	b.mu.Lock()
	was := b.healthy
	if err == nil {
		b.checkFails = 0
		b.checkPasses++
		if !b.healthy && b.checkPasses >= g.cfg.HealthyThreshold {
			b.healthy = true
		}
		// A well backend's ejection count decays, so a later ejection is
		// short again.
		if b.healthy && b.consecFails == 0 && b.ejections > 0 && !g.clock.Now().Before(b.ejectedUntil) {
			b.ejections--
		}
	} else {
		b.checkPasses = 0
		b.checkFails++
		if b.healthy && b.checkFails >= g.cfg.UnhealthyThreshold {
			b.healthy = false
		}
	}
	now := b.healthy
	b.mu.Unlock()
	switch {
	case was && !now:
		g.log.Warn("backend unhealthy", "backend", b.id, "addr", b.addr, "err", err)
	case !was && now:
		g.log.Info("backend healthy", "backend", b.id, "addr", b.addr)
	}
}
