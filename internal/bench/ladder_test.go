package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

// env is the ladder's fixture, built once per test binary run.
type env struct {
	echoes  *Echoes
	tcp     *TCPEcho
	mesh    *Mesh
	pass    *grpc.ClientConn
	rr      *grpc.ClientConn
	xds     *grpc.ClientConn
	httpStk *HTTPStack
}

var (
	envOnce sync.Once
	theEnv  *env
	envErr  error
)

func getEnv(tb testing.TB) *env {
	tb.Helper()
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		e := &env{}
		if e.echoes, envErr = StartEchoes("0.9", "1.0"); envErr != nil {
			return
		}
		if e.tcp, envErr = StartTCPEcho(); envErr != nil {
			return
		}
		if e.mesh, envErr = StartMesh(ctx, e.echoes, 50, 50); envErr != nil {
			return
		}
		if e.pass, envErr = DialPassthrough(e.echoes.Addrs[0]); envErr != nil {
			return
		}
		if e.rr, envErr = DialRoundRobin(e.echoes.Addrs); envErr != nil {
			return
		}
		if e.xds, envErr = e.mesh.Dial(); envErr != nil {
			return
		}
		for _, cc := range []*grpc.ClientConn{e.pass, e.rr, e.xds} {
			if envErr = Ready(ctx, echov1.NewEchoServiceClient(cc)); envErr != nil {
				return
			}
		}
		if e.httpStk, envErr = StartHTTPStack(ctx, e.mesh, e.echoes); envErr != nil {
			return
		}
		theEnv = e
	})
	if envErr != nil {
		tb.Fatalf("bench fixture: %v", envErr)
	}
	return theEnv
}

func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) != "" {
		os.Exit(RunChild())
	}
	code := m.Run()
	if theEnv != nil {
		theEnv.httpStk.Close()
		theEnv.mesh.Close()
		theEnv.echoes.Close()
		theEnv.tcp.Close()
	}
	if theTLSEnv != nil {
		theTLSEnv.Close()
	}
	os.Exit(code)
}

// runConcurrent splits b.N calls over c callers and reports latency
// quantiles and CPU per 1,000 calls; -benchmem adds allocs/op.
func runConcurrent(b *testing.B, c int, call CallFunc) {
	ctx := context.Background()
	for w := range c {
		if err := call(ctx, w); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	lats := make([][]time.Duration, c)
	var next sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	b.ResetTimer()
	u0 := ReadUsage()
	per := b.N / c
	for w := range c {
		n := per
		if w < b.N%c {
			n++
		}
		next.Add(1)
		go func() {
			defer next.Done()
			l := make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				if err := call(ctx, w); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				l = append(l, time.Since(t0))
			}
			lats[w] = l
		}()
	}
	next.Wait()
	b.StopTimer()
	d := ReadUsage().Sub(u0)
	if firstErr != nil {
		b.Fatalf("call: %v", firstErr)
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(Quantile(all, 0.5)), "p50-us")
	b.ReportMetric(us(Quantile(all, 0.9)), "p90-us")
	b.ReportMetric(us(Quantile(all, 0.99)), "p99-us")
	b.ReportMetric(d.CPU.Seconds()/float64(b.N)*1000, "cpu-s/1k")
}

// BenchmarkLadder is rungs 1-3 at concurrency 1, 8 and 64.
func BenchmarkLadder(b *testing.B) {
	e := getEnv(b)
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("rung=1-tcp/c=%d", c), func(b *testing.B) {
			call, closeConns, err := TCPCall(e.tcp.Addr(), c)
			if err != nil {
				b.Fatal(err)
			}
			defer closeConns()
			runConcurrent(b, c, call)
		})
		b.Run(fmt.Sprintf("rung=2-passthrough/c=%d", c), func(b *testing.B) {
			runConcurrent(b, c, EchoCall(echov1.NewEchoServiceClient(e.pass)))
		})
		b.Run(fmt.Sprintf("rung=2-roundrobin/c=%d", c), func(b *testing.B) {
			runConcurrent(b, c, EchoCall(echov1.NewEchoServiceClient(e.rr)))
		})
		b.Run(fmt.Sprintf("rung=3-gmesh-xds/c=%d", c), func(b *testing.B) {
			runConcurrent(b, c, EchoCall(echov1.NewEchoServiceClient(e.xds)))
		})
	}
}

// BenchmarkHTTP is rung 4 closed-loop: echo-client straight to a server,
// echo-client through the mesh, and gateway -> echo-client -> mesh.
func BenchmarkHTTP(b *testing.B) {
	e := getEnv(b)
	for _, c := range []int{1, 8, 64} {
		for _, path := range []string{"direct", "mesh", "gateway"} {
			b.Run(fmt.Sprintf("path=%s/c=%d", path, c), func(b *testing.B) {
				hc := NewHTTPClient(c)
				defer hc.CloseIdleConnections()
				runConcurrent(b, c, HTTPCall(hc, e.httpStk.URL(path)))
			})
		}
	}
}

// BenchmarkVariants is rung 3 under each attribution variant (see
// Variants), concurrency 1; the stack as shipped is restored after.
func BenchmarkVariants(b *testing.B) {
	e := getEnv(b)
	ctx := context.Background()
	defer func() {
		if err := e.mesh.ApplyVariant(ctx, Variants[0]); err != nil {
			b.Fatal(err)
		}
	}()
	for _, v := range Variants {
		b.Run("variant="+v.Key, func(b *testing.B) {
			if err := e.mesh.ApplyVariant(ctx, v); err != nil {
				b.Fatal(err)
			}
			client := echov1.NewEchoServiceClient(e.xds)
			if err := WaitRouting(context.Background(), client, v.Key == "single"); err != nil {
				b.Fatal(err)
			}
			runConcurrent(b, 1, EchoCall(client))
		})
	}
}
