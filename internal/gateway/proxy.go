package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// errNoBackend is the transport's error when there is no backend at all.
var errNoBackend = errors.New("no backend")

// reqState is one request's bookkeeping, shared by the handler, the
// transport and the error handler through the request context.
type reqState struct {
	mu      sync.Mutex
	backend string // ID of the backend that answered (or failed last)
	retried bool
	body    *body  // nil when the request has no body
	route   *route // where the request may go
	// path and host are what the request goes on with, as its gateway
	// route rewrote them.
	path, host string
}

func (st *reqState) setBackend(id string) {
	st.mu.Lock()
	st.backend = id
	st.mu.Unlock()
}

func (st *reqState) backendID() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.backend
}

type stateKey struct{}

func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.clock.Now()
	sw := &statusWriter{ResponseWriter: w}
	st := &reqState{}
	path := r.URL.Path
	defer func() {
		// ReverseProxy aborts with http.ErrAbortHandler when copying a
		// response body fails; still log and count it.
		p := recover()
		code := sw.code()
		if p != nil && code == 0 {
			code = http.StatusBadGateway
		}
		g.done(r, path, code, st.backendID(), g.clock.Now().Sub(start))
		if p != nil {
			panic(p)
		}
	}()

	if r.ContentLength > g.cfg.MaxBodyBytes {
		tooLarge(sw)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		st.body = &body{rc: http.MaxBytesReader(sw, r.Body, g.cfg.MaxBodyBytes)}
		r.Body = st.body
	}
	g.mu.RLock()
	tbl := g.table
	g.mu.RUnlock()
	rt, outPath, outHost, err := tbl.resolve(r)
	if err != nil {
		var re *routeError
		if errors.As(err, &re) {
			http.Error(sw, re.msg, re.code)
		} else {
			http.Error(sw, "no healthy backend", http.StatusServiceUnavailable)
		}
		return
	}
	st.route, st.path, st.host = rt, outPath, outHost
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, stateKey{}, st)
	g.proxy.ServeHTTP(sw, r.WithContext(ctx))
}

func tooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
}

// done writes the access log line and the metrics of one request.
func (g *Gateway) done(r *http.Request, path string, code int, backend string, d time.Duration) {
	if backend == "" {
		backend = "none"
	}
	g.m.requests.WithLabelValues(strconv.Itoa(code), backend).Inc()
	g.m.duration.Observe(d.Seconds())
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method),
		slog.String("path", path),
		slog.Int("status", code),
		slog.String("backend", backend),
		slog.Duration("duration", d),
		slog.String("client", r.RemoteAddr),
	)
}

// proxyError maps a failed proxied request to a status.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || (st != nil && st.body != nil && st.body.tooLarge()):
		tooLarge(w)
	case errors.Is(err, errNoBackend):
		http.Error(w, "no healthy backend", http.StatusServiceUnavailable)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(r.Context().Err(), context.DeadlineExceeded):
		http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
	case errors.Is(r.Context().Err(), context.Canceled):
		// The client went away; nobody reads a reply. 499 as nginx logs it.
		if sw, ok := w.(*statusWriter); ok {
			sw.status = 499
		}
	default:
		g.log.Debug("proxy error", "path", r.URL.Path, "err", err)
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}
}

// transport picks a backend per attempt and retries once on another
// backend when the first attempt failed before any byte of the request was
// sent (or, for GET/HEAD/OPTIONS without a body, before any byte of the
// response came back).
type transport Gateway

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	g := (*Gateway)(t)
	st, _ := req.Context().Value(stateKey{}).(*reqState)
	if st == nil {
		st = &reqState{}
	}
	var tried *backend
	var lastErr error
	if st.route == nil {
		return nil, errNoBackend
	}
	for attempt := 0; attempt < 2; attempt++ {
		b := g.pickRoute(st.route, tried)
		if b == nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, errNoBackend
		}
		resp, retry, err := g.try(req, b, st)
		if err == nil {
			return resp, nil
		}
		if !retry {
			return nil, err
		}
		st.mu.Lock()
		st.retried = true
		st.mu.Unlock()
		g.m.retries.Inc()
		g.log.Debug("retrying on another backend", "backend", b.id, "err", err)
		tried, lastErr = b, err
	}
	return nil, lastErr
}

// try sends one attempt to b. retry reports whether the failure is safe to
// retry on another backend.
func (g *Gateway) try(req *http.Request, b *backend, st *reqState) (resp *http.Response, retry bool, err error) {
	var (
		conn      *countConn
		baseline  int64
		firstByte atomic.Bool
	)
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if c, ok := info.Conn.(*countConn); ok {
				conn, baseline = c, c.written.Load()
			}
		},
		GotFirstResponseByte: func() { firstByte.Store(true) },
	}
	out := req.Clone(httptrace.WithClientTrace(req.Context(), trace))
	out.URL.Host = b.addr
	hasBody := out.Body != nil && out.Body != http.NoBody
	if hasBody && st.body != nil {
		// Send our body wrapper itself, not ReverseProxy's close guard
		// around it, which the transport closes when an attempt fails.
		out.Body = st.body
	}

	st.setBackend(b.id)
	b.requests.Add(1)
	b.outstanding.Add(1)
	resp, err = b.tr.RoundTrip(out)
	if err == nil {
		resp.Body = &respBody{ReadCloser: resp.Body, b: b}
		if resp.StatusCode >= 500 {
			g.failed(b)
		} else {
			g.succeeded(b)
		}
		return resp, false, nil
	}
	b.outstanding.Add(-1)

	ctxErr := req.Context().Err()
	if errors.Is(ctxErr, context.Canceled) {
		return nil, false, err // the client left; not the backend's fault
	}
	g.failed(b)
	if ctxErr != nil || (st.body != nil && st.body.tooLarge()) {
		return nil, false, err
	}
	bodyUntouched := !hasBody || st.body == nil || !st.body.touched()
	switch {
	case conn == nil: // never connected: dial failed
		retry = bodyUntouched
	case conn.written.Load() == baseline: // connected, sent nothing
		retry = bodyUntouched
	case !hasBody && idempotent(req.Method) && !firstByte.Load():
		retry = true
	}
	return nil, retry, err
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// body wraps a request body: it records whether any byte was read (then a
// retry is no longer safe) and keeps the transport's Close on a failed
// attempt from closing it; the server closes the real body.
type body struct {
	rc io.ReadCloser

	mu   sync.Mutex
	read bool
	err  error
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	if n > 0 {
		b.read = true
	}
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	return n, err
}

func (b *body) Close() error { return nil }

func (b *body) touched() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read || b.err != nil
}

func (b *body) tooLarge() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var mbe *http.MaxBytesError
	return errors.As(b.err, &mbe)
}

// respBody ends a request's outstanding count when its body is closed.
type respBody struct {
	io.ReadCloser
	b    *backend
	once sync.Once
}

func (r *respBody) Close() error {
	r.once.Do(func() { r.b.outstanding.Add(-1) })
	return r.ReadCloser.Close()
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) code() int { return w.status }

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on for streamed responses.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}
