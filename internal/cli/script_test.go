package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/cli"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
)

// The script tests run testdata/script/*.txt. A script is a list of
// commands, one per line ('#' starts a comment), followed by the files it
// starts with, each after a "-- name --" line. It runs in a fresh
// directory with its own in-process control plane; every gmesh command
// gets --server and --state-dir for them.
//
//	gmesh ARGS...            run gmesh in-process; it must exit 0
//	! gmesh ARGS...          it must exit 1
//	stdout REGEXP            the last command's stdout matches ((?m) mode)
//	! stdout REGEXP          ... does not match
//	stderr REGEXP            likewise for stderr
//	! stderr REGEXP
//	jsonstdout               the last command's stdout is one JSON value
//	cp stdout FILE           write the last command's stdout to FILE
//	cmp stdout FILE          the last command's stdout is FILE's content
//	grep REGEXP FILE         FILE matches ((?m) mode); ! grep: does not
//	replace FILE OLD NEW     replace OLD (exactly once) by NEW in FILE; \n
//	                         in OLD and NEW is a newline
//	exists FILE / ! exists FILE
//	mkdir DIR
//	mv FILE DIR
//
// Arguments are separated by spaces; single quotes group, and two single
// quotes inside them stand for one.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "script", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/script")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runScript(t, string(data))
		})
	}
}

// scriptState is a running script.
type scriptState struct {
	t        *testing.T
	ctx      context.Context
	work     string
	server   string
	stateDir string
	stdout   string
	stderr   string
	ran      bool
}

func runScript(t *testing.T, script string) {
	ctx := testContext(t, 60*time.Second)
	cp := startCP(t)
	work := t.TempDir()
	stateDir := t.TempDir()
	cmds, files := splitScript(t, script)
	for name, content := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(work)
	s := &scriptState{t: t, ctx: ctx, work: work, server: cp.Addr(), stateDir: stateDir}
	for _, c := range cmds {
		s.run(c)
		if t.Failed() {
			t.Logf("stdout of the last gmesh command:\n%s", s.stdout)
			t.Logf("stderr of the last gmesh command:\n%s", s.stderr)
			return
		}
	}
}

type scriptCmd struct {
	line int
	neg  bool
	args []string
}

// splitScript returns the commands and the files of a script.
func splitScript(t *testing.T, script string) ([]scriptCmd, map[string]string) {
	t.Helper()
	var cmds []scriptCmd
	files := map[string]string{}
	var cur string
	inFiles := false
	for i, line := range strings.SplitAfter(script, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "-- ") && strings.HasSuffix(trimmed, " --") && len(trimmed) > 6 {
			cur = strings.TrimSpace(trimmed[3 : len(trimmed)-3])
			files[cur] = ""
			inFiles = true
			continue
		}
		if inFiles {
			files[cur] += line
			continue
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		args, err := splitArgs(trimmed)
		if err != nil {
			t.Fatalf("script line %d: %v", i+1, err)
		}
		c := scriptCmd{line: i + 1, args: args}
		if args[0] == "!" {
			c.neg, c.args = true, args[1:]
		}
		if len(c.args) == 0 {
			t.Fatalf("script line %d: empty command", i+1)
		}
		cmds = append(cmds, c)
	}
	return cmds, files
}

// splitArgs splits a line on spaces, with single-quoted groups.
func splitArgs(line string) ([]string, error) {
	var args []string
	var b strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'' && i+1 < len(line) && line[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\'':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, b.String())
				b.Reset()
				inArg = false
			}
		default:
			b.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if inArg {
		args = append(args, b.String())
	}
	return args, nil
}

func (s *scriptState) run(c scriptCmd) {
	t := s.t
	t.Helper()
	where := fmt.Sprintf("line %d: %s%s", c.line, map[bool]string{true: "! "}[c.neg], strings.Join(c.args, " "))
	arg := func(n int) []string {
		if len(c.args) != n+1 {
			t.Fatalf("%s: want %d arguments", where, n)
		}
		return c.args[1:]
	}
	switch c.args[0] {
	case "gmesh":
		code, stdout, stderr := runGmesh(s.ctx, s.server, s.stateDir, c.args[1:]...)
		s.stdout, s.stderr, s.ran = stdout, stderr, true
		want := 0
		if c.neg {
			want = 1
		}
		if code != want {
			t.Errorf("%s: exit code %d, want %d", where, code, want)
		}
	case "stdout", "stderr":
		if !s.ran {
			t.Fatalf("%s: no gmesh command ran yet", where)
		}
		re, err := regexp.Compile("(?m)" + arg(1)[0])
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		out := s.stdout
		if c.args[0] == "stderr" {
			out = s.stderr
		}
		if got := re.MatchString(out); got == c.neg {
			if c.neg {
				t.Errorf("%s: %s matches %q, want no match", where, c.args[0], re)
			} else {
				t.Errorf("%s: %s does not match %q", where, c.args[0], re)
			}
		}
	case "jsonstdout":
		arg(0)
		dec := json.NewDecoder(strings.NewReader(s.stdout))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Errorf("%s: stdout is not JSON: %v", where, err)
		} else if dec.More() {
			t.Errorf("%s: stdout has more than one JSON value", where)
		}
	case "cp":
		a := arg(2)
		if a[0] != "stdout" {
			t.Fatalf("%s: only cp stdout FILE is supported", where)
		}
		if err := os.WriteFile(a[1], []byte(s.stdout), 0o644); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	case "cmp":
		a := arg(2)
		if a[0] != "stdout" {
			t.Fatalf("%s: only cmp stdout FILE is supported", where)
		}
		b, err := os.ReadFile(a[1])
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if string(b) != s.stdout {
			t.Errorf("%s: stdout (%d bytes) differs from %s (%d bytes)", where, len(s.stdout), a[1], len(b))
		}
	case "grep":
		a := arg(2)
		re, err := regexp.Compile("(?m)" + a[0])
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		b, err := os.ReadFile(a[1])
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if got := re.Match(b); got == c.neg {
			t.Errorf("%s: match = %v, want %v; %s:\n%s", where, got, !c.neg, a[1], b)
		}
	case "replace":
		a := arg(3)
		b, err := os.ReadFile(a[0])
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if n := bytes.Count(b, []byte(unescape(a[1]))); n != 1 {
			t.Fatalf("%s: %q occurs %d times in %s, want once:\n%s", where, a[1], n, a[0], b)
		}
		b = bytes.Replace(b, []byte(unescape(a[1])), []byte(unescape(a[2])), 1)
		if err := os.WriteFile(a[0], b, 0o644); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	case "exists":
		_, err := os.Stat(arg(1)[0])
		if exists := err == nil; exists == c.neg {
			t.Errorf("%s: exists = %v, want %v", where, exists, !c.neg)
		}
	case "mkdir":
		if err := os.MkdirAll(arg(1)[0], 0o755); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	case "mv":
		a := arg(2)
		if err := os.Rename(a[0], filepath.Join(a[1], filepath.Base(a[0]))); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	default:
		t.Fatalf("%s: unknown command %q", where, c.args[0])
	}
}

func unescape(s string) string { return strings.ReplaceAll(s, `\n`, "\n") }

// runGmesh runs gmesh in-process against server and returns its exit code,
// stdout and stderr.
func runGmesh(ctx context.Context, server, stateDir string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	full := append(append([]string(nil), args...), "--server", server, "--state-dir", stateDir)
	code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, full)
	return code, stdout.String(), stderr.String()
}

// startCP runs an in-memory control plane on 127.0.0.1:0 until the test
// ends.
func startCP(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	cp, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("controlplane.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("control plane Run did not return within 30s of cancel")
		}
	})
	return cp
}

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
