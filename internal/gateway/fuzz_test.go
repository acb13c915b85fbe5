package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// echoed is what the fuzz backend saw of a proxied request.
type echoed struct {
	Method string
	URI    string
	Body   []byte
	Hop    []string // hop-by-hop headers that reached the backend
}

// FuzzGatewayRequest feeds an arbitrary method, request target, header and
// body, framed as an HTTP/1.1 request and parsed by net/http's own request
// parser (as the gateway's server does), through the gateway's real handler
// to a real backend. The gateway must not panic or hang, must answer with a
// valid status, must enforce its body limit, and when it answers 200 the
// backend must have seen the same method, target and body, and no
// hop-by-hop header.
//
//	go test ./internal/gateway -run '^$' -fuzz FuzzGatewayRequest -fuzztime 60s
func FuzzGatewayRequest(f *testing.F) {
	f.Add("GET", "/?name=Yusuke", "Accept", "*/*", []byte(nil))
	f.Add("POST", "/echo", "Content-Type", "application/json", []byte(`{"name":"Yusuke"}`))
	f.Add("PUT", "/a/../b?x=1&x=2", "Connection", "X-Secret", []byte("x"))
	f.Add("DELETE", "*", "Transfer-Encoding", "chunked", []byte("0\r\n\r\n"))
	f.Add("GET", "http://other.invalid/abs?q", "Host", "evil.invalid", []byte(nil))
	f.Add("POST", "/big", "Content-Type", "text/plain", bytes.Repeat([]byte("a"), 2048))
	f.Add("GET", "/%2e%2e/%00", "X-Forwarded-For", "1.2.3.4, 5.6.7.8", []byte(nil))
	f.Add("CONNECT", "backend.invalid:443", "Upgrade", "websocket", []byte(nil))

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e := echoed{Method: r.Method, URI: r.RequestURI, Body: body}
		for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade", "X-Secret"} {
			if r.Header.Get(h) != "" {
				e.Hop = append(e.Hop, h)
			}
		}
		json.NewEncoder(w).Encode(e)
	}))
	defer backend.Close()
	const maxBody = 1024
	g, err := New(Config{Logger: quiet, DisableHealthCheck: true, MaxBodyBytes: maxBody, RequestTimeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	defer g.Shutdown(f.Context())
	g.SetBackends([]Backend{{ID: "a", Addr: strings.TrimPrefix(backend.URL, "http://")}})

	f.Fuzz(func(t *testing.T, method, target, hname, hvalue string, body []byte) {
		raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: gw.test\r\n%s: %s\r\nContent-Length: %d\r\n\r\n", method, target, hname, hvalue, len(body))
		req, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader(raw), bytes.NewReader(body))))
		if err != nil {
			return // the server answers 400 before the handler
		}
		req.RemoteAddr = "127.0.0.1:12345"
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			g.Handler().ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the gateway did not answer %q within 10s", raw)
		}
		code := rec.Code
		if code < 100 || code > 599 {
			t.Fatalf("status %d for %q", code, raw)
		}
		if req.ContentLength > maxBody && code == http.StatusOK {
			t.Fatalf("a %d-byte body passed the %d-byte limit", req.ContentLength, maxBody)
		}
		if code != http.StatusOK {
			return
		}
		var e echoed
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("200 with a body that is not the backend's echo: %q", rec.Body.String())
		}
		if e.Method != req.Method {
			t.Errorf("backend saw method %q, sent %q", e.Method, req.Method)
		}
		if len(e.Hop) > 0 {
			t.Errorf("hop-by-hop headers %v reached the backend for %q", e.Hop, raw)
		}
		if req.TransferEncoding == nil && req.ContentLength >= 0 && !bytes.Equal(e.Body, body[:min(len(body), int(req.ContentLength))]) {
			t.Errorf("backend saw body %q, sent %q", e.Body, body)
		}
	})
}
