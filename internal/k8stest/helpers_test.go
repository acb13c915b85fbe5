package k8stest_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"

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
