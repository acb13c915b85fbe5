// Package load is the engine of `gmesh load`: the reference demo's
// `while true; do curl ...; done` loop, made measurable. It sends HTTP GETs
// to one URL, either as fast as a fixed number of workers can (closed loop)
// or on a fixed timetable (open loop), counts the replies per echo version
// and the failures per kind, reports once per second, and summarizes the
// run with latency percentiles. By default it only loads targets on this
// machine.
package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and limits of Config.
const (
	DefaultDuration    = 10 * time.Second
	MaxDuration        = time.Hour
	DefaultMaxRequests = 10_000_000
	DefaultConcurrency = 16
	MaxConcurrency     = 1024
	DefaultTimeout     = 5 * time.Second
	MaxRPS             = 100_000
)

// Config describes one load run. Zero values take the defaults above.
type Config struct {
	// URL is the target; see CheckTarget.
	URL string
	// RPS 0 runs a closed loop: Concurrency workers each send a request as
	// soon as their previous one completes. RPS > 0 runs an open loop: the
	// i-th request is scheduled at start + i/RPS whatever the response
	// times, with at most Concurrency in flight. A scheduled request that
	// finds no free slot is dropped and counted (Counts.Dropped), not
	// delayed, and latency is measured from the scheduled time, so a slow
	// target cannot hide its latency by slowing the load down.
	RPS int
	// Duration is how long requests are sent (default 10s, at most 1h).
	// Requests still in flight at the end are waited for, up to Timeout.
	Duration time.Duration
	// MaxRequests caps the requests sent (default and at most 10,000,000).
	MaxRequests int64
	// Concurrency is the number of workers (closed loop) or the limit of
	// requests in flight (open loop); default 16, at most 1024.
	Concurrency int
	// Timeout bounds each request, connection included (default 5s).
	Timeout time.Duration
	// AllowRemote allows targets that are not loopback addresses.
	AllowRemote bool
	// VersionHeader, when set, names the response header whose value is
	// the reply's version (e.g. "Echo-Client-Version", to count the
	// versions of the HTTP service behind a gateway); empty: the version is
	// read from the body ("Version 1.0)").
	VersionHeader string
	// Every, if set, is called once per second of the run with that
	// second's report, and once more at the end for a last partial second
	// that saw any activity. Calls are sequential and all happen before Run
	// returns. A slow Every delays later reports, never the load.
	Every func(Report)
	// Stop, if set, ends the sending early when closed, as if Duration had
	// passed: requests in flight finish and are counted (unlike a
	// cancelled ctx, which abandons them). Result.Duration is then the
	// time until Stop.
	Stop <-chan struct{}
}

// Latency holds latency percentiles.
type Latency struct {
	P50, P90, P99, P999, Max time.Duration
}

// Counts is what a report or a whole run counted.
type Counts struct {
	// Sent counts requests sent; Dropped, scheduled requests (open loop)
	// not sent because Concurrency requests were in flight.
	Sent, Dropped int64
	// OK counts 2xx replies; ByVersion splits them by the version in the
	// reply ("Version 1.0)"), "unknown" for a reply without one.
	OK        int64
	ByVersion map[string]int64
	// Failed counts failed requests; Failures splits them by kind: "http
	// 503", "timeout", "connection refused", "connection reset",
	// "connection closed", "other: <cause>".
	Failed   int64
	Failures map[string]int64
	// Latency is over completed requests, successful or not.
	Latency Latency
}

// Report is one second of a run. Requests are counted as sent in the second
// they were sent and as OK or failed in the second they completed.
type Report struct {
	// Second is the report's number, from 1.
	Second int
	Counts
}

// Result summarizes a run.
type Result struct {
	Counts
	// URL, RPS and Concurrency are the run's settings (RPS 0: closed loop).
	URL         string
	RPS         int
	Concurrency int
	// Canceled counts requests in flight when ctx was canceled; they are
	// neither OK nor failed.
	Canceled int64
	// Duration is how long requests were sent, Achieved is Sent/Duration.
	Duration time.Duration
	Achieved float64
	// Interrupted is set when ctx ended the run early.
	Interrupted bool
}

// Limits on distinct keys, so a misbehaving target cannot grow the maps
// without bound.
const (
	maxVersions     = 64
	maxVersionLen   = 64
	maxFailureKinds = 32
	maxBodyBytes    = 64 << 10
)

// Run sends load to cfg.URL as cfg describes and returns what happened. It
// returns an error without sending anything if cfg is invalid or the target
// is refused by CheckTarget. If ctx ends the run early it returns the
// result so far, with Interrupted set, and ctx's error wrapped.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	if err := CheckTarget(cfg.URL, cfg.AllowRemote); err != nil {
		return nil, err
	}
	if _, err := http.NewRequest(http.MethodGet, cfg.URL, nil); err != nil {
		return nil, fmt.Errorf("load: target %q: %w", cfg.URL, err)
	}

	client, transport := newClient(cfg)
	defer transport.CloseIdleConnections()

	r := &runner{
		cfg:    cfg,
		client: client,
		ctx:    ctx,
		stats:  newStats(),
		sem:    make(chan struct{}, cfg.Concurrency),
	}
	start := time.Now()
	end := start.Add(cfg.Duration)

	reporterDone := make(chan struct{})
	stopReporter := make(chan struct{})
	go func() {
		defer close(reporterDone)
		r.report(stopReporter)
	}()

	if cfg.RPS > 0 {
		r.openLoop(start, end)
	} else {
		r.closedLoop(end)
	}
	sendingTime := time.Since(start)
	if sendingTime > cfg.Duration {
		sendingTime = cfg.Duration
	}
	r.inflight.Wait()
	close(stopReporter)
	<-reporterDone

	res := r.stats.result()
	res.URL, res.RPS, res.Concurrency = cfg.URL, cfg.RPS, cfg.Concurrency
	res.Duration = sendingTime
	if sendingTime > 0 {
		res.Achieved = float64(res.Sent) / sendingTime.Seconds()
	}
	if err := ctx.Err(); err != nil {
		res.Interrupted = true
		return res, fmt.Errorf("load: interrupted after %s: %w", sendingTime.Round(time.Millisecond), err)
	}
	return res, nil
}

func withDefaults(cfg Config) (Config, error) {
	switch {
	case cfg.Duration == 0:
		cfg.Duration = DefaultDuration
	case cfg.Duration < 0 || cfg.Duration > MaxDuration:
		return cfg, fmt.Errorf("load: duration %s: must be positive and at most %s", cfg.Duration, MaxDuration)
	}
	switch {
	case cfg.MaxRequests == 0:
		cfg.MaxRequests = DefaultMaxRequests
	case cfg.MaxRequests < 0 || cfg.MaxRequests > DefaultMaxRequests:
		return cfg, fmt.Errorf("load: max requests %d: must be positive and at most %d", cfg.MaxRequests, DefaultMaxRequests)
	}
	switch {
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultConcurrency
	case cfg.Concurrency < 0 || cfg.Concurrency > MaxConcurrency:
		return cfg, fmt.Errorf("load: concurrency %d: must be positive and at most %d", cfg.Concurrency, MaxConcurrency)
	}
	switch {
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout < 0:
		return cfg, fmt.Errorf("load: timeout %s: must be positive", cfg.Timeout)
	}
	if cfg.RPS < 0 || cfg.RPS > MaxRPS {
		return cfg, fmt.Errorf("load: rps %d: must be between 0 (as fast as possible) and %d", cfg.RPS, MaxRPS)
	}
	return cfg, nil
}

// newClient returns one client for the whole run: keep-alive connections, one
// idle connection per worker, no proxy from the environment, no redirects
// (a 3xx is reported as such), and, unless remote targets are allowed, a
// dialer that refuses non-loopback addresses.
func newClient(cfg Config) (*http.Client, *http.Transport) {
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowRemote {
		dialer.Control = loopbackOnly
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          cfg.Concurrency,
		MaxIdleConnsPerHost:   cfg.Concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}
	client := &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return client, transport
}

type runner struct {
	cfg      Config
	client   *http.Client
	ctx      context.Context
	stats    *stats
	sem      chan struct{} // one token per request in flight
	inflight sync.WaitGroup
}

// openLoop schedules request i at start + i/RPS until end or MaxRequests,
// dropping any that finds Concurrency requests in flight. A late scheduler
// catches up by sending every missed request at once, each measured from its
// own scheduled time.
func (r *runner) openLoop(start, end time.Time) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var sent int64
	rps := int64(r.cfg.RPS)
	// Bounded: the schedule holds at most Duration*RPS (3.6e8) requests.
	for i := int64(0); ; i++ {
		due := start.Add(time.Duration(i * int64(time.Second) / rps))
		if sent >= r.cfg.MaxRequests {
			return
		}
		if !due.Before(end) {
			// The timetable covers the whole duration: wait for its end.
			due = end
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-r.ctx.Done():
				return
			case <-r.cfg.Stop:
				return
			case <-timer.C:
			}
		} else if r.ctx.Err() != nil || r.stopped() {
			return
		}
		if due.Equal(end) {
			return
		}
		select {
		case r.sem <- struct{}{}:
			sent++
			r.stats.addSent()
			r.inflight.Add(1)
			go func() {
				defer func() { <-r.sem; r.inflight.Done() }()
				r.do(due)
			}()
		default:
			r.stats.addDropped()
		}
	}
}

// closedLoop runs Concurrency workers, each sending its next request when the
// previous one completes, until end, MaxRequests or ctx. It returns when
// every worker has stopped.
func (r *runner) closedLoop(end time.Time) {
	var (
		reserved atomic.Int64
		workers  sync.WaitGroup
	)
	defer workers.Wait()
	for range r.cfg.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			// Bounded by MaxRequests across all workers.
			for reserved.Add(1) <= r.cfg.MaxRequests {
				if r.ctx.Err() != nil || r.stopped() || !time.Now().Before(end) {
					return
				}
				r.stats.addSent()
				r.do(time.Now())
			}
		}()
	}
}

// stopped reports whether cfg.Stop is closed (never, when it is nil).
func (r *runner) stopped() bool {
	select {
	case <-r.cfg.Stop:
		return true
	default:
		return false
	}
}

// do sends one request and records its outcome, with latency measured from
// scheduled.
func (r *runner) do(scheduled time.Time) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	defer cancel()
	version, failure, err := r.fetch(ctx)
	latency := time.Since(scheduled)
	if err != nil {
		if r.ctx.Err() != nil {
			r.stats.cancel()
			return
		}
		failure = classify(err)
	}
	r.stats.done(version, failure, latency)
}

// fetch sends one GET and returns the reply's version, or the failure kind
// of a non-2xx reply, or the error that stopped the exchange.
func (r *runner) fetch(ctx context.Context) (version, failure string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := readBody(resp)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Sprintf("http %d", resp.StatusCode), nil
	}
	if h := r.cfg.VersionHeader; h != "" {
		v := resp.Header.Get(h)
		if len(v) > maxVersionLen {
			v = v[:maxVersionLen]
		}
		return v, "", nil
	}
	return parseVersion(body), "", nil
}

// report calls cfg.Every at each second of the run, then once more for a
// last partial second, when stop is closed.
func (r *runner) report(stop <-chan struct{}) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	second := 0
	for {
		select {
		case <-ticker.C:
			second++
			rep := r.stats.takeSecond(second)
			if r.cfg.Every != nil {
				r.cfg.Every(rep)
			}
		case <-stop:
			if rep := r.stats.takeSecond(second + 1); active(rep.Counts) && r.cfg.Every != nil {
				r.cfg.Every(rep)
			}
			return
		}
	}
}

func active(c Counts) bool {
	return c.Sent > 0 || c.Dropped > 0 || c.OK > 0 || c.Failed > 0
}
