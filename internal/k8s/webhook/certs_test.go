package webhook_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

func newCerts(t testing.TB, kube *kubefake.Clientset, clk clock.Clock, mod func(*webhook.CertOptions)) *webhook.Certs {
	t.Helper()
	opts := webhook.CertOptions{Namespace: cpNamespace, Clock: clk, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	c, err := webhook.NewCerts(kube, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writes counts the create, update and patch calls the fake saw.
func writes(kube *kubefake.Clientset) int {
	n := 0
	for _, a := range kube.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch":
			n++
		}
	}
	return n
}

func TestCertsCreatesSecretAndPatchesCABundle(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	kube := kubefake.NewClientset(webhookConfigs()...)
	clk := clock.NewFake(time.Now())
	c := newCerts(t, kube, clk, nil)
	if c.Ready() {
		t.Fatal("Ready before any certificate")
	}
	if err := c.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	s := getSecret(t, kube)
	if s.Type != "kubernetes.io/tls" {
		t.Errorf("secret type %q, want kubernetes.io/tls", s.Type)
	}
	verifyLeaf(t, s, clk.Now())
	leaf := parseLeaf(t, s)
	want := map[string]bool{"gmesh-controlplane.gmesh-system.svc": true, "gmesh-controlplane.gmesh-system.svc.cluster.local": true}
	for _, n := range leaf.DNSNames {
		delete(want, n)
	}
	if len(want) > 0 {
		t.Errorf("serving certificate names %v, missing %v", leaf.DNSNames, want)
	}
	if !c.Ready() || !bytes.Equal(c.CABundle(), s.Data[webhook.KeyCACert]) {
		t.Errorf("the leader does not serve the secret it made")
	}
	got := caBundles(t, kube)
	for _, name := range []string{"inject.gmesh.dev", "appmesh-inject.gmesh.dev", "validate.appmesh.gmesh.dev"} {
		if !bytes.Equal(got[name], s.Data[webhook.KeyCACert]) {
			t.Errorf("webhook %s: caBundle %q, want the secret's ca.crt", name, got[name])
		}
	}
	if len(got["other.example.com"]) != 0 {
		t.Errorf("webhook other.example.com (not ours) got a caBundle")
	}
	// Nothing to do the second time.
	before := writes(kube)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if n := writes(kube) - before; n != 0 {
		t.Errorf("second Reconcile wrote %d times, want 0", n)
	}
}

func TestCertsWithoutWebhookConfigurations(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	kube := kubefake.NewClientset()
	c := newCerts(t, kube, clock.NewFake(time.Now()), nil)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile with no webhook configurations installed: %v", err)
	}
	getSecret(t, kube)
}

// Two replicas that both found no Secret: the one whose create comes
// second reads and serves the first's.
func TestCertsRaceCreateEndsWithOneSecret(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	kube := kubefake.NewClientset(webhookConfigs()...)
	clk := clock.NewFake(time.Now())
	a := newCerts(t, kube, clk, nil)
	b := newCerts(t, kube, clk, nil)
	// b creates its Secret between a's get and a's create.
	raced := false
	kube.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		other := kubefake.NewClientset()
		bb := newCerts(t, other, clk, nil)
		if err := bb.Reconcile(ctx); err != nil {
			t.Errorf("the other replica's Reconcile: %v", err)
		}
		s := getSecret(t, other)
		s.ResourceVersion = ""
		if err := kube.Tracker().Add(s); err != nil {
			t.Errorf("add the other replica's secret: %v", err)
		}
		return false, nil, nil // a's create goes on and finds it there
	})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile of the replica that lost: %v", err)
	}
	if !raced {
		t.Fatal("the race was not staged")
	}
	s := getSecret(t, kube)
	if !bytes.Equal(a.CABundle(), s.Data[webhook.KeyCACert]) {
		t.Errorf("the replica that lost serves its own CA, not the winner's")
	}
	if err := b.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.CABundle(), a.CABundle()) {
		t.Errorf("the replicas serve different CAs")
	}
	list, err := kube.CoreV1().Secrets(cpNamespace).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("got %d secrets (%v), want 1", len(list.Items), err)
	}
}

// The same race run for real: two replicas reconcile at once.
func TestCertsConcurrentReplicas(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	for i := 0; i < 10; i++ {
		kube := kubefake.NewClientset(webhookConfigs()...)
		clk := clock.NewFake(time.Now())
		reps := []*webhook.Certs{newCerts(t, kube, clk, nil), newCerts(t, kube, clk, nil)}
		var wg sync.WaitGroup
		errs := make([]error, len(reps))
		for j, r := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = r.Reconcile(ctx)
			}()
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("run %d: replica %d: %v", i, j, err)
			}
		}
		list, err := kube.CoreV1().Secrets(cpNamespace).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("run %d: got %d secrets (%v), want 1", i, len(list.Items), err)
		}
		ca := list.Items[0].Data[webhook.KeyCACert]
		for j, r := range reps {
			if !bytes.Equal(r.CABundle(), ca) {
				t.Errorf("run %d: replica %d serves another CA than the secret's", i, j)
			}
		}
		if got := caBundles(t, kube)["inject.gmesh.dev"]; !bytes.Equal(got, ca) {
			t.Errorf("run %d: caBundle is not the secret's CA", i)
		}
	}
}

func TestCertsRenewal(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	kube := kubefake.NewClientset(webhookConfigs()...)
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	day := 24 * time.Hour
	c := newCerts(t, kube, clk, func(o *webhook.CertOptions) {
		o.CertValidity = 90 * day // renewed with 30 days left
		o.CAValidity = 360 * day  // renewed with 120 days left
	})
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	first := getSecret(t, kube)
	firstLeaf := parseLeaf(t, first)

	clk.Advance(59 * day)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := parseLeaf(t, getSecret(t, kube)); got.SerialNumber.Cmp(firstLeaf.SerialNumber) != 0 {
		t.Fatalf("serving certificate renewed with 31 days left of 90")
	}

	clk.Advance(2 * day) // 29 days left
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	second := getSecret(t, kube)
	leaf := parseLeaf(t, second)
	if leaf.SerialNumber.Cmp(firstLeaf.SerialNumber) == 0 {
		t.Fatalf("serving certificate not renewed with 29 days left of 90")
	}
	if !bytes.Equal(second.Data[webhook.KeyCACert], first.Data[webhook.KeyCACert]) {
		t.Errorf("the CA changed with the serving certificate")
	}
	if want := clk.Now().Add(90 * day); !leaf.NotAfter.Equal(want.Truncate(time.Second)) {
		t.Errorf("renewed certificate expires %s, want %s", leaf.NotAfter, want)
	}
	verifyLeaf(t, second, clk.Now())
	if served, err := c.GetCertificate(nil); err != nil || !bytes.Equal(served.Certificate[0], leaf.Raw) {
		t.Errorf("the leader does not serve the renewed certificate (%v)", err)
	}

	// Past two thirds of the CA's life: a new CA, the old one kept in the
	// bundle while it is valid, and the bundle patched in.
	clk.Advance(200 * day)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	third := getSecret(t, kube)
	verifyLeaf(t, third, clk.Now())
	bundle := third.Data[webhook.KeyCACert]
	if bytes.Equal(bundle, second.Data[webhook.KeyCACert]) || !bytes.Contains(bundle, second.Data[webhook.KeyCACert]) {
		t.Errorf("after the CA's renewal the bundle should hold the new CA and then the old one")
	}
	if got := caBundles(t, kube)["validate.appmesh.gmesh.dev"]; !bytes.Equal(got, bundle) {
		t.Errorf("caBundle not patched after the CA's renewal")
	}
	// Once the old CA has expired it leaves the bundle.
	clk.Advance(200 * day)
	if err := c.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	fourth := getSecret(t, kube)
	if n := bytes.Count(fourth.Data[webhook.KeyCACert], []byte("BEGIN CERTIFICATE")); n != 1 {
		t.Errorf("bundle holds %d CAs after the old one expired, want 1", n)
	}
	verifyLeaf(t, fourth, clk.Now())
}

// Lead looks again every Resync on its clock.
func TestCertsLeadRenewsOnItsClock(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	kube := kubefake.NewClientset(webhookConfigs()...)
	clk := clock.NewFake(time.Now())
	c := newCerts(t, kube, clk, func(o *webhook.CertOptions) {
		o.CertValidity = 3 * time.Hour
		o.Resync = time.Minute
	})
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Lead(lctx) }()
	defer func() { cancel(); <-done }()
	pollUntil(ctx, t, "secret created", func() bool {
		_, err := kube.CoreV1().Secrets(cpNamespace).Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
		return err == nil && clk.Timers() == 1
	})
	first := parseLeaf(t, getSecret(t, kube))
	// The certificate is valid 4 h (3 h and the hour of skew before
	// now): renewed once less than 80 min are left, 100 min from now.
	clk.Advance(99 * time.Minute)
	pollUntil(ctx, t, "leader waiting again", func() bool { return clk.Timers() == 1 })
	if got := parseLeaf(t, getSecret(t, kube)); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("renewed 99 min on, want 100")
	}
	clk.Advance(2 * time.Minute)
	pollUntil(ctx, t, "serving certificate renewed", func() bool {
		return parseLeaf(t, getSecret(t, kube)).SerialNumber.Cmp(first.SerialNumber) != 0
	})
}
