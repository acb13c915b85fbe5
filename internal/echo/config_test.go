package echo

import (
	"errors"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseServerConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want ServerOptions
	}{
		{
			name: "defaults",
			want: ServerOptions{Config: ServerConfig{Addr: ":50051", DrainDelay: 2 * time.Second, ShutdownTimeout: 10 * time.Second, FailCode: codes.Unavailable}},
		},
		{
			name: "environment",
			env: map[string]string{
				"PORT": "0", "HOST": "127.0.0.12", "METRICS_PORT": "9100", "ECHO_SAID": "10.0.0.1",
				"ECHO_DRAIN_DELAY": "100ms", "ECHO_SHUTDOWN_TIMEOUT": "3s",
				"ECHO_FAIL_RATE": "0.2", "ECHO_FAIL_CODE": "internal", "ECHO_LATENCY": "250ms",
			},
			want: ServerOptions{Config: ServerConfig{
				Addr: "127.0.0.12:0", MetricsAddr: "127.0.0.12:9100", Said: "10.0.0.1",
				DrainDelay: 100 * time.Millisecond, ShutdownTimeout: 3 * time.Second,
				FailRate: 0.2, FailCode: codes.Internal, Latency: 250 * time.Millisecond,
			}},
		},
		{
			name: "flags win over the environment",
			env:  map[string]string{"PORT": "1", "ECHO_DRAIN_DELAY": "5s"},
			args: []string{"--port", "2", "-drain-delay=0s", "--said", "me", "--fail-rate", "1", "--fail-code", "UNAVAILABLE"},
			want: ServerOptions{Config: ServerConfig{Addr: ":2", Said: "me", ShutdownTimeout: 10 * time.Second, FailRate: 1, FailCode: codes.Unavailable}},
		},
		{
			name: "version",
			args: []string{"--version"},
			want: ServerOptions{ShowVersion: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServerConfig(tt.args, envOf(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(ServerConfig{}, "Logger")); diff != "" {
				t.Errorf("ParseServerConfig mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad port", map[string]string{"PORT": "http"}, nil, "port"},
		{"port out of range", map[string]string{"PORT": "70000"}, nil, "port"},
		{"bad metrics port", map[string]string{"METRICS_PORT": "x"}, nil, "metrics port"},
		{"bad duration", map[string]string{"ECHO_DRAIN_DELAY": "2"}, nil, "ECHO_DRAIN_DELAY"},
		{"bad latency", map[string]string{"ECHO_LATENCY": "soon"}, nil, "ECHO_LATENCY"},
		{"bad rate", map[string]string{"ECHO_FAIL_RATE": "lots"}, nil, "ECHO_FAIL_RATE"},
		{"rate out of range", map[string]string{"ECHO_FAIL_RATE": "2"}, nil, "fail rate"},
		{"bad code", map[string]string{"ECHO_FAIL_CODE": "not_found"}, nil, "fail code"},
		{"cert without key", map[string]string{"ECHO_TLS_CERT": "c.pem"}, nil, "ECHO_TLS_KEY"},
		{"unknown flag", nil, []string{"--nope"}, "nope"},
		{"stray argument", nil, []string{"extra"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseServerConfig(tt.args, envOf(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error about %q", err, tt.want)
			}
		})
	}
	if _, err := ParseServerConfig([]string{"-h"}, envOf(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

func TestParseClientConfig(t *testing.T) {
	got, err := ParseClientConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := ClientConfig{Addr: ":8080", Target: "localhost:50051", Timeout: 2 * time.Second, ShutdownTimeout: 10 * time.Second, Version: ClientVersion}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(ClientConfig{}, "Logger", "Creds", "DialOptions")); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}

	got, err = ParseClientConfig([]string{"--timeout", "1s"}, envOf(map[string]string{
		"PORT": "0", "HOST": "127.0.0.1", "METRICS_PORT": "0", "ECHO_HOST": "xds:///echo-server.echo.local",
		"ECHO_TIMEOUT": "5s", "GRPC_XDS_BOOTSTRAP_CONFIG": "{}", "ECHO_CLIENT_VERSION": "0.2",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = ClientConfig{Addr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Target: "xds:///echo-server.echo.local", Timeout: time.Second, ShutdownTimeout: 10 * time.Second, Version: "0.2"}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(ClientConfig{}, "Logger", "Creds", "DialOptions")); diff != "" {
		t.Errorf("environment mismatch (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"xds without bootstrap", map[string]string{"ECHO_HOST": "xds:///echo"}, "GRPC_XDS_BOOTSTRAP_CONFIG"},
		{"bad timeout", map[string]string{"ECHO_TIMEOUT": "x"}, "ECHO_TIMEOUT"},
		{"zero timeout", map[string]string{"ECHO_TIMEOUT": "0s"}, "timeout"},
		{"bad port", map[string]string{"PORT": "-1"}, "port"},
		{"missing ca", map[string]string{"ECHO_TLS_CA": "/nonexistent/ca.pem"}, "ca.pem"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseClientConfig(nil, envOf(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error about %q", err, tt.want)
			}
		})
	}
	if _, err := ParseClientConfig(nil, envOf(map[string]string{"ECHO_HOST": "xds:///echo", "GRPC_XDS_BOOTSTRAP": "/b.json"}), io.Discard); err != nil {
		t.Errorf("xds with a bootstrap file: %v", err)
	}
}

func TestServerMetrics(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, ServerConfig{MetricsAddr: "127.0.0.1:0", Version: "1.0"})
	conn := dial(t, s.Addr().String(), nil)
	for range 3 {
		if _, err := echoCall(ctx, conn, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := echoCall(ctx, conn, strings.Repeat("x", 2000)); err == nil {
		t.Fatal("want an error for a long name")
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	code, body, _ := httpDo(t, "GET", "http://"+s.MetricsAddr().String()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0"} 3`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0"} 1`,
		`grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0"} 0`,
		`grpc_server_handling_seconds_bucket{grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0",le="0.5"} 4`,
		`grpc_server_handling_seconds_bucket{grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0",le="0.0005"}`,
		`grpc_server_handling_seconds_count{grpc_method="Echo",grpc_service="proto.echo.EchoService",version="1.0"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, "grpc.health") {
		t.Error("health checks are counted; want only EchoService calls")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestClientMetrics(t *testing.T) {
	s := startServer(t, ServerConfig{})
	c := startClient(t, ClientConfig{Target: s.Addr().String(), MetricsAddr: "127.0.0.1:0"})
	httpDo(t, "GET", clientURL(c, "/?name=a"))
	httpDo(t, "GET", clientURL(c, "/?name=b"))
	httpDo(t, "POST", clientURL(c, "/"))
	// Probes are not echo traffic: not counted.
	for _, p := range []string{"/healthz", "/ping", "/readyz"} {
		httpDo(t, "GET", clientURL(c, p))
	}
	code, body, _ := httpDo(t, "GET", "http://"+c.MetricsAddr().String()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`http_requests_total{code="200"} 2`,
		`http_requests_total{code="405"} 1`,
		`http_request_duration_seconds_count 3`,
		`grpc_client_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 2`,
		`grpc_client_handling_seconds_count{grpc_method="Echo",grpc_service="proto.echo.EchoService"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}
