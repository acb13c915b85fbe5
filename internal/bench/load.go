// Package bench is gmesh's benchmark ladder: the same echo call over a raw
// loopback TCP round trip, grpc-go direct (passthrough and round robin), and
// through gmesh (xds:/// served by the real control plane), then HTTP
// through the gateway; plus the control plane's own costs. The _test.go
// benchmarks run each rung under go test -bench -benchmem; cmd/gmesh-bench
// runs them closed-loop and open-loop side by side and writes BENCHMARKS.md.
//
// Everything runs in one process on loopback, so CPU (getrusage) and
// allocations (runtime.MemStats.Mallocs, the counter -benchmem reads) are
// those of the whole call: client, server and, for the mesh rungs, the
// control plane idling beside them.
package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

// callCtx is the context of every measured call: not cancelable, as in the
// go test benchmarks (a cancelable parent makes grpc-go watch it, about 8
// more allocations per call on every rung alike). ctx only stops a run.
var callCtx = context.Background()

// CallFunc makes one request; worker is the caller's index (0..C-1), so a
// rung can give each caller its own connection.
type CallFunc func(ctx context.Context, worker int) error

// Result is one run of one rung.
type Result struct {
	Name        string
	Concurrency int     // closed loop: callers; 0 for open loop
	Rate        float64 // open loop: target requests per second
	N           int     // requests completed (successes and errors)
	Errors      int
	Wall        time.Duration
	P50, P90    time.Duration
	P99, Max    time.Duration
	RPS         float64
	CPUPer1k    float64 // CPU seconds (user+sys, whole process) per 1,000 requests
	AllocsPer   float64 // heap allocations per request (whole process)
	BytesPer    float64 // heap bytes allocated per request
	LateSends   int     // open loop: sends more than 1 ms after their schedule
	lat         []time.Duration
}

// Latencies returns the sorted samples.
func (r *Result) Latencies() []time.Duration { return r.lat }

// Merge combines runs of the same rung (rounds interleaved with other
// rungs) into one result: samples pooled, rates and costs over the total.
func Merge(rs ...*Result) *Result {
	if len(rs) == 0 {
		return nil
	}
	out := &Result{Name: rs[0].Name, Concurrency: rs[0].Concurrency, Rate: rs[0].Rate}
	var cpu, allocs, bytes float64
	for _, r := range rs {
		out.N += r.N
		out.Errors += r.Errors
		out.Wall += r.Wall
		out.LateSends += r.LateSends
		out.lat = append(out.lat, r.lat...)
		cpu += r.CPUPer1k * float64(r.N) / 1000
		allocs += r.AllocsPer * float64(r.N)
		bytes += r.BytesPer * float64(r.N)
	}
	slices.Sort(out.lat)
	out.fill()
	if out.N > 0 {
		out.CPUPer1k = cpu / float64(out.N) * 1000
		out.AllocsPer = allocs / float64(out.N)
		out.BytesPer = bytes / float64(out.N)
	}
	if out.Wall > 0 {
		out.RPS = float64(out.N) / out.Wall.Seconds()
	}
	return out
}

func (r *Result) fill() {
	r.P50 = Quantile(r.lat, 0.50)
	r.P90 = Quantile(r.lat, 0.90)
	r.P99 = Quantile(r.lat, 0.99)
	r.Max = Quantile(r.lat, 1)
}

// Quantile of sorted samples (nearest rank); 0 for none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Usage is a snapshot of the process's CPU time and allocation counters.
type Usage struct {
	CPU     time.Duration
	Mallocs uint64
	Bytes   uint64
	At      time.Time
}

// ReadUsage reads getrusage(RUSAGE_SELF) and runtime.MemStats.
func ReadUsage() Usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Usage{
		CPU:     time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		Mallocs: ms.Mallocs,
		Bytes:   ms.TotalAlloc,
		At:      time.Now(),
	}
}

// Sub returns u - v.
func (u Usage) Sub(v Usage) Usage {
	return Usage{CPU: u.CPU - v.CPU, Mallocs: u.Mallocs - v.Mallocs, Bytes: u.Bytes - v.Bytes, At: u.At}
}

func (r *Result) cost(d Usage, wall time.Duration) {
	r.Wall = wall
	if r.N > 0 {
		r.CPUPer1k = d.CPU.Seconds() / float64(r.N) * 1000
		r.AllocsPer = float64(d.Mallocs) / float64(r.N)
		r.BytesPer = float64(d.Bytes) / float64(r.N)
	}
	if wall > 0 {
		r.RPS = float64(r.N) / wall.Seconds()
	}
}

// ClosedLoop runs c callers back to back for d (at least one call each).
// warm calls per caller run first, unmeasured.
func ClosedLoop(ctx context.Context, name string, c int, d time.Duration, warm int, call CallFunc) (*Result, error) {
	for w := range c {
		for range warm {
			if err := call(ctx, w); err != nil {
				return nil, fmt.Errorf("%s: warm-up call: %w", name, err)
			}
		}
	}
	runtime.GC()
	lats := make([][]time.Duration, c)
	errs := make([]int, c)
	var wg sync.WaitGroup
	start := make(chan struct{})
	var deadline time.Time
	for w := range c {
		lats[w] = make([]time.Duration, 0, 1<<14)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					return
				}
				err := call(callCtx, w)
				lats[w] = append(lats[w], time.Since(t0))
				if err != nil {
					errs[w]++
				}
			}
		}()
	}
	u0 := ReadUsage()
	deadline = u0.At.Add(d)
	close(start)
	wg.Wait()
	u1 := ReadUsage()
	r := &Result{Name: name, Concurrency: c}
	for w := range c {
		r.lat = append(r.lat, lats[w]...)
		r.Errors += errs[w]
	}
	r.N = len(r.lat)
	slices.Sort(r.lat)
	r.fill()
	r.cost(u1.Sub(u0), u1.At.Sub(u0.At))
	return r, nil
}

// OpenLoop sends at rate per second for d, on a pool of workers, whatever
// the answers' latency; each latency runs from the moment the pacer sent the
// request, so a stall counts against every request queued behind it (no
// coordinated omission). workers bounds the requests in flight (the caller's
// connections); a request waits for a free worker on the clock.
func OpenLoop(ctx context.Context, name string, rate float64, d time.Duration, workers int, call CallFunc) (*Result, error) {
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d / interval)
	if n < 1 {
		n = 1
	}
	sched := make(chan time.Time, n)
	lats := make([][]time.Duration, workers)
	errs := make([]int, workers)
	late := 0
	var wg sync.WaitGroup
	for w := range workers {
		lats[w] = make([]time.Duration, 0, n/workers+16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := range sched {
				err := call(callCtx, w)
				lats[w] = append(lats[w], time.Since(at))
				if err != nil {
					errs[w]++
				}
			}
		}()
	}
	runtime.GC()
	u0 := ReadUsage()
	start := u0.At
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		if ctx.Err() != nil {
			break
		}
		// Latency runs from the actual send (the pacer's own wake-up
		// jitter, about a millisecond of timer granularity here, is not
		// the system's); a request that waits for a busy worker still
		// counts its wait.
		now := time.Now()
		if now.Sub(at) > time.Millisecond {
			late++
		}
		sched <- now
	}
	close(sched)
	wg.Wait()
	u1 := ReadUsage()
	r := &Result{Name: name, Rate: rate}
	for w := range workers {
		r.lat = append(r.lat, lats[w]...)
		r.Errors += errs[w]
	}
	r.LateSends = late
	r.N = len(r.lat)
	slices.Sort(r.lat)
	r.fill()
	r.cost(u1.Sub(u0), u1.At.Sub(u0.At))
	return r, nil
}
