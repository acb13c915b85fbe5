package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The files a workload's certificate provider reads, in its directory.
//
// IdentityFile holds the private key and the certificate together, and the
// bootstrap names it as both certificate_file and private_key_file.
// grpc-go's file_watcher provider (credentials/tls/certprovider/pemfile)
// reads the certificate file and then the key file, each whole, and pairs
// them with tls.X509KeyPair, which takes the CERTIFICATE blocks of the one
// and the first PRIVATE KEY block of the other. With two files, a rotation
// between those two reads would hand it a new certificate and an old key;
// with one file, replaced by a rename, any one read is a matching pair. A
// rename between its two reads of the same file still gives it two
// different, complete pairs: X509KeyPair then fails (the key does not match
// the certificate), the provider logs it, keeps serving the pair it had, and
// takes the new one at its next refresh. A Kubernetes-style swap of a
// symlinked directory would not close that window either: the two reads
// resolve the link separately.
const (
	IdentityFile = "identity.pem"
	BundleFile   = "ca.pem"
)

// Files are the paths of a workload's certificate files.
type Files struct {
	Dir string
}

// Identity is the key-and-certificate file.
func (f Files) Identity() string { return filepath.Join(f.Dir, IdentityFile) }

// Bundle is the trust bundle file (the CA certificates).
func (f Files) Bundle() string { return filepath.Join(f.Dir, BundleFile) }

// Write makes f.Dir (0700) and writes bundle and then id's key and
// certificate, each file replaced whole (WriteFileAtomic).
func (f Files) Write(id *Identity, bundle []byte) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("certificate directory: %w", err)
	}
	if err := WriteFileAtomic(f.Bundle(), bundle); err != nil {
		return err
	}
	pair := make([]byte, 0, len(id.KeyPEM)+len(id.CertPEM))
	pair = append(append(pair, id.KeyPEM...), id.CertPEM...)
	return WriteFileAtomic(f.Identity(), pair)
}

// Read parses the identity file as a reader does (tls.X509KeyPair of the
// file with itself) and returns the pair and its certificate.
func (f Files) Read() (tls.Certificate, *x509.Certificate, error) {
	b, err := os.ReadFile(f.Identity())
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pair, err := tls.X509KeyPair(b, b)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%s: %w", f.Identity(), err)
	}
	return pair, pair.Leaf, nil
}

// Remove deletes the directory and its files.
func (f Files) Remove() error { return os.RemoveAll(f.Dir) }

// WriteFileAtomic replaces path with b, mode 0600: it writes a temporary
// file in the same directory, syncs it and renames it over path, so a
// reader sees the old content or the new one, never a part.
func WriteFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself durable; best effort
		d.Close()
	}
	return nil
}

// RefreshInterval is how often a workload's provider should reread its
// files for certificates of the given lifetime: a sixtieth of it, between 5
// seconds and a minute (a minute for the default hour). Renewal comes at
// half-life, so a workload takes its new certificate long before the old
// one expires, even if it misses one refresh.
func RefreshInterval(lifetime time.Duration) time.Duration {
	return min(max(lifetime/60, 5*time.Second), time.Minute)
}

// errNotIssued is Rotator.Status's error for a directory it does not know.
var errNotIssued = errors.New("no certificate issued for this directory")
