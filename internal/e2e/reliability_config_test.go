package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// prebuiltStack returns the path where the echo stack of `gmesh init`
// belongs in dir and its text, with its programs prebuilt (a stack file
// outside the module cannot name its packages); the caller edits and writes
// it.
func prebuiltStack(t *testing.T, dir string) (path, stack string) {
	t.Helper()
	path = filepath.Join(dir, "stack.yaml")
	if out, err := gmesh(t, dir, "init", "-o", path); err != nil {
		t.Fatalf("gmesh init: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	server := buildEchoServer(t, "0.9")
	client := filepath.Join(t.TempDir(), "echo-client")
	build := exec.Command("go", "build", "-o", client, "./cmd/echo-client")
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build echo-client: %v\n%s", err, out)
	}
	s := string(b)
	for pkg, bin := range map[string]string{"./cmd/echo-server": server, "./cmd/echo-client": client} {
		if !strings.Contains(s, "package: "+pkg) {
			t.Fatalf("gmesh init's stack has no %q", "package: "+pkg)
		}
		s = strings.Replace(s, "package: "+pkg, fmt.Sprintf("command: [%q]", bin), 1)
	}
	return path, s
}

// crashStack is the echo stack of `gmesh init` with prebuilt programs, plus
// a service whose program exits at once.
func crashStack(t *testing.T, dir string) string {
	t.Helper()
	path, s := prebuiltStack(t, dir)
	s += `---
apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata:
  name: crasher
  mesh: echo
spec:
  listeners:
    - portMapping: {port: 9000, protocol: grpc}
  serviceDiscovery:
    registry:
      serviceName: crasher
---
apiVersion: gmesh.dev/v1
kind: Service
metadata:
  name: crasher
  mesh: echo
spec:
  virtualNode: crasher
  program:
    command: ["/bin/sh", "-c", "exit 3"]
  version: "1"
  desiredCount: 1
  port: 9000
`
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReliabilityConfig runs, on one `gmesh up -f` of the echo stack plus a
// crash-looping service, the faults that are about state and config rather
// than processes: the crash loop itself, a config the clients NACK,
// concurrent read-modify-write applies, a store that cannot be written
// during an apply, and, after the stop, a damaged store file.
func TestReliabilityConfig(t *testing.T) {
	stateDir := t.TempDir()
	stackFile := crashStack(t, t.TempDir())
	u := startUp(t, stateDir, "-f", stackFile)
	url := u.public + "/?name=Yusuke"

	t.Run("OwnerOnlyFiles", func(t *testing.T) {
		for path, want := range map[string]os.FileMode{
			stateDir:                            0o700,
			filepath.Join(stateDir, "token"):    0o600,
			filepath.Join(stateDir, "state.db"): 0o600,
			filepath.Join(stateDir, "logs"):     0o700,
			filepath.Join(stateDir, "up.lock"):  0o600,
		} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Errorf("stat %s: %v", path, err)
				continue
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: mode %#o, want %#o", path, got, want)
			}
		}
	})
	t.Run("CrashLoop", func(t *testing.T) { crashLoop(t, stateDir, url) })
	t.Run("WouldBeNACKed", func(t *testing.T) { nackedConfig(t, stateDir, url) })
	t.Run("ConcurrentApplies", func(t *testing.T) { concurrentApplies(t, stateDir, url) })
	t.Run("StoreNotWritable", func(t *testing.T) { storeNotWritable(t, stateDir, url) })

	if err := u.stop(90 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Run("DamagedStore", func(t *testing.T) { damagedStore(t, stateDir) })
}

func crasherEndpoint(t *testing.T, stateDir string) *mesh.Endpoint {
	t.Helper()
	for _, ep := range status(t, stateDir).Endpoints {
		if ep.Service == "crasher" {
			return ep
		}
	}
	return nil
}

func crashLoop(t *testing.T, stateDir, url string) {
	hold := 20 * time.Second
	if *long {
		hold = 2 * time.Minute
	}
	lr := startFaultLoad(t, url, faultRPS, hold+time.Minute)
	start := time.Now()
	var samples []string
	restarts := func() int {
		if ep := crasherEndpoint(t, stateDir); ep != nil {
			return ep.Proc().Restarts
		}
		return 0
	}
	poll(t, 30*time.Second, "the crash-looping task restarted at least twice", func() error {
		if n := restarts(); n < 2 {
			return fmt.Errorf("%d restarts", n)
		}
		return nil
	})
	first := restarts()
	samples = append(samples, fmt.Sprintf("%s:%d", time.Since(start).Round(time.Second), first))
	holdFor(hold) // the crash loop runs this long under load
	last := restarts()
	samples = append(samples, fmt.Sprintf("%s:%d", time.Since(start).Round(time.Second), last))
	res := lr.stop(t)
	checkFailures(t, res, 0)
	if last <= first {
		t.Errorf("restarts did not grow: %d then %d over %s", first, last, hold)
	}
	// The program dies at once: without backoff it would restart hundreds of
	// times in the hold. With exponential backoff the count stays small.
	if perSec := float64(last-first) / hold.Seconds(); perSec > 1 {
		t.Errorf("%d restarts in %s (%.1f/s): no backoff", last-first, hold, perSec)
	}
	// gmesh status names the crash loop, the exit and the next restart (the
	// task is in its backoff nearly all the time: sh exits at once).
	var out, line string
	poll(t, 20*time.Second, "gmesh status shows the crash loop", func() error {
		var err error
		out, err = gmesh(t, stateDir, "status")
		if err != nil {
			return fmt.Errorf("gmesh status: %v\n%s", err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "crasher") && strings.Contains(l, "CRASHLOOP (exit status 3; restart in ") {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no crasher row says CRASHLOOP (exit status 3; restart in ...):\n%s", out)
	})
	t.Logf("gmesh status crash-loop row: %s", line)
	report(t, result{scenario: "task crash loop (`sh -c 'exit 3'`)", res: res,
		note: fmt.Sprintf("restarts (elapsed:count) %s; echo traffic unaffected", strings.Join(samples, ", "))})
}

// nackRegex compiles with Go's regexp alone, but grpc-go compiles a
// matcher's regex as ^(?:re)$, one group deeper than Go's nesting limit of
// 1000, and would NACK the route configuration. gmesh checks regexes as
// grpc-go compiles them, so the apply is refused before any client sees it.
// (The NACK path itself, a client rejecting a config, is covered with real
// grpc-go clients in internal/xds/server's TestNACKKeepsOldConfig and
// internal/controlplane's end-to-end tests.)
var nackRegex = strings.Repeat("(", 999) + "a" + strings.Repeat(")", 999)

func nackedConfig(t *testing.T, stateDir, url string) {
	lr := startFaultLoad(t, url, faultRPS, 2*time.Minute)
	holdFor(2 * time.Second)
	manifest := fmt.Sprintf(`apiVersion: gmesh.dev/v1
kind: Route
metadata:
  name: nacked
  mesh: echo
spec:
  virtualRouterName: echo-server
  priority: 1
  grpcRoute:
    match:
      serviceName: proto.echo.EchoService
      metadata:
        - name: x-nack
          match: {regex: %q}
    action:
      weightedTargets:
        - {virtualNode: echo-server-0-9, weight: 100}
`, nackRegex)
	path := filepath.Join(t.TempDir(), "nacked.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	out, err := gmesh(t, stateDir, "apply", "-f", path)
	refused := time.Since(applied)
	if err == nil {
		t.Fatalf("gmesh applied a route every grpc-go client would NACK:\n%s", out)
	}
	if !strings.Contains(out, "nacked.yaml") || !strings.Contains(out, "metadata[0].match.regex") {
		t.Errorf("the refusal does not name the file and field: %s", out)
	}
	if got, err := gmesh(t, stateDir, "get", "route", "nacked"); err == nil {
		t.Errorf("the refused route was stored:\n%s", got)
	}
	holdFor(2 * time.Second) // traffic after the refusal
	res := lr.stop(t)
	checkFailures(t, res, 0)
	for _, c := range status(t, stateDir).Clients {
		if c.LastNACK != nil {
			t.Errorf("client %s NACKed: %+v", c.NodeID, *c.LastNACK)
		}
	}
	report(t, result{scenario: "config grpc-go would NACK (999-deep regex)", res: res, recovery: refused,
		note: "refused by apply with file and field named; nothing stored, no client saw it, traffic unaffected"})
}

// concurrentApplies: N processes each run 10 read-modify-writes of one
// resource with its resourceVersion; each write wins or gets a conflict,
// and every winner's change is in the final resource.
func concurrentApplies(t *testing.T, stateDir, url string) {
	const procs, writes = 4, 10
	const target = "echo-client.echo.local"
	lr := startFaultLoad(t, url, faultRPS, 2*time.Minute)
	start := time.Now()
	var mu sync.Mutex
	won := map[string]bool{}
	conflicts, other := 0, []string{}
	dir := t.TempDir()
	var wg sync.WaitGroup
	for p := 0; p < procs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := 0; w < writes; w++ {
				key := fmt.Sprintf("w%d-%d", p, w)
				out, err := gmesh(t, stateDir, "get", "vs", target, "-o", "json")
				if err != nil {
					mu.Lock()
					other = append(other, fmt.Sprintf("get: %v %s", err, out))
					mu.Unlock()
					continue
				}
				var r map[string]any
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					t.Errorf("decode %s: %v\n%s", target, err, out)
					return
				}
				md := r["metadata"].(map[string]any)
				labels, _ := md["labels"].(map[string]any)
				if labels == nil {
					labels = map[string]any{}
				}
				labels[key] = "x"
				md["labels"] = labels
				delete(r, "status")
				b, _ := json.Marshal(r)
				file := filepath.Join(dir, key+".json")
				if err := os.WriteFile(file, b, 0o644); err != nil {
					t.Error(err)
					return
				}
				out, err = gmesh(t, stateDir, "apply", "-f", file)
				mu.Lock()
				switch {
				case err == nil:
					won[key] = true
				case strings.Contains(out, "was changed since you read it"): // the CLI's conflict
					conflicts++
				default:
					other = append(other, fmt.Sprintf("apply %s: %v %s", key, err, out))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := lr.stop(t)
	out, err := gmesh(t, stateDir, "get", "vs", target, "-o", "json")
	if err != nil {
		t.Fatalf("get: %v\n%s", err, out)
	}
	var final mesh.Resource
	if err := json.Unmarshal([]byte(out), &final); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	lost := 0
	for key := range won {
		if _, ok := final.Metadata.Labels[key]; !ok {
			lost++
			t.Errorf("lost update: %s won its apply but is not in the stored labels %v", key, final.Metadata.Labels)
		}
	}
	for key := range final.Metadata.Labels {
		if strings.HasPrefix(key, "w") && !won[key] {
			t.Errorf("label %s is stored but its apply did not report success", key)
		}
	}
	if len(other) > 0 {
		t.Errorf("%d writes neither won nor got a conflict: %v", len(other), other)
	}
	if len(won)+conflicts != procs*writes {
		t.Errorf("%d won + %d conflicts, want %d writes", len(won), conflicts, procs*writes)
	}
	if len(won) == 0 {
		t.Error("no write won")
	}
	checkFailures(t, res, 0)
	report(t, result{scenario: fmt.Sprintf("concurrent applies: %d processes x %d read-modify-writes", procs, writes), res: res, recovery: 0,
		note: fmt.Sprintf("%d won, %d conflicts, %d lost updates, in %s", len(won), conflicts, lost, elapsed.Round(10*time.Millisecond))})
}

// storeNotWritable makes state.db immutable (chattr +i: the test runs as
// root, who ignores permission bits, and cannot mount a full filesystem
// here) while the control plane runs; an apply must fail cleanly and leave
// the previous state intact.
func storeNotWritable(t *testing.T, stateDir, url string) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr not installed")
	}
	db := filepath.Join(stateDir, "state.db")
	target := "echo-client.echo.local"
	before, err := gmesh(t, stateDir, "get", "vs", target, "-o", "json")
	if err != nil {
		t.Fatalf("get: %v\n%s", err, before)
	}
	lr := startFaultLoad(t, url, faultRPS, 2*time.Minute)
	holdFor(time.Second)
	readOnly := func(on bool) error {
		flag := "-i"
		if on {
			flag = "+i"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "chattr", flag, db).CombinedOutput()
		if err != nil {
			return fmt.Errorf("chattr %s %s: %v %s", flag, db, err, out)
		}
		return nil
	}
	if err := readOnly(true); err != nil {
		t.Skipf("cannot make the store read-only here: %v", err)
	}
	t.Cleanup(func() { _ = readOnly(false) })
	if os.Getuid() != 0 {
		if err := os.Chmod(stateDir, 0o500); err == nil {
			t.Cleanup(func() { _ = os.Chmod(stateDir, 0o700) })
		}
	}
	manifest := fmt.Sprintf(`{"apiVersion":"gmesh.dev/v1","kind":"VirtualService","metadata":{"name":%q,"mesh":"echo","labels":{"readonly":"x"}},"spec":{"provider":{"virtualNode":{"virtualNodeName":"echo-client-0-1"}}}}`, target)
	file := filepath.Join(t.TempDir(), "ro.json")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	failedAt := time.Now()
	out, err := gmesh(t, stateDir, "apply", "-f", file)
	failTook := time.Since(failedAt)
	if err == nil {
		t.Errorf("apply to a read-only store succeeded:\n%s", out)
	}
	t.Logf("apply to the read-only store (%s): %v\n%s", failTook.Round(time.Millisecond), err, out)
	after, err := gmesh(t, stateDir, "get", "vs", target, "-o", "json")
	if err != nil {
		t.Fatalf("get after the failed apply: %v\n%s", err, after)
	}
	if after != before {
		t.Errorf("the failed apply changed the stored resource:\nbefore %s\nafter %s", before, after)
	}
	if err := readOnly(false); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		_ = os.Chmod(stateDir, 0o700)
	}
	writable := time.Now()
	poll(t, 30*time.Second, "apply succeeds once the store is writable", func() error {
		if out, err := gmesh(t, stateDir, "apply", "-f", file); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	recovered := time.Since(writable)
	res := lr.stop(t)
	checkFailures(t, res, 0)
	report(t, result{scenario: "store file read-only (chattr +i) during an apply", res: res, recovery: recovered,
		note: fmt.Sprintf("apply failed in %s: %.120q; previous state intact; recovery = next apply succeeds", failTook.Round(time.Millisecond), strings.TrimSpace(out))})
}

// damagedStore: a stopped mesh's state.db truncated, emptied or garbled;
// both `gmesh controlplane` and `gmesh up` refuse to start, naming the file
// and the way to recover, and leave the file as it was.
func damagedStore(t *testing.T, stateDir string) {
	good, err := os.ReadFile(filepath.Join(stateDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	garbled := append([]byte(nil), good...)
	for i := 0; i < 4096 && i < len(garbled); i++ {
		garbled[i] ^= 0x5a // the meta pages
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)/3]},
		{"empty", nil},
		{"garbled", garbled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := filepath.Join(stateDir, "state.db")
			if err := os.WriteFile(db, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"controlplane", "--addr", "127.0.0.1:0"},
				{"up", "--listen", "127.0.0.1:0", "--dashboard", "off", "--task-ip-base", ipBase()},
			} {
				start := time.Now()
				out, err := gmesh(t, stateDir, args...)
				took := time.Since(start)
				t.Logf("gmesh %s on a %s store: %v after %s\n%s", args[0], c.name, err, took.Round(time.Millisecond), out)
				if err == nil {
					t.Errorf("gmesh %s started on a %s store", args[0], c.name)
				}
				if !strings.Contains(out, db) || !strings.Contains(out, "damaged") || !strings.Contains(out, "mv ") {
					t.Errorf("gmesh %s on a %s store: the error does not name %s, say it is damaged and how to recover:\n%s", args[0], c.name, db, out)
				}
				if took > 20*time.Second {
					t.Errorf("gmesh %s took %s to refuse a %s store", args[0], took.Round(time.Second), c.name)
				}
				now, err := os.ReadFile(db)
				if err != nil || string(now) != string(c.data) {
					t.Errorf("gmesh %s changed the %s store file (%d bytes, was %d): %v", args[0], c.name, len(now), len(c.data), err)
				}
			}
			report(t, result{scenario: "store file " + c.name + " while stopped", note: "`gmesh controlplane` and `gmesh up` refuse, naming the file and `mv` to recover; file untouched"})
		})
	}
	if err := os.WriteFile(filepath.Join(stateDir, "state.db"), good, 0o600); err != nil {
		t.Fatal(err)
	}
}
