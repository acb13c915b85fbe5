package k8stest_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/internal/k8stest"
)

func poll(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func rootDir() string {
	if d := os.Getenv("GMESH_K8S_ROOT"); d != "" {
		return d
	}
	return k8stest.DefaultRoot
}

// echoServerDeployment runs echo-server from the local image ref, gRPC on
// port 50051 (named grpc), Ready once its gRPC health answers.
func echoServerDeployment(ref string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "echo-server"}
	no := false
	grace := int64(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-server", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  &no,
					EnableServiceLinks:            &no,
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:            "echo-server",
						Image:           ref,
						ImagePullPolicy: corev1.PullNever,
						Env:             []corev1.EnvVar{{Name: "ECHO_DRAIN_DELAY", Value: "0s"}},
						Ports:           []corev1.ContainerPort{{Name: "grpc", ContainerPort: 50051}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 50051}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// waitReadyPods waits for n Ready pods matching selector in the default
// namespace and returns their IPs; on timeout it logs every pod and fails t.
func waitReadyPods(ctx context.Context, t *testing.T, c *k8stest.Cluster, selector string, n int) []string {
	t.Helper()
	var ips []string
	err := poll(ctx, func() (bool, error) {
		pods, err := c.Client().CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		ips = ips[:0]
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(&p) {
				ips = append(ips, p.Status.PodIP)
			}
		}
		return len(ips) == n, nil
	})
	if err != nil {
		pods, _ := c.Client().CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
		for _, p := range pods.Items {
			t.Logf("pod %s: phase %s, conditions %+v, containers %+v", p.Name, p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		t.Fatalf("wait for %d Ready pods %s: %v", n, selector, err)
	}
	return ips
}
