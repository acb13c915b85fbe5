// Command gmesh-k8stest builds, starts, measures and cleans up the real
// single-node Kubernetes cluster that gmesh's end-to-end tests run on (see
// internal/k8stest and docs/kubernetes-testing.md). It needs root and cgroup
// v1.
//
//	gmesh-k8stest build              build the cluster's binaries into the cache
//	gmesh-k8stest up [-kubeconfig F] start a cluster, wait for SIGINT/SIGTERM, tear it down
//	gmesh-k8stest cleanup            undo a cluster run that was killed
//	gmesh-k8stest bench [-n N]       time N start/teardown cycles
//	gmesh-k8stest image -pkg P -ref R -out F   build a one-binary image tarball
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/gmesh-dev/gmesh/internal/k8stest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: gmesh-k8stest build | up [-kubeconfig FILE] | cleanup | bench [-n N] | image -pkg PKG -ref REF -out FILE`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "build":
		err = build(ctx, log, stdout)
	case "up":
		err = up(ctx, log, args[1:], stdout, stderr)
	case "cleanup":
		err = k8stest.CleanupRoot(ctx, log, "")
	case "bench":
		err = bench(ctx, log, args[1:], stdout, stderr)
	case "image":
		err = image(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gmesh-k8stest %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func build(ctx context.Context, log *slog.Logger, stdout io.Writer) error {
	start := time.Now()
	b, err := k8stest.EnsureBinaries(ctx, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "binaries in %s (%s)\n", b.Dir, time.Since(start).Round(time.Second))
	return nil
}

func up(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("kubeconfig", "", "also copy the admin kubeconfig here")
	install := fs.Bool("install", true, "apt-get install missing host packages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := k8stest.Start(ctx, k8stest.Options{Log: log, InstallPackages: *install})
	if err != nil {
		return err
	}
	kc := c.Kubeconfig()
	if *out != "" {
		b, err := os.ReadFile(kc)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(*out), 0o755)
		}
		if err == nil {
			err = os.WriteFile(*out, b, 0o600)
		}
		if err != nil {
			_ = c.Stop(context.Background())
			return fmt.Errorf("copy the kubeconfig: %w", err)
		}
		kc = *out
	}
	fmt.Fprintf(stdout, "cluster up; export %s=%s KUBECONFIG=%s (kubectl: %s); Ctrl-C tears it down\n",
		k8stest.EnvKubeconfig, kc, kc, c.Binaries().Kubectl)
	<-ctx.Done()
	fmt.Fprintln(stdout, "tearing down")
	return c.Stop(context.Background())
}

func bench(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "start/teardown cycles")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	if _, err := k8stest.EnsureBinaries(ctx, log); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "binaries ready in %s\n", time.Since(start).Round(time.Millisecond))
	var ups, downs []time.Duration
	for i := 0; i < *n; i++ {
		t := time.Now()
		c, err := k8stest.Start(ctx, k8stest.Options{Log: log, InstallPackages: true})
		if err != nil {
			return err
		}
		up := time.Since(t)
		t = time.Now()
		left, err := c.StopChecked(context.Background())
		if err != nil {
			return err
		}
		down := time.Since(t)
		if len(left) > 0 {
			return fmt.Errorf("teardown left %v", left)
		}
		ups, downs = append(ups, up), append(downs, down)
		fmt.Fprintf(stdout, "run %d: up (node Ready, default service account) %s, teardown %s\n", i+1, up.Round(time.Millisecond), down.Round(time.Millisecond))
		for _, tm := range c.Timings() {
			fmt.Fprintf(stdout, "    %-55s %s\n", tm.Step, tm.Took.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(stdout, "up: median %s, min %s, max %s; teardown: median %s\n", median(ups), minOf(ups), maxOf(ups), median(downs))
	return nil
}

func image(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pkg := fs.String("pkg", "", "Go main package of this module, e.g. ./cmd/echo-server")
	ref := fs.String("ref", "", "image reference, e.g. gmesh.local/echo-server:0.9")
	out := fs.String("out", "", "tarball to write")
	ldflags := fs.String("ldflags", "", "go build -ldflags")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pkg == "" || *ref == "" || *out == "" {
		return errors.New("-pkg, -ref and -out are required")
	}
	if err := k8stest.BuildGoImage(ctx, "", *pkg, *ldflags, k8stest.ImageSpec{Ref: *ref}, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s -> %s\n", *ref, *out)
	return nil
}

func sorted(ds []time.Duration) []time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func median(ds []time.Duration) time.Duration {
	s := sorted(ds)
	return s[len(s)/2].Round(time.Millisecond)
}

func minOf(ds []time.Duration) time.Duration { return sorted(ds)[0].Round(time.Millisecond) }

func maxOf(ds []time.Duration) time.Duration {
	s := sorted(ds)
	return s[len(s)-1].Round(time.Millisecond)
}
