// Package statedir lays out a gmesh state directory: the store, the control
// plane's address and token, task logs and build artifacts.
//
//	DIR/state.db          the durable store (bbolt)
//	DIR/controlplane.json the control plane's address and pid, written on start
//	DIR/token             the admin API bearer token (0600), made on first start
//	DIR/logs/             controlplane.log, up.log, <service>/<task>.log
//	DIR/artifacts/        content-addressed builds: sha256-<hex>/<name>
//	DIR/up.lock           held by the running `gmesh up`
//	DIR/ca/               the mesh CA (0700): ca.crt, ca.key (0600), made when a mesh first has TLS on
//	DIR/tasks/<task>/tls/ a task's certificate files (0700/0600), while it runs
package statedir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Default is the state directory used when none is given.
const Default = ".gmesh"

// Dir is a state directory.
type Dir struct {
	Path string
}

// Open makes (if needed) and returns the state directory at path, owner-only.
func Open(path string) (Dir, error) {
	if path == "" {
		path = Default
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Dir{}, fmt.Errorf("state directory %s: %w", path, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "logs"), filepath.Join(abs, "artifacts")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Dir{}, fmt.Errorf("state directory %s: %w", abs, err)
		}
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return Dir{}, fmt.Errorf("state directory %s: %w", abs, err)
	}
	return Dir{Path: abs}, nil
}

// Lookup returns the state directory at path without making anything: for
// commands that only read. When it does not exist the error satisfies
// errors.Is(err, fs.ErrNotExist) and the returned Dir still names it.
func Lookup(path string) (Dir, error) {
	if path == "" {
		path = Default
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Dir{}, fmt.Errorf("state directory %s: %w", path, err)
	}
	d := Dir{Path: abs}
	st, err := os.Stat(abs)
	if err != nil {
		return d, fmt.Errorf("state directory %s: %w", abs, err)
	}
	if !st.IsDir() {
		return d, fmt.Errorf("state directory %s is not a directory", abs)
	}
	return d, nil
}

// StorePath is the store file.
func (d Dir) StorePath() string { return filepath.Join(d.Path, "state.db") }

// LogDir is where logs go.
func (d Dir) LogDir() string { return filepath.Join(d.Path, "logs") }

// ArtifactDir is where builds go.
func (d Dir) ArtifactDir() string { return filepath.Join(d.Path, "artifacts") }

// CADir holds the mesh CA gmesh made (internal/pki).
func (d Dir) CADir() string { return filepath.Join(d.Path, "ca") }

// LockPath is the lock `gmesh up` holds.
func (d Dir) LockPath() string { return filepath.Join(d.Path, "up.lock") }

// UpInfoPath records the running `gmesh up` (pid, endpoints).
func (d Dir) UpInfoPath() string { return filepath.Join(d.Path, "up.json") }

// ControlPlane is what a running control plane writes about itself.
type ControlPlane struct {
	// Addr serves both the admin API and xDS (ADS).
	Addr string `json:"addr"`
	PID  int    `json:"pid"`
}

func (d Dir) controlPlanePath() string { return filepath.Join(d.Path, "controlplane.json") }

// WriteControlPlane records cp atomically.
func (d Dir) WriteControlPlane(cp ControlPlane) error {
	return writeJSON(d.controlPlanePath(), cp)
}

// ReadControlPlane returns the recorded control plane; an error that
// satisfies errors.Is(err, fs.ErrNotExist) when none ever ran here.
func (d Dir) ReadControlPlane() (ControlPlane, error) {
	var cp ControlPlane
	err := readJSON(d.controlPlanePath(), &cp)
	return cp, err
}

// UpInfo is what a running `gmesh up` records.
type UpInfo struct {
	PID          int    `json:"pid"`
	Public       string `json:"public"`
	Dashboard    string `json:"dashboard,omitempty"`
	ControlPlane string `json:"controlPlane"`
	Ready        bool   `json:"ready"`
}

// WriteUpInfo records u atomically.
func (d Dir) WriteUpInfo(u UpInfo) error { return writeJSON(d.UpInfoPath(), u) }

// ReadUpInfo reads the record of the running `gmesh up`.
func (d Dir) ReadUpInfo() (UpInfo, error) {
	var u UpInfo
	err := readJSON(d.UpInfoPath(), &u)
	return u, err
}

// Token returns the admin API bearer token, making it on first use (32
// random bytes, hex, file mode 0600).
func (d Dir) Token() (string, error) {
	p := filepath.Join(d.Path, "token")
	b, err := os.ReadFile(p)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", fmt.Errorf("token file %s is too short; delete it to make a new one", p)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("make token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return d.Token() // another process made it first
	}
	if err != nil {
		return "", fmt.Errorf("make token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write token: %w", err)
	}
	return tok, f.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is not valid: %w", path, err)
	}
	return nil
}
