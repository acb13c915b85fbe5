// Package artifact builds a service's Go program into a content-addressed
// file in the state directory, and asks a built program for its version.
// Artifacts are kept after a version is retired, so a rollback needs no
// rebuild.
package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Artifact is a built program.
type Artifact struct {
	Path   string // absolute path of the executable
	Digest string // "sha256:<hex>"
}

// ErrNoGo is returned when a build is needed and no Go toolchain is found.
var ErrNoGo = errors.New("a build is needed but no Go toolchain was found on PATH (install Go, or give a command/--binary instead of a package)")

// Build runs `go build` of pkg (a package path such as ./cmd/echo-server,
// relative to workDir) and stores the result under dir as
// sha256-<hex>/<name>. Building the same source twice yields the same
// artifact.
func Build(ctx context.Context, workDir, pkg, dir string) (Artifact, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return Artifact{}, ErrNoGo
	}
	tmpDir, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return Artifact{}, fmt.Errorf("build %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmpDir)
	name := filepath.Base(strings.TrimSuffix(pkg, "/"))
	if name == "." || name == "" {
		name = "program"
	}
	out := filepath.Join(tmpDir, name)
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = workDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return Artifact{}, fmt.Errorf("go build %s failed:\n%s", pkg, msg)
	}
	return Import(out, dir)
}

// Import copies the executable at path into dir, content-addressed.
func Import(path, dir string) (Artifact, error) {
	f, err := os.Open(path)
	if err != nil {
		return Artifact{}, fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Artifact{}, fmt.Errorf("binary %s: %w", path, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return Artifact{}, fmt.Errorf("binary %s is not an executable file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return Artifact{}, fmt.Errorf("binary %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	destDir := filepath.Join(dir, "sha256-"+sum[:16])
	dest := filepath.Join(destDir, filepath.Base(path))
	a := Artifact{Path: dest, Digest: "sha256:" + sum}
	if _, err := os.Stat(dest); err == nil {
		return a, nil
	}
	if err := os.MkdirAll(destDir, 0o700); err != nil {
		return Artifact{}, fmt.Errorf("store artifact: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Artifact{}, err
	}
	tmp, err := os.CreateTemp(destDir, ".tmp-")
	if err != nil {
		return Artifact{}, fmt.Errorf("store artifact: %w", err)
	}
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return Artifact{}, fmt.Errorf("store artifact: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return Artifact{}, err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return Artifact{}, err
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return Artifact{}, fmt.Errorf("store artifact: %w", err)
	}
	return a, nil
}

// Version runs `path --version` and returns its first line of output.
func Version(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w (give the version with --version)", path, err)
	}
	v := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	if v == "" || len(v) > 64 || strings.ContainsAny(v, " \t/") {
		return "", fmt.Errorf("%s --version printed %q, not a version (give it with --version)", path, v)
	}
	return v, nil
}
