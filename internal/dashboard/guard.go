package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// The guard closes the dashboard to the browser attacks a local web UI
// meets: DNS rebinding (a page on evil.example whose name the attacker
// re-points at 127.0.0.1, so the browser thinks the dashboard is
// same-origin), cross-site requests, and reads by anyone off loopback.
//
//  1. Host is checked on every request. Allowed: "localhost" and any
//     literal loopback address, and the literal address the connection
//     arrived on, each with the port it arrived on; plus the names the user
//     configured (Config.AllowedHosts). A rebinding page always sends its
//     own name, so it is refused here. A literal address cannot be rebound.
//  2. Origin is checked on every request that carries one, against the
//     same list (scheme http or https). A request that a browser marks as
//     from another site or port (Sec-Fetch-Site other than same-origin or
//     none) is refused unless it is a navigation (GET, Sec-Fetch-Mode
//     navigate), so a POST without Origin comes from a non-browser client;
//     it still needs the X-Gmesh header.
//  3. A token is needed by every request that does not come from loopback
//     with a loopback Host and no proxy headers (Forwarded, X-Forwarded-For,
//     X-Real-IP), reads and static pages included: "Authorization: Bearer
//     TOKEN", or the session cookie that a first visit to any page with
//     ?token=TOKEN sets (HttpOnly, SameSite=Strict; the redirect drops the
//     token from the address bar). Tokens are compared in constant time and
//     never logged.

// tokenCookie is the session cookie's name; its value is derived from the
// token, so the cookie alone does not open the admin API.
const tokenCookie = "gmesh_dashboard"

// hostPort is a parsed Host header or Origin authority: host lowercased,
// without brackets or a trailing dot; port "" when absent.
type hostPort struct {
	host string
	port string
}

func (h hostPort) String() string {
	host := h.host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if h.port == "" {
		return host
	}
	return host + ":" + h.port
}

// parseHostPort parses "host", "host:port", "[v6]" or "[v6]:port" as a
// browser sends it in Host or in Origin's authority. It refuses userinfo,
// paths, zones, unbracketed IPv6, empty labels and bad ports.
func parseHostPort(s string) (hostPort, error) {
	if s == "" {
		return hostPort{}, errors.New("empty")
	}
	if len(s) > 300 {
		return hostPort{}, errors.New("longer than 300 bytes")
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`@/\?#%,;"'<>{}|^`+"`", c) >= 0 {
			return hostPort{}, fmt.Errorf("has the character %q, which a host name or address does not", rune(c))
		}
	}
	var host, port string
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return hostPort{}, errors.New("an IPv6 address without its closing ]")
		}
		host, port = s[1:end], s[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return hostPort{}, fmt.Errorf("[%s] is not an IPv6 address", host)
		}
		host = a.String()
		if port != "" {
			if port[0] != ':' {
				return hostPort{}, errors.New("text after the IPv6 address's ]")
			}
			port = port[1:]
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
			host = s
		case 1:
			host, port, _ = strings.Cut(s, ":")
		default:
			return hostPort{}, errors.New("an IPv6 address must be in brackets")
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if host == "" {
			return hostPort{}, errors.New("no host name")
		}
		for _, label := range strings.Split(host, ".") {
			if label == "" {
				return hostPort{}, errors.New("an empty label in the host name")
			}
		}
		if a, err := netip.ParseAddr(host); err == nil {
			host = a.String()
		}
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '+' {
			return hostPort{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		port = strconv.FormatUint(n, 10)
	}
	return hostPort{host: host, port: port}, nil
}

// parseOrigin parses an Origin header: "scheme://authority", where scheme
// is http or https. The port is filled in from the scheme when absent.
func parseOrigin(s string) (hostPort, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return hostPort{}, errors.New("not scheme://host[:port]")
	}
	def := ""
	switch strings.ToLower(scheme) {
	case "http":
		def = "80"
	case "https":
		def = "443"
	default:
		return hostPort{}, fmt.Errorf("scheme %q is not http or https", scheme)
	}
	h, err := parseHostPort(rest)
	if err != nil {
		return hostPort{}, err
	}
	if h.port == "" {
		h.port = def
	}
	return h, nil
}

// parseAllowedHosts parses the configured host names ("name" allows any
// port, "name:port" one port).
func parseAllowedHosts(hosts []string) ([]hostPort, error) {
	var out []hostPort
	for _, s := range hosts {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		h, err := parseHostPort(s)
		if err != nil {
			return nil, fmt.Errorf("allowed host %q: %w", s, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// CheckAllowedHosts reports the first of hosts that Config.AllowedHosts
// would refuse, so that a command can say so before it starts anything.
func CheckAllowedHosts(hosts []string) error {
	_, err := parseAllowedHosts(hosts)
	return err
}

// isLoopbackHost reports whether host (as parseHostPort returns it) names
// loopback: "localhost" or a literal loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// guard is the checks above, made once by New.
type guard struct {
	allowed []hostPort
	token   string
	cookie  string // hex HMAC of a fixed label under the token; "" with no token
}

func newGuard(token string, allowedHosts []string) (*guard, error) {
	allowed, err := parseAllowedHosts(allowedHosts)
	if err != nil {
		return nil, err
	}
	g := &guard{allowed: allowed, token: token}
	if token != "" {
		m := hmac.New(sha256.New, []byte(token))
		m.Write([]byte("gmesh dashboard session cookie v1"))
		g.cookie = hex.EncodeToString(m.Sum(nil))
	}
	return g, nil
}

// allows reports whether h, with defPort standing for an absent port, is
// one of the hosts the dashboard answers to when reached on local.
func (g *guard) allows(h hostPort, defPort string, local netip.AddrPort) bool {
	port := h.port
	if port == "" {
		port = defPort
	}
	if isLoopbackHost(h.host) || h.host == local.Addr().Unmap().String() {
		return port == strconv.Itoa(int(local.Port()))
	}
	for _, a := range g.allowed {
		if a.host == h.host && (a.port == "" || a.port == port) {
			return true
		}
	}
	return false
}

func (g *guard) allowedList() string {
	if len(g.allowed) == 0 {
		return "none"
	}
	s := make([]string, len(g.allowed))
	for i, a := range g.allowed {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// localAddr is the address the request's connection arrived on.
func localAddr(r *http.Request) (netip.AddrPort, bool) {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

// fromLoopback reports whether the request came straight from this
// machine: a loopback peer that is no proxy (a proxy on this machine adds
// one of the forwarding headers; one that adds none must be given
// --dashboard-allowed-hosts only with care, see docs).
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Unmap().IsLoopback() {
		return false
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return true
}

// shown quotes a header value for an error message, cut to a sane length.
func shown(v string) string {
	if len(v) > 200 {
		v = v[:200] + "..."
	}
	return quote(v)
}

// wrap puts the checks in front of h.
func (g *guard) wrap(d *Dashboard, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, ok := localAddr(r)
		if !ok {
			d.refuse(w, r, http.StatusForbidden, "Host", r.Host, "the dashboard cannot tell which address and port this request arrived on, so it cannot check the Host header; serve it with net/http's Server")
			return
		}
		port := strconv.Itoa(int(local.Port()))
		hint := func(what string) string {
			return fmt.Sprintf("the dashboard answers only to localhost, loopback addresses and the address it was reached on, with port %s, and to its allowed hosts (now: %s); to %s, run gmesh up with --dashboard-allowed-hosts %s",
				port, g.allowedList(), what, "NAME[:PORT]")
		}
		host, err := parseHostPort(r.Host)
		if err != nil {
			d.refuse(w, r, http.StatusForbidden, "Host", r.Host, "it is not a host name or address with an optional port: "+err.Error())
			return
		}
		if !g.allows(host, "80", local) {
			d.refuse(w, r, http.StatusForbidden, "Host", r.Host, hint("reach it by the name "+host.host))
			return
		}
		if origin, ok := r.Header["Origin"]; ok {
			v := strings.Join(origin, ",")
			o, err := parseOrigin(v)
			if err != nil {
				d.refuse(w, r, http.StatusForbidden, "Origin", v, "it is not an http or https origin: "+err.Error())
				return
			}
			if !g.allows(o, "", local) {
				d.refuse(w, r, http.StatusForbidden, "Origin", v, hint("let pages from "+o.String()+" use it"))
				return
			}
		}
		// A browser says where a request comes from; of another site's
		// (or another port's) requests only a navigation to a page is let
		// in: no reads by <img> or <script>, no event streams, no posts.
		if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
			nav := r.Header.Get("Sec-Fetch-Mode") == "navigate" && (r.Method == http.MethodGet || r.Method == http.MethodHead)
			if !nav {
				d.refuse(w, r, http.StatusForbidden, "Sec-Fetch-Site", s, "the dashboard serves other sites' pages nothing but a navigation to it")
				return
			}
		}
		if fromLoopback(r) && isLoopbackHost(host.host) {
			h.ServeHTTP(w, r)
			return
		}
		if g.token == "" {
			d.refuse(w, r, http.StatusForbidden, "", "", "this request does not come straight from loopback with a loopback Host, and the dashboard has no token to check; it answers only this machine")
			return
		}
		// First visit: ?token=TOKEN sets the session cookie and redirects
		// to the same URL without it.
		if q := r.URL.Query(); q.Has("token") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			if subtle.ConstantTimeCompare([]byte(q.Get("token")), []byte(g.token)) != 1 {
				d.unauthorized(w, r, "the token in the URL is wrong")
				return
			}
			q.Del("token")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: g.cookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		if !g.authorized(r) {
			d.unauthorized(w, r, "missing or wrong token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authorized reports whether r carries the bearer token or the session
// cookie.
func (g *guard) authorized(r *http.Request) bool {
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(got), []byte(g.token)) == 1
	}
	for _, c := range r.CookiesNamed(tokenCookie) {
		if subtle.ConstantTimeCompare([]byte(c.Value), []byte(g.cookie)) == 1 {
			return true
		}
	}
	return false
}

// refuse answers 403 naming the header and value refused and why.
func (d *Dashboard) refuse(w http.ResponseWriter, r *http.Request, code int, header, value, why string) {
	msg := "refused: " + why
	if header != "" {
		msg = "refused " + header + " header " + shown(value) + ": " + why
	}
	d.log.Info("dashboard refused a request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "header", header, "value", value)
	writeError(w, code, msg)
}

func (d *Dashboard) unauthorized(w http.ResponseWriter, r *http.Request, why string) {
	d.log.Info("dashboard refused a request without its token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", `Bearer realm="gmesh"`)
	writeError(w, http.StatusUnauthorized, why+": a request from off this machine (or through a proxy) needs the dashboard's token, the one in the state directory's token file: open the dashboard once as /?token=TOKEN, or send Authorization: Bearer TOKEN")
}
