package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// CertOptions configure Certs.
type CertOptions struct {
	// Namespace holds the Secret and the Service; required.
	Namespace string
	// SecretName is the Secret; default DefaultSecretName.
	SecretName string
	// Service is the webhooks' Service: the serving certificate names it,
	// and only webhooks that call it get the caBundle. Default
	// DefaultService.
	Service string
	// MutatingConfig and ValidatingConfig are the webhook configurations
	// whose caBundle the leader keeps; defaults MutatingConfigName and
	// ValidatingConfigName.
	MutatingConfig, ValidatingConfig string
	// CAValidity and CertValidity are the lifetimes of new certificates;
	// defaults DefaultCAValidity and DefaultCertValidity.
	CAValidity, CertValidity time.Duration
	// Resync is how often the leader checks the Secret and the
	// configurations besides when the Secret changes; default a minute.
	Resync time.Duration
	Clock  clock.Clock
	Logger *slog.Logger
}

// Certs keeps the webhook's certificates. Every replica serves the
// certificate of the Secret (Run watches it and reloads on change); the
// leader (Lead) creates the Secret when it is missing, renews it before it
// expires, and patches the CA bundle into the webhook configurations.
type Certs struct {
	kube     kubernetes.Interface
	opts     CertOptions
	log      *slog.Logger
	dnsNames []string
	factory  informers.SharedInformerFactory
	synced   cache.InformerSynced

	current atomic.Pointer[material]
	kick    chan struct{} // the Secret changed: the leader looks again
}

// NewCerts sets up the Secret's informer; Run starts it.
func NewCerts(kube kubernetes.Interface, opts CertOptions) (*Certs, error) {
	if opts.Namespace == "" {
		return nil, errors.New("webhook certificates: the namespace is required")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	if opts.Service == "" {
		opts.Service = DefaultService
	}
	if opts.MutatingConfig == "" {
		opts.MutatingConfig = MutatingConfigName
	}
	if opts.ValidatingConfig == "" {
		opts.ValidatingConfig = ValidatingConfigName
	}
	if opts.CAValidity <= 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if opts.CertValidity <= 0 {
		opts.CertValidity = DefaultCertValidity
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Certs{
		kube:     kube,
		opts:     opts,
		log:      opts.Logger,
		dnsNames: ServiceDNSNames(opts.Service, opts.Namespace),
		kick:     make(chan struct{}, 1),
	}
	// Only the one Secret: RBAC grants no more (resourceNames), and the
	// field selector is what lets list and watch through such a rule.
	c.factory = informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.SecretName).String()
		}))
	inf := c.factory.Core().V1().Secrets().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{ //nolint:errcheck // never removed
		AddFunc:    func(obj any) { c.load(obj) },
		UpdateFunc: func(_, obj any) { c.load(obj) },
		// A deleted Secret leaves the certificate being served: it is
		// still valid, and the leader makes a new Secret.
		DeleteFunc: func(any) { c.signal() },
	})
	c.synced = inf.HasSynced
	return c, nil
}

// SecretName is the Secret's name.
func (c *Certs) SecretName() string { return c.opts.SecretName }

// DNSNames are the names the serving certificate is for.
func (c *Certs) DNSNames() []string { return c.dnsNames }

func (c *Certs) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// load serves the certificate of a Secret from the informer.
func (c *Certs) load(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Name != c.opts.SecretName || s.Namespace != c.opts.Namespace {
		return
	}
	defer c.signal()
	m, err := parseSecret(s.Data)
	if err != nil {
		c.log.Warn("webhook secret not loaded", "secret", c.opts.Namespace+"/"+c.opts.SecretName, "err", err)
		return
	}
	c.store(m)
}

func (c *Certs) store(m *material) {
	if old := c.current.Load(); old != nil && bytes.Equal(old.data[KeyTLSCert], m.data[KeyTLSCert]) && bytes.Equal(old.data[KeyCACert], m.data[KeyCACert]) {
		return
	}
	c.current.Store(m)
	c.log.Info("webhook serving certificate loaded", "secret", c.opts.Namespace+"/"+c.opts.SecretName,
		"serial", m.leaf.SerialNumber.Text(16), "notAfter", m.leaf.NotAfter.UTC().Format(time.RFC3339))
}

// Run watches the Secret until ctx ends.
func (c *Certs) Run(ctx context.Context) error {
	defer c.factory.Shutdown()
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) && ctx.Err() == nil {
		return fmt.Errorf("webhook certificates: the informer of secret %s/%s did not sync", c.opts.Namespace, c.opts.SecretName)
	}
	<-ctx.Done()
	return nil
}

// Ready reports whether a certificate is loaded.
func (c *Certs) Ready() bool { return c.current.Load() != nil }

// GetCertificate is tls.Config's: the Secret's current certificate.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := c.current.Load()
	if m == nil {
		return nil, fmt.Errorf("no webhook certificate yet: secret %s/%s is missing or not valid (the leader creates it)", c.opts.Namespace, c.opts.SecretName)
	}
	return &m.keyPair, nil
}

// CABundle returns the PEM CA bundle being served with, nil before one is
// loaded.
func (c *Certs) CABundle() []byte {
	if m := c.current.Load(); m != nil {
		return m.data[KeyCACert]
	}
	return nil
}

// Lead keeps the Secret and the caBundles right until ctx ends: at once,
// whenever the Secret changes, and every Resync.
func (c *Certs) Lead(ctx context.Context) {
	for {
		wait := c.opts.Resync
		if err := c.Reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("webhook certificates not reconciled", "err", err)
			wait = min(wait, 5*time.Second)
		}
		t := c.opts.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-c.kick:
			t.Stop()
		}
	}
}

// Reconcile makes one pass: it creates the Secret if it is missing (if
// another replica created it first, it reads theirs), renews what is due
// (the CA when a third of its life is left, the serving certificate
// likewise, or when it no longer matches the CA or the Service), and
// patches the CA bundle into every webhook of the two configurations that
// calls the Service and has another one.
func (c *Certs) Reconcile(ctx context.Context) error {
	now := c.opts.Clock.Now()
	secrets := c.kube.CoreV1().Secrets(c.opts.Namespace)
	where := c.opts.Namespace + "/" + c.opts.SecretName
	sec, err := secrets.Get(ctx, c.opts.SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		data, ierr := issue(nil, true, c.dnsNames, now, c.opts.CAValidity, c.opts.CertValidity)
		if ierr != nil {
			return ierr
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: c.opts.SecretName, Namespace: c.opts.Namespace, Labels: map[string]string{
				"app.kubernetes.io/name": "gmesh", "app.kubernetes.io/component": "webhook", "app.kubernetes.io/managed-by": "gmesh-controlplane",
			}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}, metav1.CreateOptions{})
		switch {
		case apierrors.IsAlreadyExists(err):
			// Another replica won the race: use theirs.
			sec, err = secrets.Get(ctx, c.opts.SecretName, metav1.GetOptions{})
		case err == nil:
			c.log.Info("webhook secret created", "secret", where)
		}
	}
	if err != nil {
		return fmt.Errorf("secret %s: %w", where, err)
	}
	m, perr := parseSecret(sec.Data)
	var caProblem, certProblem string
	if perr != nil {
		caProblem = perr.Error()
		m = nil
	} else {
		caProblem, certProblem = m.problem(c.dnsNames, now)
	}
	if caProblem != "" || certProblem != "" {
		data, err := issue(m, caProblem != "", c.dnsNames, now, c.opts.CAValidity, c.opts.CertValidity)
		if err != nil {
			return err
		}
		upd := sec.DeepCopy()
		upd.Data = data
		sec, err = secrets.Update(ctx, upd, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			return nil // changed meanwhile: its event brings another pass
		}
		if err != nil {
			return fmt.Errorf("secret %s: renew: %w", where, err)
		}
		why := certProblem
		if caProblem != "" {
			why = caProblem
		}
		c.log.Info("webhook certificates renewed", "secret", where, "why", why, "newCA", caProblem != "")
		if m, err = parseSecret(sec.Data); err != nil {
			return fmt.Errorf("secret %s: after renewal: %w", where, err)
		}
	}
	c.store(m)
	bundle := m.data[KeyCACert]
	return errors.Join(
		c.patchConfig(ctx, "mutatingwebhookconfiguration", c.opts.MutatingConfig, bundle, c.mutatingRefs, c.patchMutating),
		c.patchConfig(ctx, "validatingwebhookconfiguration", c.opts.ValidatingConfig, bundle, c.validatingRefs, c.patchValidating),
	)
}

// clientRef is what the CA bundle patch needs of one webhook.
type clientRef struct {
	name     string
	service  *admissionregistrationv1.ServiceReference
	caBundle []byte
}

func (c *Certs) mutatingRefs(ctx context.Context, name string) ([]clientRef, error) {
	cfg, err := c.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []clientRef
	for _, w := range cfg.Webhooks {
		out = append(out, clientRef{w.Name, w.ClientConfig.Service, w.ClientConfig.CABundle})
	}
	return out, nil
}

func (c *Certs) validatingRefs(ctx context.Context, name string) ([]clientRef, error) {
	cfg, err := c.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []clientRef
	for _, w := range cfg.Webhooks {
		out = append(out, clientRef{w.Name, w.ClientConfig.Service, w.ClientConfig.CABundle})
	}
	return out, nil
}

func (c *Certs) patchMutating(ctx context.Context, name string, patch []byte) error {
	_, err := c.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err
}

func (c *Certs) patchValidating(ctx context.Context, name string, patch []byte) error {
	_, err := c.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	return err
}

// patchConfig sets caBundle on every webhook of a configuration that calls
// the Service and has another bundle. Each change is guarded by a test of
// the webhook's name at that index, so a configuration edited meanwhile
// fails the patch instead of getting the bundle on the wrong webhook.
func (c *Certs) patchConfig(ctx context.Context, kind, name string, bundle []byte,
	get func(context.Context, string) ([]clientRef, error), patch func(context.Context, string, []byte) error) error {
	refs, err := get(ctx, name)
	if apierrors.IsNotFound(err) {
		c.log.Debug("webhook configuration not installed: no caBundle to set", "kind", kind, "name", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	var ops []PatchOp
	for i, r := range refs {
		if r.service == nil || r.service.Namespace != c.opts.Namespace || r.service.Name != c.opts.Service || bytes.Equal(r.caBundle, bundle) {
			continue
		}
		ops = append(ops,
			PatchOp{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: r.name},
			PatchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: bundle})
	}
	if len(ops) == 0 {
		return nil
	}
	p, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("%s %s: patch: %w", kind, name, err)
	}
	if err := patch(ctx, name, p); err != nil {
		return fmt.Errorf("%s %s: patch caBundle: %w", kind, name, err)
	}
	c.log.Info("webhook caBundle set", "kind", kind, "name", name, "webhooks", len(ops)/2)
	return nil
}

// PatchOp is one RFC 6902 (JSON patch) operation. A []byte value encodes as base64,
// which is how caBundle is spelt in JSON.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}
