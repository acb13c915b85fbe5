package cli

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	grpcxds "google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/agent"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/runtime/local"
	"github.com/gmesh-dev/gmesh/internal/statedir"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

func openDir(t *testing.T) statedir.Dir {
	t.Helper()
	dir, err := statedir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func taskStart(dir statedir.Dir, id string, tls bool) local.TaskStart {
	ts := local.TaskStart{ID: id, Mesh: "echo", VirtualNode: "echo-server-0-9", Dir: local.TaskDir(dir.Path, id), Env: map[string]string{}}
	if tls {
		ts.Env[agent.EnvTLS] = "1"
	}
	return ts
}

// TestIdentitiesTLSOff: a task of a mesh without TLS gets the bootstrap it
// always got, byte for byte, and no CA is made.
func TestIdentitiesTLSOff(t *testing.T) {
	dir := openDir(t)
	ids, err := newIdentities(dir, &caOptions{lifetime: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids.serverURI = "127.0.0.1:15010"
	got, err := ids.bootstrap(taskStart(dir, "echo-server-0-9-1", false))
	if err != nil {
		t.Fatal(err)
	}
	want, err := bootstrap.JSON("127.0.0.1:15010", "echo-server-0-9-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("bootstrap changed with TLS off:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(dir.CADir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s: %v; want no CA made for a mesh without TLS", dir.CADir(), err)
	}
}

// TestIdentitiesTLSOn: a task of a mesh with TLS on gets its certificate
// files (owner-only) in its own directory and a bootstrap naming them that
// grpc-go accepts; the CA is made 0600 in the state directory; releasing
// the task stops its renewals.
func TestIdentitiesTLSOn(t *testing.T) {
	dir := openDir(t)
	ids, err := newIdentities(dir, &caOptions{lifetime: 20 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids.serverURI = "127.0.0.1:15010"
	ts := taskStart(dir, "echo-server-0-9-1", true)
	b, err := ids.bootstrap(ts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grpcxds.NewXDSResolverWithConfigForTesting(b); err != nil {
		t.Errorf("grpc-go rejects the bootstrap: %v", err)
	}
	var got struct {
		Providers map[string]struct {
			Config map[string]string `json:"config"`
		} `json:"certificate_providers"`
		Servers []struct {
			Creds []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	files := pki.Files{Dir: filepath.Join(ts.Dir, "tls")}
	cfg := got.Providers[bootstrap.CertProviderInstance].Config
	if cfg["certificate_file"] != files.Identity() || cfg["private_key_file"] != files.Identity() || cfg["ca_certificate_file"] != files.Bundle() || cfg["refresh_interval"] != "20s" {
		t.Errorf("provider config %v, want the task's files and a 20s refresh", cfg)
	}
	// The xDS channel: A65 "tls" with the same files (the control plane
	// requires the certificate while the mesh has TLS on).
	if len(got.Servers) != 1 || len(got.Servers[0].Creds) != 1 || got.Servers[0].Creds[0].Type != "tls" ||
		!maps.Equal(got.Servers[0].Creds[0].Config, cfg) {
		t.Errorf("xds_servers %+v, want one server with channel_creds tls and config %v", got.Servers, cfg)
	}
	_, leaf, err := files.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leaf.URIs[0].String(), "spiffe://echo.gmesh.local/vn/echo-server-0-9"; got != want {
		t.Errorf("certificate id %s, want %s", got, want)
	}
	for path, want := range map[string]os.FileMode{
		files.Identity(): 0o600, files.Bundle(): 0o600, files.Dir: 0o700, ts.Dir: 0o700,
		dir.CADir(): 0o700, filepath.Join(dir.CADir(), pki.CAKeyFile): 0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", path, st.Mode().Perm(), want)
		}
	}
	// The task's endpoint reports the certificate (gmesh status shows
	// it), and a renewal re-reports the task.
	cert, ok := ids.certificate(ts.Dir)
	if !ok || cert.ID != "spiffe://echo.gmesh.local/vn/echo-server-0-9" || cert.NotAfter != leaf.NotAfter.UTC().Format(time.RFC3339) || cert.RenewAt == "" || cert.Failures != 0 {
		t.Errorf("certificate(%s) = %+v, %v; want the task's ID, expiry %s and a renewal time", ts.Dir, cert, ok, leaf.NotAfter)
	}
	var refreshed []string
	ids.refresh = func(id string) { refreshed = append(refreshed, id) }
	ids.changed(files.Dir)
	if len(refreshed) != 1 || refreshed[0] != ts.ID {
		t.Errorf("a renewal of %s refreshed %v, want [%s]", files.Dir, refreshed, ts.ID)
	}
	ids.released(ts)
	if _, err := ids.rot.Status(files.Dir); err == nil {
		t.Error("a released task's certificate is still renewed")
	}
	if c, ok := ids.certificate(ts.Dir); ok {
		t.Errorf("a released task still reports a certificate: %+v", c)
	}
}

// TestIdentitiesRefuseBadCA: an existing CA key others may read, or a
// user CA given by half, stops `gmesh up` before anything starts.
func TestIdentitiesRefuseBadCA(t *testing.T) {
	dir := openDir(t)
	if _, err := pki.LoadOrCreate(dir.CADir(), nil); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir.CADir(), pki.CAKeyFile)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := newIdentities(dir, &caOptions{lifetime: time.Hour}, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Errorf("group-readable CA key: got %v, want a refusal saying chmod 600 %s", err, key)
	}
	for _, o := range []caOptions{
		{certFile: "ca.crt", lifetime: time.Hour},
		{lifetime: time.Second},
	} {
		if _, err := newIdentities(openDir(t), &o, nil); err == nil {
			t.Errorf("options %+v: got no error", o)
		}
	}
}

// TestIdentitiesUserCA: with --ca-cert/--ca-key the user's CA signs.
func TestIdentitiesUserCA(t *testing.T) {
	userDir := t.TempDir()
	user, err := pki.LoadOrCreate(userDir, nil) // any CA on disk will do
	if err != nil {
		t.Fatal(err)
	}
	dir := openDir(t)
	ids, err := newIdentities(dir, &caOptions{certFile: filepath.Join(userDir, pki.CACertFile), keyFile: filepath.Join(userDir, pki.CAKeyFile), lifetime: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids.serverURI = "127.0.0.1:15010"
	ts := taskStart(dir, "t-1", true)
	if _, err := ids.bootstrap(ts); err != nil {
		t.Fatal(err)
	}
	_, leaf, err := pki.Files{Dir: filepath.Join(ts.Dir, "tls")}.Read()
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(user.Cert()); err != nil {
		t.Errorf("certificate not signed by the user's CA: %v", err)
	}
	if _, err := os.Stat(dir.CADir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a CA was made in the state directory although the user gave one")
	}
}
