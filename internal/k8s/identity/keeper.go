package identity

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// Keeper defaults.
const (
	// DefaultLifetime is the lifetime of the workload certificates the
	// keeper issues. It is long next to the kubelet's delay in bringing a
	// Secret's update into a pod (its sync period, about a minute, plus
	// its cache's TTL), and renewal comes at half of it.
	DefaultLifetime = 24 * time.Hour
	// DefaultResync is how often the keeper makes a pass with no change to
	// wake it: it brings back a Secret deleted or edited by hand.
	DefaultResync = 5 * time.Minute
)

// The owner reference every identity Secret carries to its VirtualNode.
const (
	ownerAPIVersion = "appmesh.k8s.aws/v1beta2"
	ownerKind       = "VirtualNode"
)

// maxConflicts bounds the attempts at writing one Secret in a pass when
// another writer keeps changing it.
const maxConflicts = 5

// KeeperOptions configure a Keeper. Zero values take the defaults.
type KeeperOptions struct {
	// Lifetime of each certificate (DefaultLifetime); pki.MinLifetime to
	// pki.MaxLifetime. A certificate is renewed once half of it has
	// passed.
	Lifetime time.Duration
	// Changed wakes the keeper for a pass: send on it (without blocking,
	// a buffer of one is enough) whenever what wants returns may have
	// changed. Nil: the keeper wakes only for renewals, retries and
	// Resync.
	Changed <-chan struct{}
	// Resync is the longest time between two passes (DefaultResync).
	Resync time.Duration
	// RetryMin and RetryMax bound the wait before retrying a failed
	// Secret (or a failed pass); it doubles per consecutive failure.
	// Defaults 1 s and 1 min.
	RetryMin, RetryMax time.Duration
	Clock              clock.Clock
	Logger             *slog.Logger
}

// Keeper keeps the identity Secrets on the leader: for every Want, the
// Secret SecretName(VirtualNode) in its Namespace, labelled
// LabelManaged=true, owned by the VirtualNode (so deleting the node deletes
// it), holding BundleKey (the CA bundle) and, under KeyFor(sa) for each of
// the Want's service accounts, a private key and certificate (PEM, key
// first, in one value: pki's identity.pem) for Want.ID(sa).
//
// A pass (Lead makes one at once, on every Changed, at the next renewal
// and every Resync) creates a missing Secret and updates one (with its
// resourceVersion, again on a conflict) when a service account is new, a
// certificate is half way through its life or no longer matches the ID or
// the bundle, the bundle changed, or a service account is no longer
// wanted (its key goes). It deletes the managed Secrets that no Want asks
// for. A failure (the API, the CA) is logged naming the Secret and
// retried with backoff; a certificate that cannot be renewed stays in
// the Secret until it can.
type Keeper struct {
	kube   kubernetes.Interface
	issuer pki.Issuer
	wants  func() ([]Want, error)
	opts   KeeperOptions
	log    *slog.Logger

	mu      sync.Mutex
	secrets map[types.NamespacedName]*secretState
	pass    failure // the whole pass (wants, list)
}

// failure is what the keeper remembers of consecutive failures.
type failure struct {
	count   int
	last    error
	retryAt time.Time
}

type secretState struct {
	want     Want
	accounts []string // those with a certificate in the Secret
	notAfter time.Time
	renewAt  time.Time
	failure
}

// SecretStatus is what the keeper knows of one identity Secret.
type SecretStatus struct {
	Namespace, Name string
	// VirtualNode is the Kubernetes object; Mesh and Node its gmesh
	// names (those of the SPIFFE IDs).
	VirtualNode, Mesh, Node string
	// ServiceAccounts are those with a certificate in the Secret.
	ServiceAccounts []string
	// NotAfter is the earliest expiry of its certificates (zero when it
	// has none); RenewAt when the first is renewed.
	NotAfter, RenewAt time.Time
	// Failures counts consecutive failed writes; LastError is the last.
	Failures  int
	LastError error
}

// NewKeeper returns a Keeper issuing from issuer (a *pki.CA) for what
// wants returns (the controller's Source.IdentityWants); Lead runs it.
func NewKeeper(kube kubernetes.Interface, issuer pki.Issuer, wants func() ([]Want, error), opts KeeperOptions) (*Keeper, error) {
	if kube == nil || issuer == nil || wants == nil {
		return nil, errors.New("identity keeper: a kubernetes client, an issuer and wants are required")
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.Lifetime < pki.MinLifetime || opts.Lifetime > pki.MaxLifetime {
		return nil, fmt.Errorf("identity keeper: certificate lifetime %s: want %s to %s", opts.Lifetime, pki.MinLifetime, pki.MaxLifetime)
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = pki.DefaultRetryMin
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(pki.DefaultRetryMax, opts.RetryMin)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Keeper{kube: kube, issuer: issuer, wants: wants, opts: opts, log: opts.Logger,
		secrets: map[types.NamespacedName]*secretState{}}, nil
}

// Lifetime is the lifetime of the certificates k issues.
func (k *Keeper) Lifetime() time.Duration { return k.opts.Lifetime }

// Lead keeps the Secrets until ctx ends (run it only on the leader): a
// pass at once, then one on every Changed, at the next renewal or retry,
// and at least every Resync. It returns nil once ctx has ended, having
// started no goroutine.
func (k *Keeper) Lead(ctx context.Context) error {
	k.log.Info("identity secrets: keeping", "lifetime", k.opts.Lifetime)
	for {
		next, _ := k.reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		t := k.opts.Clock.NewTimer(next.Sub(k.opts.Clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case <-k.opts.Changed:
			t.Stop()
		}
	}
}

// Reconcile makes one pass and returns its failures (each also logged).
// Secrets whose retry is not yet due are left for later.
func (k *Keeper) Reconcile(ctx context.Context) error {
	_, err := k.reconcile(ctx)
	return err
}

// Status reports every Secret the keeper keeps, by namespace and name.
func (k *Keeper) Status() []SecretStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]SecretStatus, 0, len(k.secrets))
	for nn, st := range k.secrets {
		out = append(out, SecretStatus{
			Namespace: nn.Namespace, Name: nn.Name,
			VirtualNode: st.want.VirtualNode, Mesh: st.want.Mesh, Node: st.want.Node,
			ServiceAccounts: slices.Clone(st.accounts),
			NotAfter:        st.notAfter, RenewAt: st.renewAt,
			Failures: st.count, LastError: st.last,
		})
	}
	slices.SortFunc(out, func(a, b SecretStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// backoff returns the wait after the n-th consecutive failure.
func (k *Keeper) backoff(n int) time.Duration {
	wait := k.opts.RetryMin << min(n-1, 30)
	if wait <= 0 || wait > k.opts.RetryMax {
		wait = k.opts.RetryMax
	}
	return wait
}

func (k *Keeper) fail(f *failure, err error, now time.Time) time.Duration {
	f.count++
	f.last = err
	wait := k.backoff(f.count)
	f.retryAt = now.Add(wait)
	return wait
}

// reconcile makes a pass and returns when the next one is due.
func (k *Keeper) reconcile(ctx context.Context) (time.Time, error) {
	now := k.opts.Clock.Now()
	next := now.Add(k.opts.Resync)
	k.mu.Lock()
	retryAt := k.pass.retryAt
	k.mu.Unlock()
	if now.Before(retryAt) {
		return retryAt, nil
	}
	wants, err := k.wants()
	if err == nil {
		var list *corev1.SecretList
		list, err = k.kube.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true"})
		if err == nil {
			k.mu.Lock()
			k.pass = failure{}
			k.mu.Unlock()
			return k.keepAll(ctx, wants, list.Items, now, next)
		}
		err = fmt.Errorf("list the identity secrets (label %s=true): %w", LabelManaged, err)
	} else {
		err = fmt.Errorf("identity wants: %w", err)
	}
	if ctx.Err() != nil {
		return next, nil
	}
	k.mu.Lock()
	wait := k.fail(&k.pass, err, now)
	n := k.pass.count
	k.mu.Unlock()
	k.log.Warn("identity secrets: pass failed; the secrets stay as they are", "failures", n, "retryIn", wait, "err", err)
	return now.Add(wait), err
}

func (k *Keeper) keepAll(ctx context.Context, wants []Want, items []corev1.Secret, now, next time.Time) (time.Time, error) {
	existing := make(map[types.NamespacedName]*corev1.Secret, len(items))
	for i := range items {
		s := &items[i]
		existing[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	bundle := k.issuer.BundlePEM()
	wanted := map[types.NamespacedName]bool{}
	var errs []error
	for _, w := range wants {
		nn := types.NamespacedName{Namespace: w.Namespace, Name: SecretName(w.VirtualNode)}
		if wanted[nn] {
			continue // the same node twice: the first one counts
		}
		wanted[nn] = true
		k.mu.Lock()
		st := k.secrets[nn]
		if st == nil {
			st = &secretState{}
			k.secrets[nn] = st
		}
		st.want = w
		due := !now.Before(st.retryAt)
		k.mu.Unlock()
		if due {
			if err := k.keep(ctx, nn, w, existing[nn], bundle, now, st); err != nil {
				errs = append(errs, err)
			}
		}
		k.mu.Lock()
		if st.count > 0 {
			next = earliest(next, st.retryAt) // a failing one: its retry, whatever is due
		} else {
			next = earliest(next, st.renewAt)
		}
		k.mu.Unlock()
	}
	for nn, sec := range existing {
		if wanted[nn] {
			continue
		}
		k.mu.Lock()
		st := k.secrets[nn]
		if st == nil {
			st = &secretState{want: Want{Namespace: nn.Namespace}}
			k.secrets[nn] = st
		}
		due := !now.Before(st.retryAt)
		k.mu.Unlock()
		if !due {
			next = earliest(next, st.retryAt)
			continue
		}
		uid := sec.UID
		err := k.kube.CoreV1().Secrets(nn.Namespace).Delete(ctx, nn.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			err = fmt.Errorf("secret %s: delete: %w", nn, err)
			errs = append(errs, err)
			k.mu.Lock()
			wait := k.fail(&st.failure, err, now)
			next = earliest(next, st.retryAt)
			n := st.count
			k.mu.Unlock()
			k.log.Warn("identity secret not deleted", "secret", nn.String(), "failures", n, "retryIn", wait, "err", err)
			continue
		}
		k.log.Info("identity secret deleted: no virtual node of a mesh with TLS on asks for it", "secret", nn.String())
		k.mu.Lock()
		delete(k.secrets, nn)
		k.mu.Unlock()
	}
	k.mu.Lock()
	for nn := range k.secrets {
		if _, ok := existing[nn]; !ok && !wanted[nn] {
			delete(k.secrets, nn)
		}
	}
	k.mu.Unlock()
	return next, errors.Join(errs...)
}

func earliest(a, b time.Time) time.Time {
	if b.IsZero() || (!a.IsZero() && a.Before(b)) {
		return a
	}
	return b
}

// keep brings one Secret to what w asks for, and records the outcome in st.
func (k *Keeper) keep(ctx context.Context, nn types.NamespacedName, w Want, cur *corev1.Secret, bundle []byte, now time.Time, st *secretState) error {
	secrets := k.kube.CoreV1().Secrets(nn.Namespace)
	issued := map[string][]byte{} // issued in this pass: reused on a conflict
	var err error
	for attempt := 0; ; attempt++ {
		d := k.desired(w, cur, bundle, now, issued)
		if attempt >= maxConflicts {
			err = fmt.Errorf("secret %s: still changing under us after %d attempts", nn, attempt)
			break
		}
		var werr error
		switch {
		case cur == nil:
			sec := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: nn.Name, Namespace: nn.Namespace,
					Labels: map[string]string{LabelManaged: "true"}, OwnerReferences: []metav1.OwnerReference{ownerRef(w)}},
				Type: corev1.SecretTypeOpaque,
				Data: d.data,
			}
			_, werr = secrets.Create(ctx, sec, metav1.CreateOptions{})
			if werr == nil {
				k.log.Info("identity secret created", "secret", nn.String(), "serviceAccounts", d.accounts, "notAfter", d.notAfter)
			}
			if apierrors.IsAlreadyExists(werr) {
				got, gerr := secrets.Get(ctx, nn.Name, metav1.GetOptions{})
				if gerr != nil {
					werr = gerr
					break
				}
				if got.Labels[LabelManaged] != "true" {
					werr = fmt.Errorf("a secret of that name exists without the label %s=true: it is not gmesh's, so it is left alone; rename or delete it for the virtual node %s/%s's pods to get their identities", LabelManaged, w.Namespace, w.VirtualNode)
					break
				}
				cur = got
				continue
			}
		case len(d.changes) == 0 && metaOK(cur, w):
			// Nothing to write.
		default:
			upd := cur.DeepCopy()
			upd.Data = d.data
			if upd.Labels == nil {
				upd.Labels = map[string]string{}
			}
			upd.Labels[LabelManaged] = "true"
			upd.OwnerReferences = owners(upd.OwnerReferences, w)
			_, werr = secrets.Update(ctx, upd, metav1.UpdateOptions{})
			if werr == nil {
				k.log.Info("identity secret updated", "secret", nn.String(), "changes", strings.Join(d.changes, "; "), "notAfter", d.notAfter)
			}
			if apierrors.IsConflict(werr) {
				got, gerr := secrets.Get(ctx, nn.Name, metav1.GetOptions{})
				switch {
				case apierrors.IsNotFound(gerr):
					cur = nil
				case gerr != nil:
					werr = gerr
				default:
					cur = got
				}
				if gerr == nil || apierrors.IsNotFound(gerr) {
					continue
				}
			}
		}
		if werr != nil {
			err = fmt.Errorf("secret %s: %w", nn, werr)
			k.record(st, holding(cur))
		} else {
			if d.issueErr != nil {
				err = fmt.Errorf("secret %s: %w", nn, d.issueErr)
			}
			k.record(st, d)
		}
		break
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		st.failure = failure{}
		return nil
	}
	if ctx.Err() != nil {
		return err // stopped leading: not a failure of the Secret
	}
	wait := k.fail(&st.failure, err, now)
	attrs := []any{"secret", nn.String(), "failures", st.count, "retryIn", wait, "err", err}
	if !st.notAfter.IsZero() {
		attrs = append(attrs, "earliestNotAfter", st.notAfter)
	}
	if !st.notAfter.IsZero() && !now.Before(st.notAfter) {
		k.log.Error("identity secret not kept, and a certificate in it has expired: its pods' TLS handshakes fail until it is", attrs...)
	} else {
		k.log.Warn("identity secret not kept; its certificates stay as they are", attrs...)
	}
	return err
}

// record notes what a Secret holds (or is about to) for Status.
func (k *Keeper) record(st *secretState, d desired) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st.accounts, st.notAfter, st.renewAt = d.accounts, d.notAfter, d.renewAt
}

// holding is what a Secret holds now, as a desired that changes nothing.
func holding(cur *corev1.Secret) desired {
	d := desired{data: map[string][]byte{}}
	if cur == nil {
		return d
	}
	keys := slices.Sorted(maps.Keys(cur.Data))
	for _, key := range keys {
		if sa, ok := strings.CutSuffix(key, ".identity.pem"); ok {
			d.add(sa, key, cur.Data[key])
		}
	}
	return d
}

// desired is a Secret's data as w asks for it.
type desired struct {
	data map[string][]byte
	// changes say what differs from the current Secret (none: nothing to
	// write but metadata).
	changes []string
	// accounts have a certificate in data; notAfter and renewAt are the
	// earliest of theirs.
	accounts          []string
	notAfter, renewAt time.Time
	// issueErr is why some certificates could not be issued (the old
	// ones, if any, are kept in data).
	issueErr error
}

// desired works out a Secret's data: the bundle, and for each service
// account the current certificate while it is usable and not due for
// renewal, else a new one (issued at most once per pass: issued keeps
// them).
func (k *Keeper) desired(w Want, cur *corev1.Secret, bundle []byte, now time.Time, issued map[string][]byte) desired {
	var old map[string][]byte
	if cur != nil {
		old = cur.Data
	}
	d := desired{data: map[string][]byte{BundleKey: bundle}}
	if cur == nil {
		d.changes = append(d.changes, "created")
	} else if !bytes.Equal(old[BundleKey], bundle) {
		d.changes = append(d.changes, "CA bundle changed")
	}
	var errs []error
	for _, sa := range w.ServiceAccounts {
		key := KeyFor(sa)
		if _, dup := d.data[key]; dup {
			continue
		}
		id := w.ID(sa)
		if v, ok := issued[key]; ok {
			d.add(sa, key, v)
			if !bytes.Equal(old[key], v) {
				d.changes = append(d.changes, "service account "+sa+": certificate issued")
			}
			continue
		}
		prev, had := old[key]
		why := "service account " + sa + " added"
		if had {
			reason := usable(prev, id, bundle, now)
			if reason == "" {
				d.add(sa, key, prev)
				continue
			}
			why = "service account " + sa + ": " + reason
		}
		ident, err := k.issuer.Issue(id, k.opts.Lifetime)
		if err != nil {
			errs = append(errs, fmt.Errorf("service account %s: %w", sa, err))
			if had {
				d.add(sa, key, prev) // never lose the old one
			}
			continue
		}
		v := make([]byte, 0, len(ident.KeyPEM)+len(ident.CertPEM))
		v = append(append(v, ident.KeyPEM...), ident.CertPEM...)
		issued[key] = v
		d.add(sa, key, v)
		d.changes = append(d.changes, why)
	}
	var removed []string
	for key := range old {
		if _, ok := d.data[key]; !ok {
			removed = append(removed, "key "+key+" removed")
		}
	}
	slices.Sort(removed)
	d.changes = append(d.changes, removed...)
	d.issueErr = errors.Join(errs...)
	return d
}

// add puts a service account's identity into d.
func (d *desired) add(sa, key string, v []byte) {
	d.data[key] = v
	d.accounts = append(d.accounts, sa)
	if leaf := parseLeaf(v); leaf != nil {
		d.notAfter = earliest(d.notAfter, leaf.NotAfter)
		d.renewAt = earliest(d.renewAt, renewAt(leaf))
	}
}

// usable says why an identity value cannot stay ("" when it can): it must
// be a matching key and certificate, for id, chaining to bundle at now,
// and not yet half way through its life.
func usable(v []byte, id pki.ID, bundle []byte, now time.Time) string {
	leaf := parseLeaf(v)
	if leaf == nil {
		return "not a matching key and certificate: reissued"
	}
	if err := pki.VerifyPeer([]*x509.Certificate{leaf}, bundle, id, now); err != nil {
		return "reissued (" + err.Error() + ")"
	}
	if !now.Before(renewAt(leaf)) {
		return "renewed (half its lifetime passed; it expires at " + leaf.NotAfter.UTC().Format(time.RFC3339) + ")"
	}
	return ""
}

// parseLeaf reads an identity value as a workload does (the key and
// certificate from the same bytes); nil when that fails.
func parseLeaf(v []byte) *x509.Certificate {
	pair, err := tls.X509KeyPair(v, v)
	if err != nil {
		return nil
	}
	return pair.Leaf
}

// renewAt is half way through a certificate's life: from its issue
// (NotBefore is backdated by pki.Backdate) to NotAfter.
func renewAt(leaf *x509.Certificate) time.Time {
	issued := leaf.NotBefore.Add(pki.Backdate)
	return issued.Add(leaf.NotAfter.Sub(issued) / 2)
}

func ownerRef(w Want) metav1.OwnerReference {
	f := false
	return metav1.OwnerReference{APIVersion: ownerAPIVersion, Kind: ownerKind, Name: w.VirtualNode, UID: w.UID,
		Controller: &f, BlockOwnerDeletion: &f}
}

// owners replaces the VirtualNode owner references of refs with w's.
func owners(refs []metav1.OwnerReference, w Want) []metav1.OwnerReference {
	out := []metav1.OwnerReference{ownerRef(w)}
	for _, r := range refs {
		if r.Kind == ownerKind && strings.HasPrefix(r.APIVersion, "appmesh.k8s.aws/") {
			continue
		}
		out = append(out, r)
	}
	return out
}

// metaOK reports whether a Secret's label and owner reference are w's.
func metaOK(s *corev1.Secret, w Want) bool {
	if s.Labels[LabelManaged] != "true" {
		return false
	}
	want := owners(s.OwnerReferences, w)
	if len(want) != len(s.OwnerReferences) {
		return false
	}
	for _, r := range s.OwnerReferences {
		if r.Kind == ownerKind && strings.HasPrefix(r.APIVersion, "appmesh.k8s.aws/") {
			o := ownerRef(w)
			return r.APIVersion == o.APIVersion && r.Name == o.Name && r.UID == o.UID &&
				r.Controller != nil && !*r.Controller && r.BlockOwnerDeletion != nil && !*r.BlockOwnerDeletion
		}
	}
	return false
}
