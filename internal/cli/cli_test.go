package cli_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/cli"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/stack"
)

// gmeshCase is one in-process gmesh run and what it must print.
type gmeshCase struct {
	name     string
	args     []string
	wantCode int
	// wantOut and wantErr are regexps stdout and stderr must match ("" for
	// no check).
	wantOut, wantErr string
}

func (tc gmeshCase) check(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	if code != tc.wantCode {
		t.Errorf("gmesh %s: exit code %d, want %d (stderr %q)", strings.Join(tc.args, " "), code, tc.wantCode, stderr)
	}
	if tc.wantOut != "" && !regexp.MustCompile("(?m)"+tc.wantOut).MatchString(stdout) {
		t.Errorf("gmesh %s: stdout %q does not match %q", strings.Join(tc.args, " "), stdout, tc.wantOut)
	}
	if tc.wantErr != "" && !regexp.MustCompile("(?m)"+tc.wantErr).MatchString(stderr) {
		t.Errorf("gmesh %s: stderr %q does not match %q", strings.Join(tc.args, " "), stderr, tc.wantErr)
	}
}

// TestStatusJSON checks `status -o json` is the control plane's status
// document, and the table and bad -o.
func TestStatusJSON(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	cp := startCP(t)
	state := t.TempDir()
	f := filepath.Join(t.TempDir(), "stack.yaml")
	if err := os.WriteFile(f, stack.Echo, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runGmesh(ctx, cp.Addr(), state, "apply", "-f", f); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}

	code, stdout, stderr := runGmesh(ctx, cp.Addr(), state, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d: %s", code, stderr)
	}
	var st controlplane.Status
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("status -o json does not parse as a controlplane.Status: %v\n%s", err, stdout)
	}
	if st.Revision == 0 {
		t.Errorf("status revision = 0, want > 0")
	}
	if got := len(st.Routes); got != 2 { // echo-server's and echo-client's
		t.Errorf("status routes = %d, want 2", got)
	}
	if got := len(st.Nodes); got != 2 {
		t.Errorf("status virtualNodes = %d, want 2", got)
	}
	if st.Clients == nil || st.Endpoints == nil {
		t.Errorf("status clients = %v, endpoints = %v; want empty lists, not null", st.Clients, st.Endpoints)
	}
	// The raw document keeps its list fields as [] for other readers.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"clients", "endpoints"} {
		if got := string(raw[k]); got != "[]" {
			t.Errorf("status json %q = %s, want []", k, got)
		}
	}

	for _, tc := range []gmeshCase{
		{name: "table", args: []string{"status"}, wantOut: `^ROUTE\s+MESH\s+WEIGHTS$(.|\n)*^echo-server-route\s+echo\s+router echo-server: echo-server-0-9=100$`},
		{name: "bad output", args: []string{"status", "-o", "yaml"}, wantCode: 1, wantErr: `^gmesh: -o "yaml": want table or json$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runGmesh(ctx, cp.Addr(), state, tc.args...)
			tc.check(t, code, stdout, stderr)
		})
	}
}

// TestOfflineErrors checks commands that fail before (or without) talking
// to a control plane.
func TestOfflineErrors(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	state := t.TempDir()
	// A port nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()

	tests := []gmeshCase{
		{
			name: "logs of a missing service", args: []string{"logs", "nosuch", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: no logs for service "nosuch" in ` + regexp.QuoteMeta(filepath.Join(state, "logs")) + `$`,
		},
		{
			name: "logs of the control plane that never ran", args: []string{"logs", "controlplane", "--state-dir", state}, wantCode: 1,
			wantErr: `controlplane.log`,
		},
		{
			name: "controlplane on kubernetes with a missing kubeconfig", args: []string{"controlplane", "--kubernetes", "--kubeconfig", filepath.Join(state, "nosuch-kubeconfig"), "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: kubernetes client config: .*nosuch-kubeconfig`,
		},
		{
			name: "status of a cluster with a missing kubeconfig", args: []string{"status", "--kubeconfig", filepath.Join(state, "nosuch-kubeconfig")}, wantCode: 1,
			wantErr: `^gmesh: kubernetes client config: .*nosuch-kubeconfig`,
		},
		{
			name: "status of a cluster in an unknown format", args: []string{"status", "--kubernetes", "-o", "xml"}, wantCode: 1,
			wantErr: `^gmesh: -o "xml": want table or json`,
		},
		{
			name: "gateway without --kubernetes", args: []string{"gateway", "--virtual-gateway", "echo/echo-gateway"}, wantCode: 1,
			wantErr: `^gmesh: gmesh gateway runs on Kubernetes only: give --kubernetes`,
		},
		{
			name: "gateway without a virtual gateway", args: []string{"gateway", "--kubernetes"}, wantCode: 1,
			wantErr: `^gmesh: --virtual-gateway NAMESPACE/NAME is required`,
		},
		{
			name: "gateway with a virtual gateway not NS/NAME", args: []string{"gateway", "--kubernetes", "--virtual-gateway", "echo-gateway"}, wantCode: 1,
			wantErr: `^gmesh: --virtual-gateway: virtual gateway "echo-gateway": want NAMESPACE/NAME, e.g. echo/echo-gateway$`,
		},
		{
			name: "gateway with a missing kubeconfig", args: []string{"gateway", "--kubernetes", "--virtual-gateway", "echo/echo-gateway", "--kubeconfig", filepath.Join(state, "nosuch-kubeconfig")}, wantCode: 1,
			wantErr: `^gmesh: kubernetes client config: .*nosuch-kubeconfig`,
		},
		{
			name: "controlplane on kubernetes with a bad xds address", args: []string{"controlplane", "--kubernetes", "--xds-address", "gmesh-controlplane.gmesh-system.svc", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --xds-address: bootstrap: server uri "gmesh-controlplane.gmesh-system.svc": want host:port`,
		},
		{
			name: "deploy steps not ascending", args: []string{"deploy", "echo-server", "--steps", "50,40", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --steps "50,40": steps must be ascending, got 40 after 50$`,
		},
		{
			name: "deploy steps not ending at 100", args: []string{"deploy", "echo-server", "--steps", "10,50", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --steps "10,50": the last step must be 100, got 50$`,
		},
		{
			name: "deploy steps not numbers", args: []string{"deploy", "echo-server", "--steps", "10,half,100", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --steps "10,half,100": "half" is not a number$`,
		},
		{
			name: "deploy step over 100", args: []string{"deploy", "echo-server", "--steps", "50,150", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --steps "50,150": weights must be 1\.\.100, got 150$`,
		},
		{
			name: "deploy step zero", args: []string{"deploy", "echo-server", "--steps", "0,100", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: --steps "0,100": weights must be 1\.\.100, got 0$`,
		},
		{
			name: "no control plane recorded", args: []string{"get", "routes", "--state-dir", state}, wantCode: 1,
			wantErr: `^gmesh: no control plane has run in state directory ` + regexp.QuoteMeta(state) + `; start one`,
		},
		{
			name: "control plane not reachable", args: []string{"get", "routes", "--state-dir", state, "--server", deadAddr}, wantCode: 1,
			wantErr: `^gmesh: control plane at ` + regexp.QuoteMeta(deadAddr) + ` is not reachable`,
		},
		{
			name: "unknown command", args: []string{"frobnicate", "--state-dir", state}, wantCode: 1,
			wantErr: `unknown command "frobnicate"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, tc.args)
			tc.check(t, code, stdout.String(), stderr.String())
		})
	}
}

// TestLoadRefusesRemote checks `gmesh load` refuses a target that is not
// on loopback before sending anything, and that a loopback target is
// loaded (a bounded run against a local HTTP server that counts requests).
func TestLoadRefusesRemote(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	state := t.TempDir()
	for _, tc := range []gmeshCase{
		{name: "public IP", args: []string{"load", "http://192.0.2.10:8080/", "--duration", "1s"}, wantCode: 1,
			wantErr: `^gmesh: load: target "http://192\.0\.2\.10:8080/": address 192\.0\.2\.10: target is not a loopback address \(use --allow-remote`},
		{name: "unspecified IP", args: []string{"load", "http://0.0.0.0:8080/"}, wantCode: 1, wantErr: `not a loopback address`},
		{name: "host name", args: []string{"load", "https://example.com/"}, wantCode: 1,
			wantErr: `host "example\.com" is neither a loopback IP nor "localhost"`},
		{name: "IPv6", args: []string{"load", "http://[2001:db8::1]:80/"}, wantCode: 1, wantErr: `not a loopback address`},
		{name: "scheme", args: []string{"load", "ftp://127.0.0.1/"}, wantCode: 1, wantErr: `scheme must be http or https`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			var stdout, stderr bytes.Buffer
			code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, append(tc.args, "--state-dir", state))
			tc.check(t, code, stdout.String(), stderr.String())
			if stdout.Len() != 0 {
				t.Errorf("refused load printed %q, want nothing (no report: nothing was sent)", stdout.String())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusal took %v, want it before any network I/O", d)
			}
		})
	}

	t.Run("loopback target is loaded", func(t *testing.T) {
		var hits atomic.Int64
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := newCountingServer(&hits)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		var stdout, stderr bytes.Buffer
		code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr},
			[]string{"load", "http://" + ln.Addr().String() + "/", "--max-requests", "20", "--duration", "10s", "--concurrency", "2", "--state-dir", state})
		if code != 0 {
			t.Fatalf("load of a loopback target: exit %d: %s", code, stderr.String())
		}
		if got := hits.Load(); got != 20 {
			t.Errorf("loopback server got %d requests, want 20 (--max-requests)", got)
		}
	})
}

// newCountingServer is an HTTP server that counts requests and answers as
// echo-client does.
func newCountingServer(hits *atomic.Int64) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			io.WriteString(w, "Hello, load-san! (Said 127.0.0.1, Version 0.9)\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
}
