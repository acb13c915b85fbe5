package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// wantsBox is the keeper's wants, changed by the test.
type wantsBox struct {
	mu    sync.Mutex
	wants []identity.Want
	err   error
}

func (b *wantsBox) get() ([]identity.Want, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.wants), b.err
}

func (b *wantsBox) set(ws ...identity.Want) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wants = ws
}

func echoWant(accounts ...string) identity.Want {
	return identity.Want{Namespace: "echo", VirtualNode: "echo-server-0-9", UID: "vn-uid-1",
		Mesh: "echo", Node: "echo-server-0-9.echo", ServiceAccounts: accounts}
}

// failingIssuer fails while fail is set (a CA that has expired).
type failingIssuer struct {
	ca   *pki.CA
	mu   sync.Mutex
	fail bool
}

func (f *failingIssuer) Issue(id pki.ID, lifetime time.Duration) (*pki.Identity, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return nil, errors.New("ca expired (test)")
	}
	return f.ca.Issue(id, lifetime)
}

func (f *failingIssuer) BundlePEM() []byte { return f.ca.BundlePEM() }

func (f *failingIssuer) setFail(v bool) {
	f.mu.Lock()
	f.fail = v
	f.mu.Unlock()
}

type fixture struct {
	clk     *clock.Fake
	kube    *kubefake.Clientset
	ca      *pki.CA
	issuer  *failingIssuer
	wants   *wantsBox
	changed chan struct{}
	keeper  *identity.Keeper
}

func newFixture(t *testing.T, lifetime time.Duration, ws ...identity.Want) *fixture {
	t.Helper()
	f := &fixture{clk: clock.NewFake(t0), kube: newKube(), wants: &wantsBox{wants: ws}, changed: make(chan struct{}, 1)}
	certPEM, keyPEM, err := pki.NewCAPEM(f.clk)
	if err != nil {
		t.Fatal(err)
	}
	if f.ca, err = pki.ParseCA(certPEM, keyPEM, "ca.crt", "ca.key", f.clk); err != nil {
		t.Fatal(err)
	}
	f.issuer = &failingIssuer{ca: f.ca}
	f.keeper, err = identity.NewKeeper(f.kube, f.issuer, f.wants.get, identity.KeeperOptions{
		Lifetime: lifetime, Changed: f.changed, Resync: time.Hour, Clock: f.clk, Logger: k8sfakeLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// lead runs the keeper's Lead until the returned stop is called (or the
// test ends); stop checks that Lead returned and left no goroutine.
func (f *fixture) lead(t *testing.T) (stop func()) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.keeper.Lead(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Lead: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Lead did not return within 10s of cancel")
			}
			goleak.VerifyNone(t, ignore)
		})
	}
	t.Cleanup(stop)
	return stop
}

// idle waits until Lead has made its pass and waits on a timer.
func (f *fixture) idle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ch := f.clk.Changed()
		if f.clk.Timers() == 1 {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("the keeper never waited on its timer")
		}
	}
}

// identityOf parses a service account's identity in a Secret as a
// workload does, and checks it against the Secret's bundle as a peer would.
func identityOf(t *testing.T, sec *corev1.Secret, w identity.Want, sa string, at time.Time) *x509.Certificate {
	t.Helper()
	v, ok := sec.Data[identity.KeyFor(sa)]
	if !ok {
		t.Fatalf("secret %s/%s has no key %s (keys %v)", sec.Namespace, sec.Name, identity.KeyFor(sa), keysOf(sec.Data))
	}
	if !strings.HasPrefix(string(v), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("identity value does not begin with the key, as identity.pem does")
	}
	pair, err := tls.X509KeyPair(v, v)
	if err != nil {
		t.Fatalf("identity %s: %v", sa, err)
	}
	leaf := pair.Leaf
	wantURI := fmt.Sprintf("spiffe://%s.gmesh.local/ns/%s/sa/%s/vn/%s", w.Mesh, w.Namespace, sa, w.Node)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantURI {
		t.Errorf("URI SANs %v, want [%s]", leaf.URIs, wantURI)
	}
	bundle := sec.Data[identity.BundleKey]
	if err := pki.VerifyPeer([]*x509.Certificate{leaf}, bundle, w.ID(sa), at); err != nil {
		t.Errorf("as a server: %v", err)
	}
	if id, err := pki.VerifyClient([]*x509.Certificate{leaf}, bundle, at); err != nil || id != w.ID(sa) {
		t.Errorf("as a client: %v, %v; want %v", id, err, w.ID(sa))
	}
	return leaf
}

func TestKeeperSecrets(t *testing.T) {
	ctx := context.Background()
	w := echoWant("default")
	f := newFixture(t, 10*time.Minute, w)
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	name := identity.SecretName("echo-server-0-9")
	sec := getSecret(t, f.kube, "echo", name)
	if sec.Labels[identity.LabelManaged] != "true" {
		t.Errorf("labels %v, want %s=true", sec.Labels, identity.LabelManaged)
	}
	if len(sec.OwnerReferences) != 1 {
		t.Fatalf("owner references %+v, want the virtual node", sec.OwnerReferences)
	}
	o := sec.OwnerReferences[0]
	if o.APIVersion != "appmesh.k8s.aws/v1beta2" || o.Kind != "VirtualNode" || o.Name != "echo-server-0-9" || o.UID != "vn-uid-1" ||
		o.Controller == nil || *o.Controller || o.BlockOwnerDeletion == nil || *o.BlockOwnerDeletion {
		t.Errorf("owner reference %+v", o)
	}
	if string(sec.Data[identity.BundleKey]) != string(f.ca.BundlePEM()) {
		t.Error("ca.pem is not the CA bundle")
	}
	if len(sec.Data) != 2 {
		t.Errorf("keys %v, want ca.pem and default.identity.pem", keysOf(sec.Data))
	}
	leaf := identityOf(t, sec, w, "default", t0)
	if got, want := leaf.NotAfter, t0.Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("NotAfter %s, want %s", got, want)
	}
	st := f.keeper.Status()
	if len(st) != 1 || st[0].Name != name || !st[0].NotAfter.Equal(leaf.NotAfter) || st[0].Failures != 0 {
		t.Errorf("status %+v", st)
	}

	// Nothing changed: nothing written.
	rv := sec.ResourceVersion
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := getSecret(t, f.kube, "echo", name).ResourceVersion; got != rv {
		t.Errorf("a pass with nothing to do wrote the secret (resourceVersion %s -> %s)", rv, got)
	}

	// A pod with another service account.
	w2 := echoWant("billing", "default")
	f.wants.set(w2)
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	sec2 := getSecret(t, f.kube, "echo", name)
	identityOf(t, sec2, w2, "billing", t0)
	if string(sec2.Data[identity.KeyFor("default")]) != string(sec.Data[identity.KeyFor("default")]) {
		t.Error("adding a service account reissued the others'")
	}

	// Its pods are gone: its key goes.
	f.wants.set(w)
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if sec3 := getSecret(t, f.kube, "echo", name); len(sec3.Data) != 2 || sec3.Data[identity.KeyFor("billing")] != nil {
		t.Errorf("keys %v after billing's pods went, want ca.pem and default's", keysOf(sec3.Data))
	}

	// A Secret of that name that is not gmesh's is left alone.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: identity.SecretName("cart")}, Data: map[string][]byte{"x": []byte("y")}}
	if _, err := f.kube.CoreV1().Secrets("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cart := identity.Want{Namespace: "shop", VirtualNode: "cart", UID: "vn-uid-2", Mesh: "echo", Node: "cart.shop", ServiceAccounts: []string{"default"}}
	f.wants.set(w, cart)
	err := f.keeper.Reconcile(ctx)
	if err == nil || !strings.Contains(err.Error(), "shop/"+identity.SecretName("cart")) || !strings.Contains(err.Error(), "not gmesh's") {
		t.Errorf("a foreign secret in the way: got %v, want an error naming it", err)
	}
	if got := getSecret(t, f.kube, "shop", identity.SecretName("cart")); len(got.Data) != 1 {
		t.Errorf("the foreign secret was changed: keys %v", keysOf(got.Data))
	}

	// The node is no longer in a mesh with TLS on: its Secret is deleted.
	f.wants.set()
	f.clk.Advance(2 * time.Minute) // past the foreign secret's retry
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.kube.CoreV1().Secrets("echo").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("secret of a gone want: get = %v, want not found", err)
	}
	if _, err := f.kube.CoreV1().Secrets("shop").Get(ctx, identity.SecretName("cart"), metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign secret: %v, want it kept", err)
	}
	if st := f.keeper.Status(); len(st) != 0 {
		t.Errorf("status %+v after every want went, want none", st)
	}
}

// Lead renews a certificate at half its lifetime on the fake clock, and
// wakes on Changed for a new service account.
func TestKeeperRenews(t *testing.T) {
	const lifetime = 10 * time.Minute
	w := echoWant("default")
	f := newFixture(t, lifetime, w)
	name := identity.SecretName(w.VirtualNode)
	stop := f.lead(t)
	f.idle(t)
	first := identityOf(t, getSecret(t, f.kube, "echo", name), w, "default", t0)
	if d, ok := f.clk.NextDeadline(); !ok || !d.Equal(t0.Add(lifetime/2)) {
		t.Errorf("next wake %v, want the renewal at %v", d, t0.Add(lifetime/2))
	}

	f.clk.Advance(lifetime / 2)
	f.idle(t)
	sec := getSecret(t, f.kube, "echo", name)
	renewed := identityOf(t, sec, w, "default", f.clk.Now())
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("not renewed at half its lifetime")
	}
	if got, want := renewed.NotAfter, t0.Add(lifetime/2+lifetime); !got.Equal(want) {
		t.Errorf("renewed NotAfter %s, want %s", got, want)
	}
	if !renewed.NotBefore.Before(f.clk.Now()) {
		t.Error("the renewed certificate is not valid at once")
	}

	// A new service account: Changed wakes the keeper before any timer.
	w2 := echoWant("billing", "default")
	f.wants.set(w2)
	f.poke()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k8sfake.PollUntil(ctx, t, "billing's identity", func() (bool, error) {
		_, ok := getSecret(t, f.kube, "echo", name).Data[identity.KeyFor("billing")]
		return ok, nil
	})
	stop()
}

// A failed write is retried with backoff (1 s, 2 s, ...) and the old
// certificate stays until a renewal succeeds; so does a failing CA.
func TestKeeperRetries(t *testing.T) {
	const lifetime = 10 * time.Minute
	w := echoWant("default")
	f := newFixture(t, lifetime, w)
	name := identity.SecretName(w.VirtualNode)
	if err := f.keeper.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, f.kube, "echo", name)

	var mu sync.Mutex
	failUpdates := 2
	f.kube.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if failUpdates > 0 {
			failUpdates--
			return true, nil, apierrors.NewInternalError(errors.New("etcd is unhappy"))
		}
		return false, nil, nil
	})
	f.lead(t)
	f.idle(t)
	half := t0.Add(lifetime / 2)
	f.clk.Set(half)
	f.idle(t)
	for i, wait := range []time.Duration{time.Second, 2 * time.Second} {
		st := f.keeper.Status()
		if len(st) != 1 || st[0].Failures != i+1 || st[0].LastError == nil || !strings.Contains(st[0].LastError.Error(), "echo/"+name) {
			t.Fatalf("after failure %d: status %+v", i+1, st)
		}
		if d, _ := f.clk.NextDeadline(); !d.Equal(f.clk.Now().Add(wait)) {
			t.Fatalf("after failure %d: retry at %v, want in %s", i+1, d, wait)
		}
		if got := getSecret(t, f.kube, "echo", name); string(got.Data[identity.KeyFor("default")]) != string(before.Data[identity.KeyFor("default")]) {
			t.Fatal("the old certificate is gone after a failed renewal")
		}
		f.clk.Advance(wait)
		f.idle(t)
	}
	renewed := identityOf(t, getSecret(t, f.kube, "echo", name), w, "default", f.clk.Now())
	if !renewed.NotAfter.After(t0.Add(lifetime)) {
		t.Fatalf("not renewed after the API recovered: NotAfter %s", renewed.NotAfter)
	}
	if st := f.keeper.Status(); st[0].Failures != 0 || !st[0].NotAfter.Equal(renewed.NotAfter) {
		t.Errorf("status after recovery %+v", st)
	}

	// The CA cannot issue: the certificate stays, the failure is retried.
	f.issuer.setFail(true)
	cur := getSecret(t, f.kube, "echo", name)
	f.clk.Set(renewed.NotBefore.Add(pki.Backdate + lifetime/2))
	f.idle(t)
	st := f.keeper.Status()
	if st[0].Failures != 1 || !strings.Contains(st[0].LastError.Error(), "ca expired") {
		t.Fatalf("status with a failing CA %+v", st)
	}
	if got := getSecret(t, f.kube, "echo", name); got.ResourceVersion != cur.ResourceVersion {
		t.Error("the secret was written while the CA could not issue")
	}
	f.issuer.setFail(false)
	f.clk.Advance(time.Second)
	f.idle(t)
	if st := f.keeper.Status(); st[0].Failures != 0 {
		t.Errorf("status once the CA issues again %+v", st)
	}
}

// The Secret was changed by someone else between the keeper's list and its
// update: the conflict is retried on the fresh Secret within the pass.
func TestKeeperConflict(t *testing.T) {
	ctx := context.Background()
	w := echoWant("default")
	f := newFixture(t, 10*time.Minute, w)
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	name := identity.SecretName(w.VirtualNode)
	once := true
	f.kube.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if once {
			// Another writer, straight into the store (a reactor
			// cannot call the client).
			once = false
			obj, err := f.kube.Tracker().Get(secretsGVR, "echo", name)
			if err != nil {
				return true, nil, err
			}
			cur := obj.(*corev1.Secret).DeepCopy()
			cur.Annotations = map[string]string{"someone": "else"}
			cur.ResourceVersion = "999999"
			if err := f.kube.Tracker().Update(secretsGVR, cur, "echo"); err != nil {
				return true, nil, err
			}
		}
		return false, nil, nil
	})
	f.wants.set(echoWant("billing", "default"))
	if err := f.keeper.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	sec := getSecret(t, f.kube, "echo", name)
	if sec.Annotations["someone"] != "else" || sec.Data[identity.KeyFor("billing")] == nil {
		t.Errorf("after a conflict: annotations %v, keys %v; want both writes", sec.Annotations, keysOf(sec.Data))
	}
}

func TestKeeperWantsError(t *testing.T) {
	f := newFixture(t, 10*time.Minute)
	if _, err := f.kube.CoreV1().Secrets("echo").Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Namespace: "echo", Name: identity.SecretName("x"), Labels: map[string]string{identity.LabelManaged: "true"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.wants.mu.Lock()
	f.wants.err = errors.New("informers not synced")
	f.wants.mu.Unlock()
	if err := f.keeper.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "informers not synced") {
		t.Errorf("got %v, want the wants' error", err)
	}
	if _, err := f.kube.CoreV1().Secrets("echo").Get(context.Background(), identity.SecretName("x"), metav1.GetOptions{}); err != nil {
		t.Errorf("a failed pass deleted a secret: %v", err)
	}
}

func TestNewKeeperLifetime(t *testing.T) {
	for _, lt := range []time.Duration{time.Second, 31 * 24 * time.Hour} {
		if _, err := identity.NewKeeper(newKube(), &failingIssuer{}, func() ([]identity.Want, error) { return nil, nil },
			identity.KeeperOptions{Lifetime: lt}); err == nil || !strings.Contains(err.Error(), "lifetime") {
			t.Errorf("lifetime %s: got %v, want an error", lt, err)
		}
	}
}
