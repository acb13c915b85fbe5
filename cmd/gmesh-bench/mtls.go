package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/bench"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// mtlsHeading starts the section -mtls writes; it lives in the kept part
// of BENCHMARKS.md, so `make bench` leaves it alone.
const mtlsHeading = "## mTLS beside plaintext (issue 14)"

// mtlsReport is what -mtls measured.
type mtlsReport struct {
	opts                  options
	cmdline               string
	began                 time.Time
	elapsed               time.Duration
	loadBefore, loadAfter string
	rungs                 []string // names, in column order
	closed                [][][]*bench.Result
	// closed[c][rung][round]
	conc        []int
	coldNames   []string
	cold        [][]time.Duration // by cold kind: latency per round
	coldCPU     [][]time.Duration
	hsKinds     []string
	hsLat       [][]time.Duration // by kind: per-round median handshake
	hsCPU       [][]time.Duration // by kind: per-round CPU per handshake
	republished int
	security    string // what the mTLS path's calls went over
	hsPer       int    // handshakes per kind and round
}

// runMTLS measures the ladder's rung 3 beside the same call through
// grpc-go's xDS server in plain text and with gmesh's mTLS (and mTLS with
// the RBAC filter stripped), closed loop, rounds interleaved; cold starts;
// and the handshake alone. It writes its section into o.out, keeping the
// rest of the file.
func runMTLS(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r := &mtlsReport{opts: o, began: time.Now(), loadBefore: loadavg(), conc: []int{1, 8, 64}}
	r.cmdline = "go run ./cmd/gmesh-bench " + strings.Join(os.Args[1:], " ")

	logf("starting fixtures")
	echoes, err := bench.StartEchoes("0.9", "1.0")
	if err != nil {
		return err
	}
	defer echoes.Close()
	m, err := bench.StartMesh(ctx, echoes, 50, 50)
	if err != nil {
		return err
	}
	defer m.Close()
	xcc, err := m.Dial()
	if err != nil {
		return err
	}
	defer xcc.Close()
	if err := bench.Ready(ctx, echov1.NewEchoServiceClient(xcc)); err != nil {
		return err
	}
	tm, err := bench.StartTLSMesh(ctx)
	if err != nil {
		return err
	}
	defer tm.Close()

	rungs := []rung{{name: "3 gmesh xds:/// 50/50 (the ladder's rung 3: plain grpc.Server, insecure credentials, plaintext xDS channel)", call: bench.EchoCall(echov1.NewEchoServiceClient(xcc))}}
	for _, p := range bench.Paths {
		rungs = append(rungs, rung{name: p.Name, call: bench.EchoCall(echov1.NewEchoServiceClient(tm.Conns[p.Key]))})
	}
	for _, rg := range rungs {
		r.rungs = append(r.rungs, rg.name)
	}
	noRBAC := 1 + slices.IndexFunc(bench.Paths, func(p bench.Path) bool { return p.NoRBAC })

	for _, c := range r.conc {
		logf("closed loop, concurrency %d, %d rounds", c, o.rounds)
		per, err := interleaveRounds(ctx, o.rounds, rungs, func(i int, rg rung) (*bench.Result, error) {
			if i == noRBAC {
				if err := tm.EnsureNoRBAC(ctx); err != nil {
					return nil, err
				}
			}
			return bench.ClosedLoop(ctx, rg.name, c, o.closedDur, 50, rg.call)
		})
		if err != nil {
			return err
		}
		r.closed = append(r.closed, per)
	}

	n := 30
	if o.quick {
		n = 4
	}
	logf("cold starts, %d rounds", n)
	plain, mtls := bench.Paths[0], bench.Paths[1]
	colds := []struct {
		name string
		dial func() (*grpc.ClientConn, error)
	}{
		{"the ladder's rung 3 (plaintext xDS channel, plain server, insecure credentials)", m.Dial},
		{"xDS server, plaintext listener (TLS xDS channel, xDS credentials)", func() (*grpc.ClientConn, error) { return tm.Dial(plain) }},
		{"xDS server, STRICT: mTLS + RBAC (TLS xDS channel, xDS credentials)", func() (*grpc.ClientConn, error) { return tm.Dial(mtls) }},
	}
	r.cold = make([][]time.Duration, len(colds))
	r.coldCPU = make([][]time.Duration, len(colds))
	for _, c := range colds {
		r.coldNames = append(r.coldNames, c.name)
	}
	for round := range n {
		for k := range colds {
			i := (k + round) % len(colds)
			lat, cpu, err := bench.ColdStartOnce(ctx, colds[i].dial)
			if err != nil {
				return fmt.Errorf("%s: %w", colds[i].name, err)
			}
			r.cold[i] = append(r.cold[i], lat)
			r.coldCPU[i] = append(r.coldCPU[i], cpu)
		}
	}

	logf("handshakes, %d rounds", o.rounds)
	dir, err := os.MkdirTemp("", "gmesh-bench-hs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := pki.LoadOrCreate(filepath.Join(dir, "ca"), nil)
	if err != nil {
		return err
	}
	r.hsKinds = []string{bench.HandshakeTCP, bench.HandshakeTLS, bench.HandshakeMTLS}
	var hss []*bench.Handshaker
	for _, k := range r.hsKinds {
		h, err := bench.NewHandshaker(ca, k)
		if err != nil {
			return err
		}
		defer h.Close()
		if _, _, err := h.Run(20); err != nil { // warm-up
			return err
		}
		hss = append(hss, h)
	}
	r.hsLat = make([][]time.Duration, len(hss))
	r.hsCPU = make([][]time.Duration, len(hss))
	per := 500
	if o.quick {
		per = 50
	}
	r.hsPer = per
	for round := range o.rounds {
		for k := range hss {
			i := (k + round) % len(hss)
			lat, cpu, err := hss[i].Run(per)
			if err != nil {
				return err
			}
			r.hsLat[i] = append(r.hsLat[i], bench.Quantile(lat, 0.5))
			r.hsCPU[i] = append(r.hsCPU[i], cpu)
		}
	}
	r.republished = tm.Republished
	r.security = tm.Security[bench.Paths[1].Key]
	r.elapsed = time.Since(r.began)
	r.loadAfter = loadavg()

	text := r.markdown()
	if o.out == "-" {
		_, err = os.Stdout.WriteString(text)
		return err
	}
	logf("writing %s (%s)", o.out, r.elapsed.Round(time.Second))
	old, err := os.ReadFile(o.out)
	if err != nil {
		return err
	}
	return os.WriteFile(o.out, []byte(replaceSection(string(old), mtlsHeading, text)), 0o644)
}

// replaceSection replaces the section starting with heading (up to the
// next "## " heading) with text, or, when there is none, inserts text right
// after the kept-part marker's line (or at the end).
func replaceSection(doc, heading, text string) string {
	text = strings.TrimRight(text, "\n") + "\n\n"
	if i := strings.Index(doc, heading+"\n"); i >= 0 {
		end := len(doc)
		if j := strings.Index(doc[i+len(heading):], "\n## "); j >= 0 {
			end = i + len(heading) + j + 1
		}
		return doc[:i] + text + doc[end:]
	}
	if i := strings.Index(doc, keptMarker); i >= 0 {
		j := strings.Index(doc[i:], "\n")
		if j >= 0 {
			at := i + j + 1
			return doc[:at] + "\n" + text + strings.TrimLeft(doc[at:], "\n")
		}
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + text
}

// interleaveRounds runs every rung once per round, rotating the order
// each round, and returns each rung's rounds (per[rung][round]).
func interleaveRounds(ctx context.Context, rounds int, rungs []rung, one func(int, rung) (*bench.Result, error)) ([][]*bench.Result, error) {
	per := make([][]*bench.Result, len(rungs))
	for round := range rounds {
		for k := range rungs {
			i := (k + round) % len(rungs)
			res, err := one(i, rungs[i])
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			per[i] = append(per[i], res)
		}
	}
	return per, nil
}

// median of the values (the mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func durs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

func field(rs []*bench.Result, f func(*bench.Result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, x := range rs {
		out[i] = f(x)
	}
	return out
}

func p50(x *bench.Result) float64 { return float64(x.P50) / float64(time.Microsecond) }
func p99(x *bench.Result) float64 { return float64(x.P99) / float64(time.Microsecond) }
func cpuUs(x *bench.Result) float64 {
	return x.CPUPer1k * 1000 // CPU s per 1k calls = ms per call; µs per call
}
func rps(x *bench.Result) float64 { return x.RPS }

// paired is the median over rounds of f(a's round, b's round).
func paired(a, b []*bench.Result, f func(a, b *bench.Result) float64) float64 {
	var v []float64
	for i := range min(len(a), len(b)) {
		v = append(v, f(a[i], b[i]))
	}
	return median(v)
}

func spread(v []float64, format string) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf(format+" (%s–%s)", median(v), fmt.Sprintf(format, s[0]), fmt.Sprintf(format, s[len(s)-1]))
}

func (r *mtlsReport) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	o := r.opts
	w("%s", mtlsHeading)
	w("")
	w("Written by `%s` (`make bench-mtls`), %s in all; it rewrites this section only. The ladder's rung 3 beside the same echo call through grpc-go's xDS server, once with a plaintext listener and once as a STRICT virtual node serves it in a mesh with TLS on: mutual TLS 1.3 with ECDSA P-256 workload certificates from `internal/pki` (1 h, issued into files as `gmesh up` issues a task's, read by grpc-go's `file_watcher` provider), the client checking the server's SPIFFE ID, and gmesh's RBAC filter on the server admitting the callers whose backends list the service. Both xDS paths run the same server type (`xds.NewGRPCServer` with xDS credentials) and the same client (xDS credentials, TLS xDS channel to a control plane with the mesh CA, node `echo-client-0-1`), so **mTLS + RBAC minus plaintext listener is the cost of TLS and RBAC alone**. A third path has the RBAC filter stripped from its servers' listeners (an experiment: gmesh's translation, edited after the fact and published by the harness), so mTLS + RBAC minus it is RBAC's share.", r.cmdline, r.elapsed.Round(time.Second))
	w("")
	w("- **Machine:** a shared 2-core machine (%d cores seen, %s), %s/%s, %s; grpc-go %s. Shared with four other engineers' builds and tests: load average %s before, %s after. Absolute figures move with the load; the rungs ran interleaved (each round runs every rung once, in rotating order) so it falls on all of them, and each figure below is the **median over the %d rounds** (min–max in brackets), deltas and ratios the median of the per-round pairs.",
		runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), depVersion("google.golang.org/grpc"), r.loadBefore, r.loadAfter, o.rounds)
	w("- **Method:** closed loop, %s per rung and round, everything in one process on loopback as in the ladder (64-byte name; CPU is getrusage user+sys of the whole process: client, servers, both control planes; allocations whole-process, pooled over the rounds). Each path is two servers (0.9 and 1.0) behind the echo stack's route at 50/50 with its retry policy, timeout and outlier detection, so one connection per server: a handshake only at connect, then TLS records on each call's HTTP/2 frames. The mTLS path's calls went over %s (checked on a call's peer before measuring; the plaintext path's over plain text).", o.closedDur, r.security)
	if r.republished > 0 {
		w("- The control plane republished over the stripped listeners %d time(s) during the run; the harness stripped them again before the next RBAC-less run.", r.republished)
	}
	w("")

	plainI, mtlsI, noRBACI := 1, 2, 3
	w("### Goals (issue 14): mTLS adds at most +10 µs p50 and +10%% CPU per call at concurrency 1 and 8")
	w("")
	w("| concurrency | added p50 (mTLS + RBAC − plaintext listener) | CPU per call, mTLS + RBAC / plaintext | p50 verdict | CPU verdict | of which RBAC (mTLS + RBAC − mTLS without RBAC): p50, CPU |")
	w("|--:|--:|--:|---|---|--:|")
	for ci, c := range r.conc {
		rs := r.closed[ci]
		dp50 := paired(rs[mtlsI], rs[plainI], func(a, b *bench.Result) float64 { return p50(a) - p50(b) })
		cr := paired(rs[mtlsI], rs[plainI], func(a, b *bench.Result) float64 { return cpuUs(a) / cpuUs(b) })
		rbacP50 := paired(rs[mtlsI], rs[noRBACI], func(a, b *bench.Result) float64 { return p50(a) - p50(b) })
		rbacCPU := paired(rs[mtlsI], rs[noRBACI], func(a, b *bench.Result) float64 { return cpuUs(a) - cpuUs(b) })
		goal := c <= 8
		v1, v2 := "–", "–"
		if goal {
			v1, v2 = verdict(dp50 <= 10), verdict(cr <= 1.10)
		}
		w("| %d | %+.1f µs | %.2fx (%+.1f µs) | %s | %s | %+.1f µs, %+.1f µs |", c, dp50, cr,
			paired(rs[mtlsI], rs[plainI], func(a, b *bench.Result) float64 { return cpuUs(a) - cpuUs(b) }), v1, v2, rbacP50, rbacCPU)
	}
	w("")
	for ci, c := range r.conc {
		rs := r.closed[ci]
		w("### Concurrency %d", c)
		w("")
		w("| rung | p50 µs | p99 µs | req/s | CPU µs / call | allocs / call | B / call | errors |")
		w("|---|--:|--:|--:|--:|--:|--:|--:|")
		for i, name := range r.rungs {
			pooled := bench.Merge(rs[i]...)
			w("| %s | %s | %s | %s | %s | %.0f | %.0f | %d/%d |", name,
				spread(field(rs[i], p50), "%.1f"), spread(field(rs[i], p99), "%.0f"), spread(field(rs[i], rps), "%.0f"), spread(field(rs[i], cpuUs), "%.1f"),
				pooled.AllocsPer, pooled.BytesPer, pooled.Errors, pooled.N)
		}
		w("")
	}

	w("### Cold start: a fresh channel to its first reply")
	w("")
	w("A new ClientConn with its own xDS client (new node id: the ADS stream, the listener, route, cluster and endpoints fetched, then the connection to the server picked) until its first reply; CPU of the whole process meanwhile. %d rounds, the three kinds in rotating order. In a mesh with TLS on, both xDS paths also open a TLS xDS channel (gRFC A65) to the control plane, so *STRICT minus plaintext listener* is the server connection's handshake (and the xDS credentials' certificate checks).", len(r.cold[0]))
	w("")
	w("| fresh channel to | p50 | p90 | CPU per cold start (median) |")
	w("|---|--:|--:|--:|")
	for i, name := range r.coldNames {
		s := slices.Clone(r.cold[i])
		slices.Sort(s)
		w("| %s | %s | %s | %s |", name, ms(bench.Quantile(s, 0.5)), ms(bench.Quantile(s, 0.9)), ms(time.Duration(median(durs(r.coldCPU[i])))))
	}
	if len(r.cold) >= 3 {
		var dl, dc []float64
		for i := range r.cold[1] {
			dl = append(dl, float64(r.cold[2][i]-r.cold[1][i]))
			dc = append(dc, float64(r.coldCPU[2][i]-r.coldCPU[1][i]))
		}
		w("")
		w("mTLS adds **%s** to a cold start at the median of paired rounds, and **%s** of CPU.", ms(time.Duration(median(dl))), ms(time.Duration(median(dc))))
	}
	w("")
	w("### The handshake alone")
	w("")
	w("A new loopback TCP connection and its handshake, client and server in this process (`bench.Handshaker`, what `BenchmarkHandshake` runs): TCP connect only; TLS 1.3 with the server's certificate only; mutual TLS 1.3 as gmesh's workloads do it (both sides ECDSA P-256 from the mesh CA, each verifying the other's chain and SPIFFE ID with `internal/pki`, no session resumption: grpc-go's xDS credentials keep no session cache). Go's default key exchange (X25519MLKEM768), TLS_AES_128_GCM_SHA256. %d rounds × %d handshakes, kinds in rotating order; per round the median handshake and the CPU per handshake, then the median over rounds.", o.rounds, r.hsPer)
	w("")
	w("| handshake | time µs (median) | CPU µs per handshake, client + server |")
	w("|---|--:|--:|")
	for i, k := range r.hsKinds {
		w("| %s | %s | %s |", k, spread(durUs(r.hsLat[i]), "%.0f"), spread(durUs(r.hsCPU[i]), "%.0f"))
	}
	w("")
	return b.String()
}

func durUs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	return out
}
