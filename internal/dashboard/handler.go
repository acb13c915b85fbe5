package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"slices"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

//go:embed static
var staticFS embed.FS

// CSRFHeader must be set to "1" on every POST: a cross-site form cannot set
// a custom header, and a cross-site fetch that sets one needs a CORS
// preflight the dashboard never grants.
const CSRFHeader = "X-Gmesh"

// Handler serves the page, its assets and the API:
//
//	GET  /                                         the page
//	GET  /static/...                               embedded assets
//	GET  /api/state                                the state with its history (JSON)
//	GET  /api/events                               server-sent events: "snapshot" first, then one "update" per poll
//	POST /api/rollouts/{mesh}/{service}/{action}   pause, resume, promote or abort a rollout
//
// Every request passes the guard first (guard.go: Host, Origin, and the
// token for requests from off loopback). Errors are JSON {"error": "..."}.
func (d *Dashboard) Handler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	mux := http.NewServeMux()
	static := http.StripPrefix("/static/", http.FileServerFS(sub))
	mux.Handle("/static/", onlyGet(static))
	mux.Handle("/{$}", onlyGet(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	})))
	mux.Handle("/api/state", onlyGet(http.HandlerFunc(d.serveState)))
	mux.Handle("/api/events", onlyGet(http.HandlerFunc(d.serveEvents)))
	mux.HandleFunc("/api/rollouts/{mesh}/{service}/{action}", d.serveControl)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API: "+r.URL.Path)
	})
	return securityHeaders(d.guard.wrap(d, mux))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

func onlyGet(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (d *Dashboard) serveState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, d.hub.snapshot())
}

func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	sub, first := d.hub.subscribe()
	defer d.hub.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		// A browser that stops reading is cut off rather than holding the
		// handler forever; the hub never waits on it either way.
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// retry: how long the browser waits before reconnecting by itself.
	if !write([]byte("retry: 2000\n\n")) || !write(first) {
		return
	}
	hb := d.cfg.Clock.NewTimer(d.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.gone:
			// Dropped as too slow, or the poller stopped: drain what was
			// queued is pointless; the browser reconnects to a snapshot.
			return
		case b := <-sub.ch:
			if !write(b) {
				return
			}
		case <-hb.C():
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
			hb.Reset(d.cfg.Heartbeat)
		}
	}
}

func (d *Dashboard) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use POST")
		return
	}
	if r.Header.Get(CSRFHeader) != "1" {
		writeError(w, http.StatusForbidden, "missing header "+CSRFHeader+": 1")
		return
	}
	meshName, service, action := r.PathValue("mesh"), r.PathValue("service"), r.PathValue("action")
	if !slices.Contains(actions, action) {
		writeError(w, http.StatusBadRequest, "unknown rollout action "+quote(action)+": want pause, resume, promote or abort")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, err := d.cfg.Source.ControlRollout(ctx, meshName, service, action)
	if err != nil {
		d.log.Info("dashboard rollout control failed", "mesh", meshName, "service", service, "action", action, "err", err)
		writeError(w, httpStatus(err), err.Error())
		return
	}
	d.log.Info("dashboard rollout control", "mesh", meshName, "service", service, "action", action)
	out := struct {
		Action  string         `json:"action"`
		Mesh    string         `json:"mesh"`
		Service string         `json:"service"`
		Rollout *RolloutView   `json:"rollout,omitempty"`
		Raw     *mesh.Resource `json:"resource,omitempty"`
	}{Action: action, Mesh: meshName, Service: service}
	res = res.Redacted()
	if res != nil && res.Kind == mesh.KindRollout {
		out.Rollout = rolloutView(res)
	} else {
		out.Raw = res
	}
	writeJSON(w, http.StatusOK, out)
}

// httpStatus converts a domain error to an HTTP status.
func httpStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	switch mesh.ErrorCode(err) {
	case mesh.EInvalid:
		return http.StatusBadRequest
	case mesh.ENotFound:
		return http.StatusNotFound
	case mesh.EConflict, mesh.EAlreadyExists, mesh.EInUse:
		return http.StatusConflict
	case mesh.EUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
