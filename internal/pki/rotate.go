package pki

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// Issuer issues workload certificates; *CA implements it.
type Issuer interface {
	Issue(id ID, lifetime time.Duration) (*Identity, error)
	BundlePEM() []byte
}

var _ Issuer = (*CA)(nil)

// Rotator defaults.
const (
	DefaultRetryMin = time.Second
	DefaultRetryMax = time.Minute
)

// RotatorConfig configures a Rotator. Zero values take the defaults.
type RotatorConfig struct {
	Issuer Issuer
	// Lifetime of each certificate (DefaultLifetime).
	Lifetime time.Duration
	// RetryMin and RetryMax bound the wait before retrying a failed
	// renewal; it doubles per consecutive failure.
	RetryMin, RetryMax time.Duration
	Clock              clock.Clock
	Logger             *slog.Logger
	// Changed, when set, is called with a directory after each renewal of
	// its certificate, and each failed attempt, so that whoever shows
	// Status can refresh it. It is called without the Rotator's lock held
	// and may call Status.
	Changed func(dir string)
}

// Rotator keeps workloads' certificate files fresh: Add issues and writes a
// workload's files at once, Run renews each at half its lifetime, and
// retries a failed renewal with backoff while the old files stay in place.
type Rotator struct {
	cfg  RotatorConfig
	log  *slog.Logger
	wake chan struct{}

	mu    sync.Mutex // held while issuing and writing, so one directory has one writer
	certs map[string]*entry
}

type entry struct {
	files    Files
	id       ID
	notAfter time.Time
	renewAt  time.Time
	renewals int
	failures int
	lastErr  error
}

// Status is what a Rotator knows about one workload's certificate.
type Status struct {
	ID       ID
	NotAfter time.Time
	// RenewAt is when the next renewal (or retry) is due.
	RenewAt time.Time
	// Renewals counts successful renewals since Add.
	Renewals int
	// Failures counts consecutive failed renewals; LastError is the last.
	Failures  int
	LastError error
}

// NewRotator returns a Rotator; call Run to renew.
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	if cfg.Issuer == nil {
		return nil, fmt.Errorf("rotator: no issuer")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Lifetime < MinLifetime || cfg.Lifetime > MaxLifetime {
		return nil, fmt.Errorf("certificate lifetime %s: want %s to %s", cfg.Lifetime, MinLifetime, MaxLifetime)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rotator{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), certs: map[string]*entry{}}, nil
}

// Lifetime is the lifetime of the certificates r issues.
func (r *Rotator) Lifetime() time.Duration { return r.cfg.Lifetime }

// Add issues id a certificate, writes it to dir (Files) and keeps it
// renewed. A failure is returned and nothing is scheduled: the workload
// should not start without its files. Adding a directory again issues anew.
func (r *Rotator) Add(dir string, id ID) error {
	r.mu.Lock()
	e := &entry{files: Files{Dir: dir}, id: id}
	if err := r.issueLocked(e); err != nil {
		r.mu.Unlock()
		return err
	}
	r.certs[dir] = e
	r.mu.Unlock()
	r.poke()
	return nil
}

// Remove stops renewing dir's certificate and deletes its files.
func (r *Rotator) Remove(dir string) error {
	r.mu.Lock()
	e, ok := r.certs[dir]
	delete(r.certs, dir)
	r.mu.Unlock()
	r.poke()
	if !ok {
		return nil
	}
	return e.files.Remove()
}

// Status reports dir's certificate.
func (r *Rotator) Status(dir string) (Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.certs[dir]
	if !ok {
		return Status{}, fmt.Errorf("%s: %w", dir, errNotIssued)
	}
	return Status{ID: e.id, NotAfter: e.notAfter, RenewAt: e.renewAt, Renewals: e.renewals, Failures: e.failures, LastError: e.lastErr}, nil
}

func (r *Rotator) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// issueLocked issues and writes e's certificate and schedules its renewal
// at half its remaining life.
func (r *Rotator) issueLocked(e *entry) error {
	now := r.cfg.Clock.Now()
	id, err := r.cfg.Issuer.Issue(e.id, r.cfg.Lifetime)
	if err != nil {
		return err
	}
	if err := e.files.Write(id, r.cfg.Issuer.BundlePEM()); err != nil {
		return err
	}
	e.notAfter = id.Leaf.NotAfter
	e.renewAt = now.Add(e.notAfter.Sub(now) / 2)
	return nil
}

// RenewDue renews every certificate due by now and returns when the next
// one is due (zero when there is none).
func (r *Rotator) RenewDue() time.Time {
	next, changed := r.renewDue()
	if r.cfg.Changed != nil {
		for _, d := range changed {
			r.cfg.Changed(d)
		}
	}
	return next
}

// renewDue is RenewDue under the lock; it returns the directories renewed
// or tried.
func (r *Rotator) renewDue() (next time.Time, changed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Clock.Now()
	dirs := make([]string, 0, len(r.certs))
	for d := range r.certs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		e := r.certs[d]
		if !e.renewAt.After(now) {
			r.renewLocked(e, now)
			changed = append(changed, d)
		}
		if next.IsZero() || e.renewAt.Before(next) {
			next = e.renewAt
		}
	}
	return next, changed
}

func (r *Rotator) renewLocked(e *entry, now time.Time) {
	err := r.issueLocked(e)
	if err == nil {
		e.renewals++
		e.failures, e.lastErr = 0, nil
		r.log.Info("certificate renewed", "id", e.id.String(), "dir", e.files.Dir, "notAfter", e.notAfter, "renewAt", e.renewAt)
		return
	}
	e.failures++
	e.lastErr = err
	wait := r.cfg.RetryMin << min(e.failures-1, 30)
	if wait <= 0 || wait > r.cfg.RetryMax {
		wait = r.cfg.RetryMax
	}
	e.renewAt = now.Add(wait)
	left := e.notAfter.Sub(now)
	if left <= 0 {
		r.log.Error("certificate renewal failed and the certificate has expired: the workload's TLS handshakes fail until a renewal succeeds",
			"id", e.id.String(), "dir", e.files.Dir, "expiredAt", e.notAfter, "failures", e.failures, "retryIn", wait, "err", err)
		return
	}
	r.log.Warn("certificate renewal failed; the current certificate stays in place",
		"id", e.id.String(), "dir", e.files.Dir, "validFor", left, "failures", e.failures, "retryIn", wait, "err", err)
}

// Run renews certificates when they are due until ctx ends.
func (r *Rotator) Run(ctx context.Context) {
	for {
		next := r.RenewDue()
		var timer clock.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = r.cfg.Clock.NewTimer(next.Sub(r.cfg.Clock.Now()))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-fire:
		case <-r.wake:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}
