package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunXDSNeedsBootstrap(t *testing.T) {
	var stderr bytes.Buffer
	env := map[string]string{"ECHO_HOST": "xds:///echo-server.echo.local", "PORT": "0", "HOST": "127.0.0.1"}
	if code := run(nil, func(k string) string { return env[k] }, &stderr); code != 2 {
		t.Errorf("run = %d, want 2", code)
	}
	if s := stderr.String(); !strings.Contains(s, "GRPC_XDS_BOOTSTRAP_CONFIG") || strings.Count(s, "\n") != 1 {
		t.Errorf("stderr = %q, want one line naming GRPC_XDS_BOOTSTRAP_CONFIG", s)
	}
}
