package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, func(string) string { return "" }, &stdout, &stderr); code != 0 {
		t.Fatalf("run --version = %d, want 0; stderr %q", code, stderr.String())
	}
	if got, want := stdout.String(), version+"\n"; got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
	if defaultVersion != "0.9" {
		t.Errorf("defaultVersion = %q, want the reference's 0.9", defaultVersion)
	}
}

func TestRunBadConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{"ECHO_FAIL_RATE": "2"}
	if code := run(nil, func(k string) string { return env[k] }, &stdout, &stderr); code != 2 {
		t.Errorf("run with ECHO_FAIL_RATE=2 = %d, want 2", code)
	}
	if !strings.HasPrefix(stderr.String(), "echo-server: ") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting echo-server:", stderr.String())
	}
}
