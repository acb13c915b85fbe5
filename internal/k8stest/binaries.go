package k8stest

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Versions of the cluster's parts. kubelet 1.35 refuses cgroup v1 by default:
// stay on 1.34 while the machines have only cgroup v1.
const (
	KubernetesVersion = "v1.34.4"
	stagingVersion    = "v0.34.4"
	EtcdVersion       = "v3.6.16"
)

// The k8s.io staging modules replaced by their released versions. Left out:
// sample-cli-plugin and sample-controller, which the module proxy refuses.
var stagingModules = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime",
	"client-go", "cloud-provider", "cluster-bootstrap", "code-generator",
	"component-base", "component-helpers", "controller-manager", "cri-api",
	"cri-client", "csi-translation-lib", "dynamic-resource-allocation",
	"endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl",
	"kubelet", "metrics", "mount-utils", "pod-security-admission",
	"sample-apiserver",
}

// The Kubernetes commands built from k8s.io/kubernetes. kube-proxy makes
// Service ClusterIPs route on the node.
var kubeCommands = []string{"kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kubectl", "kube-proxy"}

// Binaries are the paths of the cluster's built binaries.
type Binaries struct {
	Dir               string
	Etcd              string
	APIServer         string
	Kubelet           string
	ControllerManager string
	Scheduler         string
	Kubectl           string
	KubeProxy         string
	Pause             string // the sandbox image's binary
	Reaper            string // the parent of containerd that reaps its shims
}

//go:embed pause/main.go
var pauseSource []byte

//go:embed reaper/main.go
var reaperSource []byte

// CacheDir is where built binaries are kept: $XDG_CACHE_HOME/gmesh-k8s, or
// ~/.cache/gmesh-k8s; GMESH_K8S_CACHE overrides both.
func CacheDir() (string, error) {
	if d := os.Getenv("GMESH_K8S_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "gmesh-k8s"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "gmesh-k8s"), nil
}

func binariesIn(dir, helpers string) Binaries {
	return Binaries{
		Dir:               dir,
		Etcd:              filepath.Join(dir, "etcd"),
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		Kubelet:           filepath.Join(dir, "kubelet"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Scheduler:         filepath.Join(dir, "kube-scheduler"),
		Kubectl:           filepath.Join(dir, "kubectl"),
		KubeProxy:         filepath.Join(dir, "kube-proxy"),
		Pause:             filepath.Join(helpers, "pause"),
		Reaper:            filepath.Join(helpers, "reaper"),
	}
}

// EnsureBinaries returns the cluster's binaries, building those missing from
// the cache. A cold build takes about 7 minutes and 3.6 GB of Go build cache;
// a warm call only checks the files. Each binary is installed by a rename
// once built, so a cache from before a binary was added (kube-proxy) builds
// only that one.
func EnsureBinaries(ctx context.Context, log *slog.Logger) (Binaries, error) {
	cache, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	dir := filepath.Join(cache, KubernetesVersion+"-etcd"+EtcdVersion, "bin")
	h := sha256.New()
	h.Write(pauseSource)
	h.Write([]byte{0})
	h.Write(reaperSource)
	helpers := filepath.Join(cache, "helpers-"+hex.EncodeToString(h.Sum(nil))[:12])
	b := binariesIn(dir, helpers)
	if err := buildHelpers(ctx, log, cache, helpers); err != nil {
		return Binaries{}, err
	}
	missing := b.missing()
	if len(missing) == 0 {
		return b, nil
	}
	log.Info("building the kubernetes binaries (cold: about 7 minutes)", "dir", dir, "missing", missing)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("make the binaries directory: %w", err)
	}
	src := filepath.Join(cache, "src")
	if err := buildEtcd(ctx, log, filepath.Join(src, "etcd"), b.Etcd); err != nil {
		return Binaries{}, err
	}
	if err := buildKubernetes(ctx, log, filepath.Join(src, "kubernetes"), dir); err != nil {
		return Binaries{}, err
	}
	return b, nil
}

// missing lists the Kubernetes and etcd binaries not in the cache yet.
func (b Binaries) missing() []string {
	var out []string
	for _, p := range []string{b.Etcd, b.APIServer, b.Kubelet, b.ControllerManager, b.Scheduler, b.Kubectl, b.KubeProxy} {
		if _, err := os.Stat(p); err != nil {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

func buildEtcd(ctx context.Context, log *slog.Logger, src, out string) error {
	if _, err := os.Stat(out); err == nil {
		return nil
	}
	gomod := "module gmesh.local/etcdbuild\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 " + EtcdVersion + "\n"
	main := "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n"
	if err := writeFiles(src, map[string]string{"go.mod": gomod, "main.go": main}); err != nil {
		return fmt.Errorf("write the etcd build module: %w", err)
	}
	if err := goCmd(ctx, log, src, nil, "mod", "tidy"); err != nil {
		return fmt.Errorf("resolve etcd %s: %w", EtcdVersion, err)
	}
	start := time.Now()
	if err := goCmd(ctx, log, src, nil, "build", "-ldflags", "-s -w", "-o", out+".tmp", "."); err != nil {
		return fmt.Errorf("build etcd: %w", err)
	}
	log.Info("built", "binary", "etcd", "took", time.Since(start).Round(time.Second))
	return os.Rename(out+".tmp", out)
}

func buildKubernetes(ctx context.Context, log *slog.Logger, src, dir string) error {
	var mod strings.Builder
	mod.WriteString("module gmesh.local/k8sbuild\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nrequire k8s.io/kubernetes " + KubernetesVersion + "\n\nreplace (\n")
	for _, m := range stagingModules {
		fmt.Fprintf(&mod, "\tk8s.io/%s => k8s.io/%s %s\n", m, m, stagingVersion)
	}
	mod.WriteString(")\n")
	if err := writeFiles(src, map[string]string{"go.mod": mod.String()}); err != nil {
		return fmt.Errorf("write the kubernetes build module: %w", err)
	}
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, minor[0], minor[1])
	for _, c := range kubeCommands {
		out := filepath.Join(dir, c)
		if _, err := os.Stat(out); err == nil {
			continue
		}
		start := time.Now()
		if err := goCmd(ctx, log, src, []string{"GOFLAGS=-mod=mod"}, "build", "-ldflags", ldflags, "-o", out+".tmp", "k8s.io/kubernetes/cmd/"+c); err != nil {
			return fmt.Errorf("build %s: %w", c, err)
		}
		if err := os.Rename(out+".tmp", out); err != nil {
			return fmt.Errorf("install %s: %w", c, err)
		}
		log.Info("built", "binary", c, "took", time.Since(start).Round(time.Second))
	}
	return nil
}

// buildHelpers builds the pause and reaper binaries (static, no dependencies)
// from the sources embedded in this package.
func buildHelpers(ctx context.Context, log *slog.Logger, cache, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return nil
	}
	for name, src := range map[string][]byte{"pause": pauseSource, "reaper": reaperSource} {
		mod := filepath.Join(cache, "src", name)
		if err := writeFiles(mod, map[string]string{"go.mod": "module gmesh.local/" + name + "\n\ngo 1.24.0\n", "main.go": string(src)}); err != nil {
			return fmt.Errorf("write the %s module: %w", name, err)
		}
		if err := goCmd(ctx, log, mod, []string{"CGO_ENABLED=0"}, "build", "-ldflags", "-s -w", "-o", filepath.Join(dir, name), "."); err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
	}
	return os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
}

func writeFiles(dir string, files map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func goCmd(ctx context.Context, log *slog.Logger, dir string, env []string, args ...string) error {
	gobin := "go"
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		gobin = filepath.Join(goroot, "bin", "go")
	} else if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	} else if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GOWORK=off", "GOTOOLCHAIN=local"}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail)
	}
	log.Debug("go", "args", args, "dir", dir)
	return nil
}
