package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// controlSource is a fakeSource whose control answers with the echo
// rollout.
func controlSource() *fakeSource {
	ro := echoStatus(90, 10, "", "").Rollouts[0]
	src := &fakeSource{control: func(context.Context, string, string, string) (*mesh.Resource, error) { return ro, nil }}
	src.set(echoStatus(90, 10, "", ""), nil)
	return src
}

func errorOf(t *testing.T, body []byte) string {
	t.Helper()
	var out struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return out.Error
}

// TestDNSRebindingRefused sends issue 14's request, over real loopback HTTP:
// a page on evil.example whose name was re-pointed at 127.0.0.1 posts to
// pause a rollout. It must be refused before anything is paused, and so
// must reads by that name.
func TestDNSRebindingRefused(t *testing.T) {
	src := controlSource()
	_, _, srv := newTest(t, src, Config{})
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	evil := "evil.example:" + port
	tests := []struct {
		name, method, path string
		host, origin       string
		wantHeader         string // the header the refusal names
	}{
		{"issue 14's pause", "POST", "/api/rollouts/echo/echo-server/pause", evil, "http://" + evil, "Host"},
		{"abort by rebinding", "POST", "/api/rollouts/echo/echo-server/abort", evil, "http://" + evil, "Host"},
		{"state by rebinding", "GET", "/api/state", evil, "", "Host"},
		{"events by rebinding", "GET", "/api/events", evil, "", "Host"},
		{"page by rebinding", "GET", "/", evil, "", "Host"},
		{"rebinding with a trailing dot", "GET", "/api/state", "evil.example.:" + port, "", "Host"},
		{"a subdomain of localhost", "GET", "/api/state", "evil.localhost:" + port, "", "Host"},
		{"loopback name, other port", "GET", "/api/state", "localhost:1", "", "Host"},
		{"cross-site post with the right Host", "POST", "/api/rollouts/echo/echo-server/pause", "127.0.0.1:" + port, "http://evil.example", "Origin"},
		{"another local app's page", "POST", "/api/rollouts/echo/echo-server/pause", "127.0.0.1:" + port, "http://localhost:3000", "Origin"},
		{"sandboxed page", "POST", "/api/rollouts/echo/echo-server/pause", "127.0.0.1:" + port, "null", "Origin"},
		{"cross-site read", "GET", "/api/state", "127.0.0.1:" + port, "http://evil.example:" + port, "Origin"},
		{"cross-site read without Origin", "GET", "/api/state", "127.0.0.1:" + port, "", "Sec-Fetch-Site"},
		{"cross-site event stream", "GET", "/api/events", "127.0.0.1:" + port, "", "Sec-Fetch-Site"},
		{"cross-site post without Origin", "POST", "/api/rollouts/echo/echo-server/pause", "127.0.0.1:" + port, "", "Sec-Fetch-Site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.wantHeader == "Sec-Fetch-Site" {
				req.Header.Set("Sec-Fetch-Site", "cross-site")
				req.Header.Set("Sec-Fetch-Mode", "no-cors")
			}
			req.Header.Set("X-Gmesh", "1")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("got status %d, want 403 (body %s)", resp.StatusCode, body)
			}
			msg := errorOf(t, body)
			refused := tt.host
			switch tt.wantHeader {
			case "Origin":
				refused = tt.origin
			case "Sec-Fetch-Site":
				refused = "cross-site"
			}
			for _, want := range []string{"refused " + tt.wantHeader + " header", quote(refused), "--dashboard-allowed-hosts"} {
				if (tt.origin == "null" || tt.wantHeader == "Sec-Fetch-Site") && want == "--dashboard-allowed-hosts" {
					continue
				}
				if !strings.Contains(msg, want) {
					t.Errorf("got error %q, want it to contain %q", msg, want)
				}
			}
			if strings.Contains(string(body), "echo-server-route") {
				t.Errorf("refusal leaks state: %s", body)
			}
		})
	}
	if calls := src.Calls(); len(calls) != 0 {
		t.Errorf("source got controls %v, want none: a refused request paused a rollout", calls)
	}

	// The same requests by the names the dashboard answers to still work.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST.:" + port} {
		req, _ := http.NewRequest("POST", srv.URL+"/api/rollouts/echo/echo-server/pause", nil)
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		req.Header.Set("X-Gmesh", "1")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST with Host %s: got status %d, want 200 (body %s)", host, resp.StatusCode, body)
		}
	}
	if got := len(src.Calls()); got != 3 {
		t.Errorf("got %d controls after the allowed posts, want 3", got)
	}
	// A link from another site opens the page.
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a navigation from another site: got status %d, want 200", resp.StatusCode)
	}
}

// TestAllowedHosts checks a configured name is let in, on any port or on
// its own.
func TestAllowedHosts(t *testing.T) {
	src := controlSource()
	_, _, srv := newTest(t, src, Config{AllowedHosts: []string{"Dash.Example.", "pinned.example:9443"}})
	for _, tt := range []struct {
		host, origin string
		want         int
	}{
		{"dash.example", "https://dash.example", 200},
		{"dash.example:8080", "http://dash.example:8080", 200},
		{"pinned.example:9443", "https://pinned.example:9443", 200},
		{"pinned.example", "", 403},
		{"pinned.example:9443", "https://pinned.example", 403},
		{"evil.example", "", 403},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/state", nil)
		req.Host = tt.host
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// A request by a configured name is not straight from loopback: it
		// came through a proxy or a name, so it needs the token, which this
		// dashboard has not got.
		want := tt.want
		if want == 200 {
			want = 403
			if msg := errorOf(t, body); !strings.Contains(msg, "no token") {
				t.Errorf("Host %s Origin %s: got error %q, want the missing token named", tt.host, tt.origin, msg)
			}
		} else if msg := errorOf(t, body); !strings.Contains(msg, "header") {
			t.Errorf("Host %s Origin %s: got error %q, want a header named", tt.host, tt.origin, msg)
		}
		if resp.StatusCode != want {
			t.Errorf("Host %s Origin %s: got status %d, want %d (body %s)", tt.host, tt.origin, resp.StatusCode, want, body)
		}
	}
	if _, err := New(Config{Source: src, AllowedHosts: []string{"user@evil.example"}}); err == nil || !strings.Contains(err.Error(), "user@evil.example") {
		t.Errorf("New with a bad allowed host: got %v, want an error naming it", err)
	}
}

// remoteRequest is a request as net/http's server would hand it over from
// a peer off loopback (documentation addresses; nothing is sent anywhere).
func remoteRequest(ctx context.Context, method, target string) *http.Request {
	r := httptest.NewRequestWithContext(ctx, method, target, nil)
	r.RemoteAddr = "203.0.113.7:50000"
	r.Host = "192.0.2.10:8443"
	local := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 8443}
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
}

// TestOffLoopbackNeedsToken drives the handler with requests from off
// loopback: every one, reads and pages included, needs the token.
func TestOffLoopbackNeedsToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	src := controlSource()
	d, err := New(Config{Source: src, Token: token, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	d.poll(testContext(t)) // one state to serve
	h := d.Handler()
	cookie := d.guard.cookie
	done, cancel := context.WithCancel(testContext(t))
	cancel() // an event stream answered ends at once
	tests := []struct {
		name, method, path string
		auth, cookie       string
		want               int
	}{
		{"state, no token", "GET", "/api/state", "", "", 401},
		{"events, no token", "GET", "/api/events", "", "", 401},
		{"page, no token", "GET", "/", "", "", 401},
		{"asset, no token", "GET", "/static/app.js", "", "", 401},
		{"pause, no token", "POST", "/api/rollouts/echo/echo-server/pause", "", "", 401},
		{"state, wrong token", "GET", "/api/state", "Bearer " + token[:31] + "0", "", 401},
		{"state, token as cookie", "GET", "/api/state", "", token, 401},
		{"state, wrong cookie", "GET", "/api/state", "", cookie[:10], 401},
		{"state, lower-case scheme", "GET", "/api/state", "bearer " + token, "", 401},
		{"state, token", "GET", "/api/state", "Bearer " + token, "", 200},
		{"events, token", "GET", "/api/events", "Bearer " + token, "", 200},
		{"page, cookie", "GET", "/", "", cookie, 200},
		{"events, cookie", "GET", "/api/events", "", cookie, 200},
		{"pause, token", "POST", "/api/rollouts/echo/echo-server/pause", "Bearer " + token, "", 200},
		{"pause, cookie", "POST", "/api/rollouts/echo/echo-server/pause", "", cookie, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := remoteRequest(done, tt.method, tt.path)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if tt.cookie != "" {
				r.AddCookie(&http.Cookie{Name: tokenCookie, Value: tt.cookie})
			}
			if tt.method == "POST" {
				r.Header.Set("Origin", "http://192.0.2.10:8443")
				r.Header.Set("X-Gmesh", "1")
			}
			before := len(src.Calls())
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("got status %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			body := w.Body.String()
			if strings.Contains(body, token) || strings.Contains(body, cookie) {
				t.Errorf("response echoes the token: %s", body)
			}
			if tt.want == 401 {
				if msg := errorOf(t, w.Body.Bytes()); !strings.Contains(msg, "token") {
					t.Errorf("got error %q, want it to name the token", msg)
				}
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if len(src.Calls()) != before {
					t.Error("a refused POST reached the source")
				}
			}
			if tt.path == "/api/state" && tt.want == 200 && !strings.Contains(body, "echo-server-route") {
				t.Errorf("state with the token: got %s, want the state", body)
			}
		})
	}

	t.Run("first visit with the token", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, remoteRequest(done, "GET", "/?token="+token+"&x=1"))
		if w.Code != http.StatusSeeOther {
			t.Fatalf("got status %d, want 303 (body %s)", w.Code, w.Body)
		}
		if loc := w.Header().Get("Location"); loc != "/?x=1" {
			t.Errorf("got Location %q, want /?x=1 (the token dropped)", loc)
		}
		cs := w.Result().Cookies()
		if len(cs) != 1 || cs[0].Name != tokenCookie || cs[0].Value != cookie || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
			t.Fatalf("got cookies %+v, want one HttpOnly SameSite=Strict %s", cs, tokenCookie)
		}
		if cs[0].Value == token {
			t.Error("the cookie is the token itself")
		}
		r := remoteRequest(done, "GET", "/api/state")
		r.AddCookie(cs[0])
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("state with the cookie: got status %d, want 200 (body %s)", w.Code, w.Body)
		}
	})
	t.Run("first visit with a wrong token", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, remoteRequest(done, "GET", "/?token=nope"))
		if w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
			t.Errorf("got status %d cookies %v, want 401 and none", w.Code, w.Result().Cookies())
		}
	})
	t.Run("loopback peer through a proxy", func(t *testing.T) {
		r := remoteRequest(done, "GET", "/api/state")
		r.RemoteAddr = "127.0.0.1:50000"
		r.Host = "127.0.0.1:8443"
		r.Header.Set("X-Forwarded-For", "203.0.113.7")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("got status %d, want 401 (body %s)", w.Code, w.Body)
		}
		r.Header.Del("X-Forwarded-For")
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("without the proxy header: got status %d, want 200 (body %s)", w.Code, w.Body)
		}
	})
	t.Run("no token configured", func(t *testing.T) {
		d, err := New(Config{Source: src})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		r := remoteRequest(done, "GET", "/api/state")
		r.Header.Set("Authorization", "Bearer ")
		d.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "no token") {
			t.Errorf("got status %d body %s, want 403 naming the missing token", w.Code, w.Body)
		}
	})
	t.Run("no local address", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequestWithContext(done, "GET", "/api/state", nil))
		if w.Code != http.StatusForbidden {
			t.Errorf("got status %d, want 403 (body %s)", w.Code, w.Body)
		}
	})
}

func TestParseHostPort(t *testing.T) {
	tests := []struct {
		in   string
		want string // host|port, or "error"
	}{
		{"localhost", "localhost|"},
		{"LocalHost:8080", "localhost|8080"},
		{"localhost.:8080", "localhost|8080"},
		{"localhost..:8080", "error"},
		{".localhost", "error"},
		{"127.0.0.1:08080", "127.0.0.1|8080"},
		{"127.0.0.1:", "127.0.0.1|"},
		{"127.0.0.1:0", "error"},
		{"127.0.0.1:65536", "error"},
		{"127.0.0.1:+80", "error"},
		{"127.0.0.1:-1", "error"},
		{"127.0.0.1:80:80", "error"},
		{"[::1]:80", "::1|80"},
		{"[::1]", "::1|"},
		{"[0:0:0:0:0:0:0:1]:80", "::1|80"},
		{"[::ffff:127.0.0.1]:80", "::ffff:127.0.0.1|80"},
		{"[::1%lo]:80", "error"},
		{"[::1]80", "error"},
		{"[::1:80", "error"},
		{"[127.0.0.1]:80", "error"},
		{"::1", "error"},
		{"::1:80", "error"},
		{"user@localhost:80", "error"},
		{"user:pass@localhost", "error"},
		{"localhost/x", "error"},
		{"localhost\\x", "error"},
		{"local host", "error"},
		{"localhost\x00", "error"},
		{"localhost%2e", "error"},
		{"évil.example", "error"},
		{"", "error"},
		{":80", "error"},
		{strings.Repeat("a", 301), "error"},
	}
	for _, tt := range tests {
		h, err := parseHostPort(tt.in)
		got := h.host + "|" + h.port
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("parseHostPort(%q) = %s (%v), want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestParseOrigin(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"http://localhost:8080", "localhost|8080"},
		{"HTTP://LOCALHOST:8080", "localhost|8080"},
		{"http://localhost", "localhost|80"},
		{"https://dash.example", "dash.example|443"},
		{"http://[::1]:9", "::1|9"},
		{"null", "error"},
		{"", "error"},
		{"file://", "error"},
		{"ws://localhost:8080", "error"},
		{"http://localhost:8080/", "error"},
		{"http://user@localhost:8080", "error"},
		{"http:/localhost", "error"},
		{"http://", "error"},
	}
	for _, tt := range tests {
		h, err := parseOrigin(tt.in)
		got := h.host + "|" + h.port
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("parseOrigin(%q) = %s (%v), want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestGuardAllows(t *testing.T) {
	g, err := newGuard("", []string{"dash.example", "pinned.example:9443", "[fd00::5]"})
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	lan := netip.MustParseAddrPort("192.0.2.10:8080")
	tests := []struct {
		host  string
		local netip.AddrPort
		want  bool
	}{
		{"localhost:8080", local, true},
		{"127.0.0.1:8080", local, true},
		{"127.9.9.9:8080", local, true},
		{"[::1]:8080", local, true},
		{"[::ffff:127.0.0.1]:8080", local, true},
		{"localhost", local, false}, // port 80
		{"localhost:8081", local, false},
		{"192.0.2.10:8080", lan, true},
		{"192.0.2.10:8080", local, false},
		{"192.0.2.11:8080", lan, false},
		{"dash.example", local, true},
		{"dash.example:1", local, true},
		{"pinned.example:9443", local, true},
		{"pinned.example:443", local, false},
		{"[fd00::5]:1", local, true},
		{"evil.example:8080", local, false},
		{"localhost.evil.example:8080", local, false},
		{"dash.example.evil:8080", local, false},
		{"0.0.0.0:8080", local, false},
		{"127.0.0.1.nip.io:8080", local, false},
	}
	for _, tt := range tests {
		h, err := parseHostPort(tt.host)
		if err != nil {
			t.Fatalf("parseHostPort(%q): %v", tt.host, err)
		}
		if got := g.allows(h, "80", tt.local); got != tt.want {
			t.Errorf("allows(%q) on %s = %v, want %v", tt.host, tt.local, got, tt.want)
		}
	}
}

// FuzzHostOrigin feeds arbitrary Host and Origin values: parsing never
// panics, a parsed value prints back to itself, and nothing but loopback,
// the local address and the configured name is ever allowed.
func FuzzHostOrigin(f *testing.F) {
	for _, s := range []string{"localhost:8080", "[::1]:8080", "evil.example:8080", "LOCALHOST.", "user@localhost", "http://localhost:8080", "null", "[::ffff:7f00:1]:8080", "127.1:8080", "dash.example"} {
		f.Add(s)
	}
	g, err := newGuard("", []string{"dash.example"})
	if err != nil {
		f.Fatal(err)
	}
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (hostPort, error){parseHostPort, parseOrigin} {
			h, err := parse(s)
			if err != nil {
				continue
			}
			again, err := parseHostPort(h.String())
			if err != nil || again != h {
				t.Fatalf("%q parsed to %+v, whose String %q parses to %+v (%v)", s, h, h.String(), again, err)
			}
			if strings.ContainsAny(h.host, "@/\\ ") || h.host != strings.ToLower(h.host) {
				t.Fatalf("%q parsed to host %q", s, h.host)
			}
			if g.allows(h, "80", local) && !isLoopbackHost(h.host) && h.host != "dash.example" {
				t.Fatalf("%q (host %q) allowed", s, h.host)
			}
		}
	})
}

// TestSecretsNotShown checks deploy --env values reach no browser: not in
// /api/state, the event stream, nor a control's answer; their keys do.
func TestSecretsNotShown(t *testing.T) {
	const secret = "hunter2-secret"
	ctx := testContext(t)
	st := echoStatus(90, 10, "", "")
	ro := st.Rollouts[0]
	ro.Rollout().Target.Env = map[string]string{"DB_PASSWORD": secret}
	ro.RolloutStatus().History[0].Env = map[string]string{"OLD_PASSWORD": secret}
	for _, ts := range st.TaskSets {
		ts.TaskSet().Env = map[string]string{"DB_PASSWORD": secret}
	}
	src := &fakeSource{control: func(context.Context, string, string, string) (*mesh.Resource, error) { return ro, nil }}
	src.set(st, nil)
	d, _, srv := newTest(t, src, Config{})
	d.poll(ctx)
	check := func(what string, body []byte) {
		t.Helper()
		if strings.Contains(string(body), secret) {
			t.Errorf("%s shows the secret: %s", what, body)
		}
		for _, want := range []string{`"DB_PASSWORD":"(set)"`, `"OLD_PASSWORD":"(set)"`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("%s: got %s, want it to contain %s", what, body, want)
			}
		}
	}

	resp, err := srv.Client().Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check("/api/state", body)

	ectx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ectx, "GET", srv.URL+"/api/events", nil)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	evs := make(chan sseEvent, 16)
	go readEvents(bufio.NewReader(resp.Body), evs)
	for ev := range evs {
		if ev.name == "snapshot" {
			check("/api/events snapshot", []byte(ev.data))
			break
		}
	}
	cancel()
	resp.Body.Close()

	req, _ = http.NewRequest("POST", srv.URL+"/api/rollouts/echo/echo-server/pause", nil)
	req.Header.Set("X-Gmesh", "1")
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pause: got status %d, want 200 (body %s)", resp.StatusCode, body)
	}
	check("the pause's answer", body)
	// The source's own resources keep their values: only what is shown is
	// redacted.
	if got := ro.Rollout().Target.Env["DB_PASSWORD"]; got != secret {
		t.Errorf("the source's rollout env was changed to %q", got)
	}
}
