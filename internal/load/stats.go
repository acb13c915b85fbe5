package load

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// window counts one span of a run: one second, or the whole run.
type window struct {
	sent, dropped, ok, failed int64
	byVersion                 map[string]int64
	failures                  map[string]int64
	hist                      histogram
}

func newWindow() *window {
	return &window{byVersion: map[string]int64{}, failures: map[string]int64{}}
}

func (w *window) counts() Counts {
	return Counts{
		Sent:      w.sent,
		Dropped:   w.dropped,
		OK:        w.ok,
		ByVersion: w.byVersion,
		Failed:    w.failed,
		Failures:  w.failures,
		Latency:   w.hist.latency(),
	}
}

// stats is shared by every request of a run: the current second's window,
// and the rest of the run's, which the current second is merged into at the
// end of each second.
type stats struct {
	mu       sync.Mutex
	second   *window
	past     *window
	canceled int64
	// versions and kinds bound the distinct keys over the run.
	versions map[string]bool
	kinds    map[string]bool
}

func newStats() *stats {
	return &stats{
		second:   newWindow(),
		past:     newWindow(),
		versions: map[string]bool{},
		kinds:    map[string]bool{},
	}
}

func (s *stats) addSent() {
	s.mu.Lock()
	s.second.sent++
	s.mu.Unlock()
}

func (s *stats) addDropped() {
	s.mu.Lock()
	s.second.dropped++
	s.mu.Unlock()
}

func (s *stats) cancel() {
	s.mu.Lock()
	s.canceled++
	s.mu.Unlock()
}

// done records a completed request: failed if failure is set, else OK with
// version ("" is counted as "unknown").
func (s *stats) done(version, failure string, latency time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.second
	w.hist.record(latency)
	if failure != "" {
		w.failed++
		w.failures[bound(s.kinds, failure, maxFailureKinds, "other: (too many kinds)")]++
		return
	}
	if version == "" {
		version = "unknown"
	}
	w.ok++
	w.byVersion[bound(s.versions, version, maxVersions, "other")]++
}

// bound returns key, or overflow once seen holds limit other keys.
func bound(seen map[string]bool, key string, limit int, overflow string) string {
	if seen[key] {
		return key
	}
	if len(seen) >= limit {
		return overflow
	}
	seen[key] = true
	return key
}

// takeSecond returns the current second's report and starts the next one.
func (s *stats) takeSecond(n int) Report {
	next := newWindow()
	s.mu.Lock()
	w := s.second
	s.second = next
	s.mergeLocked(w)
	s.mu.Unlock()
	return Report{Second: n, Counts: w.counts()}
}

func (s *stats) mergeLocked(w *window) {
	p := s.past
	p.sent += w.sent
	p.dropped += w.dropped
	p.ok += w.ok
	p.failed += w.failed
	for k, v := range w.byVersion {
		p.byVersion[k] += v
	}
	for k, v := range w.failures {
		p.failures[k] += v
	}
	p.hist.merge(&w.hist)
}

// result returns the run's totals. Call it after the last takeSecond.
func (s *stats) result() *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mergeLocked(s.second)
	s.second = newWindow()
	return &Result{Counts: s.past.counts(), Canceled: s.canceled}
}

var versionRE = regexp.MustCompile(`Version ([^)\s]+)\)`)

// parseVersion returns the version in an echo reply such as "Hello, x-san!
// (Said 127.0.0.1, Version 1.0)", or "" if there is none.
func parseVersion(body []byte) string {
	m := versionRE.FindSubmatch(body)
	if m == nil {
		return ""
	}
	v := m[1]
	if len(v) > maxVersionLen {
		v = v[:maxVersionLen]
	}
	return string(v)
}

// readBody reads up to maxBodyBytes of the body, and discards up to as much
// again so the connection can be reused.
func readBody(resp *http.Response) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, resp.Body, maxBodyBytes); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return body, nil
}

// classify names the kind of a failed exchange.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrRemoteTarget):
		return "remote target refused"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other: " + cause(err)
}

// cause returns the innermost error's message, shortened: enough to tell
// kinds apart without one key per address or port.
func cause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	msg := err.Error()
	const maxLen = 60
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "..."
	}
	return msg
}
