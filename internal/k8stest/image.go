package k8stest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImageSpec describes a one-binary image.
type ImageSpec struct {
	Ref    string   // e.g. gmesh.local/echo-server:0.9
	Binary string   // a static binary on this machine
	Path   string   // where it goes in the image, e.g. /echo-server; also the entrypoint
	Args   []string // the image's Cmd
	Env    []string // KEY=VALUE
}

// BuildImage writes an image tarball (the `docker save` layout, which `ctr
// images import`, `docker load`, kind and ko's --tarball use) holding one
// layer with the binary. Pure Go: no Docker, no registry.
func BuildImage(spec ImageSpec, out string) error {
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return fmt.Errorf("parse image reference %q: %w", spec.Ref, err)
	}
	bin, err := os.ReadFile(spec.Binary)
	if err != nil {
		return fmt.Errorf("read the image's binary: %w", err)
	}
	layerTar, err := binaryLayer(spec.Path, bin)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("make the image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("add the image layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read the image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{spec.Path}
	cf.Config.Cmd = spec.Args
	cf.Config.Env = append([]string{"PATH=/"}, spec.Env...)
	cf.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("set the image config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("make %s: %w", filepath.Dir(out), err)
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return fmt.Errorf("write image %s: %w", out, err)
	}
	return nil
}

// binaryLayer is a tar holding the binary at p (mode 0755) and /tmp.
func binaryLayer(p string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: epoch}); err != nil {
		return nil, fmt.Errorf("write the image layer: %w", err)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(p), "/"), Mode: 0o755, Size: int64(len(bin)), ModTime: epoch}); err != nil {
		return nil, fmt.Errorf("write the image layer: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("write the image layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write the image layer: %w", err)
	}
	return buf.Bytes(), nil
}

// BuildGoImage builds a Go main package of this module statically
// (CGO_ENABLED=0) and writes it as a one-binary image tarball; the binary is
// /<last element of pkg>. moduleDir is the module's root ("" finds it with
// `go env GOMOD` from the working directory).
func BuildGoImage(ctx context.Context, moduleDir, pkg string, ldflags string, spec ImageSpec, out string) error {
	if moduleDir == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			return fmt.Errorf("find the module root for %s: go env GOMOD: %w", pkg, err)
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			return fmt.Errorf("build %s: the working directory is not inside a Go module (run this from the gmesh repository)", pkg)
		}
		moduleDir = filepath.Dir(gomod)
	}
	tmp, err := os.MkdirTemp("", "gmesh-image-")
	if err != nil {
		return fmt.Errorf("make a build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, path.Base(pkg))
	args := []string{"build", "-trimpath", "-o", bin}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w: %s", pkg, err, out)
	}
	spec.Binary = bin
	if spec.Path == "" {
		spec.Path = "/" + path.Base(pkg)
	}
	return BuildImage(spec, out)
}
