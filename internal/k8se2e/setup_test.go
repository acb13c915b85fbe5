package k8se2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/gmesh-dev/gmesh/internal/k8stest"
	"github.com/gmesh-dev/gmesh/internal/load"
)

// referenceReply is the echo example's reply through the gateway to
// ?name=k8s from version 0.9; its group is the pod's address.
var referenceReply = regexp.MustCompile(`^Response from the server: Hello, k8s-san! \(Said ([0-9.]+), Version 0\.9\)$`)

// startEcho builds the images, starts a fresh cluster, installs gmesh with
// the README's command, applies the echo example, and returns once the
// gateway gives the reference reply: the cluster, a context bounding the
// test, and the gateway's URL. The cluster is torn down when t ends, after
// a dump of its state if t failed.
func startEcho(t *testing.T) (*cluster, context.Context, string) {
	return startExample(t, echoSetup{})
}

// echoSetup varies startExample.
type echoSetup struct {
	// example is the kustomization applied; default examples/kubernetes/echo.
	example string
	// controlPlaneArgs are added to the control plane's arguments: gmesh is
	// then installed from the rendered manifests, not the README's command.
	controlPlaneArgs []string
}

// kubernetesArg is the control plane's first argument in
// deploy/kubernetes, after which startExample adds its own.
var kubernetesArg = regexp.MustCompile(`(?m)^(\s*)- --kubernetes$`)

// startExample is startEcho with the setup's example and control plane
// arguments.
func startExample(t *testing.T, setup echoSetup) (*cluster, context.Context, string) {
	if setup.example == "" {
		setup.example = "examples/kubernetes/echo"
	}
	if testing.Short() {
		t.Skip("-short: no real cluster")
	}
	k8stest.RequireHost(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bctx, bcancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer bcancel()
	var tarballs []string
	for i, im := range images {
		tb := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		start := time.Now()
		if err := k8stest.BuildGoImage(bctx, repo, im.pkg, im.ldflags, k8stest.ImageSpec{Ref: im.ref}, tb); err != nil {
			t.Fatal(err)
		}
		t.Logf("image %s built in %s", im.ref, time.Since(start).Round(time.Millisecond))
		tarballs = append(tarballs, tb)
	}

	kc := k8stest.ForTest(t)
	dyn, err := dynamic.NewForConfig(kc.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, c: kc, dyn: dyn, repo: repo}
	t.Cleanup(c.dumpOnFailure) // runs before the cluster's teardown
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	for _, tb := range tarballs {
		if err := kc.LoadImage(ctx, tb); err != nil {
			t.Fatal(err)
		}
	}

	// Install: the README's command.
	start := time.Now()
	if len(setup.controlPlaneArgs) == 0 {
		c.kubectlOK(ctx, "", "apply", "-k", filepath.Join(repo, "deploy/kubernetes"))
	} else {
		// kubectl's stdout alone: a warning on stderr is no manifest.
		cmd := exec.CommandContext(ctx, kc.Binaries().Kubectl, "kustomize", filepath.Join(repo, "deploy/kubernetes"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl kustomize deploy/kubernetes: %v", err)
		}
		manifests := string(out)
		m := kubernetesArg.FindStringSubmatch(manifests)
		if m == nil {
			t.Fatal("deploy/kubernetes: no control plane argument --kubernetes to add arguments after")
		}
		add := m[0]
		for _, a := range setup.controlPlaneArgs {
			add += "\n" + m[1] + "- " + a
		}
		c.kubectlOK(ctx, strings.Replace(manifests, m[0], add, 1), "apply", "-f", "-")
	}
	c.waitDeployment(ctx, cpNamespace, cpDeployment, 2)
	c.waitWebhooksReady(ctx)
	t.Logf("gmesh installed and ready %s after the apply", time.Since(start).Round(time.Millisecond))
	c.waitAdmission(ctx)
	t.Logf("the webhooks answer through their Service %s after the apply", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	c.kubectlOK(ctx, "", "apply", "-k", filepath.Join(repo, setup.example))
	for _, d := range []string{"echo-server-0-9", "echo-client-0-1", gatewayApp} {
		c.waitDeployment(ctx, echoNS, d, 2)
	}
	t.Logf("echo example ready %s after the apply", time.Since(start).Round(time.Millisecond))
	gw := c.gatewayURL(ctx)

	// Ready Deployments are not yet routes: the gateway's informers, then
	// echo-client's xDS, learn of the Ready pods a moment later. Wait for
	// the first reference reply; after it, every request must succeed.
	ready := time.Now()
	c.poll(ctx, "the first reference reply through the gateway", 30*time.Second, func() (bool, string) {
		code, body := get(ctx, t, gw+"/?name=k8s")
		return code == http.StatusOK && referenceReply.MatchString(body), fmt.Sprintf("%d %q", code, body)
	})
	t.Logf("first reference reply %s after the Deployments were Ready", time.Since(ready).Round(time.Millisecond))
	return c, ctx, gw
}

// checkNoFailures fails t unless every request of res that was sent got a
// successful reply. A request the load could not send because 256 were
// already in flight (a latency stall: on a loaded 2-core machine the
// cluster's own processes starve the pods for seconds) is no failure of
// the mesh, but more than 1 in 20 of them hides too much, and fails too.
func checkNoFailures(t *testing.T, what string, res *load.Result) {
	t.Helper()
	scheduled := res.Sent + res.Dropped
	switch {
	case res.Failed != 0 || res.OK == 0:
		t.Errorf("%s: %d OK, %d failed %v, want 0 failed", what, res.OK, res.Failed, res.Failures)
	case res.Dropped*20 > scheduled:
		t.Errorf("%s: %d of %d requests not sent (256 in flight, p99 %s), want at most 1 in 20", what, res.Dropped, scheduled, res.Latency.P99)
	case res.Dropped > 0:
		t.Logf("%s: %d of %d requests not sent (256 in flight: a stall, p99 %s), no failure", what, res.Dropped, scheduled, res.Latency.P99)
	}
}
