package local

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	rt "github.com/gmesh-dev/gmesh/internal/runtime"
)

// reportCallTimeout bounds one Registrar call.
const reportCallTimeout = 5 * time.Second

// reporter sends task state to the Registrar in the background. It keeps
// only the latest state per task (a newer Register replaces an unsent one, a
// Deregister replaces both), retries failures with backoff, and never blocks
// its callers: process supervision goes on while the control plane is down.
type reporter struct {
	reg    rt.Registrar
	log    *slog.Logger
	clock  clock.Clock
	minB   time.Duration
	maxB   time.Duration
	notify chan struct{}

	mu      sync.Mutex
	pending map[string]*report
	idle    chan struct{} // closed and replaced when pending becomes empty
}

// report is one task's latest unsent state: ep, or deregistration if ep is nil.
type report struct {
	ep       *mesh.Endpoint
	attempts int
	nextTry  time.Time
}

func newReporter(reg rt.Registrar, log *slog.Logger, clk clock.Clock, minB, maxB time.Duration) *reporter {
	return &reporter{
		reg: reg, log: log, clock: clk, minB: minB, maxB: maxB,
		notify:  make(chan struct{}, 1),
		pending: make(map[string]*report),
		idle:    make(chan struct{}),
	}
}

// register queues ep (copied) as id's latest state.
func (r *reporter) register(ep mesh.Endpoint) {
	ep.Attributes = cloneMap(ep.Attributes)
	r.put(ep.ID, &report{ep: &ep})
}

// deregister queues id's removal.
func (r *reporter) deregister(id string) { r.put(id, &report{}) }

func (r *reporter) put(id string, rep *report) {
	if r.reg == nil {
		return
	}
	r.mu.Lock()
	r.pending[id] = rep
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// run sends pending reports until ctx is done.
func (r *reporter) run(ctx context.Context) {
	for {
		wait, ok := r.sendDue(ctx)
		if ctx.Err() != nil {
			return
		}
		var t clock.Timer
		var timerC <-chan time.Time
		if ok {
			t = r.clock.NewTimer(wait)
			timerC = t.C()
		}
		select {
		case <-ctx.Done():
		case <-r.notify:
		case <-timerC:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// sendDue sends every report whose time has come, one call at a time, and
// returns how long until the next retry (ok false when nothing is pending).
func (r *reporter) sendDue(ctx context.Context) (wait time.Duration, ok bool) {
	for {
		now := r.clock.Now()
		r.mu.Lock()
		var id string
		var rep *report
		var next time.Time
		for pid, p := range r.pending {
			if !p.nextTry.After(now) {
				id, rep = pid, p
				break
			}
			if next.IsZero() || p.nextTry.Before(next) {
				next = p.nextTry
			}
		}
		if rep == nil {
			if len(r.pending) == 0 {
				close(r.idle)
				r.idle = make(chan struct{})
			}
			r.mu.Unlock()
			if next.IsZero() {
				return 0, false
			}
			return next.Sub(now), true
		}
		r.mu.Unlock()

		err := r.send(ctx, id, rep)
		if ctx.Err() != nil {
			return 0, false
		}
		r.mu.Lock()
		if r.pending[id] == rep { // not replaced while the call ran
			if err == nil {
				delete(r.pending, id)
			} else {
				rep.attempts++
				rep.nextTry = r.clock.Now().Add(backoffFor(r.minB, r.maxB, rep.attempts))
				if rep.attempts == 1 || rep.attempts%10 == 0 {
					r.log.Warn("report task to registry failed, retrying", "task", id, "attempts", rep.attempts, "err", err)
				}
			}
		}
		r.mu.Unlock()
	}
}

func (r *reporter) send(ctx context.Context, id string, rep *report) error {
	cctx, cancel := context.WithTimeout(ctx, reportCallTimeout)
	defer cancel()
	if rep.ep == nil {
		return r.reg.Deregister(cctx, id)
	}
	return r.reg.Register(cctx, rep.ep)
}

// flush waits until nothing is pending or ctx is done.
func (r *reporter) flush(ctx context.Context) error {
	if r.reg == nil {
		return nil
	}
	for {
		r.mu.Lock()
		n := len(r.pending)
		idle := r.idle
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle:
		}
	}
}

// backoffFor returns the delay before attempt n (1-based): min doubling up
// to max.
func backoffFor(min, max time.Duration, n int) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
