package cli_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/cli"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// runBare runs gmesh in-process with exactly args (no --server or
// --state-dir added).
func runBare(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	var stdout, stderr bytes.Buffer
	code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, args)
	return code, stdout.String(), stderr.String()
}

func mustNotExist(t *testing.T, path, after string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists after %s (stat: %v), want no side effect", path, after, err)
	}
}

// TestReadOnlyCommandsCreateNothing: status, down, logs, get, rollout status
// and friends only read; run where no mesh ever ran, they make no ./.gmesh
// (nor the named --state-dir).
func TestReadOnlyCommandsCreateNothing(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	named := filepath.Join(t.TempDir(), "named")
	for _, tc := range []gmeshCase{
		{name: "status", args: []string{"status"}, wantCode: 1, wantErr: `^gmesh: no control plane has run in state directory \S+/\.gmesh \(it does not exist\); start one with .gmesh up. `},
		{name: "get", args: []string{"get", "vn"}, wantCode: 1, wantErr: `no control plane has run`},
		{name: "rollout status", args: []string{"rollout", "status", "echo-server"}, wantCode: 1, wantErr: `no control plane has run`},
		{name: "logs", args: []string{"logs", "echo-server"}, wantCode: 1, wantErr: `^gmesh: no logs: state directory \S+/\.gmesh does not exist\n$`},
		// The default directory: down is idempotent, and says where it looked.
		{name: "down", args: []string{"down"}, wantCode: 0, wantOut: `^nothing is running in \S+/\.gmesh \(no such directory\); a gmesh up started in another directory is stopped from there, or with --state-dir$`},
		// A state directory the user named: nothing there is an error, one line.
		{name: "down named", args: []string{"down", "--state-dir", named}, wantCode: 1, wantErr: `^gmesh: nothing is running in ` + named + ` \(no such directory\)\n$`},
		{name: "status named", args: []string{"status", "--state-dir", named}, wantCode: 1, wantErr: `start one with .gmesh up --state-dir ` + named + `. or .gmesh controlplane --state-dir ` + named + `.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runBare(t, tc.args...)
			tc.check(t, code, stdout, stderr)
			mustNotExist(t, filepath.Join(work, statedir.Default), "gmesh "+strings.Join(tc.args, " "))
			mustNotExist(t, named, "gmesh "+strings.Join(tc.args, " "))
		})
	}
}

// TestDownNamedStateDirWithNothingRunning: a state directory that exists
// but runs no `gmesh up` (never, or a stale record) is an error when named,
// and fine (exit 0) when it is the default one.
func TestDownNamedStateDirWithNothingRunning(t *testing.T) {
	t.Chdir(t.TempDir())
	named, err := statedir.Open(filepath.Join(t.TempDir(), "named"))
	if err != nil {
		t.Fatal(err)
	}
	def, err := statedir.Open(statedir.Default)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, gmeshCase{name: "down named", args: []string{"down", "--state-dir", named.Path}, wantCode: 1,
		wantErr: `^gmesh: nothing is running in ` + named.Path + `\n$`})
	expect(t, gmeshCase{name: "down", args: []string{"down"}, wantCode: 0,
		wantOut: `^nothing is running in ` + def.Path + `; `})

	// A record of a process that is gone: removed, and still nothing running.
	for _, d := range []statedir.Dir{named, def} {
		if err := d.WriteUpInfo(statedir.UpInfo{PID: deadPID(t), Ready: true}); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, gmeshCase{name: "down named stale", args: []string{"down", "--state-dir", named.Path}, wantCode: 1,
		wantErr: `^gmesh: nothing is running in ` + named.Path + ` \(stale record removed\)\n$`})
	expect(t, gmeshCase{name: "down stale", args: []string{"down"}, wantCode: 0,
		wantOut: `^nothing is running in ` + def.Path + ` \(stale record removed\); `})
	for _, d := range []statedir.Dir{named, def} {
		mustNotExist(t, d.UpInfoPath(), "gmesh down of a stale record")
	}
}

// expect runs tc's args in-process (no flags added) and checks the result.
func expect(t *testing.T, tc gmeshCase) {
	t.Helper()
	code, stdout, stderr := runBare(t, tc.args...)
	tc.check(t, code, stdout, stderr)
}

// deadPID is the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	return cmd.Process.Pid
}
