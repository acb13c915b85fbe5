package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// jsClientDir holds the JavaScript xDS client and its pinned packages
// (package.json, package-lock.json; `npm ci` installs node_modules there).
const jsClientDir = "testdata/xdsclient-js"

// nodeJS returns the node binary and makes sure the JS client's packages are
// installed (`npm ci` when node_modules lacks them). Outside CI a missing
// node or npm skips the test with how to install them; in CI (CI set) it
// fails, so the test can never silently not run there. GMESH_NODE names
// another node binary.
func nodeJS(t *testing.T) string {
	t.Helper()
	missing := func(msg string) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; .ci/run installs Debian's nodejs and npm and runs `npm ci` in internal/e2e/%s", msg, jsClientDir)
		}
		t.Skipf("%s (apt-get install -y nodejs npm; then npm ci in internal/e2e/%s)", msg, jsClientDir)
	}
	node := os.Getenv("GMESH_NODE")
	if node == "" {
		p, err := exec.LookPath("node")
		if err != nil {
			missing("no node found on PATH")
		}
		node = p
	} else if _, err := exec.LookPath(node); err != nil {
		missing(fmt.Sprintf("GMESH_NODE=%s: %v", node, err))
	}
	if _, err := os.Stat(filepath.Join(jsClientDir, "node_modules", "@grpc", "grpc-js-xds", "package.json")); err == nil {
		return node
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		missing("the JS client's packages are not installed and no npm found on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = jsClientDir
	if out, err := cmd.CombinedOutput(); err != nil {
		missing(fmt.Sprintf("npm ci in %s: %v\n%s", jsClientDir, err, out))
	}
	return node
}

// jsReport is one line the JS client prints.
type jsReport struct {
	Calls    int            `json:"calls"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Versions map[string]int `json:"versions"`
	Errors   map[string]int `json:"errors"`
	Done     bool           `json:"done"`
}

// jsClient is a running JS xDS client.
type jsClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   jsReport
	stderr strings.Builder
	done   chan struct{}
	err    error
}

// startJSClient runs the JS client with bootstrapEnv (GRPC_XDS_BOOTSTRAP=FILE
// or GRPC_XDS_BOOTSTRAP_CONFIG=JSON) and args (client.js's flags).
func startJSClient(t *testing.T, node, bootstrapEnv string, args ...string) *jsClient {
	t.Helper()
	proto := filepath.Join(moduleRoot, "api", "echo", "v1", "echo.proto")
	cmd := exec.Command(node, append([]string{"client.js", "--proto", proto}, args...)...)
	cmd.Dir = jsClientDir
	cmd.Env = append(os.Environ(), bootstrapEnv)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &jsClient{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &c.mu, b: &c.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the JS client: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r jsReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				c.mu.Lock()
				fmt.Fprintf(&c.stderr, "unparsed stdout line: %s\n", sc.Text())
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			c.last = r
			c.mu.Unlock()
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("JS client: last report %+v, stderr:\n%s", c.report(), c.stderrText())
		}
	})
	return c
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (c *jsClient) report() jsReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *jsClient) stderrText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// wait waits for the client to exit and returns its last report, which
// must be its final one.
func (c *jsClient) wait(t *testing.T, timeout time.Duration) jsReport {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("the JS client did not finish within %s; last report %+v; stderr:\n%s", timeout, c.report(), c.stderrText())
	}
	r := c.report()
	if c.err != nil || !r.Done {
		t.Fatalf("the JS client exited with %v before its final report (last %+v); stderr:\n%s", c.err, r, c.stderrText())
	}
	return r
}

// stop closes the client's standard input (its signal to finish) and
// returns its final report.
func (c *jsClient) stop(t *testing.T) jsReport {
	t.Helper()
	c.stdin.Close()
	return c.wait(t, 30*time.Second)
}

// waitCalls waits until the client has made at least n calls.
func (c *jsClient) waitCalls(t *testing.T, n int, timeout time.Duration) jsReport {
	t.Helper()
	var r jsReport
	poll(t, timeout, fmt.Sprintf("the JS client making %d calls", n), func() error {
		select {
		case <-c.done:
			return fmt.Errorf("the JS client exited (%v); stderr: %s", c.err, c.stderrText())
		default:
		}
		if r = c.report(); r.Calls < n {
			return fmt.Errorf("%d calls so far (%+v)", r.Calls, r)
		}
		return nil
	})
	return r
}

// bootstrapFileEnv runs `gmesh bootstrap -o FILE` for nodeID and returns
// GRPC_XDS_BOOTSTRAP=FILE.
func bootstrapFileEnv(t *testing.T, stateDir, nodeID string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if out, err := gmesh(t, stateDir, "bootstrap", "--node-id", nodeID, "-o", path); err != nil {
		t.Fatalf("gmesh bootstrap: %v\n%s", err, out)
	}
	return bootstrap.EnvFile + "=" + path
}

// bootstrapConfigEnv runs `gmesh bootstrap` for nodeID and returns
// GRPC_XDS_BOOTSTRAP_CONFIG=<its standard output>.
func bootstrapConfigEnv(t *testing.T, stateDir, nodeID string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gmeshBin, "bootstrap", "--node-id", nodeID, "--state-dir", stateDir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("gmesh bootstrap: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	return bootstrap.EnvConfig + "=" + string(out)
}

// apply applies a manifest through the CLI.
func apply(t *testing.T, stateDir, manifest string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := gmesh(t, stateDir, "apply", "-f", path); err != nil {
		t.Fatalf("gmesh apply: %v\n%s\nmanifest:\n%s", err, out, manifest)
	}
}

// waitPublished waits until the control plane has published the store's
// current revision.
func waitPublished(t *testing.T, stateDir string) {
	t.Helper()
	want := status(t, stateDir).Revision
	poll(t, time.Minute, fmt.Sprintf("revision %d published", want), func() error {
		st := status(t, stateDir)
		if st.TranslateError != "" {
			return fmt.Errorf("translate error: %s", st.TranslateError)
		}
		if st.PublishedRevision < want {
			return fmt.Errorf("published revision %d", st.PublishedRevision)
		}
		return nil
	})
}

// echoRoute is the built-in stack's echo-server route with targets
// (virtual node: weight).
func echoRoute(targets ...string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: gmesh.dev/v1
kind: Route
metadata:
  name: echo-server-route
  mesh: echo
spec:
  virtualRouterName: echo-server
  grpcRoute:
    match:
      serviceName: proto.echo.EchoService
    action:
      weightedTargets:
`)
	for i := 0; i+1 < len(targets); i += 2 {
		fmt.Fprintf(&b, "        - {virtualNode: %s, weight: %s}\n", targets[i], targets[i+1])
	}
	b.WriteString(`    retryPolicy:
      grpcRetryEvents: [unavailable, cancelled]
      maxRetries: 2
      perRetryTimeout: {value: 1000, unit: ms}
    timeout:
      perRequest: {value: 2, unit: s}
`)
	return b.String()
}

// TestXDSClientJS is issue 11's "any xDS client can join" test: a
// JavaScript client (@grpc/grpc-js with @grpc/grpc-js-xds, pinned by
// testdata/xdsclient-js/package-lock.json), given the bootstrap `gmesh
// bootstrap` prints (as a file in GRPC_XDS_BOOTSTRAP, then as JSON in
// GRPC_XDS_BOOTSTRAP_CONFIG), dials xds:///echo-server.echo.local and
//
//   - follows a 90/10 weighted route over echo-server 0.9 and 1.0 (each
//     version within ±5 points of its weight over 2,000 calls);
//   - calls continuously through a full `gmesh deploy echo-server`, which
//     waits for it (as for every connected xDS client) to ACK each step:
//     0 failed calls, and only the new version answers after the deploy.
func TestXDSClientJS(t *testing.T) {
	node := nodeJS(t) // skip (or fail in CI) before starting anything
	stateDir := t.TempDir()
	v10 := buildEchoServer(t, "1.0")
	v11 := buildEchoServer(t, "1.1")
	startUp(t, stateDir)

	t.Run("weighted split", func(t *testing.T) {
		// A second version beside 0.9: its own virtual node, service and
		// task set (what `gmesh up` makes for a service of the stack).
		apply(t, stateDir, fmt.Sprintf(`apiVersion: gmesh.dev/v1
kind: VirtualNode
metadata:
  name: echo-split-1-0
  mesh: echo
spec:
  listeners:
    - portMapping: {port: 50051, protocol: grpc}
      healthCheck: {protocol: grpc, intervalMillis: 1000, timeoutMillis: 500, healthyThreshold: 2, unhealthyThreshold: 2}
  serviceDiscovery:
    registry:
      serviceName: echo-split
---
apiVersion: gmesh.dev/v1
kind: Service
metadata:
  name: echo-split
  mesh: echo
spec:
  virtualNode: echo-split-1-0
  program:
    command: [%q]
  version: "1.0"
  desiredCount: 1
  port: 50051
---
apiVersion: gmesh.dev/v1
kind: TaskSet
metadata:
  name: echo-split-1-0
  mesh: echo
spec:
  service: echo-split
  virtualNode: echo-split-1-0
  version: "1.0"
  revision: 1
  command: [%q]
  desiredCount: 1
  port: 50051
`, v10, v10))
		// Weight goes to a node only once it has a healthy endpoint.
		poll(t, 2*time.Minute, "echo-split's task healthy", func() error {
			for _, ep := range status(t, stateDir).Endpoints {
				if ep.Service == "echo-split" && ep.Serving() {
					return nil
				}
			}
			return fmt.Errorf("no serving echo-split endpoint")
		})
		apply(t, stateDir, echoRoute("echo-server-0-9", "90", "echo-split-1-0", "10"))
		waitPublished(t, stateDir)

		const calls = 2000
		bs := bootstrapFileEnv(t, stateDir, "e2e-js-split")
		c := startJSClient(t, node, bs, "--calls", fmt.Sprint(calls), "--concurrency", "4", "--max-seconds", "120")
		r := c.wait(t, 3*time.Minute)
		t.Logf("JS client over a 90/10 route: %d calls, %d failed, by version %v", r.Calls, r.Failed, r.Versions)
		if r.Calls != calls || r.Failed != 0 {
			t.Fatalf("JS client: %d calls, %d failed (%v); want %d calls, 0 failed", r.Calls, r.Failed, r.Errors, calls)
		}
		for v, want := range map[string]float64{"0.9": 90, "1.0": 10} {
			got := 100 * float64(r.Versions[v]) / calls
			if got < want-5 || got > want+5 {
				t.Errorf("version %s got %.1f%% of the JS client's calls (%v); want %.0f%% ±5", v, got, r.Versions, want)
			}
		}

		// Back to the built-in stack: 0.9 only, the extra service gone.
		apply(t, stateDir, echoRoute("echo-server-0-9", "100"))
		for _, ref := range [][]string{{"taskset", "echo-split-1-0"}, {"service", "echo-split"}, {"vn", "echo-split-1-0"}} {
			if out, err := gmesh(t, stateDir, "delete", ref[0], ref[1]); err != nil {
				t.Fatalf("gmesh delete %s %s: %v\n%s", ref[0], ref[1], err, out)
			}
		}
		poll(t, time.Minute, "echo-split's task gone", func() error {
			for _, ep := range status(t, stateDir).Endpoints {
				if ep.Service == "echo-split" {
					return fmt.Errorf("endpoint %s still registered", ep.ID)
				}
			}
			return nil
		})
	})
	if t.Failed() {
		return
	}

	t.Run("deploy", func(t *testing.T) {
		const nodeID = "e2e-js-deploy"
		bs := bootstrapConfigEnv(t, stateDir, nodeID)
		// 100 calls/s, bounded by 5 minutes; stopped through stdin below.
		c := startJSClient(t, node, bs, "--rps", "100", "--concurrency", "4", "--max-seconds", "300")
		c.waitCalls(t, 50, time.Minute)
		// The JS client is one of the xDS clients the rollout waits for.
		poll(t, 30*time.Second, "the JS client listed among the xDS clients", func() error {
			var ids []string
			for _, cl := range status(t, stateDir).Clients {
				ids = append(ids, cl.NodeID)
			}
			if !slices.Contains(ids, nodeID) {
				return fmt.Errorf("xDS clients %v", ids)
			}
			return nil
		})

		d := startDeploy(t, stateDir, "echo-server", "--binary", v11, "--interval", "5s", "--timeout", "2m")
		if err := d.wait(t, 4*time.Minute); err != nil {
			t.Fatalf("deploy failed: %v\n%s", err, d.output())
		}
		if !strings.Contains(d.output(), "Version 0.9 retired") {
			t.Errorf("deploy output does not say 0.9 was retired:\n%s", d.output())
		}
		// It ACKs the route configuration the control plane publishes last.
		poll(t, 30*time.Second, "the JS client ACKing the last published routes", func() error {
			st := status(t, stateDir)
			want := st.PublishedVersions[xds.RouteType]
			for _, cl := range st.Clients {
				if cl.NodeID == nodeID {
					if got := cl.Types[xds.RouteType].ACKedVersion; got != want {
						return fmt.Errorf("ACKed routes %q, published %q", got, want)
					}
					return nil
				}
			}
			return fmt.Errorf("not among the xDS clients")
		})
		during := c.report()
		// The calls after the deploy: only 1.1 answers them.
		after := c.waitCalls(t, during.Calls+200, time.Minute)
		final := c.stop(t)
		t.Logf("JS client through the deploy: %d calls, %d failed, by version %v", final.Calls, final.Failed, final.Versions)
		if final.Failed != 0 {
			t.Errorf("%d of the JS client's %d calls failed during the deploy: %v", final.Failed, final.Calls, final.Errors)
		}
		if n, n11 := after.Calls-during.Calls, after.Versions["1.1"]-during.Versions["1.1"]; n11 != n {
			t.Errorf("after the deploy finished 1.1 answered %d of the JS client's %d calls (%v then %v); want all", n11, n, during.Versions, after.Versions)
		}
		if final.Versions["0.9"] == 0 || final.Versions["1.1"] == 0 {
			t.Errorf("the JS client saw versions %v; want both 0.9 (before) and 1.1 (after)", final.Versions)
		}
		for _, ep := range status(t, stateDir).Endpoints {
			if ep.Service == "echo-server" && ep.Attributes[mesh.AttrVersion] != "1.1" {
				t.Errorf("echo-server task %s of version %s is still registered", ep.ID, ep.Attributes[mesh.AttrVersion])
			}
		}
	})
}

// TestTaskBootstrapAcceptedByGrpcJS: the bootstrap `gmesh up` gives its
// tasks (in GRPC_XDS_BOOTSTRAP_CONFIG, with the task id as node id) is one
// grpc-js-xds accepts, so a task written in JavaScript can use xDS too. The
// bootstrap gmesh gave its tasks before, without node.locality, is the
// control: grpc-js-xds refuses it.
func TestTaskBootstrapAcceptedByGrpcJS(t *testing.T) {
	node := nodeJS(t)
	task, err := bootstrap.JSON("127.0.0.1:15010", "echo-client-0-1-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, config, want string
		ok                 bool
	}{
		{"the tasks' bootstrap", string(task), "ok: node echo-client-0-1-1, server 127.0.0.1:15010", true},
		{"without node.locality", `{"xds_servers":[{"server_uri":"127.0.0.1:15010","channel_creds":[{"type":"insecure"}],"server_features":[]}],"node":{"id":"echo-client-0-1-1"}}`,
			"locality field missing in node element", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "check-bootstrap.js")
			cmd.Dir = jsClientDir
			cmd.Env = append(os.Environ(), bootstrap.EnvConfig+"="+tt.config)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok || !strings.Contains(string(out), tt.want) {
				t.Errorf("grpc-js-xds on %s: %v, %q; want ok=%v and %q", tt.name, err, out, tt.ok, tt.want)
			}
		})
	}
}
