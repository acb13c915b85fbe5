// Command gmesh-bench runs gmesh's benchmark ladder closed-loop and
// open-loop, the control-plane measurements and the `gmesh up` start-up, in
// one run on this machine, and writes the figures to BENCHMARKS.md (each
// against its baseline measured in the same run).
//
//	go run ./cmd/gmesh-bench -out BENCHMARKS.md
//
// With -mtls it measures only the mTLS rungs beside plaintext (issue 14)
// and rewrites that section of the file:
//
//	go run ./cmd/gmesh-bench -mtls -out BENCHMARKS.md
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/bench"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

type options struct {
	out       string
	closedDur time.Duration
	openDur   time.Duration
	rounds    int
	rate      float64
	upRuns    int
	quick     bool
	mtls      bool
}

func main() {
	if os.Getenv(bench.ChildEnv) != "" {
		os.Exit(bench.RunChild())
	}
	var o options
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "report to write (\"-\": stdout)")
	flag.DurationVar(&o.closedDur, "closed", 2*time.Second, "closed-loop duration of each rung, per round")
	flag.DurationVar(&o.openDur, "open", 4*time.Second, "open-loop duration of each rung, per round")
	flag.IntVar(&o.rounds, "rounds", 4, "rounds; rungs run interleaved in each round, in rotating order")
	flag.Float64Var(&o.rate, "rate", 1000, "open-loop rate, requests per second")
	flag.IntVar(&o.upRuns, "up-runs", 2, "measured gmesh up start-ups (after one warm-up run); 0 skips")
	flag.BoolVar(&o.quick, "quick", false, "short smoke run (figures are not worth publishing)")
	flag.BoolVar(&o.mtls, "mtls", false, "measure only mTLS beside plaintext (issue 14) and rewrite that section of -out (rounds default to 7)")
	flag.Parse()
	if o.mtls {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			o.rounds = 7
		}
	}
	if o.quick {
		o.closedDur, o.openDur, o.rounds, o.upRuns = 300*time.Millisecond, 500*time.Millisecond, 1, 0
	}
	run := run
	if o.mtls {
		run = runMTLS
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "gmesh-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// rung is one step of the ladder.
type rung struct {
	name    string
	call    bench.CallFunc // for concurrency c, callers 0..c-1
	workers int
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	began := time.Now()
	r := &report{opts: o, began: began, loadBefore: loadavg()}
	r.cmdline = "go run ./cmd/gmesh-bench " + strings.Join(os.Args[1:], " ")

	logf("starting fixtures")
	echoes, err := bench.StartEchoes("0.9", "1.0")
	if err != nil {
		return err
	}
	defer echoes.Close()
	tcp, err := bench.StartTCPEcho()
	if err != nil {
		return err
	}
	defer tcp.Close()
	m, err := bench.StartMesh(ctx, echoes, 50, 50)
	if err != nil {
		return err
	}
	defer m.Close()
	pass, err := bench.DialPassthrough(echoes.Addrs[0])
	if err != nil {
		return err
	}
	rr, err := bench.DialRoundRobin(echoes.Addrs)
	if err != nil {
		return err
	}
	xcc, err := m.Dial()
	if err != nil {
		return err
	}
	for _, cc := range []*grpc.ClientConn{pass, rr, xcc} {
		if err := bench.Ready(ctx, echov1.NewEchoServiceClient(cc)); err != nil {
			return err
		}
	}
	hs, err := bench.StartHTTPStack(ctx, m, echoes)
	if err != nil {
		return err
	}
	defer hs.Close()

	tcpCall, closeTCP, err := bench.TCPCall(tcp.Addr(), 64)
	if err != nil {
		return err
	}
	defer closeTCP()
	grpcRungs := []rung{
		{name: "1 loopback TCP round trip", call: tcpCall},
		{name: "2 grpc-go direct, passthrough (1 server)", call: bench.EchoCall(echov1.NewEchoServiceClient(pass))},
		{name: "2 grpc-go direct, round robin (2 servers)", call: bench.EchoCall(echov1.NewEchoServiceClient(rr))},
		{name: "3 gmesh xds:/// 50/50", call: bench.EchoCall(echov1.NewEchoServiceClient(xcc))},
	}
	// Closed loop.
	for _, c := range []int{1, 8, 64} {
		logf("closed loop, concurrency %d", c)
		res, err := interleave(ctx, o.rounds, grpcRungs, func(rg rung) (*bench.Result, error) {
			return bench.ClosedLoop(ctx, rg.name, c, o.closedDur, 50, rg.call)
		})
		if err != nil {
			return err
		}
		r.closed = append(r.closed, res)
	}
	// Open loop.
	logf("open loop at %.0f rps", o.rate)
	r.open, err = interleave(ctx, o.rounds, grpcRungs, func(rg rung) (*bench.Result, error) {
		return bench.OpenLoop(ctx, rg.name, o.rate, o.openDur, 64, rg.call)
	})
	if err != nil {
		return err
	}

	// Rung 4: HTTP.
	hc := bench.NewHTTPClient(64)
	httpRungs := []rung{
		{name: "echo-client -> echo-server (direct)", call: bench.HTTPCall(hc, hs.URL("direct"))},
		{name: "echo-client -> mesh -> echo-server", call: bench.HTTPCall(hc, hs.URL("mesh"))},
		{name: "gateway -> echo-client -> mesh -> echo-server", call: bench.HTTPCall(hc, hs.URL("gateway"))},
	}
	logf("http open loop at %.0f rps", o.rate)
	r.httpOpen, err = interleave(ctx, o.rounds, httpRungs, func(rg rung) (*bench.Result, error) {
		return bench.OpenLoop(ctx, rg.name, o.rate, o.openDur+o.openDur/4, 64, rg.call)
	})
	if err != nil {
		return err
	}
	for _, c := range []int{1, 8} {
		logf("http closed loop, concurrency %d", c)
		res, err := interleave(ctx, o.rounds, httpRungs, func(rg rung) (*bench.Result, error) {
			return bench.ClosedLoop(ctx, rg.name, c, o.closedDur, 20, rg.call)
		})
		if err != nil {
			return err
		}
		r.httpClosed = append(r.httpClosed, res)
	}
	hc.CloseIdleConnections()

	// Attribution: the same xDS rung with parts of the echo stack's route
	// and node policy removed, at concurrency 1 and 8.
	logf("attribution variants")
	if r.attrib, err = attribution(ctx, o, m, xcc, rr); err != nil {
		return err
	}

	// Control plane.
	n := 30
	if o.quick {
		n = 5
	}
	logf("cold start")
	if r.coldMesh, r.coldDirect, err = bench.ColdStart(ctx, m, echoes.Addrs[0], n); err != nil {
		return err
	}
	logf("weight changes")
	for _, clients := range []int{1, 10} {
		wc, err := bench.WeightChange(ctx, m, clients, 2*n)
		if err != nil {
			return err
		}
		r.weight = append(r.weight, wc)
	}
	logf("traffic follows")
	if r.trafficLat, r.trafficAck, err = bench.TrafficFollows(ctx, m, n/2); err != nil {
		return err
	}
	logf("translate + publish")
	srs, err := bench.StackResources(50, 50)
	if err != nil {
		return err
	}
	if _, r.smallTP, err = bench.TranslatePublishCost(srs, []*mesh.Endpoint{echoes.Endpoint(0), echoes.Endpoint(1)}, 4*n); err != nil {
		return err
	}
	brs, beps := bench.BigMesh(50, 100)
	if r.bigTranslate, r.bigTP, err = bench.TranslatePublishCost(brs, beps, 10); err != nil {
		return err
	}
	r.bigNodes, r.bigEndpoints = 100, len(beps)
	logf("memory per client")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	clients := 1000
	if o.quick {
		clients = 100
	}
	for _, per := range []int{1, 50} {
		cm, err := bench.MeasureClientMemory(ctx, m, exe, clients, per)
		if err != nil {
			return err
		}
		r.mem = append(r.mem, cm)
	}

	// gmesh up.
	if o.upRuns > 0 {
		logf("gmesh up start-up (1 warm-up + %d)", o.upRuns)
		for i := range o.upRuns + 1 {
			u, err := gmeshUp(ctx, i)
			if err != nil {
				r.upErr = err.Error()
				break
			}
			if i > 0 {
				r.up = append(r.up, u)
			}
		}
	}
	r.benchmem, r.benchmemErr = goTestBenchmem(ctx, o)
	r.elapsed = time.Since(began)
	r.loadAfter = loadavg()

	text := r.markdown()
	if o.out == "-" {
		_, err = io.WriteString(os.Stdout, text)
		return err
	}
	logf("writing %s (%s)", o.out, r.elapsed.Round(time.Second))
	// Sections measured by other commands (`make bench-deploy`) follow
	// keptMarker and survive a rewrite.
	if old, err := os.ReadFile(o.out); err == nil {
		if i := strings.Index(string(old), keptMarker); i >= 0 {
			text = strings.TrimRight(text, "\n") + "\n\n" + string(old[i:])
		}
	}
	return os.WriteFile(o.out, []byte(text), 0o644)
}

// keptMarker starts the part of BENCHMARKS.md this harness does not write.
const keptMarker = "<!-- kept by gmesh-bench:"

// interleave runs every rung once per round, rotating the order each round
// so no rung always runs first, and merges each rung's rounds.
func interleave(ctx context.Context, rounds int, rungs []rung, one func(rung) (*bench.Result, error)) ([]*bench.Result, error) {
	per, err := interleaveRounds(ctx, rounds, rungs, func(_ int, rg rung) (*bench.Result, error) { return one(rg) })
	if err != nil {
		return nil, err
	}
	out := make([]*bench.Result, len(rungs))
	for i := range rungs {
		out[i] = bench.Merge(per[i]...)
	}
	return out, nil
}

type attribRow struct {
	name   string
	c1, c8 *bench.Result
}

// attribution applies the stack variants (bench.Variants) to the running
// mesh, waits for the clients, and runs the xDS rung beside round robin for
// each.
func attribution(ctx context.Context, o options, m *bench.Mesh, xcc, rr *grpc.ClientConn) ([]attribRow, error) {
	xc := bench.EchoCall(echov1.NewEchoServiceClient(xcc))
	rc := bench.EchoCall(echov1.NewEchoServiceClient(rr))
	var rows []attribRow
	var rrc1, rrc8 []*bench.Result
	for _, v := range bench.Variants {
		if err := m.ApplyVariant(ctx, v); err != nil {
			return nil, fmt.Errorf("variant %q: %w", v.Name, err)
		}
		if err := bench.WaitRouting(ctx, echov1.NewEchoServiceClient(xcc), v.Key == "single"); err != nil {
			return nil, fmt.Errorf("variant %q: %w", v.Name, err)
		}
		row := attribRow{name: v.Name}
		var c1, c8 []*bench.Result
		for range o.rounds {
			for _, c := range []int{1, 8} {
				a, err := bench.ClosedLoop(ctx, v.Name, c, o.closedDur/2, 50, xc)
				if err != nil {
					return nil, err
				}
				b, err := bench.ClosedLoop(ctx, "rr", c, o.closedDur/2, 50, rc)
				if err != nil {
					return nil, err
				}
				if c == 1 {
					c1, rrc1 = append(c1, a), append(rrc1, b)
				} else {
					c8, rrc8 = append(c8, a), append(rrc8, b)
				}
			}
		}
		row.c1, row.c8 = bench.Merge(c1...), bench.Merge(c8...)
		rows = append(rows, row)
	}
	rows = append(rows, attribRow{name: "round robin (baseline, all variants' runs pooled)", c1: bench.Merge(rrc1...), c8: bench.Merge(rrc8...)})
	// Back to the stack as shipped.
	return rows, m.ApplyVariant(ctx, bench.Variants[0])
}

type upRun struct {
	reported time.Duration // the `Ready in` figure
	wall     time.Duration // from exec to the Ready line
	line     string
}

var readyRE = regexp.MustCompile(`Ready in ([0-9.]+[a-zµ]+)`)

// gmeshUp runs `go run ./cmd/gmesh up` on a fresh state directory, reads
// its Ready line, and stops it with SIGTERM.
func gmeshUp(ctx context.Context, i int) (*upRun, error) {
	dir, err := os.MkdirTemp("", "gmesh-bench-up-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	base := fmt.Sprintf("127.0.%d", 200+(os.Getpid()+i)%50)
	cmd := exec.Command("go", "run", "./cmd/gmesh", "up", "--state-dir", filepath.Join(dir, "state"),
		"--listen", "127.0.0.1:0", "--task-ip-base", base, "--dashboard", "off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pgid := cmd.Process.Pid
	stop := func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
	}
	found := make(chan *upRun, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var tail []string
		for sc.Scan() {
			line := sc.Text()
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
			if mm := readyRE.FindStringSubmatch(line); mm != nil {
				d, _ := time.ParseDuration(strings.ReplaceAll(mm[1], "µ", "u"))
				found <- &upRun{reported: d, wall: time.Since(t0), line: strings.TrimSpace(line)}
				io.Copy(io.Discard, out)
				return
			}
		}
		found <- &upRun{line: strings.Join(tail, " | ")}
	}()
	select {
	case u := <-found:
		stop()
		if u.wall == 0 {
			return nil, fmt.Errorf("gmesh up ended without a Ready line: %s", u.line)
		}
		return u, nil
	case <-time.After(3 * time.Minute):
		stop()
		return nil, fmt.Errorf("gmesh up: no Ready line within 3 minutes")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// goTestBenchmem runs the hot-path go test benchmarks with -benchmem, so
// the report carries go test's own allocs/op beside the harness's.
func goTestBenchmem(ctx context.Context, o options) (string, error) {
	n := "3000x"
	if o.quick {
		n = "200x"
	}
	logf("go test -bench -benchmem (%s)", n)
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "Ladder|Variants|HTTP/path=.*/c=1$", "-benchmem", "-benchtime", n, "./internal/bench")
	b, err := cmd.CombinedOutput()
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "ok") || strings.HasPrefix(l, "FAIL") {
			keep = append(keep, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(keep, "\n"), err
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "?"
}

func depVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "?"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "?"
}

var _ = runtime.NumCPU
