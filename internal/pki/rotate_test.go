package pki_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

func newRotator(t *testing.T, iss pki.Issuer, clk clock.Clock) *pki.Rotator {
	t.Helper()
	r, err := pki.NewRotator(pki.RotatorConfig{Issuer: iss, Lifetime: time.Hour, Clock: clk, RetryMin: time.Second, RetryMax: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newCA(t *testing.T, clk clock.Clock) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), clk)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func serial(t *testing.T, f pki.Files) string {
	t.Helper()
	_, leaf, err := f.Read()
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

func TestRotatorAddWritesFiles(t *testing.T) {
	clk := clock.NewFake(t0)
	ca := newCA(t, clk)
	r := newRotator(t, ca, clk)
	dir := filepath.Join(t.TempDir(), "task-1", "tls")
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	f := pki.Files{Dir: dir}
	for _, p := range []string{f.Identity(), f.Bundle()} {
		if got := mode(t, p); got != 0o600 {
			t.Errorf("%s mode %04o, want 0600", p, got)
		}
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("%s mode %04o, want 0700", dir, got)
	}
	_, leaf, err := f.Read()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(ca.BundlePEM()) {
		t.Error("bundle file is not the CA's bundle")
	}
	if got := leaf.URIs[0].String(); got != echoID.String() {
		t.Errorf("URI SAN %s, want %s", got, echoID)
	}
	st, err := r.Status(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(30 * time.Minute); !st.RenewAt.Equal(want) {
		t.Errorf("RenewAt %s, want half-life %s", st.RenewAt, want)
	}
	if err := r.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove: stat %s = %v, want it gone", dir, err)
	}
}

// TestRotationOnFakeClock: nothing is rewritten before half-life; at
// half-life the files hold a new certificate, long before the old expires.
func TestRotationOnFakeClock(t *testing.T) {
	clk := clock.NewFake(t0)
	r := newRotator(t, newCA(t, clk), clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	f := pki.Files{Dir: dir}
	first := serial(t, f)

	clk.Set(t0.Add(30*time.Minute - time.Second))
	if next := r.RenewDue(); !next.Equal(t0.Add(30 * time.Minute)) {
		t.Errorf("next renewal %s, want %s", next, t0.Add(30*time.Minute))
	}
	if got := serial(t, f); got != first {
		t.Fatal("rewritten before half-life")
	}
	clk.Set(t0.Add(30 * time.Minute))
	r.RenewDue()
	second := serial(t, f)
	if second == first {
		t.Fatal("not rewritten at half-life")
	}
	_, leaf, _ := f.Read()
	if want := t0.Add(90 * time.Minute); !leaf.NotAfter.Equal(want) {
		t.Errorf("renewed NotAfter %s, want %s", leaf.NotAfter, want)
	}
	st, _ := r.Status(dir)
	if st.Renewals != 1 || !st.RenewAt.Equal(t0.Add(60*time.Minute)) {
		t.Errorf("status %+v, want 1 renewal and the next at %s", st, t0.Add(60*time.Minute))
	}
}

// TestRunRenews drives Run, the loop production uses, on the fake clock.
func TestRunRenews(t *testing.T) {
	clk := clock.NewFake(t0)
	r := newRotator(t, newCA(t, clk), clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	armed := clk.Armed()
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	f := pki.Files{Dir: dir}
	for i := range 3 {
		select {
		case <-armed: // Run waits for the next renewal
		case <-ctx.Done():
			t.Fatal("Run armed no timer")
		}
		before := serial(t, f)
		armed = clk.Armed()
		// Add's wake-up may make Run stop and re-arm its first timer:
		// poll until one is armed rather than read it once.
		var next time.Time
		pollUntil(ctx, t, "a renewal timer armed", func() bool {
			var ok bool
			next, ok = clk.NextDeadline()
			return ok
		})
		if want := t0.Add(time.Duration(i+1) * 30 * time.Minute); !next.Equal(want) {
			t.Errorf("renewal %d due %s, want %s", i+1, next, want)
		}
		clk.Set(next)
		pollUntil(ctx, t, fmt.Sprintf("renewal %d: files rewritten", i+1), func() bool { return serial(t, f) != before })
	}
}

// flaky fails while fail is set.
type flaky struct {
	pki.Issuer
	fail  atomic.Bool
	calls atomic.Int32
}

func (f *flaky) Issue(id pki.ID, lifetime time.Duration) (*pki.Identity, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, errors.New("signer unavailable")
	}
	return f.Issuer.Issue(id, lifetime)
}

// TestRenewalFailure: a failed renewal leaves the old files, retries with a
// doubling wait up to RetryMax, and the next success resets it.
func TestRenewalFailure(t *testing.T) {
	clk := clock.NewFake(t0)
	iss := &flaky{Issuer: newCA(t, clk)}
	r := newRotator(t, iss, clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	f := pki.Files{Dir: dir}
	first := serial(t, f)
	iss.fail.Store(true)
	clk.Set(t0.Add(30 * time.Minute))
	var waits []time.Duration
	for range 5 {
		next := r.RenewDue()
		waits = append(waits, next.Sub(clk.Now()))
		clk.Set(next)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("retry waits %v, want %v", waits, want)
			break
		}
	}
	if got := serial(t, f); got != first {
		t.Error("a failed renewal changed the files")
	}
	st, _ := r.Status(dir)
	if st.Failures != 5 || st.LastError == nil || !strings.Contains(st.LastError.Error(), "signer unavailable") {
		t.Errorf("status %+v, want 5 failures and the issuer's error", st)
	}
	iss.fail.Store(false)
	r.RenewDue()
	if serial(t, f) == first {
		t.Error("not renewed once the issuer recovered")
	}
	if st, _ := r.Status(dir); st.Failures != 0 || st.LastError != nil || st.Renewals != 1 {
		t.Errorf("after recovery: status %+v, want no failures and 1 renewal", st)
	}
}

func TestAddFailureReturnsError(t *testing.T) {
	clk := clock.NewFake(t0)
	iss := &flaky{Issuer: newCA(t, clk)}
	iss.fail.Store(true)
	r := newRotator(t, iss, clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err == nil {
		t.Fatal("Add with a failing issuer: got no error")
	}
	if _, err := r.Status(dir); err == nil {
		t.Error("a failed Add is scheduled")
	}
	if next := r.RenewDue(); !next.IsZero() {
		t.Errorf("next renewal %s, want none", next)
	}
}

// TestReaderNeverSeesMismatchedPair reads the identity file as grpc-go does
// (X509KeyPair of what it read) in a tight loop while the rotator rewrites
// it 50 times: every read is a whole, matching pair.
func TestReaderNeverSeesMismatchedPair(t *testing.T) {
	clk := clock.NewFake(t0)
	r := newRotator(t, newCA(t, clk), clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	f := pki.Files{Dir: dir}
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		reads   atomic.Int64
		badMu   sync.Mutex
		bad     []error
		serials sync.Map
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_, leaf, err := f.Read()
				reads.Add(1)
				if err != nil {
					badMu.Lock()
					bad = append(bad, err)
					badMu.Unlock()
					continue
				}
				serials.Store(leaf.SerialNumber.String(), true)
			}
		}()
	}
	for range 50 {
		clk.Advance(30 * time.Minute)
		r.RenewDue()
	}
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d reads failed; first: %v", len(bad), reads.Load(), bad[0])
	}
	n := 0
	serials.Range(func(any, any) bool { n++; return true })
	t.Logf("%d reads saw %d different certificates, all whole pairs", reads.Load(), n)
	if n < 2 {
		t.Errorf("readers saw %d certificates; want them to have read during rotation", n)
	}
}

// TestPemfileProviderFollowsRotation points grpc-go's own file_watcher
// provider at the files, as the bootstrap does (the identity file as both
// certificate and key file), and checks it serves the renewed certificate.
func TestPemfileProviderFollowsRotation(t *testing.T) {
	clk := clock.NewFake(time.Now()) // the provider checks nothing against time; real time keeps the certificates valid
	r := newRotator(t, newCA(t, clk), clk)
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	f := pki.Files{Dir: dir}
	prov, err := pemfile.NewProvider(pemfile.Options{CertFile: f.Identity(), KeyFile: f.Identity(), RootFile: f.Bundle(), RefreshDuration: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for i := range 3 {
		want := serial(t, f)
		pollUntil(ctx, t, fmt.Sprintf("rotation %d: the provider serving certificate %s", i, want), func() bool {
			km, err := prov.KeyMaterial(ctx)
			if err != nil {
				t.Fatalf("rotation %d: KeyMaterial: %v", i, err)
			}
			if km.Roots == nil || len(km.Certs) != 1 {
				t.Fatalf("rotation %d: key material has roots %v and %d certificates; want roots and 1", i, km.Roots != nil, len(km.Certs))
			}
			return km.Certs[0].Leaf.SerialNumber.String() == want
		})
		clk.Advance(30 * time.Minute)
		r.RenewDue()
	}
}

func TestNewRotatorRefusesLifetime(t *testing.T) {
	clk := clock.NewFake(t0)
	for _, d := range []time.Duration{time.Second, 31 * 24 * time.Hour} {
		if _, err := pki.NewRotator(pki.RotatorConfig{Issuer: newCA(t, clk), Lifetime: d}); err == nil || !strings.Contains(err.Error(), "lifetime") {
			t.Errorf("lifetime %s: got %v, want an error about the lifetime", d, err)
		}
	}
}

func TestRefreshInterval(t *testing.T) {
	for _, tt := range []struct{ lifetime, want time.Duration }{
		{time.Hour, time.Minute},
		{10 * time.Minute, 10 * time.Second},
		{time.Minute, 5 * time.Second},
		{24 * time.Hour, time.Minute},
	} {
		if got := pki.RefreshInterval(tt.lifetime); got != tt.want {
			t.Errorf("RefreshInterval(%s) = %s, want %s", tt.lifetime, got, tt.want)
		}
	}
}

// pollUntil checks cond every millisecond until it holds, failing t when
// ctx ends first.
func pollUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not by the test's deadline", what)
		case <-tick.C:
		}
	}
}

// TestChangedHook: Changed is called once per renewal and per failed
// attempt, with the directory, without the Rotator's lock held (it may
// read Status), and not when nothing was due.
func TestChangedHook(t *testing.T) {
	clk := clock.NewFake(t0)
	iss := &flaky{Issuer: newCA(t, clk)}
	var r *pki.Rotator
	var calls []string
	var seen []pki.Status
	r, err := pki.NewRotator(pki.RotatorConfig{Issuer: iss, Lifetime: time.Hour, Clock: clk, Changed: func(dir string) {
		calls = append(calls, dir)
		st, err := r.Status(dir) // would deadlock under the lock
		if err != nil {
			t.Errorf("Status(%s) in Changed: %v", dir, err)
		}
		seen = append(seen, st)
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := r.Add(dir, echoID); err != nil {
		t.Fatal(err)
	}
	r.RenewDue()
	if len(calls) != 0 {
		t.Fatalf("Changed called %v with nothing due", calls)
	}
	clk.Set(t0.Add(30 * time.Minute))
	r.RenewDue()
	iss.fail.Store(true)
	clk.Set(t0.Add(60 * time.Minute))
	r.RenewDue()
	if len(calls) != 2 || calls[0] != dir || calls[1] != dir {
		t.Fatalf("Changed calls %v, want [%s %s]", calls, dir, dir)
	}
	if seen[0].Renewals != 1 || seen[1].Failures != 1 || seen[1].LastError == nil {
		t.Errorf("statuses seen in Changed %+v, want a renewal then a failure", seen)
	}
}
