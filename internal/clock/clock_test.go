package clock

import (
	"testing"
	"time"
)

func TestFakeTimers(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := NewFake(start)
	a := f.NewTimer(2 * time.Second)
	b := f.After(5 * time.Second)
	if got := f.Timers(); got != 2 {
		t.Fatalf("Timers() = %d, want 2", got)
	}
	f.Advance(time.Second)
	select {
	case <-a.C():
		t.Fatal("timer a fired after 1s, want 2s")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-a.C():
		if want := start.Add(2 * time.Second); !got.Equal(want) {
			t.Errorf("a fired at %v, want %v", got, want)
		}
	default:
		t.Fatal("timer a did not fire at 2s")
	}
	if a.Stop() {
		t.Error("Stop of a fired timer = true, want false")
	}
	armed := f.Armed()
	if a.Reset(time.Second) {
		t.Error("Reset of a fired timer = true, want false")
	}
	select {
	case <-armed:
	default:
		t.Error("Armed channel not closed by Reset")
	}
	f.Advance(10 * time.Second)
	select {
	case <-b:
	default:
		t.Fatal("After(5s) did not fire at 12s")
	}
	select {
	case <-a.C():
	default:
		t.Fatal("reset timer did not fire")
	}
	if got := f.Now(); !got.Equal(start.Add(12 * time.Second)) {
		t.Errorf("Now() = %v, want %v", got, start.Add(12*time.Second))
	}
	s := f.NewTimer(time.Second)
	if !s.Stop() {
		t.Error("Stop of an armed timer = false, want true")
	}
	f.Advance(time.Hour)
	select {
	case <-s.C():
		t.Error("stopped timer fired")
	default:
	}
}

func TestFakeChanged(t *testing.T) {
	f := NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	closed := func(what string, ch <-chan struct{}, want bool) {
		t.Helper()
		select {
		case <-ch:
			if !want {
				t.Errorf("%s: Changed channel closed, want open", what)
			}
		default:
			if want {
				t.Errorf("%s: Changed channel open, want closed", what)
			}
		}
	}
	ch := f.Changed()
	closed("nothing happened", ch, false)
	a := f.NewTimer(time.Second)
	closed("arm", ch, true)

	ch = f.Changed()
	f.Advance(time.Millisecond)
	closed("advance firing nothing", ch, false)
	f.Advance(time.Second)
	closed("fire", ch, true)
	if got := f.Timers(); got != 0 {
		t.Fatalf("Timers() = %d after firing, want 0", got)
	}

	ch = f.Changed()
	if a.Stop() {
		t.Error("Stop of a fired timer = true, want false")
	}
	closed("stop of a fired timer", ch, false)
	a.Reset(time.Second)
	closed("reset", ch, true)

	ch = f.Changed()
	if !a.Stop() {
		t.Error("Stop of an armed timer = false, want true")
	}
	closed("stop", ch, true)
	if got := f.Timers(); got != 0 {
		t.Errorf("Timers() = %d after stop, want 0", got)
	}
}
