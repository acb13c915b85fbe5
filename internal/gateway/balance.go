package gateway

import "time"

// pick returns the backend of bs for the next attempt, never exclude: the
// available backend (healthy, not ejected) with the fewest requests in
// flight, ties broken round robin. Least outstanding rather than plain round
// robin because a slow or hung task accumulates in-flight requests and so
// stops getting new ones at once, before any health check notices; with
// equal load it is round robin. If no backend is available (all unhealthy or
// ejected) it picks among all of them (panic mode): a guess beats a certain
// 503, and it is how a wrongly ejected last backend comes back.
func (g *Gateway) pick(bs []*backend, exclude *backend) *backend {
	n := len(bs)
	if n == 0 {
		return nil
	}
	start := int(g.rr.Add(1) % uint64(n))
	now := g.clock.Now()
	choose := func(filter bool) *backend {
		var best *backend
		var bestN int64
		for i := range n {
			b := bs[(start+i)%n]
			if b == exclude || (filter && !b.available(now)) {
				continue
			}
			if o := b.outstanding.Load(); best == nil || o < bestN {
				best, bestN = b, o
			}
		}
		return best
	}
	if b := choose(true); b != nil {
		return b
	}
	return choose(false)
}

// failed counts a failed attempt on b and ejects it after EjectAfter in a
// row, for BaseEjection times its recent ejections (at most MaxEjection).
func (g *Gateway) failed(b *backend) {
	b.failures.Add(1)
	now := g.clock.Now()
	b.mu.Lock()
	b.consecFails++
	if b.consecFails < g.cfg.EjectAfter || now.Before(b.ejectedUntil) {
		b.mu.Unlock()
		return
	}
	b.consecFails = 0
	b.ejections++
	d := min(time.Duration(b.ejections)*g.cfg.BaseEjection, g.cfg.MaxEjection)
	b.ejectedUntil = now.Add(d)
	n := b.ejections
	b.mu.Unlock()
	g.m.ejections.Inc()
	g.log.Warn("backend ejected", "backend", b.id, "addr", b.addr, "for", d, "ejections", n)
}

func (g *Gateway) succeeded(b *backend) {
	b.mu.Lock()
	b.consecFails = 0
	b.mu.Unlock()
}
