package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

// Options configure the webhooks.
type Options struct {
	// Addr is where they listen (TLS); required.
	Addr string
	// Namespace is the control plane's: its Service and the Secret are
	// there. Required.
	Namespace string
	// Service is the control plane's Service; default DefaultService.
	Service string
	// SecretName is the certificates' Secret; default DefaultSecretName.
	SecretName string
	// MutatingConfig and ValidatingConfig name the configurations whose
	// caBundle the leader sets; defaults MutatingConfigName and
	// ValidatingConfigName.
	MutatingConfig, ValidatingConfig string
	// XDSAddress is the xDS address injected pods get; "" looks up the
	// Service's ClusterIP and its port named XDSPortName (default
	// DefaultXDSPortName).
	XDSAddress, XDSPortName string
	// Identity gives the pods of meshes with TLS on their identity
	// (IdentityOptions); its zero value gives none.
	Identity IdentityOptions
	// WarnOnly makes the validator admit with warnings what it would
	// refuse.
	WarnOnly bool
	// Settle is the validator's wait for the caches (ValidatorOptions).
	Settle time.Duration
	// CAValidity, CertValidity and Resync tune the certificates
	// (CertOptions).
	CAValidity, CertValidity, Resync time.Duration
	Clock                            clock.Clock
	Logger                           *slog.Logger
}

// Webhooks are the injector and the validator served over TLS, and their
// certificates.
type Webhooks struct {
	certs    *Certs
	injector *Injector
	val      *Validator
	srv      *Server
}

// New binds opts.Addr. objs and namespaces are the informers' caches
// (the control plane's Source); kube reads and writes the Secret, the
// webhook configurations and, without XDSAddress, the Service, and GETs
// the stable Deployment of a Rollout; dyn LISTs Rollouts (APIReads). With
// dyn nil, Rollouts are admitted unchecked.
func New(kube kubernetes.Interface, dyn dynamic.Interface, objs Objects, namespaces listerscorev1.NamespaceLister, opts Options) (*Webhooks, error) {
	if kube == nil || objs == nil {
		return nil, errors.New("webhook: a kubernetes client and the cluster's objects are required")
	}
	if opts.Addr == "" {
		return nil, errors.New("webhook: the listen address is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Service == "" {
		opts.Service = DefaultService
	}
	certs, err := NewCerts(kube, CertOptions{
		Namespace: opts.Namespace, SecretName: opts.SecretName, Service: opts.Service,
		MutatingConfig: opts.MutatingConfig, ValidatingConfig: opts.ValidatingConfig,
		CAValidity: opts.CAValidity, CertValidity: opts.CertValidity, Resync: opts.Resync,
		Clock: opts.Clock, Logger: opts.Logger.With("part", "certificates"),
	})
	if err != nil {
		return nil, err
	}
	var addr XDSAddress = StaticAddress(opts.XDSAddress)
	if opts.XDSAddress == "" {
		addr = &ServiceAddress{Kube: kube, Namespace: opts.Namespace, Name: opts.Service, Port: opts.XDSPortName, Clock: opts.Clock}
	}
	var reads RolloutReads
	if dyn != nil {
		reads = APIReads{Kube: kube, Dynamic: dyn}
	}
	w := &Webhooks{
		certs:    certs,
		injector: NewInjector(addr, namespaces, kube, opts.Identity, opts.Logger.With("part", "injector")),
		val: NewValidator(objs, ValidatorOptions{
			Settle: opts.Settle, WarnOnly: opts.WarnOnly, Reads: reads, Clock: opts.Clock, Logger: opts.Logger.With("part", "validator"),
		}),
	}
	mux := http.NewServeMux()
	mux.Handle(PathInject, Handler(w.injector, opts.Logger))
	mux.Handle(PathValidate, Handler(w.val, opts.Logger))
	if w.srv, err = NewServer(opts.Addr, mux, certs.GetCertificate, opts.Logger); err != nil {
		return nil, err
	}
	return w, nil
}

// Addr is the address served.
func (w *Webhooks) Addr() string { return w.srv.Addr() }

// Certs are the certificates.
func (w *Webhooks) Certs() *Certs { return w.certs }

// Ready reports whether a certificate is loaded, so that the webhooks can
// answer.
func (w *Webhooks) Ready() bool { return w.certs.Ready() }

// Run watches the Secret and serves until ctx ends.
func (w *Webhooks) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = w.certs.Run(ctx)
		cancel()
	}()
	go func() {
		defer wg.Done()
		errs[1] = w.srv.Serve(ctx)
		cancel()
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// Close releases the listener of webhooks that never ran.
func (w *Webhooks) Close() error { return w.srv.Close() }

// Lead keeps the certificates while this replica leads (see Certs.Lead).
func (w *Webhooks) Lead(ctx context.Context) { w.certs.Lead(ctx) }
