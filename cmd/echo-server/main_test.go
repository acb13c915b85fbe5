package main

import (
	"bytes"
	"os"
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
	if version != "0.9" {
		t.Errorf("version = %q, want the reference's 0.9", version)
	}
}

// The README's step 3 edits this file with sed; the line it matches must
// be there, once.
func TestVersionLineMatchesREADME(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(src), "\nconst version = \"0.9\"\n"); n != 1 {
		t.Errorf("main.go has %d lines `const version = \"0.9\"`, want 1 (README step 3 edits it)", n)
	}
}

func TestStampedVersionWins(t *testing.T) {
	old := stampedVersion
	t.Cleanup(func() { stampedVersion = old })
	stampedVersion = "1.0"
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, func(string) string { return "" }, &stdout, &stderr); code != 0 {
		t.Fatalf("run --version = %d, want 0; stderr %q", code, stderr.String())
	}
	if got, want := stdout.String(), "1.0\n"; got != want {
		t.Errorf("--version with stampedVersion=1.0 printed %q, want %q", got, want)
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
