package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// The echo example's echo-server (examples/kubernetes/echo) in namespace
// echo: router, node, and the 0.9 Deployment.
const echoMesh = `
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata:
  name: echo-server-0-9
  namespace: echo
spec:
  podSelector:
    matchLabels:
      app: echo-server
      version: "0.9"
  listeners:
    - portMapping:
        port: 50051
        protocol: grpc
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata:
  name: echo-server
  namespace: echo
spec:
  listeners:
    - portMapping:
        port: 50051
        protocol: grpc
  routes:
    - name: echo-server-route
      grpcRoute:
        match:
          serviceName: proto.echo.EchoService
        action:
          weightedTargets:
            - virtualNodeRef:
                name: echo-server-0-9
              weight: 100
`

func echoDeployment(version string, env ...corev1.EnvVar) *appsv1.Deployment {
	labels := map[string]string{"app": "echo-server", "version": version}
	n := int32(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server-" + strings.ReplaceAll(version, ".", "-"), Labels: map[string]string{"app": "echo-server"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo-server", Image: "gmesh.local/echo-server:" + version, Env: env,
					Ports: []corev1.ContainerPort{{ContainerPort: 50051}},
				}}},
			},
		},
	}
}

func newEchoCluster(t *testing.T, core ...runtime.Object) *k8sfake.Cluster {
	core = append([]runtime.Object{k8sfake.Namespace("echo", nil), echoDeployment("0.9")}, core...)
	return k8sfake.New(t, echoMesh, core...)
}

// syncBuffer is a buffer the command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gmeshOn runs gmesh in-process against the fake cluster.
func gmeshOn(ctx context.Context, c *k8sfake.Cluster, out *syncBuffer, args ...string) (int, string) {
	var stderr bytes.Buffer
	stdio := IO{In: strings.NewReader(""), Out: out, Err: &stderr}
	g := &globals{kubeClients: func(string) (*kubeClients, error) {
		return &kubeClients{kube: c.Kube, dyn: c.Dyn, namespace: "default"}, nil
	}}
	return run(ctx, newRoot(stdio, g), stdio, args), stderr.String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func getRollout(t *testing.T, c *k8sfake.Cluster, name string) *v1alpha1.Rollout {
	t.Helper()
	u, err := c.Dyn.Resource(rollouts.GVR).Namespace("echo").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Rollout %s: %v", name, err)
	}
	ro, err := decodeRollout(u)
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

func putRollout(t *testing.T, c *k8sfake.Cluster, ro *v1alpha1.Rollout) {
	t.Helper()
	u, err := encodeRollout(ro)
	if err != nil {
		t.Fatal(err)
	}
	c.Create(t, u)
}

// writes are the actions that changed something on the fake cluster.
func writes(c *k8sfake.Cluster) []string {
	var out []string
	for _, a := range c.Dyn.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	for _, a := range c.Kube.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

// status is the Rollout status the control plane would write for the
// engine's st: revision 2 of echo-server, 0.9 -> 1.0.
func status(phase mesh.Phase, step int, weight int, message string, events ...string) v1alpha1.RolloutStatus {
	st := &mesh.RolloutStatus{Phase: phase, StepIndex: step, Weight: weight, Message: message, Revision: 2,
		OldVersion: "0.9", NewVersion: "1.0", OldTaskSet: "echo-server-0-9", NewTaskSet: "echo-server-1-0"}
	for _, e := range events {
		st.Events = append(st.Events, mesh.RolloutEvent{Time: "2026-12-01T15:00:00Z", Phase: phase, Message: e})
	}
	if phase.Terminal() {
		st.Reason = message
	}
	var out v1alpha1.RolloutStatus
	rollouts.FromStatus(st, 1, 2, time.Unix(0, 0), &out)
	return out
}

var (
	evStart   = "Deploying version 1.0 of echo-server over 0.9 (revision 2)"
	evRunning = "Waiting for tasks to be RUNNING..."
	evHealthy = "Tasks healthy"
	evRoute50 = "Routing 50% of traffic to the new version"
	evBake    = "Analysing version 1.0 at 50% for 15s"
	evPassed  = "Step 1/2 (50%) passed: success rate 100.0% >= 99.0%, p99 latency 0.5ms <= 500ms over 1496 requests"
	evRetired = "Version 0.9 retired"
	evFailed  = "Rolling back: analysis of version 1.0 at 50% failed: success rate 80.3% < 99.0% over 41 requests"
	evBack    = "Rolled back to version 0.9: analysis of version 1.0 at 50% failed: success rate 80.3% < 99.0% over 41 requests"
)

// playControlPlane plays the control plane's leader: once the command
// watches the Rollout, it writes each status in turn, as the engine's
// passes would.
func playControlPlane(ctx context.Context, t *testing.T, c *k8sfake.Cluster, name string, statuses ...v1alpha1.RolloutStatus) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.WaitWatches(ctx, t, 1)
		for _, st := range statuses {
			ro := getRollout(t, c, name)
			ro.Status = st
			u, err := encodeRollout(ro)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := c.Dyn.Resource(rollouts.GVR).Namespace("echo").UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
				t.Errorf("write status: %v", err)
				return
			}
		}
	}()
	return done
}

func successStatuses() []v1alpha1.RolloutStatus {
	return []v1alpha1.RolloutStatus{
		status(mesh.PhasePending, -1, 0, "Waiting to start", evStart),
		status(mesh.PhaseStartingTasks, -1, 0, "Tasks are starting (1/2)...", evStart, evRunning),
		status(mesh.PhaseBaking, 0, 50, evBake, evStart, evRunning, evHealthy, evRoute50, evBake),
		status(mesh.PhaseSucceeded, 1, 100, evRetired, evStart, evRunning, evHealthy, evRoute50, evBake, evPassed, evRetired),
	}
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if diff := cmp.Diff(lines, got); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestKubeDeploySucceeds(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	played := playControlPlane(ctx, t, c, "echo-server", successStatuses()...)
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "deploy", "echo-server", "--image", "gmesh.local/echo-server:1.0", "--kubernetes", "-n", "echo")
	<-played
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out.String())
	}
	wantLines(t, out.String(),
		"Deploying echo-server version 1.0 (steps 50,100, bake 15s)",
		evStart, "Waiting to start", evRunning, "Tasks are starting (1/2)...",
		evHealthy, evRoute50, evBake, evPassed, evRetired)

	ro := getRollout(t, c, "echo-server")
	ms := "0.99"
	want := v1alpha1.RolloutSpec{
		VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"},
		Version:          "1.0",
		Images:           []v1alpha1.ContainerImage{{Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}},
		Steps:            []int32{50, 100},
		Interval:         &metav1.Duration{Duration: 15 * time.Second},
		Timeout:          &metav1.Duration{Duration: 5 * time.Minute},
		AckTimeout:       &metav1.Duration{Duration: 10 * time.Second},
		OnStalledClient:  "Pause",
		Analysis: &v1alpha1.AnalysisGates{MinSuccessRate: &ms,
			MaxP99Latency: &metav1.Duration{Duration: 500 * time.Millisecond}, MinRequests: ptr(int64(20))},
	}
	if diff := cmp.Diff(want, ro.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
}

func ptr[T any](v T) *T { return &v }

func TestKubeDeployFlagsMakeTheSpec(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "deploy", "echo-server", "--kubernetes", "-n", "echo",
		"--image", "echo-server=registry.example/echo-server@sha256:abc", "--version", "1.1",
		"--steps", "10,50,100", "--interval", "30s", "--timeout", "4m", "--ack-timeout", "5s",
		"--on-stalled-client", "Rollback", "--min-success", "0.95", "--max-p99", "250ms", "--min-requests", "40",
		"--force", "--env", "ECHO_FAIL_RATE=0.2", "--replicas", "3", "--router", "echo-server",
		"--route", "echo-server-route", "--stable-deployment", "echo-server-0-9", "--detach")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	wantLines(t, out.String(),
		"Deploying echo-server version 1.1 (steps 10,50,100, bake 30s)",
		"Rollout started; follow it with: gmesh rollout status echo-server --watch --kubernetes -n echo")
	ro := getRollout(t, c, "echo-server")
	ms := "0.95"
	want := v1alpha1.RolloutSpec{
		VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"},
		Route:            "echo-server-route",
		StableDeployment: "echo-server-0-9",
		Version:          "1.1",
		TemplatePatch: &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"env":[{"name":"ECHO_FAIL_RATE","value":"0.2"}],` +
			`"image":"registry.example/echo-server@sha256:abc","name":"echo-server"}]}}`)},
		Replicas:        ptr(int32(3)),
		Steps:           []int32{10, 50, 100},
		Interval:        &metav1.Duration{Duration: 30 * time.Second},
		Timeout:         &metav1.Duration{Duration: 4 * time.Minute},
		AckTimeout:      &metav1.Duration{Duration: 5 * time.Second},
		OnStalledClient: "Rollback",
		Force:           true,
		Analysis: &v1alpha1.AnalysisGates{MinSuccessRate: &ms,
			MaxP99Latency: &metav1.Duration{Duration: 250 * time.Millisecond}, MinRequests: ptr(int64(40))},
	}
	if diff := cmp.Diff(want, ro.Spec, cmp.Comparer(func(a, b runtime.RawExtension) bool { return jsonEqual(a.Raw, b.Raw) })); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	// The control plane makes the new Deployment from it.
	d, err := rollouts.NewDeployment(echoDeployment("0.9"), ro, "echo-server-1-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctr := d.Spec.Template.Spec.Containers[0]
	if ctr.Image != "registry.example/echo-server@sha256:abc" || len(ctr.Env) != 1 || ctr.Env[0].Value != "0.2" {
		t.Errorf("new Deployment's container: %+v", ctr)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && cmp.Equal(x, y)
}

func TestKubeDeployRolledBack(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	back := status(mesh.PhaseRolledBack, 0, 0, evBack, evStart, evRoute50, evBake, evFailed, evBack)
	played := playControlPlane(ctx, t, c, "echo-server",
		status(mesh.PhaseBaking, 0, 50, evBake, evStart, evRoute50, evBake), back)
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "deploy", "echo-server", "--image", "gmesh.local/echo-server:1.0", "--kubernetes", "-n", "echo")
	<-played
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s\n%s", code, stderr, out.String())
	}
	wantLines(t, out.String(),
		"Deploying echo-server version 1.0 (steps 50,100, bake 15s)",
		evStart, evRoute50, evBake, evFailed, evBack)
}

// A new revision of a finished Rollout: its spec is replaced, the stable
// Deployment is the one the last revision left running, and the old
// status (Succeeded) is not taken for the new one's.
func TestKubeDeployNewRevision(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t, echoDeployment("1.0"))
	old := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server"},
		Spec: v1alpha1.RolloutSpec{VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"}, Route: "echo-server-route",
			StableDeployment: "echo-server-0-9", Version: "1.0", Abort: true,
			Images: []v1alpha1.ContainerImage{{Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}}},
		Status: status(mesh.PhaseSucceeded, 1, 100, evRetired, evStart, evRetired),
	}
	putRollout(t, c, old)
	next := func(phase mesh.Phase, msg string, events ...string) v1alpha1.RolloutStatus {
		st := status(phase, 0, 0, msg, events...)
		st.Revision, st.OldVersion, st.NewVersion = 3, "1.0", "1.1"
		return st
	}
	played := playControlPlane(ctx, t, c, "echo-server",
		next(mesh.PhaseBaking, "Analysing version 1.1 at 50% for 15s", "Deploying version 1.1 of echo-server over 1.0 (revision 3)", "Analysing version 1.1 at 50% for 15s"),
		next(mesh.PhaseSucceeded, "Version 1.0 retired", "Deploying version 1.1 of echo-server over 1.0 (revision 3)", "Analysing version 1.1 at 50% for 15s", "Version 1.0 retired"))
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "deploy", "echo-server", "--image", "gmesh.local/echo-server:1.1", "--kubernetes", "-n", "echo")
	<-played
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out.String())
	}
	wantLines(t, out.String(),
		"Deploying echo-server version 1.1 (steps 50,100, bake 15s)",
		"Deploying version 1.1 of echo-server over 1.0 (revision 3)", "Analysing version 1.1 at 50% for 15s", "Version 1.0 retired")
	ro := getRollout(t, c, "echo-server")
	if ro.Spec.Version != "1.1" || ro.Spec.StableDeployment != "echo-server-1-0" || ro.Spec.Route != "echo-server-route" || ro.Spec.Abort {
		t.Errorf("spec of the new revision: %+v", ro.Spec)
	}
}

func TestKubeDeployRefusedWhileOneRuns(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	running := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server"},
		Spec: v1alpha1.RolloutSpec{VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"}, Version: "1.0",
			Images: []v1alpha1.ContainerImage{{Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}},
			Steps:  []int32{10, 50, 100}},
	}
	var st mesh.RolloutStatus = mesh.RolloutStatus{Phase: mesh.PhaseBaking, StepIndex: 0, Weight: 10, Revision: 2, OldVersion: "0.9", NewVersion: "1.0"}
	rollouts.FromStatus(&st, 1, 3, time.Unix(0, 0), &running.Status)
	putRollout(t, c, running)
	c.Dyn.ClearActions()
	for _, args := range [][]string{
		{"deploy", "echo-server", "--image", "gmesh.local/echo-server:1.1", "--kubernetes", "-n", "echo"},
		{"rollback", "echo-server", "--kubernetes", "-n", "echo"},
	} {
		var out syncBuffer
		code, stderr := gmeshOn(ctx, c, &out, args...)
		want := "gmesh: a rollout of echo-server is already in progress (Baking, step 1/3, version 1.0): wait for it, or gmesh rollout abort echo-server --kubernetes -n echo\n"
		if code != 1 || stderr != want {
			t.Errorf("%v: exit %d, stderr %q, want 1, %q", args, code, stderr, want)
		}
	}
	if w := writes(c); len(w) > 0 {
		t.Errorf("refused commands wrote %v", w)
	}
	if ro := getRollout(t, c, "echo-server"); ro.Spec.Version != "1.0" {
		t.Errorf("spec changed: %+v", ro.Spec)
	}
}

func TestKubeDeployRefusals(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "nope", "--image", "gmesh.local/echo-server:1.0"}, "namespace nope does not exist: give the namespace of the service's VirtualRouter with -n"},
		{[]string{"-n", "echo", "--image", "gmesh.local/echo-server:1.0", "--router", "nope"}, "VirtualRouter echo/nope does not exist: a Rollout shifts the route of the service's router; name it with --router (and its namespace with -n)"},
		{[]string{"-n", "echo", "--image", "gmesh.local/echo-server:1.0", "--route", "nope"}, "--route nope: virtual router echo/echo-server has no route nope"},
		{[]string{"-n", "echo", "--image", "gmesh.local/echo-server:1.0", "--stable-deployment", "nope"}, "Deployment echo/nope does not exist: name the Deployment that runs the serving version with --stable-deployment"},
		{[]string{"-n", "echo", "--image", "gmesh.local/echo-server:1.0", "--steps", "50,40"}, `--steps "50,40": steps must be ascending, got 40 after 50`},
		{[]string{"-n", "echo", "--image", "localhost:5000/echo-server"}, "--image localhost:5000/echo-server has no tag to take the version from: give --version"},
		{[]string{"-n", "echo", "--image", "gmesh.local/echo-server:1.0", "--version", "1.0/x"}, `version "1.0/x" is not a Kubernetes label value`},
		{[]string{"-n", "echo", "--image", "sidecar=gmesh.local/echo-server:1.0"}, "Deployment echo-server-0-9 has no container sidecar (it has echo-server)"},
		{[]string{"-n", "echo"}, "a deploy on a cluster needs the new version's image: --image [CONTAINER=]IMAGE"},
		{[]string{"-n", "echo", "--image", "x:1", "--binary", "/bin/true"}, "--binary deploys a local build"},
		{[]string{"-n", "echo", "--image", "x:1", "--env", "NOEQUALS"}, `--env "NOEQUALS": want KEY=VALUE`},
		{[]string{"-n", "echo", "--image", "x:1", "--replicas", "0"}, "--replicas 0: want at least 1"},
	} {
		var out syncBuffer
		args := append([]string{"deploy", "echo-server", "--kubernetes"}, tc.args...)
		code, stderr := gmeshOn(ctx, c, &out, args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// Cluster flags without --kubernetes.
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "deploy", "echo-server", "--image", "x:1")
	if want := "--image applies on a Kubernetes cluster: add --kubernetes (or --kubeconfig FILE)"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("--image alone: exit %d, stderr %q, want %q", code, stderr, want)
	}
	if w := writes(c); len(w) > 0 {
		t.Errorf("refused deploys wrote %v", w)
	}
}

// Ctrl-C stops following and leaves the Rollout as it is.
func TestKubeDeployInterrupted(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		c.WaitWatches(ctx, t, 1)
		cancel()
	}()
	var out syncBuffer
	code, stderr := gmeshOn(cctx, c, &out, "deploy", "echo-server", "--image", "gmesh.local/echo-server:1.0", "--kubernetes", "-n", "echo")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	wantLines(t, out.String(),
		"Deploying echo-server version 1.0 (steps 50,100, bake 15s)",
		"Stopped following; the rollout goes on. Follow it again with: gmesh rollout status echo-server --watch --kubernetes -n echo")
	if w := writes(c); len(w) != 1 || w[0] != "create rollouts" {
		t.Errorf("writes %v, want the create alone", w)
	}
}

func controlRollout(phase mesh.Phase, paused bool, specPaused bool) *v1alpha1.Rollout {
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server"},
		Spec: v1alpha1.RolloutSpec{VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"}, Version: "1.0", Paused: specPaused,
			Images: []v1alpha1.ContainerImage{{Container: "echo-server", Image: "gmesh.local/echo-server:1.0"}}},
	}
	st := mesh.RolloutStatus{Phase: phase, StepIndex: 0, Weight: 50, Revision: 2, OldVersion: "0.9", NewVersion: "1.0", Paused: paused,
		Message: "Analysing version 1.0 at 50% for 15s"}
	if paused {
		st.Phase, st.ResumePhase = mesh.PhasePaused, phase
	}
	rollouts.FromStatus(&st, 1, 2, time.Unix(0, 0), &ro.Status)
	return ro
}

func TestKubeRolloutControls(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		action             string
		phase              mesh.Phase
		paused, specPaused bool
		// patches are the merge patches' spec parts, in order.
		patches []string
		check   func(*v1alpha1.RolloutSpec) bool
	}{
		{"pause", mesh.PhaseBaking, false, false, []string{`{"paused":true}`}, func(s *v1alpha1.RolloutSpec) bool { return s.Paused }},
		{"resume", mesh.PhaseBaking, true, true, []string{`{"paused":false}`}, func(s *v1alpha1.RolloutSpec) bool { return !s.Paused }},
		// Paused by the engine (stalled clients), not yet mirrored into
		// the spec: set, then clear, so that the spec changes.
		{"resume", mesh.PhaseShifting, true, false, []string{`{"paused":true}`, `{"paused":false}`}, func(s *v1alpha1.RolloutSpec) bool { return !s.Paused }},
		{"promote", mesh.PhaseBaking, false, false, []string{`{"promote":true}`}, func(s *v1alpha1.RolloutSpec) bool { return s.Promote }},
		{"abort", mesh.PhaseBaking, false, false, []string{`{"abort":true}`}, func(s *v1alpha1.RolloutSpec) bool { return s.Abort }},
	} {
		c := newEchoCluster(t)
		putRollout(t, c, controlRollout(tc.phase, tc.paused, tc.specPaused))
		c.Dyn.ClearActions()
		var out syncBuffer
		code, stderr := gmeshOn(ctx, c, &out, "rollout", tc.action, "echo-server", "--kubernetes", "-n", "echo")
		if code != 0 {
			t.Errorf("%s: exit %d: %s", tc.action, code, stderr)
			continue
		}
		if !strings.HasPrefix(out.String(), "rollout of echo-server: "+tc.action+" requested\nRollout of echo-server: 0.9 -> 1.0\n") {
			t.Errorf("%s: output %q", tc.action, out.String())
		}
		var patches []string
		for _, a := range c.Dyn.Actions() {
			if p, ok := a.(k8stesting.PatchAction); ok {
				var m struct {
					Spec json.RawMessage `json:"spec"`
				}
				if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
					t.Fatal(err)
				}
				patches = append(patches, string(m.Spec))
			}
		}
		if diff := cmp.Diff(tc.patches, patches); diff != "" || len(writes(c)) != len(tc.patches) {
			t.Errorf("%s: patches (-want +got):\n%s\nwrites %v", tc.action, diff, writes(c))
		}
		if ro := getRollout(t, c, "echo-server"); !tc.check(&ro.Spec) {
			t.Errorf("%s: spec %+v", tc.action, ro.Spec)
		}
	}
}

func TestKubeRolloutControlRefused(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		action string
		ro     *v1alpha1.Rollout
		want   string
	}{
		{"abort", controlRollout(mesh.PhaseRetiring, false, false), "too late to abort the rollout of echo-server: version 1.0 already takes all traffic and version 0.9 is being retired"},
		{"resume", controlRollout(mesh.PhaseBaking, false, false), "the rollout of echo-server is not paused"},
		{"promote", controlRollout(mesh.PhaseRollingBack, false, false), "the rollout of echo-server is rolling back; it cannot be promoted"},
		{"pause", controlRollout(mesh.PhaseSucceeded, false, false), "the rollout of echo-server has ended (Succeeded); nothing to pause"},
	} {
		c := newEchoCluster(t)
		putRollout(t, c, tc.ro)
		c.Dyn.ClearActions()
		var out syncBuffer
		code, stderr := gmeshOn(ctx, c, &out, "rollout", tc.action, "echo-server", "--kubernetes", "-n", "echo")
		// The local CLI's message: the engine's rule, mesh.RolloutStatus.CheckControl.
		local := rollouts.Status(&tc.ro.Status, "echo-server").CheckControl("echo-server", tc.action)
		if code != 1 || stderr != "gmesh: "+local.Error()+"\n" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q, want 1 and %q", tc.action, code, stderr, tc.want)
		}
		if w := writes(c); len(w) > 0 {
			t.Errorf("%s: refused control wrote %v", tc.action, w)
		}
	}
	// No Rollout, no namespace.
	c := newEchoCluster(t)
	var out syncBuffer
	if code, stderr := gmeshOn(ctx, c, &out, "rollout", "pause", "echo-server", "--kubernetes", "-n", "echo"); code != 1 || !strings.Contains(stderr, "service echo-server has no rollout (no Rollout echo-server in namespace echo)") {
		t.Errorf("no Rollout: exit %d, stderr %q", code, stderr)
	}
	if code, stderr := gmeshOn(ctx, c, &out, "rollout", "status", "echo-server", "--kubernetes", "-n", "nope"); code != 1 || !strings.Contains(stderr, "namespace nope does not exist") {
		t.Errorf("no namespace: exit %d, stderr %q", code, stderr)
	}
}

func TestKubeRolloutStatus(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	ro := controlRollout(mesh.PhaseBaking, false, false)
	ro.Status.Events = []v1alpha1.RolloutEvent{{Time: "t", Phase: "Baking", Message: evBake}}
	putRollout(t, c, ro)
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "rollout", "status", "echo-server", "--kubernetes", "-n", "echo")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// What the local rollout status prints for the same rollout.
	var local bytes.Buffer
	printRollout(&local, engineView(ro))
	wantLines(t, out.String(), strings.Split(strings.TrimRight(local.String(), "\n"), "\n")...)
	if !strings.Contains(out.String(), "  phase:   Baking (step 1/2, new version at 50%)\n") {
		t.Errorf("status: %q", out.String())
	}

	// --watch follows it to the end, past the events already shown.
	out = syncBuffer{}
	end := status(mesh.PhaseSucceeded, 1, 100, evRetired, evBake, evPassed, evRetired)
	played := playControlPlane(ctx, t, c, "echo-server", end)
	code, stderr = gmeshOn(ctx, c, &out, "rollout", "status", "echo-server", "--watch", "--kubernetes", "-n", "echo")
	<-played
	if code != 0 {
		t.Fatalf("--watch: exit %d: %s", code, stderr)
	}
	if !strings.HasSuffix(out.String(), "\n"+evPassed+"\n"+evRetired+"\n") || strings.Contains(out.String(), "\n"+evPassed+"\n"+evPassed) {
		t.Errorf("--watch: %q", out.String())
	}
}

func TestKubeRollback(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t, echoDeployment("1.0", corev1.EnvVar{Name: "ECHO_FAIL_RATE", Value: "0.2"}))
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "echo", Name: "echo-server"},
		Spec: v1alpha1.RolloutSpec{VirtualRouterRef: v1alpha1.VirtualRouterReference{Name: "echo-server"}, Route: "echo-server-route",
			StableDeployment: "echo-server-0-9", Version: "1.0", Steps: []int32{10, 100}, Promote: true,
			TemplatePatch: &runtime.RawExtension{Raw: []byte(`{"spec":{"containers":[{"name":"echo-server","image":"gmesh.local/echo-server:1.0","env":[{"name":"ECHO_FAIL_RATE","value":"0.2"}]}]}}`)}},
	}
	st := &mesh.RolloutStatus{Phase: mesh.PhaseSucceeded, StepIndex: 1, Weight: 100, Revision: 2, OldVersion: "0.9", NewVersion: "1.0",
		OldTaskSet: "echo-server-0-9", NewTaskSet: "echo-server-1-0",
		History: []mesh.TaskSetSpec{{Service: "echo-server", Version: "0.9", Revision: 1}, {Service: "echo-server", Version: "1.0", Revision: 2}}}
	rollouts.FromStatus(st, 1, 2, time.Unix(0, 0), &ro.Status)
	for _, v := range []string{"0.9", "1.0"} {
		d := echoDeployment(v)
		if ok, err := rollouts.SetRevisionTemplate(&ro.Status, map[string]int32{"0.9": 1, "1.0": 2}[v], v, &d.Spec.Template); !ok || err != nil {
			t.Fatalf("record template of %s: %v %v", v, ok, err)
		}
	}
	putRollout(t, c, ro)

	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "rollback", "echo-server", "--kubernetes", "-n", "echo", "--steps", "50,100", "--detach")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	wantLines(t, out.String(), "Rolling echo-server back to version 0.9 (revision 1's pod template)",
		"Rollback started; follow it with: gmesh rollout status echo-server --watch --kubernetes -n echo")
	got := getRollout(t, c, "echo-server")
	s := got.Spec
	if s.Version != "0.9" || !s.Rollback || s.Images != nil || s.TemplatePatch == nil || s.StableDeployment != "echo-server-1-0" ||
		s.Promote || s.Route != "echo-server-route" || !cmp.Equal(s.Steps, []int32{50, 100}) || s.OnStalledClient != "Pause" {
		t.Errorf("rollback spec: %+v", s)
	}
	// The control plane makes 0.9's pod template again from the running
	// 1.0 Deployment: the image and the env 1.0 added both go back.
	d, err := rollouts.NewDeployment(echoDeployment("1.0", corev1.EnvVar{Name: "ECHO_FAIL_RATE", Value: "0.2"}), got, "echo-server-0-9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(echoDeployment("0.9").Spec.Template, d.Spec.Template); diff != "" {
		t.Errorf("rolled back pod template (-want +got):\n%s", diff)
	}
}

func TestKubeRollbackRefusals(t *testing.T) {
	ctx := testCtx(t)
	c := newEchoCluster(t)
	var out syncBuffer
	code, stderr := gmeshOn(ctx, c, &out, "rollback", "echo-server", "--kubernetes", "-n", "echo")
	if want := "echo-server has never been deployed with gmesh deploy, so there is no earlier revision to roll back to"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("no Rollout: exit %d, stderr %q", code, stderr)
	}
	ro := controlRollout(mesh.PhaseSucceeded, false, false)
	st := &mesh.RolloutStatus{Phase: mesh.PhaseSucceeded, Revision: 2, History: []mesh.TaskSetSpec{{Version: "0.9", Revision: 1}, {Version: "1.0", Revision: 2}}}
	rollouts.FromStatus(st, 1, 2, time.Unix(0, 0), &ro.Status)
	putRollout(t, c, ro)
	code, stderr = gmeshOn(ctx, c, &out, "rollback", "echo-server", "--kubernetes", "-n", "echo")
	if want := "the history of echo-server does not record the pod template of version 0.9 (revision 1)"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("no template: exit %d, stderr %q", code, stderr)
	}
	if w := writes(c); len(w) != 0 {
		t.Errorf("refused rollbacks wrote %v", w)
	}
}
