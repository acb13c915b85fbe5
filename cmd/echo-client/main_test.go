package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunXDSNeedsBootstrap(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{"ECHO_HOST": "xds:///echo-server.echo.local", "PORT": "0", "HOST": "127.0.0.1"}
	if code := run(nil, func(k string) string { return env[k] }, &stdout, &stderr); code != 2 {
		t.Errorf("run = %d, want 2", code)
	}
	if s := stderr.String(); !strings.Contains(s, "GRPC_XDS_BOOTSTRAP_CONFIG") || strings.Count(s, "\n") != 1 {
		t.Errorf("stderr = %q, want one line naming GRPC_XDS_BOOTSTRAP_CONFIG", s)
	}
}

// TestVersion: --version prints the version gmesh deploy labels a build
// with; ECHO_CLIENT_VERSION overrides it.
func TestVersion(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "0.1\n"},
		{map[string]string{"ECHO_CLIENT_VERSION": "0.2"}, "0.2\n"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"--version"}, func(k string) string { return tt.env[k] }, &stdout, &stderr); code != 0 {
			t.Fatalf("run --version = %d (%s)", code, stderr.String())
		}
		if stdout.String() != tt.want {
			t.Errorf("--version with %v printed %q, want %q", tt.env, stdout.String(), tt.want)
		}
	}
}
