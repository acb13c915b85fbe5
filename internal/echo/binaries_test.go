package echo

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinaries builds the real echo-server and echo-client into a temp dir.
func buildBinaries(t *testing.T, ldflags string) (server, client string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries; skipped with -short")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	args = append(args, "github.com/gmesh-dev/gmesh/cmd/echo-server", "github.com/gmesh-dev/gmesh/cmd/echo-client")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "echo-server"), filepath.Join(dir, "echo-client")
}

// proc is a started binary whose stderr lines are collected.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	added chan struct{} // signalled on each new line
	done  chan struct{} // closed when the process exited
	err   error
}

// cleanEnv is the test's environment without the variables the binaries
// read, plus kv.
func cleanEnv(kv ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case EnvPort, EnvHost, EnvMetricsPort, EnvSaid, EnvTLSCert, EnvTLSKey, EnvTLSCA, EnvDrainDelay,
			EnvShutdownTimeout, EnvFailRate, EnvFailCode, EnvLatency, EnvEchoHost, EnvTimeout,
			EnvXDSBootstrapConfig, EnvXDSBootstrapFile:
			continue
		}
		env = append(env, e)
	}
	return append(env, kv...)
}

func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, added: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.added <- struct{}{}:
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), strings.Join(p.snapshot(), "\n"))
		}
	})
	return p
}

func (p *proc) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for a stderr line matching re and returns its submatches.
func (p *proc) waitLine(re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		for _, l := range p.snapshot() {
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		select {
		case <-p.added:
		case <-p.done:
			for _, l := range p.snapshot() {
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			}
			p.t.Fatalf("process exited (%v) before logging %v", p.err, re)
		case <-deadline.C:
			p.t.Fatalf("no line matching %v within 15s", re)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("exit after SIGTERM: %v, want status 0", p.err)
		}
	case <-time.After(15 * time.Second):
		p.t.Fatal("no exit within 15s of SIGTERM")
	}
}

func (p *proc) wait() error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(15 * time.Second):
		p.t.Fatal("no exit within 15s")
		return nil
	}
}

var (
	reServerStart = regexp.MustCompile(`Starting on port: (\d+), ssl: false`)
	reMetrics     = regexp.MustCompile(`metrics listening.*addr=(http://\S+)`)
	reListening   = regexp.MustCompile(`Listening to port: (\d+)`)
)

// The reference's local flow with the real binaries: server, client, curl.
func TestBinariesEndToEnd(t *testing.T) {
	serverBin, clientBin := buildBinaries(t, "")

	out, err := exec.Command(serverBin, "--version").Output()
	if err != nil || string(out) != "0.9\n" {
		t.Errorf("echo-server --version = %q, %v; want %q", out, err, "0.9\n")
	}

	srv := startProc(t, serverBin, cleanEnv("PORT=0", "HOST=127.0.0.1", "METRICS_PORT=0", "ECHO_DRAIN_DELAY=200ms", "ECHO_LATENCY=1ms"))
	port := srv.waitLine(reServerStart)[1]
	metricsURL := srv.waitLine(reMetrics)[1]
	srv.waitLine(regexp.MustCompile(`Echo Server Version 0\.9`))
	srv.waitLine(regexp.MustCompile(`level=WARN.*latency`))

	cli := startProc(t, clientBin, cleanEnv("PORT=0", "HOST=127.0.0.1", "ECHO_HOST=127.0.0.1:"+port))
	cliPort := cli.waitLine(reListening)[1]
	cli.waitLine(regexp.MustCompile(`Echo Client 0\.1`))
	cli.waitLine(regexp.MustCompile(`Echo Client connecting to 127\.0\.0\.1:` + port))
	base := "http://127.0.0.1:" + cliPort

	code, body, _ := httpDo(t, "GET", base+"/?name=Yizumi")
	if want := "Response from the server: Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"; code != 200 || body != want {
		t.Errorf("curl = %d %q, want 200 %q", code, body, want)
	}
	waitFor(t, "client readiness", 10*time.Second, func() bool {
		code, _, _ := httpDo(t, "GET", base+"/readyz")
		return code == 200
	})
	cli.waitLine(regexp.MustCompile(`msg=request method=GET path=/ status=200`))
	if code, body, _ := httpDo(t, "GET", metricsURL); code != 200 || !strings.Contains(body, `grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService",version="0.9"} 1`) {
		t.Errorf("server metrics = %d, lacking the one OK call:\n%s", code, body)
	}

	cli.stop()
	srv.stop()
	srv.waitLine(regexp.MustCompile(`draining: health is NOT_SERVING`))
}

func TestBinariesVersionStampAndStartErrors(t *testing.T) {
	serverBin, clientBin := buildBinaries(t, "-X main.stampedVersion=1.0")
	out, err := exec.Command(serverBin, "--version").Output()
	if err != nil || string(out) != "1.0\n" {
		t.Errorf("stamped echo-server --version = %q, %v; want %q", out, err, "1.0\n")
	}

	// xds:/// without a bootstrap: a clear one-line error, non-zero exit.
	p := startProc(t, clientBin, cleanEnv("PORT=0", "HOST=127.0.0.1", "ECHO_HOST=xds:///echo-server.echo.local"))
	if err := p.wait(); err == nil {
		t.Error("echo-client with xds:/// and no bootstrap exited 0")
	}
	if lines := p.snapshot(); len(lines) != 1 || !strings.Contains(lines[0], "GRPC_XDS_BOOTSTRAP_CONFIG") {
		t.Errorf("stderr = %q, want one line naming GRPC_XDS_BOOTSTRAP_CONFIG", lines)
	}

	// xds:/// with a bootstrap (pointing at no control plane): it starts,
	// is live, and is not ready.
	bootstrap := `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"echo-test"}}`
	x := startProc(t, clientBin, cleanEnv("PORT=0", "HOST=127.0.0.1", "ECHO_HOST=xds:///echo-server.echo.local", "GRPC_XDS_BOOTSTRAP_CONFIG="+bootstrap))
	base := "http://127.0.0.1:" + x.waitLine(reListening)[1]
	if code, _, _ := httpDo(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("xds client /healthz = %d, want 200", code)
	}
	if code, body, _ := httpDo(t, "GET", base+"/readyz"); code != 503 {
		t.Errorf("xds client with no control plane /readyz = %d %q, want 503", code, body)
	}
	x.stop()

	// A missing TLS file: the server says which, and exits non-zero.
	s := startProc(t, serverBin, cleanEnv("PORT=0", "HOST=127.0.0.1", "ECHO_TLS_CERT=/nonexistent/cert.pem", "ECHO_TLS_KEY=/nonexistent/key.pem"))
	if err := s.wait(); err == nil {
		t.Error("echo-server with a missing cert exited 0")
	}
	if !strings.Contains(strings.Join(s.snapshot(), "\n"), "/nonexistent/cert.pem") {
		t.Errorf("stderr = %q, want it to name the missing file", s.snapshot())
	}
}
