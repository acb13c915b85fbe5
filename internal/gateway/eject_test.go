package gateway

import (
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// newFakeClock returns a fake clock for tests that drive health and ejection
// directly: they turn the health checker off, so no timer is armed.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Unix(1_700_000_000, 0)) }

func TestEjectionGrowsAndExpires(t *testing.T) {
	clk := newFakeClock()
	g, err := New(Config{Logger: quiet, Clock: clk, DisableHealthCheck: true, EjectAfter: 3, BaseEjection: 10 * time.Second, MaxEjection: 25 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g.SetBackends([]Backend{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "b", Addr: "127.0.0.1:2"}})
	a := g.backends[0]

	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second} {
		for range 2 {
			g.failed(a)
		}
		if g.Stats()["a"].Ejected {
			t.Fatalf("ejection %d: ejected before 3 failures in a row", i+1)
		}
		g.failed(a)
		if !g.Stats()["a"].Ejected {
			t.Fatalf("ejection %d: not ejected after 3 failures", i+1)
		}
		for range 10 {
			if b := g.pick(g.backends, nil); b == a {
				t.Fatalf("ejection %d: picked ejected a while b is available", i+1)
			}
		}
		clk.Advance(want - time.Millisecond)
		if !g.Stats()["a"].Ejected {
			t.Fatalf("ejection %d: back before %s", i+1, want)
		}
		clk.Advance(time.Millisecond)
		if g.Stats()["a"].Ejected {
			t.Fatalf("ejection %d: still ejected after %s", i+1, want)
		}
	}
	// A success resets the failure streak.
	g.failed(a)
	g.failed(a)
	g.succeeded(a)
	g.failed(a)
	if g.Stats()["a"].Ejected {
		t.Error("ejected although a success broke the streak")
	}
	// Passing health checks decay the ejection count while requests succeed.
	g.succeeded(a)
	for range 3 {
		g.recordCheck(a, nil)
	}
	if n := g.Stats()["a"].Ejections; n != 0 {
		t.Errorf("got %d ejections after 3 passing checks, want 0", n)
	}
}

func TestActiveHealthThresholds(t *testing.T) {
	g, err := New(Config{Logger: quiet, Clock: newFakeClock(), DisableHealthCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	g.SetBackends([]Backend{{ID: "a", Addr: "127.0.0.1:1"}})
	a := g.backends[0]
	fail := &statusError{code: 503}
	g.recordCheck(a, fail)
	if !g.Stats()["a"].Healthy {
		t.Fatal("unhealthy after 1 failed check, want 2")
	}
	g.recordCheck(a, fail)
	if g.Stats()["a"].Healthy {
		t.Fatal("healthy after 2 failed checks")
	}
	if b := g.pick(g.backends, nil); b != a {
		t.Fatal("panic mode: want the only backend even when unhealthy")
	}
	g.recordCheck(a, nil)
	if !g.Stats()["a"].Healthy {
		t.Fatal("not healthy after a passing check")
	}
}
