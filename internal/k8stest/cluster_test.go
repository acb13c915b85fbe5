package k8stest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/k8stest"
)

// TestEchoOnRealCluster starts a real cluster, runs echo-server 0.9 as a
// 2-replica Deployment from a locally built image, calls each pod's gRPC Echo
// from the host, and checks that the teardown leaves nothing behind.
func TestEchoOnRealCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no real cluster")
	}
	k8stest.RequireHost(t)
	// The image first: a build on a busy machine can take minutes.
	const ref = "gmesh.local/echo-server:0.9"
	tarball := filepath.Join(t.TempDir(), "echo-server.tar")
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer bcancel()
	if err := k8stest.BuildGoImage(bctx, "", "github.com/gmesh-dev/gmesh/cmd/echo-server", "", k8stest.ImageSpec{Ref: ref}, tarball); err != nil {
		t.Fatal(err)
	}

	c := k8stest.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.LoadImage(ctx, tarball); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if _, err := c.Client().AppsV1().Deployments("default").Create(ctx, echoServerDeployment(ref, 2), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the deployment: %v", err)
	}
	ips := waitReadyPods(ctx, t, c, "app=echo-server", 2)
	t.Logf("2 echo-server pods Ready %s after the create: %v", time.Since(start).Round(time.Millisecond), ips)

	for _, ip := range ips {
		conn, err := grpc.NewClient(ip+":50051", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("dial %s: %v", ip, err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := echov1.NewEchoServiceClient(conn).Echo(rctx, &echov1.EchoRequest{Name: "k8stest"}, grpc.WaitForReady(true))
		rcancel()
		conn.Close()
		if err != nil {
			t.Fatalf("Echo on pod %s: %v", ip, err)
		}
		want := fmt.Sprintf("Hello, k8stest-san! (Said %s, Version 0.9)", ip)
		if got := resp.GetMessage(); got != want {
			t.Errorf("Echo on pod %s: got %q, want %q", ip, got, want)
		}
	}
}

// TestCleanupAfterKill starts a cluster in a child process, SIGKILLs that
// process, and checks that CleanupRoot, reading the state file the child
// left, removes everything.
func TestCleanupAfterKill(t *testing.T) {
	if os.Getenv("GMESH_K8STEST_CHILD") == "1" {
		runChild()
		return
	}
	if testing.Short() {
		t.Skip("-short: no real cluster")
	}
	k8stest.RequireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCleanupAfterKill$", "-test.v")
	cmd.Env = append(os.Environ(), "GMESH_K8STEST_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			t.Log("child: " + line)
			if strings.Contains(line, "CLUSTER-UP") {
				up <- true
			}
		}
		up <- false
	}()
	select {
	case ok := <-up:
		if !ok {
			_ = cmd.Wait()
			t.Fatal("the child exited before its cluster was up")
		}
	case <-ctx.Done():
		t.Fatal("the child's cluster did not come up")
	}
	st, ok, err := k8stest.ReadState(filepath.Join(rootDir(), "state.json"))
	if err != nil || !ok {
		t.Fatalf("read the child's state file: ok=%v err=%v", ok, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	left := k8stest.Leftovers(st)
	if len(left) == 0 {
		t.Fatal("the killed child's cluster left nothing: the test proves nothing")
	}
	t.Logf("the killed child left %d things: %s", len(left), strings.Join(left, "; "))
	// What kube-proxy and Start put into the machine's tables must be
	// among them, so that the cleanup below is seen to remove it.
	for _, want := range []string{
		"(kube-proxy)",
		"iptables/nat chain KUBE-SERVICES", "iptables/nat chain KUBE-SVC-", "iptables/nat chain KUBE-SEP-",
		"iptables/nat rule -A PREROUTING", "iptables/nat rule -A OUTPUT", "iptables/nat rule -A POSTROUTING",
		"iptables/filter rule -A FORWARD", "iptables/filter chain GMESH-K8STEST-FORWARD",
		"ip6tables/nat chain KUBE-SERVICES",
	} {
		found := false
		for _, l := range left {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("the killed child's leftovers hold no %q", want)
		}
	}
	left, err = k8stest.CleanupRootChecked(ctx, discard(), "", st)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if len(left) > 0 {
		t.Errorf("cleanup after SIGKILL left behind: %s", strings.Join(left, "; "))
	}
}

// runChild starts a cluster with a running pod behind a Service (so there
// are shims, a network namespace, overlay and shm mounts, pod cgroups, and
// kube-proxy's chains for the Service to clean up), says so, and waits to be
// killed.
func runChild() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := k8stest.Start(ctx, k8stest.Options{InstallPackages: true})
	if err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "default", Labels: map[string]string{"app": "sleeper"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "pause", Image: k8stest.PauseImage, ImagePullPolicy: corev1.PullNever,
		}}},
	}
	if _, err := c.Client().CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		fmt.Println("create pod:", err)
		os.Exit(1)
	}
	var podIP string
	err = poll(ctx, func() (bool, error) {
		p, err := c.Client().CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{})
		if err != nil || !podReady(p) {
			return false, nil
		}
		podIP = p.Status.PodIP
		return true, nil
	})
	if err != nil {
		fmt.Println("wait for the pod:", err)
		os.Exit(1)
	}
	svc, err := c.Client().CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "sleeper"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		fmt.Println("create the service:", err)
		os.Exit(1)
	}
	// kube-proxy has the Service once its endpoint's chain is in nat.
	err = poll(ctx, func() (bool, error) {
		out, err := exec.CommandContext(ctx, "iptables", "-w", "-t", "nat", "-S").Output()
		return err == nil && strings.Contains(string(out), "-j DNAT --to-destination "+podIP+":80") && strings.Contains(string(out), svc.Spec.ClusterIP), nil
	})
	if err != nil {
		fmt.Println("wait for kube-proxy's rules:", err)
		os.Exit(1)
	}
	fmt.Println("CLUSTER-UP", c.Kubeconfig())
	select {}
}
