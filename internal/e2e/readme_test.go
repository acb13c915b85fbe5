package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// TestREADMEDemo runs the README's demo as a newcomer would, in a copy of
// the repository: the commands are read from README.md itself ("The demo,
// step by step"), so that README and code cannot drift apart. It runs them
// as written (`go run ./cmd/gmesh ...`, the real sed), with two changes
// only: `up` gets a free loopback port and its own task addresses (--listen
// 127.0.0.1:0 --task-ip-base), and the README's 127.0.0.1:8080 becomes the
// port up printed. Steps: up --detach, curl (the reply the README shows),
// the load loop, the sed edit, deploy echo-server (the reply turns to
// Version 1.0, the load loop sees no failure), rollback (0.9 again), the bad
// version rolled back by itself (to the version the README shows, exit 1),
// down.
func TestREADMEDemo(t *testing.T) {
	demo := readmeDemo(t)
	repo := copyRepo(t)
	tr := &transcript{t: t}
	t.Cleanup(func() {
		// Whatever happened, nothing of the demo's mesh may outlive the test.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, gmeshBin, "down", "--state-dir", filepath.Join(repo, ".gmesh"))
		cmd.Dir = repo
		_ = cmd.Run()
		if t.Failed() || testing.Verbose() {
			t.Logf("transcript of the demo:\n%s", tr.String())
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(repo, ".gmesh", "logs", "up.log")); err == nil {
				t.Logf("up.log:\n%s", b)
			}
		}
	})

	// 1. up --detach, on a free port.
	up := demo.find(t, "go run ./cmd/gmesh up --detach")
	out, err := tr.run(repo, 6*time.Minute, append(up.args, "--listen", "127.0.0.1:0", "--task-ip-base", ipBase())...)
	if err != nil {
		t.Fatalf("%s: %v", up.line, err)
	}
	m := publicRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s printed no public endpoint", up.line)
	}
	public := strings.TrimPrefix(m[1], "http://")
	if !strings.Contains(out, "Stop it with: gmesh down\n") {
		t.Errorf("%s: want the hint %q (the README's last step), got:\n%s", up.line, "Stop it with: gmesh down", out)
	}
	localize := func(s string) string { return strings.ReplaceAll(s, "127.0.0.1:8080", public) }

	// The curl, and the reply the README shows under it (the task's
	// address may differ).
	curl := demo.find(t, "curl ")
	if len(curl.args) != 2 {
		t.Fatalf("README: %q: want curl URL", curl.line)
	}
	if len(curl.shown) == 0 {
		t.Fatalf("README: no reply shown under %q", curl.line)
	}
	want := curl.shown[0]
	wantRe := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(want), `Said 127\.0\.0\.3`, `Said 127\.\d+\.\d+\.\d+`) + "$")
	url := localize(curl.args[1])
	code, body, err := get(url)
	tr.logf("$ %s\n%s\n", localize(curl.line), body)
	if err != nil || code != 200 || !wantRe.MatchString(strings.TrimSpace(body)) {
		t.Fatalf("%s: got %d %q (%v), want the README's %q", curl.line, code, body, err, want)
	}

	// `go run` deleted the gmesh it built when it returned; the detached
	// up must still restart its control plane (it re-runs itself through
	// /proc/self/exe).
	controlPlaneRestarts(t, filepath.Join(repo, ".gmesh"))

	// 2. The load loop, in the background for the rest of the demo. It is
	// bounded by its --duration and stopped (SIGINT) after the deploy.
	ld := demo.find(t, "go run ./cmd/gmesh load ")
	var largs []string
	for _, a := range ld.args {
		largs = append(largs, localize(a))
	}
	loadProc := startBackground(t, repo, largs...)

	// 3. The edit, with the real sed; it must change the version line.
	sed := demo.find(t, "sed ")
	main := filepath.Join(repo, "cmd", "echo-server", "main.go")
	before, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.run(repo, time.Minute, sed.args...); err != nil {
		t.Fatalf("%s: %v", sed.line, err)
	}
	after, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) || !bytes.Contains(after, []byte(`const version = "1.0"`)) {
		t.Fatalf("README step 3 (%s) changed nothing in cmd/echo-server/main.go", sed.line)
	}

	// The load loop is answering before the deploy starts (its first
	// per-second line), so the deploy's analysis has traffic to judge.
	loadProc.waitLine(t, regexp.MustCompile(`^\s*\d+s\s+sent \d+`), 3*time.Minute)

	// 4. Deploy it.
	deploy := demo.findExact(t, "go run ./cmd/gmesh deploy echo-server")
	out, err = tr.run(repo, 8*time.Minute, deploy.args...)
	if err != nil {
		t.Fatalf("%s: %v", deploy.line, err)
	}
	checkShown(t, deploy, out)
	// Every reply is now 1.0's.
	for i := range 20 {
		code, body, err := get(url)
		if err != nil || code != 200 || !strings.Contains(body, "Version 1.0)") {
			t.Fatalf("reply %d after the deploy: %d %q (%v), want Version 1.0", i, code, body, err)
		}
	}
	// The load loop saw the switch and no failure.
	lout := loadProc.stop(t)
	checkShown(t, ld, lout)
	tr.logf("$ %s  (stopped after the deploy)\n%s\n", localize(ld.line), lout)
	sm := regexp.MustCompile(`(?m)^Requests\s+sent (\d+)\s+ok (\d+)\s+failed (\d+)`).FindStringSubmatch(lout)
	if sm == nil {
		t.Fatalf("the load loop printed no summary:\n%s", lout)
	}
	if sent, _ := strconv.Atoi(sm[1]); sent == 0 || sm[3] != "0" {
		t.Errorf("the load loop over the deploy: sent %s ok %s failed %s, want failed 0", sm[1], sm[2], sm[3])
	}
	if !strings.Contains(lout, "1.0: ") || !strings.Contains(lout, "0.9: ") {
		t.Errorf("the load loop's replies were not split by version 0.9 then 1.0:\n%s", lout)
	}

	// 5. Roll back, through the same progressive flow (with a load loop
	// again, as the analysis judges real requests): 0.9 answers again.
	loadProc = startBackground(t, repo, largs...)
	loadProc.waitLine(t, regexp.MustCompile(`^\s*\d+s\s+sent \d+`), 3*time.Minute)
	rb := demo.find(t, "go run ./cmd/gmesh rollback ")
	if _, err := tr.run(repo, 8*time.Minute, rb.args...); err != nil {
		t.Fatalf("%s: %v", rb.line, err)
	}
	for i := range 20 {
		code, body, err := get(url)
		if err != nil || code != 200 || !strings.Contains(body, "Version 0.9)") {
			t.Fatalf("reply %d after the rollback: %d %q (%v), want Version 0.9", i, code, body, err)
		}
	}
	// A bad version is rolled back by itself, to the version the README
	// shows, and the deploy exits 1.
	bad := demo.find(t, "go run ./cmd/gmesh deploy echo-server --force ")
	out, err = tr.run(repo, 8*time.Minute, bad.args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("%s: got %v, want exit status 1", bad.line, err)
	}
	rolledRe := regexp.MustCompile(`Rolled back to version (\S+): `)
	var wantBack string
	for _, l := range bad.shown {
		if m := rolledRe.FindStringSubmatch(l); m != nil {
			wantBack = m[1]
		}
	}
	if m := rolledRe.FindStringSubmatch(out); wantBack == "" || m == nil || m[1] != wantBack {
		t.Errorf("%s: got %q, want the README's \"Rolled back to version %s\"", bad.line, m, wantBack)
	}
	checkShown(t, bad, out)
	for i := range 20 {
		code, body, err := get(url)
		if err != nil || code != 200 || !strings.Contains(body, "Version "+wantBack+")") {
			t.Fatalf("reply %d after the bad version's rollback: %d %q (%v), want Version %s", i, code, body, err, wantBack)
		}
	}
	tr.logf("$ %s  (stopped)\n%s\n", localize(ld.line), loadProc.stop(t))

	// Last: down.
	down := demo.findExact(t, "go run ./cmd/gmesh down")
	out, err = tr.run(repo, 4*time.Minute, down.args...)
	if err != nil || !strings.Contains(out, "Stopped.") {
		t.Fatalf("%s: %v", down.line, err)
	}
	if _, _, err := get(url); err == nil {
		t.Errorf("the gateway still answers after %s", down.line)
	}
}

// controlPlaneRestarts kills the control plane of stateDir and waits until
// `gmesh up` has started a new one that answers.
func controlPlaneRestarts(t *testing.T, stateDir string) {
	t.Helper()
	dir := statedir.Dir{Path: stateDir}
	cp, err := dir.ReadControlPlane()
	if err != nil || cp.PID == 0 {
		t.Fatalf("read the control plane's record: %+v, %v", cp, err)
	}
	if err := syscall.Kill(cp.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the control plane (pid %d): %v", cp.PID, err)
	}
	poll(t, 90*time.Second, "a restarted control plane", func() error {
		now, err := dir.ReadControlPlane()
		if err != nil {
			return err
		}
		if now.PID == cp.PID {
			return fmt.Errorf("still the killed control plane's record (pid %d)", now.PID)
		}
		if out, err := gmesh(t, stateDir, "status"); err != nil {
			return fmt.Errorf("gmesh status: %v: %s", err, out)
		}
		return nil
	})
}

var (
	numberRe   = regexp.MustCompile(`\d+(\.\d+)?(ns|µs|us|ms|s|m|h)?`)
	progressRe = regexp.MustCompile(`\(\d+/\d+\)\.\.\.$`)
)

// checkShown checks that each output line the README shows under c is a
// line of out, numbers and their units aside (counts, rates, latencies
// vary). Not checked:
// "..." (elided), "(exit status N)" (checked by the caller), and progress
// lines such as "Tasks are starting (1/2)..." that a fast machine skips.
func checkShown(t *testing.T, c demoCmd, out string) {
	t.Helper()
	for _, want := range missingShown(c, out) {
		t.Errorf("README shows %q under %q; the command printed no such line", want, c.line)
	}
}

// missingShown returns the lines shown under c that out lacks.
func missingShown(c demoCmd, out string) []string {
	var missing []string
	lines := strings.Split(out, "\n")
	for _, want := range c.shown {
		want = strings.TrimSpace(want)
		if want == "..." || strings.HasPrefix(want, "(exit status") || progressRe.MatchString(want) {
			continue
		}
		var re strings.Builder
		re.WriteString("^")
		last := 0
		for _, m := range numberRe.FindAllStringIndex(want, -1) {
			re.WriteString(regexp.QuoteMeta(want[last:m[0]]))
			re.WriteString(`\d+(\.\d+)?(ns|µs|us|ms|s|m|h)?`)
			last = m[1]
		}
		re.WriteString(regexp.QuoteMeta(want[last:]))
		re.WriteString("$")
		// Runs of spaces are columns: any run matches.
		wantRe := regexp.MustCompile(regexp.MustCompile(`( |\\ )+`).ReplaceAllString(re.String(), `\s+`))
		found := false
		for _, l := range lines {
			if wantRe.MatchString(strings.TrimSpace(l)) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, want)
		}
	}
	return missing
}

// demoCmd is one command of the README's demo.
type demoCmd struct {
	line  string   // as written, without its trailing comment
	args  []string // split as a shell would
	shown []string // the "# " comment lines right under it: its output
}

type demoScript []demoCmd

// find returns the one command starting with prefix.
func (d demoScript) find(t *testing.T, prefix string) demoCmd {
	t.Helper()
	var found []demoCmd
	for _, c := range d {
		if strings.HasPrefix(c.line, prefix) {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		t.Fatalf("README's demo has no command starting %q", prefix)
	}
	return found[0]
}

// findExact returns the first command that is exactly line.
func (d demoScript) findExact(t *testing.T, line string) demoCmd {
	t.Helper()
	for _, c := range d {
		if c.line == line {
			return c
		}
	}
	t.Fatalf("README's demo has no command %q", line)
	return demoCmd{}
}

// readmeDemo reads the commands of README.md's "The demo, step by step":
// its first ```sh block.
func readmeDemo(t *testing.T) demoScript {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## The demo, step by step\n")
	if !ok {
		t.Fatal(`README.md has no "## The demo, step by step" section`)
	}
	_, rest, ok = strings.Cut(rest, "\n```sh\n")
	if !ok {
		t.Fatal("README.md's demo has no ```sh block")
	}
	block, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatal("README.md's demo block does not end")
	}
	var d demoScript
	under := false // in the comment lines right under a command
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			under = false
		case strings.HasPrefix(line, "#"):
			if n := len(d); n > 0 && under && strings.HasPrefix(line, "# ") {
				d[n-1].shown = append(d[n-1].shown, strings.TrimPrefix(line, "# "))
			}
		default:
			under = true
			args, comment, err := shellSplit(line)
			if err != nil {
				t.Fatalf("README demo line %q: %v", line, err)
			}
			cmd := strings.TrimSpace(strings.TrimSuffix(line, comment))
			d = append(d, demoCmd{line: cmd, args: args})
		}
	}
	if len(d) < 5 {
		t.Fatalf("README's demo has %d commands, want at least up, curl, load, sed, deploy, down", len(d))
	}
	return d
}

// shellSplit splits a command line as sh would for the quoting the README
// uses: words, single and double quotes, and a trailing # comment
// (returned, from its #).
func shellSplit(line string) (args []string, comment string, err error) {
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, "", errors.New("unclosed single quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, "", errors.New("unclosed double quote")
			}
			s := line[i+1 : i+1+j]
			if strings.ContainsAny(s, "$`\\") {
				return nil, "", fmt.Errorf("double quotes with expansions are not supported: %q", s)
			}
			cur.WriteString(s)
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return args, line[i:], nil
		case strings.IndexByte("$`\\|&;<>()*?", c) >= 0:
			return nil, "", fmt.Errorf("shell syntax %q is not supported", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, "", nil
}

func TestShellSplit(t *testing.T) {
	for _, tt := range []struct {
		line    string
		args    []string
		comment string
	}{
		{`go run ./cmd/gmesh up --detach        # or in the foreground`, []string{"go", "run", "./cmd/gmesh", "up", "--detach"}, "# or in the foreground"},
		{`curl 'http://127.0.0.1:8080/?name=Yusuke'`, []string{"curl", "http://127.0.0.1:8080/?name=Yusuke"}, ""},
		{`sed -i 's/const version = "0.9"/const version = "1.0"/' cmd/echo-server/main.go`, []string{"sed", "-i", `s/const version = "0.9"/const version = "1.0"/`, "cmd/echo-server/main.go"}, ""},
		{`a "b c"d e#f`, []string{"a", "b cd", "e#f"}, ""},
	} {
		args, comment, err := shellSplit(tt.line)
		if err != nil || !slicesEqual(args, tt.args) || comment != tt.comment {
			t.Errorf("shellSplit(%q) = %q, %q, %v; want %q, %q", tt.line, args, comment, err, tt.args, tt.comment)
		}
	}
	for _, bad := range []string{`a 'b`, `a "b`, `a $HOME`, `a | b`, `a "$x"`} {
		if _, _, err := shellSplit(bad); err == nil {
			t.Errorf("shellSplit(%q): no error", bad)
		}
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// copyRepo copies the module's files (tracked, and untracked but not
// ignored) into a temporary directory, as a fresh clone would have them.
func copyRepo(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "gmesh")
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = moduleRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files in %s: %v", moduleRoot, err)
	}
	n := 0
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if rel == "" {
			continue
		}
		src := filepath.Join(moduleRoot, rel)
		st, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if _, err := os.Stat(filepath.Join(dst, "go.mod")); err != nil || n < 10 {
		t.Fatalf("copied %d files and no go.mod (%v)", n, err)
	}
	return dst
}

// transcript records the demo's commands and their output.
type transcript struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (tr *transcript) logf(format string, a ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fmt.Fprintf(&tr.b, format, a...)
}

func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.b.String()
}

// run runs args in dir with a deadline and returns its combined output.
func (tr *transcript) run(dir string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = demoEnv()
	// `go run` builds then runs gmesh: end both on a timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	tr.logf("$ %s\n%s", strings.Join(args, " "), out)
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %s", timeout)
	}
	return string(out), err
}

// demoEnv is the environment of the demo's commands: the test's, without
// GOFLAGS the test run may set for itself.
func demoEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOFLAGS=") {
			env = append(env, kv)
		}
	}
	return env
}

// bgProc is a command of the demo running in the background.
type bgProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func startBackground(t *testing.T, dir string, args ...string) *bgProc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = demoEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(args, " "), err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		<-copied
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *bgProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitLine waits for an output line matching re.
func (p *bgProc) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(p.output(), "\n") {
			if re.MatchString(l) {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s ended before printing a line matching %s:\n%s", strings.Join(p.cmd.Args, " "), re, p.output())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s printed no line matching %s within %s:\n%s", strings.Join(p.cmd.Args, " "), re, timeout, p.output())
}

// stop interrupts the process group (as Ctrl-C would) and returns the
// output once it has exited.
func (p *bgProc) stop(t *testing.T) string {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGINT", strings.Join(p.cmd.Args, " "))
	}
	return p.output()
}

func TestCheckShown(t *testing.T) {
	c := demoCmd{line: "x", shown: []string{
		"  1s  sent 100  ok 100  0.9: 100  failed 0  p50 1.1ms  p99 2.9ms",
		"Tasks are starting (1/2)...",
		"...",
		"Rolled back to version 0.9: success rate 80.3% < 99.0% over 41 requests",
		"(exit status 1)",
	}}
	out := "  3s  sent 98  ok 98  0.9: 98  failed 0  p50 850µs  p99 12.1ms\nRolled back to version 0.9: success rate 75.7% < 99.0% over 33 requests\n"
	if m := missingShown(c, out); len(m) != 0 {
		t.Errorf("missingShown on matching output: %q, want none", m)
	}
	if m := missingShown(demoCmd{shown: []string{"Version 0.9 retired", "Stopped."}}, "Version 1.0 retired\nStopping."); len(m) != 1 || m[0] != "Stopped." {
		t.Errorf("missingShown = %q, want [Stopped.]", m)
	}
}
