package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/agent"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/runtime/local"
	"github.com/gmesh-dev/gmesh/internal/statedir"
	"github.com/gmesh-dev/gmesh/internal/xds"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// caOptions are the flags that choose the mesh's certificate authority and
// the lifetime of the certificates it issues.
type caOptions struct {
	certFile, keyFile string
	lifetime          time.Duration
}

func (o *caOptions) validate() error {
	if (o.certFile == "") != (o.keyFile == "") {
		return errors.New("--ca-cert and --ca-key go together: the CA's certificate and its private key, both PEM")
	}
	if o.lifetime < pki.MinLifetime || o.lifetime > pki.MaxLifetime {
		return fmt.Errorf("--cert-lifetime %s: want %s to %s", o.lifetime, pki.MinLifetime, pki.MaxLifetime)
	}
	return nil
}

// caSet reports whether a CA exists for dir: one the user names, or
// gmesh's own in the state directory.
func (o *caOptions) caSet(dir statedir.Dir) bool {
	if o.certFile != "" {
		return true
	}
	_, err := os.Stat(filepath.Join(dir.CADir(), pki.CAKeyFile))
	return !errors.Is(err, fs.ErrNotExist)
}

// load returns the user's CA, else the state directory's own: made on
// first use when create is set (`gmesh up`, which issues the tasks'
// certificates), else only read (the control plane, whose health checker
// needs one only once a task has its certificate, so after up made it).
func (o *caOptions) load(dir statedir.Dir, create bool) (*pki.CA, error) {
	if o.certFile != "" {
		return pki.LoadFiles(o.certFile, o.keyFile, nil)
	}
	if !create {
		return pki.LoadFiles(filepath.Join(dir.CADir(), pki.CACertFile), filepath.Join(dir.CADir(), pki.CAKeyFile), nil)
	}
	return pki.LoadOrCreate(dir.CADir(), nil)
}

// controlPlaneArgs passes the user's CA on to the control plane process.
func (o *caOptions) controlPlaneArgs() []string {
	if o.certFile == "" {
		return nil
	}
	cert, _ := filepath.Abs(o.certFile)
	key, _ := filepath.Abs(o.keyFile)
	return []string{"--ca-cert", cert, "--ca-key", key}
}

// lazyCA is the CA, loaded (or made) when the first certificate is
// issued: a mesh without TLS never makes one.
type lazyCA struct {
	opts   *caOptions
	dir    statedir.Dir
	create bool
	mu     sync.Mutex
	ca     *pki.CA
}

var _ pki.HostIssuer = (*lazyCA)(nil)

func (l *lazyCA) get() (*pki.CA, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ca == nil {
		ca, err := l.opts.load(l.dir, l.create)
		if err != nil {
			return nil, err
		}
		l.ca = ca
	}
	return l.ca, nil
}

func (l *lazyCA) Issue(id pki.ID, lifetime time.Duration) (*pki.Identity, error) {
	ca, err := l.get()
	if err != nil {
		return nil, err
	}
	return ca.Issue(id, lifetime)
}

// IssueHosts lets the control plane's xDS server certificate name the
// hosts clients reach it by.
func (l *lazyCA) IssueHosts(id pki.ID, hosts []string, lifetime time.Duration) (*pki.Identity, error) {
	ca, err := l.get()
	if err != nil {
		return nil, err
	}
	return ca.IssueHosts(id, hosts, lifetime)
}

func (l *lazyCA) BundlePEM() []byte {
	ca, err := l.get()
	if err != nil {
		return nil
	}
	return ca.BundlePEM()
}

// identities gives the tasks of meshes with TLS on their certificates:
// written into the task's own directory before it starts, renewed at
// half-life while it runs, removed when it goes away.
type identities struct {
	serverURI string // the control plane's, set once it runs
	rot       *pki.Rotator
	// refresh re-reports a task whose certificate was renewed (or failed
	// to be); set before run.
	refresh func(taskID string)
}

// newIdentities loads the CA now when one exists (so a CA key others may
// read stops `gmesh up` before anything starts), else makes it on first
// use.
func newIdentities(dir statedir.Dir, o *caOptions, log *slog.Logger) (*identities, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	issuer := &lazyCA{opts: o, dir: dir, create: true}
	if o.caSet(dir) {
		if _, err := issuer.get(); err != nil {
			return nil, err
		}
	}
	i := &identities{}
	rot, err := pki.NewRotator(pki.RotatorConfig{Issuer: issuer, Lifetime: o.lifetime, Logger: log, Changed: i.changed})
	if err != nil {
		return nil, err
	}
	i.rot = rot
	return i, nil
}

// changed is the Rotator's Changed: the task of the directory is reported
// again, with its new certificate status.
func (i *identities) changed(dir string) {
	if i.refresh != nil {
		i.refresh(filepath.Base(filepath.Dir(dir)))
	}
}

// certificate is the supervisor's Certificate: the task's certificate as
// the Rotator last issued or tried to renew it.
func (i *identities) certificate(taskDir string) (mesh.CertificateStatus, bool) {
	st, err := i.rot.Status(filepath.Join(taskDir, "tls"))
	if err != nil {
		return mesh.CertificateStatus{}, false
	}
	return certificateStatus(st), true
}

// certificateStatus is a Rotator's status as a task's endpoint reports it.
func certificateStatus(s pki.Status) mesh.CertificateStatus {
	c := mesh.CertificateStatus{ID: s.ID.String(), Renewals: s.Renewals, Failures: s.Failures}
	if !s.NotAfter.IsZero() {
		c.NotAfter = s.NotAfter.UTC().Format(time.RFC3339)
	}
	if !s.RenewAt.IsZero() {
		c.RenewAt = s.RenewAt.UTC().Format(time.RFC3339)
	}
	if s.LastError != nil {
		c.LastError = s.LastError.Error()
	}
	return c
}

// run renews certificates until ctx ends.
func (i *identities) run(ctx context.Context) { i.rot.Run(ctx) }

func tlsDir(ts local.TaskStart) string { return filepath.Join(ts.Dir, "tls") }

// bootstrap is the supervisor's Bootstrap: the plain bootstrap, plus the
// certificate provider for a task of a mesh with TLS on (the agent marks
// its set with agent.EnvTLS).
func (i *identities) bootstrap(ts local.TaskStart) ([]byte, error) {
	cfg := bootstrap.Config{ServerURI: i.serverURI, NodeID: ts.ID}
	if ts.Env[agent.EnvTLS] == "1" {
		files := pki.Files{Dir: tlsDir(ts)}
		if err := i.rot.Add(files.Dir, xds.NodeID(ts.Mesh, ts.VirtualNode)); err != nil {
			return nil, fmt.Errorf("workload certificate: %w", err)
		}
		cfg.TLS = &bootstrap.TLS{
			CertificateFile: files.Identity(), PrivateKeyFile: files.Identity(), CACertificateFile: files.Bundle(),
			RefreshInterval: pki.RefreshInterval(i.rot.Lifetime()),
			// The control plane requires the certificate on xDS too
			// while a mesh has TLS on.
			Channel: true,
		}
	} else {
		_ = i.rot.Remove(tlsDir(ts)) // TLS turned off: no renewals for it
	}
	return cfg.JSON()
}

// released is the supervisor's Released.
func (i *identities) released(ts local.TaskStart) { _ = i.rot.Remove(tlsDir(ts)) }
