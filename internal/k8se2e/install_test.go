package k8se2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/gmesh-dev/gmesh/internal/k8stest"
	"github.com/gmesh-dev/gmesh/internal/load"
)

// The names the install and the example use.
const (
	cpNamespace  = "gmesh-system"
	cpDeployment = "gmesh-controlplane"
	echoNS       = "echo"
	gatewayApp   = "echo-gateway" // the gateway pods' app label
	gatewayPort  = 8080
)

var (
	virtualNodes   = schema.GroupVersionResource{Group: "appmesh.k8s.aws", Version: "v1beta2", Resource: "virtualnodes"}
	virtualRouters = schema.GroupVersionResource{Group: "appmesh.k8s.aws", Version: "v1beta2", Resource: "virtualrouters"}
)

// images are built once per test binary, before any cluster starts: a build
// on a busy machine takes minutes and must not hold a cluster up.
var images = []struct {
	pkg, ref, ldflags string
}{
	{"github.com/gmesh-dev/gmesh/cmd/gmesh", "gmesh.local/gmesh:dev", ""},
	{"github.com/gmesh-dev/gmesh/cmd/echo-server", "gmesh.local/echo-server:0.9", ""},
	{"github.com/gmesh-dev/gmesh/cmd/echo-server", "gmesh.local/echo-server:1.0", "-X main.stampedVersion=1.0"},
	{"github.com/gmesh-dev/gmesh/cmd/echo-client", "gmesh.local/echo-client:dev", ""},
}

// cluster is the test's view of the cluster and the repository.
type cluster struct {
	t    *testing.T
	c    *k8stest.Cluster
	dyn  dynamic.Interface
	repo string
}

// in is c for subtest t: its helpers fail t, not the parent test (FailNow
// must run on the failing test's own goroutine).
func (c *cluster) in(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// TestMeshOnRealCluster installs gmesh on a real cluster with the one
// documented command, applies the echo example, and checks what users rely
// on: the reference reply through the gateway from both echo-server pods,
// 0 failed requests while an echo-server pod and then a control-plane
// replica are deleted under 100 rps, a 50/50 split within 5 points over
// 2,000 requests, and bad App Mesh manifests refused at admission with the
// field named.
func TestMeshOnRealCluster(t *testing.T) {
	c, ctx, gw := startEcho(t)
	kc := c.c

	t.Run("the reference reply from both echo-server pods", func(t *testing.T) {
		c := c.in(t)
		ips := c.readyPodIPs(ctx, echoNS, "app=echo-server")
		if len(ips) != 2 {
			t.Fatalf("echo-server pods Ready: %v, want 2", ips)
		}
		re := referenceReply
		seen := map[string]bool{}
		var last string
		for i := 0; i < 200 && len(seen) < 2; i++ {
			code, body := get(ctx, t, gw+"/?name=k8s")
			last = fmt.Sprintf("%d %q", code, body)
			m := re.FindStringSubmatch(body)
			if code != http.StatusOK || m == nil {
				t.Fatalf("GET through the gateway: %s, want 200 and the reference reply", last)
			}
			if !slices.Contains(ips, m[1]) {
				t.Fatalf("the reply says %q, not one of the echo-server pods %v", m[1], ips)
			}
			seen[m[1]] = true
		}
		if len(seen) != 2 {
			t.Fatalf("200 requests reached only %v of the echo-server pods %v (last reply %s)", seen, ips, last)
		}
	})

	t.Run("the README's curl through kubectl port-forward", func(t *testing.T) {
		pctx, pcancel := context.WithTimeout(ctx, time.Minute)
		defer pcancel()
		cmd := exec.CommandContext(pctx, kc.Binaries().Kubectl, "-n", echoNS, "port-forward", "svc/echo-gateway", ":8080")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kc.Kubeconfig())
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pcancel()
			_ = cmd.Wait()
		}()
		// "Forwarding from 127.0.0.1:PORT -> 8080"
		re := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> 8080$`)
		port := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					select {
					case port <- m[1]:
					default:
					}
				}
			}
		}()
		var p string
		select {
		case p = <-port:
		case <-pctx.Done():
			t.Fatalf("kubectl port-forward printed no local port: %s", stderr.String())
		}
		code, body := get(ctx, t, "http://127.0.0.1:"+p+"/?name=Yusuke")
		if want := regexp.MustCompile(`^Response from the server: Hello, Yusuke-san! \(Said [0-9.]+, Version 0\.9\)$`); code != http.StatusOK || !want.MatchString(body) {
			t.Fatalf("curl through port-forward: %d %q, want the README's reply", code, body)
		}
	})

	t.Run("an echo-server pod deleted under 100 rps fails nothing", func(t *testing.T) {
		c := c.in(t)
		pods := c.readyPods(ctx, echoNS, "app=echo-server")
		if len(pods) == 0 {
			t.Fatal("no Ready echo-server pod")
		}
		victim := pods[0].Name
		res := underLoad(ctx, t, gw, func() {
			if err := kc.Client().CoreV1().Pods(echoNS).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete pod %s: %v", victim, err)
			}
		})
		t.Logf("pod %s deleted under load: %s", victim, load.FormatReport(load.Report{Counts: res.Counts}))
		checkNoFailures(t, "deleting pod "+victim+" under load", res)
		c.waitDeployment(ctx, echoNS, "echo-server-0-9", 2)
	})

	t.Run("a control-plane replica deleted under 100 rps fails nothing", func(t *testing.T) {
		c := c.in(t)
		pods := c.readyPods(ctx, cpNamespace, "app.kubernetes.io/name=gmesh")
		if len(pods) != 2 {
			t.Fatalf("control plane pods Ready: %d, want 2", len(pods))
		}
		victim := pods[0].Name
		res := underLoad(ctx, t, gw, func() {
			if err := kc.Client().CoreV1().Pods(cpNamespace).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete pod %s: %v", victim, err)
			}
		})
		t.Logf("control plane pod %s deleted under load: %s", victim, load.FormatReport(load.Report{Counts: res.Counts}))
		checkNoFailures(t, "deleting control plane pod "+victim+" under load", res)
		c.waitDeployment(ctx, cpNamespace, cpDeployment, 2)
	})

	t.Run("a 50/50 route splits 2,000 requests within 5 points", func(t *testing.T) {
		c := c.in(t)
		c.addVersion(ctx, "1.0", "gmesh.local/echo-server:1.0")
		c.setWeights(ctx, map[string]int64{"echo-server-0-9": 50, "echo-server-1-0": 50})
		res, err := load.Run(ctx, load.Config{URL: gw + "/?name=split", MaxRequests: 2000, Duration: 2 * time.Minute, Concurrency: 8, AllowRemote: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("50/50: %s", load.FormatReport(load.Report{Counts: res.Counts}))
		if res.Failed != 0 || res.OK != 2000 {
			t.Fatalf("%d OK, %d failed %v, want 2000 OK", res.OK, res.Failed, res.Failures)
		}
		for _, v := range []string{"0.9", "1.0"} {
			share := float64(res.ByVersion[v]) * 100 / float64(res.OK)
			if share < 45 || share > 55 {
				t.Errorf("version %s answered %.1f%% of 2,000 requests, want 50 ± 5 (%v)", v, share, res.ByVersion)
			}
		}
	})

	t.Run("route edits and new pods reach the clients", func(t *testing.T) {
		c := c.in(t)
		var edits []time.Duration
		for i := 0; i < 10; i++ {
			w := map[string]int64{"echo-server-0-9": 60, "echo-server-1-0": 40}
			if i%2 == 1 {
				w = map[string]int64{"echo-server-0-9": 50, "echo-server-1-0": 50}
			}
			edits = append(edits, c.setWeights(ctx, w))
		}
		var ready []time.Duration
		for i := 0; i < 4; i++ {
			ready = append(ready, c.newPodToTraffic(ctx, gw, "echo-server-1-0", "1.0"))
		}
		t.Logf("route edit to every client's ACK (as the VirtualRouter's ACKed condition shows it), 10 edits: %s", quantiles(edits))
		t.Logf("pod Ready to its first reply through the gateway (rebuild, every client's ACK of the endpoint, a pick), 4 pods: %s", quantiles(ready))
	})

	t.Run("bad manifests are refused at admission, naming the field", func(t *testing.T) {
		c := c.in(t)
		unknown := `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: typo, namespace: echo}
spec:
  podSelector: {matchLabels: {app: typo}}
  listeners:
  - portMaping: {port: 50051, protocol: grpc}
`
		out, err := c.kubectl(ctx, unknown, "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "portMaping") {
			t.Errorf("a VirtualNode with the unknown field portMaping: err %v, output %q; want a refusal naming the field", err, out)
		}
		dangling := `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: dangling, namespace: echo}
spec:
  listeners:
  - portMapping: {port: 50051, protocol: grpc}
  routes:
  - name: r
    grpcRoute:
      match: {serviceName: proto.echo.EchoService}
      action:
        weightedTargets:
        - virtualNodeRef: {name: no-such-node}
          weight: 1
`
		out, err = c.kubectl(ctx, dangling, "apply", "-f", "-")
		if err == nil || !strings.Contains(out, "virtualNodeRef") || !strings.Contains(out, "no-such-node") {
			t.Errorf("a VirtualRouter routing to a VirtualNode that does not exist: err %v, output %q; want a refusal naming virtualNodeRef and the node", err, out)
		}
		if _, err := c.dyn.Resource(virtualRouters).Namespace(echoNS).Get(ctx, "dangling", metav1.GetOptions{}); err == nil {
			t.Error("the refused VirtualRouter exists")
		}
	})
}

// underLoad sends 100 rps through the gateway for 20 s and calls act after
// 5 s of them.
func underLoad(ctx context.Context, t *testing.T, url string, act func()) *load.Result {
	t.Helper()
	var once sync.Once
	res, err := load.Run(ctx, load.Config{
		URL: url + "/?name=load", RPS: 100, Duration: 20 * time.Second, Concurrency: 256, AllowRemote: true,
		Every: func(r load.Report) {
			if r.Second == 5 {
				once.Do(act)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	once.Do(func() { t.Error("the load ended before its fifth second") })
	return res
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// kubectl runs the cluster's kubectl with stdin, returning its combined
// output.
func (c *cluster) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.c.Binaries().Kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.c.Kubeconfig())
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cluster) kubectlOK(ctx context.Context, stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(ctx, stdin, args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) poll(ctx context.Context, what string, d time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		select {
		case <-pctx.Done():
			c.t.Fatalf("%s: not within %s (last: %s)", what, d, last)
		case <-tick.C:
		}
	}
}

func (c *cluster) waitDeployment(ctx context.Context, ns, name string, replicas int32) {
	c.t.Helper()
	c.poll(ctx, fmt.Sprintf("deployment %s/%s with %d Ready replicas", ns, name, replicas), 5*time.Minute, func() (bool, string) {
		d, err := c.c.Client().AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := d.Status
		done := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == replicas && s.ReadyReplicas == replicas && s.Replicas == replicas
		return done, fmt.Sprintf("%+v", s)
	})
}

// waitWebhooksReady waits until both webhook configurations carry a CA
// bundle, which the control plane's leader writes.
func (c *cluster) waitWebhooksReady(ctx context.Context) {
	c.t.Helper()
	adm := c.c.Client().AdmissionregistrationV1()
	c.poll(ctx, "the webhooks' CA bundles", 2*time.Minute, func() (bool, string) {
		m, err := adm.MutatingWebhookConfigurations().Get(ctx, "gmesh-injector", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		v, err := adm.ValidatingWebhookConfigurations().Get(ctx, "gmesh-validator", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, w := range m.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return false, "mutating webhook " + w.Name + " has no caBundle"
			}
		}
		for _, w := range v.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return false, "validating webhook " + w.Name + " has no caBundle"
			}
		}
		return true, ""
	})
}

// waitAdmission waits until the validating webhook answers through its
// Service: a server-side dry run of a Mesh create, which it admits. The
// Service routes to the new pods only once the node's kube-proxy has
// programmed them, about a second after they are Ready (as on any cluster),
// and an App Mesh create before that fails with "failed calling webhook".
func (c *cluster) waitAdmission(ctx context.Context) {
	c.t.Helper()
	meshes := schema.GroupVersionResource{Group: "appmesh.k8s.aws", Version: "v1beta2", Resource: "meshes"}
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": "Mesh",
		"metadata": map[string]any{"name": "admission-probe"},
		"spec":     map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"mesh": "admission-probe"}}},
	}}
	c.poll(ctx, "the validating webhook answering", 2*time.Minute, func() (bool, string) {
		_, err := c.dyn.Resource(meshes).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

func (c *cluster) readyPods(ctx context.Context, ns, selector string) []corev1.Pod {
	c.t.Helper()
	pods, err := c.c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		c.t.Fatalf("list pods %s in %s: %v", selector, ns, err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && ready(&p) {
			out = append(out, p)
		}
	}
	return out
}

func (c *cluster) readyPodIPs(ctx context.Context, ns, selector string) []string {
	var ips []string
	for _, p := range c.readyPods(ctx, ns, selector) {
		ips = append(ips, p.Status.PodIP)
	}
	slices.Sort(ips)
	return ips
}

// gatewayURL is a Ready gateway pod's address: the test reaches the pod
// network from the host.
func (c *cluster) gatewayURL(ctx context.Context) string {
	c.t.Helper()
	ips := c.readyPodIPs(ctx, echoNS, "app="+gatewayApp)
	if len(ips) == 0 {
		c.t.Fatal("no Ready gateway pod")
	}
	return fmt.Sprintf("http://%s:%d", ips[0], gatewayPort)
}

// addVersion runs version v of echo-server beside 0.9, as a user would: a
// Deployment from the stable one's template with the new image and version
// label, and its VirtualNode; it waits for the pods to be Ready.
func (c *cluster) addVersion(ctx context.Context, v, image string) {
	c.t.Helper()
	deps := c.c.Client().AppsV1().Deployments(echoNS)
	stable, err := deps.Get(ctx, "echo-server-0-9", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	slug := "echo-server-" + strings.ReplaceAll(v, ".", "-")
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: slug, Namespace: echoNS, Labels: map[string]string{"app": "echo-server", "version": v}},
		Spec:       *stable.Spec.DeepCopy(),
	}
	one := int32(1)
	d.Spec.Replicas = &one
	d.Spec.Selector.MatchLabels["version"] = v
	d.Spec.Template.Labels["version"] = v
	d.Spec.Template.Spec.Containers[0].Image = image
	if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("create deployment %s: %v", slug, err)
	}
	c.waitDeployment(ctx, echoNS, slug, 1)

	vns := c.dyn.Resource(virtualNodes).Namespace(echoNS)
	old, err := vns.Get(ctx, "echo-server-0-9", metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	vn := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": old.GetAPIVersion(), "kind": old.GetKind(),
		"metadata": map[string]any{"name": slug, "namespace": echoNS},
		"spec":     old.Object["spec"],
	}}
	unstructured.RemoveNestedField(vn.Object, "spec", "awsName")
	if err := unstructured.SetNestedField(vn.Object, v, "spec", "podSelector", "matchLabels", "version"); err != nil {
		c.t.Fatal(err)
	}
	if _, err := vns.Create(ctx, vn, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("create virtual node %s: %v", slug, err)
	}
}

// setWeights sets the weighted targets of echo-server's router, waits
// until its status says every client ACKed that generation, and returns how
// long that took from the update.
func (c *cluster) setWeights(ctx context.Context, weights map[string]int64) time.Duration {
	c.t.Helper()
	vrs := c.dyn.Resource(virtualRouters).Namespace(echoNS)
	var updated *unstructured.Unstructured
	start := time.Now()
	// The leader writes the router's status meanwhile, which moves its
	// resourceVersion: read, edit and update again on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vr, err := vrs.Get(ctx, "echo-server", metav1.GetOptions{})
		if err != nil {
			return err
		}
		routes, _, _ := unstructured.NestedSlice(vr.Object, "spec", "routes")
		if len(routes) == 0 {
			return errors.New("echo-server's router has no routes")
		}
		route := routes[0].(map[string]any)
		var proto string
		for _, p := range []string{"grpcRoute", "httpRoute", "http2Route"} {
			if _, ok := route[p]; ok {
				proto = p
			}
		}
		var targets []any
		names := make([]string, 0, len(weights))
		for n := range weights {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			targets = append(targets, map[string]any{"virtualNodeRef": map[string]any{"name": n}, "weight": weights[n]})
		}
		if err := unstructured.SetNestedSlice(route, targets, proto, "action", "weightedTargets"); err != nil {
			return err
		}
		routes[0] = route
		if err := unstructured.SetNestedSlice(vr.Object, routes, "spec", "routes"); err != nil {
			return err
		}
		start = time.Now()
		updated, err = vrs.Update(ctx, vr, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		c.t.Fatalf("update the router's weights: %v", err)
	}
	gen := updated.GetGeneration()
	c.poll(ctx, fmt.Sprintf("echo-server's router ACKed at generation %d", gen), 2*time.Minute, func() (bool, string) {
		got, err := vrs.Get(ctx, "echo-server", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, x := range conds {
			m, _ := x.(map[string]any)
			g, _ := m["observedGeneration"].(int64)
			if m["type"] == "ACKed" && m["status"] == "True" && g >= gen {
				return true, ""
			}
		}
		b, _ := json.Marshal(conds)
		return false, string(b)
	})
	return time.Since(start)
}

// newPodToTraffic scales deployment name (echo-server version v) up by
// one and returns how long after its new pod turned Ready the first request
// through the gateway was answered by it: the control plane's rebuild,
// every echo-client's ACK of the new endpoint, and a pick. Then it scales
// back and waits until the removed pod is gone.
func (c *cluster) newPodToTraffic(ctx context.Context, gw, name, v string) time.Duration {
	c.t.Helper()
	selector := "app=echo-server,version=" + v
	deps := c.c.Client().AppsV1().Deployments(echoNS)
	// A merge patch of the scale, not a read-modify-write: the deployment
	// controller updates the object meanwhile, and an update carrying the
	// resourceVersion read would conflict.
	scale := func(n int32) {
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := deps.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale"); err != nil {
			c.t.Fatal(err)
		}
	}
	old := c.readyPodIPs(ctx, echoNS, selector)
	scale(int32(len(old) + 1))
	var readyAt time.Time
	var newIP string
	c.poll(ctx, "a new pod of "+name+" Ready", 2*time.Minute, func() (bool, string) {
		ips := c.readyPodIPs(ctx, echoNS, selector)
		readyAt = time.Now()
		for _, ip := range ips {
			if !slices.Contains(old, ip) {
				newIP = ip
			}
		}
		return newIP != "", fmt.Sprintf("Ready: %v, before: %v", ips, old)
	})
	said := "(Said " + newIP + ","
	var d time.Duration
	for i := 0; ; i++ {
		code, body := get(ctx, c.t, gw+"/?name=new-pod")
		if code != http.StatusOK {
			c.t.Fatalf("GET through the gateway while pod %s joins: %d %q", newIP, code, body)
		}
		if strings.Contains(body, said) {
			d = time.Since(readyAt)
			break
		}
		if i == 20000 || time.Since(readyAt) > time.Minute {
			c.t.Fatalf("no reply from the new pod %s within %d requests and %s of it turning Ready", newIP, i+1, time.Since(readyAt).Round(time.Millisecond))
		}
	}
	scale(int32(len(old)))
	c.waitDeployment(ctx, echoNS, name, int32(len(old)))
	c.poll(ctx, "the removed pod of "+name+" gone", 2*time.Minute, func() (bool, string) {
		pods, err := c.c.Client().CoreV1().Pods(echoNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == len(old), fmt.Sprintf("%d pods", len(pods.Items))
	})
	return d
}

// quantiles formats the median and the largest of ds.
func quantiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %s, max %s (all: %v)", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), ds)
}

// dumpOnFailure logs what a failed run needs: the pods, the events and the
// gmesh pods' logs.
func (c *cluster) dumpOnFailure() {
	if !c.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"get", "virtualnodes,virtualrouters,virtualservices,virtualgateways,gatewayroutes", "-A", "-o", "yaml"},
		{"logs", "-n", cpNamespace, "-l", "app.kubernetes.io/name=gmesh", "--tail=200", "--prefix"},
		{"logs", "-n", echoNS, "-l", "app=" + gatewayApp, "--tail=100", "--prefix"},
		{"logs", "-n", echoNS, "-l", "app=echo-client", "--tail=100", "--prefix"},
	} {
		out, err := c.kubectl(ctx, "", args...)
		c.t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
